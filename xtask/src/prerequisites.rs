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
    cmd::run(Command::new("apt-get").args(["update", "-qq"]))?;
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(capstan_localnode::PACKAGES.split_whitespace())
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    if let Err(still) = capstan_localnode::check_prerequisites() {
        bail!("still missing after apt-get install: {}", still.join("; "));
    }
    Ok(())
}
