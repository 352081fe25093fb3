//! What the host must provide. `PREREQUISITES` (next to this crate's Cargo.toml) lists the Debian
//! packages, one a line, for provisioning; this module checks the binaries those packages bring.

use std::path::PathBuf;

/// The Debian packages the local node needs, as listed in the crate's `PREREQUISITES` file.
pub const PACKAGES: &str = include_str!("../PREREQUISITES");

/// Host binaries and the Debian package that provides each.
const BINARIES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("nft", "nftables"),
    ("nsenter", "util-linux"),
    ("unshare", "util-linux"),
    ("setpriv", "util-linux"),
    ("pivot_root", "util-linux"),
    ("mount", "mount"),
    ("umount", "mount"),
    ("env", "coreutils"),
    ("sleep", "coreutils"),
    ("sh", "dash"),
    ("memcached", "memcached"),
    ("redis-server", "redis-server"),
    ("redis-sentinel", "redis-sentinel"),
    ("busybox", "busybox"),
];

/// Says what is missing for the local node to run Pods: root, kernel support for overlayfs and
/// network namespaces, and host binaries (with the Debian package to install).
pub fn check_prerequisites() -> Result<(), Vec<String>> {
    let mut missing = Vec::new();
    let uid = nix::unistd::geteuid();
    if !uid.is_root() {
        missing.push(format!(
            "root (network namespaces, mounts and nftables need it; running as uid {uid})"
        ));
    }
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems.lines().any(|l| l.trim_end().ends_with("overlay")) {
        missing.push("overlayfs support in the kernel (`modprobe overlay`)".to_owned());
    }
    for (binary, package) in BINARIES {
        if which(binary).is_none() {
            missing.push(format!("`{binary}` on PATH (Debian package {package})"));
        }
    }
    if missing.is_empty() { Ok(()) } else { Err(missing) }
}

/// Finds `program` on the host's PATH (plus the sbin directories a non-login root shell may lack).
pub fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let path = PathBuf::from(program);
        return path.is_file().then_some(path);
    }
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain([
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ])
        .filter(|dir| !dir.is_empty())
        .map(|dir| PathBuf::from(dir).join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_package_a_binary_needs_is_listed() {
        let listed: Vec<&str> = PACKAGES.lines().map(str::trim).collect();
        for (_, package) in BINARIES {
            // dash is essential in Debian, never missing from a base system.
            if *package != "dash" {
                assert!(listed.contains(package), "{package} is missing from PREREQUISITES");
            }
        }
    }
}
