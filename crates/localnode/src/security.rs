//! What a container may do to the host: its capabilities, `no_new_privs`, a read-only root, and the
//! checks on paths a Pod spec names (claim names, mount targets, working directories) before the
//! node acts on them. Pure functions; the sandbox and the process launcher apply the results.

use std::path::{Component, Path};

use k8s_openapi::api::core::v1::{PodSecurityContext, SecurityContext};

/// The capabilities a container gets by default: the container runtimes' (Docker, containerd) set.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Every Linux capability `setpriv` knows by name.
const KNOWN_CAPABILITIES: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

/// How a container's process is confined, from its and its Pod's securityContext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confinement {
    /// The capability bounding set (upper-case names without `CAP_`); `None` keeps all
    /// (a privileged container on a node started with `allow_privileged`).
    pub capabilities: Option<Vec<String>>,
    /// `no_new_privs`: set for every container that is not privileged, so setuid programs of the
    /// host (which the Pod's root shares) never raise privileges, whatever
    /// `allowPrivilegeEscalation` says.
    pub no_new_privs: bool,
    /// `readOnlyRootFilesystem`: the root (and the private `/tmp`) mounted read-only for this
    /// container; volumes keep their own mode.
    pub read_only_root: bool,
}

/// Works out the confinement; `Err` is the message of a `CreateContainerConfigError`.
pub fn confinement(
    pod: Option<&PodSecurityContext>,
    container: Option<&SecurityContext>,
    allow_privileged: bool,
) -> Result<Confinement, String> {
    let sc = container.cloned().unwrap_or_default();
    if let Some(profile) = sc
        .seccomp_profile
        .as_ref()
        .or(pod.and_then(|p| p.seccomp_profile.as_ref()))
    {
        // Accepted and not enforced (documented): RuntimeDefault must not stop a Pod from running.
        if !matches!(profile.type_.as_str(), "RuntimeDefault" | "Unconfined" | "Localhost") {
            return Err(format!("unknown seccompProfile type {:?}", profile.type_));
        }
    }
    if sc.privileged == Some(true) {
        if !allow_privileged {
            return Err(
                "privileged containers are refused by capstan-localnode: they would hold every \
                 capability on the developer's machine (start the node with --allow-privileged to permit them)"
                    .to_owned(),
            );
        }
        return Ok(Confinement {
            capabilities: None,
            no_new_privs: false,
            read_only_root: sc.read_only_root_filesystem == Some(true),
        });
    }
    let normalise = |name: &String| -> Result<String, String> {
        let upper = name.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("CAP_").unwrap_or(&upper).to_owned();
        if bare == "ALL" || KNOWN_CAPABILITIES.contains(&bare.as_str()) {
            Ok(bare)
        } else {
            Err(format!("unknown capability {name:?}"))
        }
    };
    let caps = sc.capabilities.unwrap_or_default();
    let drop: Vec<String> = caps.drop.iter().flatten().map(normalise).collect::<Result<_, _>>()?;
    let add: Vec<String> = caps.add.iter().flatten().map(normalise).collect::<Result<_, _>>()?;
    let mut set: Vec<String> = if drop.iter().any(|c| c == "ALL") {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .map(|c| (*c).to_owned())
            .filter(|c| !drop.contains(c))
            .collect()
    };
    for cap in add {
        if cap == "ALL" {
            set = KNOWN_CAPABILITIES.iter().map(|c| (*c).to_owned()).collect();
        } else if !set.contains(&cap) {
            set.push(cap);
        }
    }
    set.sort();
    set.dedup();
    Ok(Confinement {
        capabilities: Some(set),
        no_new_privs: true,
        read_only_root: sc.read_only_root_filesystem == Some(true),
    })
}

impl Confinement {
    /// `setpriv` options applying this confinement.
    pub fn setpriv_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(caps) = &self.capabilities {
            let mut spec = String::from("-all");
            for cap in caps {
                spec.push_str(",+");
                spec.push_str(&cap.to_ascii_lowercase());
            }
            args.push(format!("--bounding-set={spec}"));
            args.push("--inh-caps=-all".to_owned());
        }
        if self.no_new_privs {
            args.push("--no-new-privs".to_owned());
        }
        args
    }
}

/// A DNS-1123 subdomain (what the apiserver requires of object names, e.g. a claim's).
pub fn is_dns1123_subdomain(name: &str) -> bool {
    let label_ok = |label: &str| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok)
}

