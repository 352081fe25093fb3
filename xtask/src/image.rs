//! `cargo xtask image`: the manager's container image without Docker. A statically linked
//! `capstan-manager` (glibc, `-C target-feature=+crt-static`) goes into a `FROM scratch` image
//! (deploy/image/Containerfile) built by podman, tagged `localhost/capstan-manager:<version>` and
//! saved as an OCI archive at target/image/capstan-manager.oci.tar (what `kind load
//! image-archive` takes).
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

use crate::cmd;

/// The target the static binary is built for.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";
pub const REPOSITORY: &str = "localhost/capstan-manager";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image tag (default: the manager crate's version).
    #[arg(long)]
    pub tag: Option<String>,
}

/// The podman invocation these machines need: runc (crun refuses this kernel's hybrid cgroups)
/// and cgroupfs (no systemd).
pub fn podman() -> Command {
    let mut command = Command::new("podman");
    command.args(["--runtime", "runc", "--cgroup-manager=cgroupfs"]);
    command
}

pub fn image_ref(tag: Option<&str>) -> String {
    format!("{REPOSITORY}:{}", tag.unwrap_or(capstan_e2e::MANAGER_VERSION))
}

pub fn archive_path() -> PathBuf {
    cmd::workspace_root().join("target/image/capstan-manager.oci.tar")
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let image = image_ref(args.tag.as_deref());
    if !cmd::on_path("podman") {
        bail!("`cargo xtask image` needs podman (Debian/Ubuntu: `apt-get install podman`); or use `docker build .`");
    }
    let binary = build_static_manager()?;
    let context = cmd::workspace_root().join("target/image/context");
    fs::create_dir_all(&context).with_context(|| format!("cannot create {}", context.display()))?;
    fs::copy(&binary, context.join("capstan-manager"))
        .with_context(|| format!("cannot copy {} into the build context", binary.display()))?;
    let containerfile = cmd::workspace_root().join("deploy/image/Containerfile");
    cmd::run(
        podman()
            .args(["build", "--tag", &image, "--file"])
            .arg(&containerfile)
            .arg(&context),
    )?;
    let archive = archive_path();
    let _ = fs::remove_file(&archive);
    cmd::run(
        podman()
            .args(["save", "--format", "oci-archive", "--output"])
            .arg(&archive)
            .arg(&image),
    )?;
    eprintln!("built {image}; OCI archive {}", archive.display());
    Ok(())
}

/// `cargo build --release` of the manager, statically linked. Only the target's artifacts get
/// `+crt-static` (with `--target`, RUSTFLAGS skip build scripts and proc macros, which must stay
/// dynamic). Its own target directory, so the long release build never holds the lock of
/// target/ that tests and other builds wait on.
pub fn build_static_manager() -> anyhow::Result<PathBuf> {
    let target_dir = cmd::workspace_root().join("target/static");
    cmd::run(
        cmd::cargo()
            .args([
                "build",
                "--release",
                "--locked",
                "-p",
                "capstan-manager",
                "--target",
                TARGET,
            ])
            .arg("--target-dir")
            .arg(&target_dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static"),
    )?;
    let binary = target_dir.join(TARGET).join("release/capstan-manager");
    ensure_static(&binary)?;
    Ok(binary)
}

/// A dynamically linked binary would fail in the empty image with a bare "no such file" (its ELF
/// loader is missing): refuse it here with a clear message instead.
fn ensure_static(binary: &Path) -> anyhow::Result<()> {
    let bytes = fs::read(binary).with_context(|| format!("cannot read {}", binary.display()))?;
    if has_interpreter(&bytes).context("not a 64-bit little-endian ELF file")? {
        bail!(
            "{} is dynamically linked (it has an ELF interpreter); static linking needs the glibc static libraries (Debian: libc6-dev)",
            binary.display()
        );
    }
    Ok(())
}

/// Whether a 64-bit little-endian ELF file has a `PT_INTERP` program header.
fn has_interpreter(elf: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if elf.get(..5)? != b"\x7fELF\x02" {
        return None;
    }
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let phoff = usize::try_from(u64::from_le_bytes(elf.get(0x20..0x28)?.try_into().ok()?)).ok()?;
    let (phentsize, phnum) = (usize::from(u16_at(0x36)?), usize::from(u16_at(0x38)?));
    (0..phnum)
        .map(|i| {
            let at = phoff + i * phentsize;
            Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?))
        })
        .try_fold(false, |found, kind| Some(found || kind? == PT_INTERP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_test_binary_is_dynamic_and_garbage_is_no_elf() {
        let me = fs::read(std::env::current_exe().expect("current exe")).expect("read self");
        assert_eq!(
            has_interpreter(&me),
            Some(true),
            "a default test binary is dynamically linked"
        );
        assert_eq!(has_interpreter(b"#!/bin/sh\n"), None);
    }
}