/// The names the sandbox reserves in a Pod's root while it assembles it.
pub const RESERVED_PREFIX: &str = "/.capstan-";

/// Checks a path inside the Pod's root (mount target, working directory): absolute, no `..`, not
/// one of the sandbox's own names.
pub fn check_pod_path(what: &str, path: &str) -> Result<(), String> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(format!("{what} {path:?} must be an absolute path"));
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("{what} {path:?} must not contain `..`"));
    }
    if path.starts_with(RESERVED_PREFIX) {
        return Err(format!("{what} {path:?} is reserved by capstan-localnode"));
    }
    if path.contains('\0') || path.contains('\n') {
        return Err(format!("{what} {path:?} contains a control character"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Capabilities, SeccompProfile};

    use super::*;

    fn sc(f: impl FnOnce(&mut SecurityContext)) -> SecurityContext {
        let mut sc = SecurityContext::default();
        f(&mut sc);
        sc
    }

    #[test]
    fn drop_all_leaves_no_capability_and_add_puts_one_back() -> Result<(), String> {
        let none = confinement(
            None,
            Some(&sc(|s| {
                s.capabilities = Some(Capabilities {
                    drop: Some(vec!["ALL".into()]),
                    add: None,
                })
            })),
            false,
        )?;
        assert_eq!(none.capabilities, Some(vec![]));
        assert!(none.setpriv_args().contains(&"--bounding-set=-all".to_owned()));
        let one = confinement(
            None,
            Some(&sc(|s| {
                s.capabilities = Some(Capabilities {
                    drop: Some(vec!["ALL".into()]),
                    add: Some(vec!["CAP_NET_BIND_SERVICE".into()]),
                })
            })),
            false,
        )?;
        assert_eq!(one.capabilities, Some(vec!["NET_BIND_SERVICE".to_owned()]));
        assert!(
            one.setpriv_args()
                .contains(&"--bounding-set=-all,+net_bind_service".to_owned())
        );
        Ok(())
    }

    #[test]
    fn defaults_are_the_runtime_set_with_no_new_privs() -> Result<(), String> {
        let c = confinement(None, None, false)?;
        assert_eq!(c.capabilities.as_ref().map(Vec::len), Some(DEFAULT_CAPABILITIES.len()));
        assert!(
            !c.capabilities
                .iter()
                .flatten()
                .any(|c| c == "SYS_ADMIN" || c == "NET_ADMIN")
        );
        assert!(c.no_new_privs);
        assert!(c.setpriv_args().contains(&"--no-new-privs".to_owned()));
        Ok(())
    }

    #[test]
    fn privileged_needs_the_flag_and_unknown_capabilities_are_refused() {
        let privileged = sc(|s| s.privileged = Some(true));
        assert!(confinement(None, Some(&privileged), false).is_err_and(|m| m.contains("--allow-privileged")));
        assert!(confinement(None, Some(&privileged), true).is_ok_and(|c| c.capabilities.is_none()));
        let unknown = sc(|s| {
            s.capabilities = Some(Capabilities {
                add: Some(vec!["EVERYTHING".into()]),
                drop: None,
            })
        });
        assert!(confinement(None, Some(&unknown), false).is_err());
    }

    #[test]
    fn runtime_default_seccomp_and_read_only_root_are_accepted() -> Result<(), String> {
        let restricted = sc(|s| {
            s.read_only_root_filesystem = Some(true);
            s.allow_privilege_escalation = Some(false);
            s.seccomp_profile = Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            });
        });
        let c = confinement(None, Some(&restricted), false)?;
        assert!(c.read_only_root && c.no_new_privs);
        Ok(())
    }

    #[test]
    fn claim_names_and_pod_paths_are_checked() {
        assert!(is_dns1123_subdomain("data-redis-0"));
        assert!(is_dns1123_subdomain("a.b"));
        for bad in ["../../etc", "/etc", "..", "", "A", "a/b", "-a", "a..b"] {
            assert!(!is_dns1123_subdomain(bad), "{bad} accepted");
        }
        assert!(check_pod_path("mountPath", "/data/x").is_ok());
        for bad in ["data", "/a/../../etc", "/.capstan-oldroot/etc"] {
            assert!(check_pod_path("mountPath", bad).is_err(), "{bad} accepted");
        }
    }
}
