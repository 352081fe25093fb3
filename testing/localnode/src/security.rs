//! What a container may do to the host: its capabilities, `no_new_privs`, a read-only root, and the
//! checks on paths a Pod spec names (claim names, mount targets, working directories) before the
//! node acts on them. Pure functions; the sandbox and the process launcher apply the results.

use std::path::{Component, Path};

use k8s_openapi::api::core::v1::{AppArmorProfile, PodSecurityContext, SELinuxOptions, SecurityContext};

/// The capabilities a container gets by default: containerd's default set (`oci.defaultUnixCaps`,
/// the same fourteen as Docker's) without `MKNOD`. Every file system a Pod sees is `nodev`, but a
/// Pod that could make device nodes at all would only need one writable mount without it.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// What `capabilities.add` may ask for without `--allow-privileged`: each acts on the Pod's own
/// processes, files and network namespace only. Everything else reaches the shared kernel or the
/// host (`SYS_ADMIN` mounts and namespaces, `SYS_MODULE` loads code, `SYS_TIME` sets the clock,
/// `NET_ADMIN` on the bridge, `DAC_READ_SEARCH` opens host files by handle, `SYS_PTRACE`,
/// `SYS_RAWIO`, `MKNOD`, ...), so the node refuses it.
pub const ADDABLE_CAPABILITIES: &[&str] = DEFAULT_CAPABILITIES;

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

/// Why a container is not started: the message of its `CreateContainerConfigError`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "privileged containers are refused by capstan-localnode: they would hold every capability on \
         the developer's machine (start the node with --allow-privileged to permit them)"
    )]
    Privileged,
    #[error(
        "capability {0} is refused by capstan-localnode: it reaches beyond the Pod into the developer's \
         machine (only {allowed} may be added; start the node with --allow-privileged to permit it)",
        allowed = ADDABLE_CAPABILITIES.join(", ")
    )]
    Capability(String),
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    #[error("unknown seccompProfile type {0:?}")]
    UnknownSeccompProfile(String),
    #[error(
        "securityContext.sysctls ({}) are refused by capstan-localnode: it sets no sysctls, and the Pod \
         would run without them",
        .0.join(", ")
    )]
    Sysctls(Vec<String>),
    #[error(
        "procMount {0:?} is refused by capstan-localnode: every Pod gets a /proc with the runtime's \
         masked and read-only paths (only procMount Default is honoured)"
    )]
    ProcMount(String),
    #[error(
        "{0}.seLinuxOptions are refused by capstan-localnode: it applies no SELinux labels, and the Pod \
         would run unlabelled"
    )]
    SeLinux(&'static str),
    #[error(
        "AppArmor profile {profile} ({field}) is refused by capstan-localnode: it applies no AppArmor \
         profile, and the container would run unconfined (only Unconfined is honoured)"
    )]
    AppArmor { profile: String, field: String },
}

/// The legacy per-container AppArmor annotation's key prefix (before `appArmorProfile`).
pub const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// Works out the confinement, refusing what the node cannot honour rather than ignoring it.
/// `apparmor_annotation` is the container's legacy AppArmor annotation, if the Pod has one.
pub fn confinement(
    pod: Option<&PodSecurityContext>,
    container: Option<&SecurityContext>,
    apparmor_annotation: Option<&str>,
    allow_privileged: bool,
) -> Result<Confinement, Refusal> {
    let sc = container.cloned().unwrap_or_default();
    if let Some(profile) = sc
        .seccomp_profile
        .as_ref()
        .or(pod.and_then(|p| p.seccomp_profile.as_ref()))
    {
        // Accepted and not enforced (documented): RuntimeDefault must not stop a Pod from running.
        if !matches!(profile.type_.as_str(), "RuntimeDefault" | "Unconfined" | "Localhost") {
            return Err(Refusal::UnknownSeccompProfile(profile.type_.clone()));
        }
    }
    refuse_what_cannot_be_honoured(pod, &sc, apparmor_annotation)?;
    if sc.privileged == Some(true) {
        if !allow_privileged {
            return Err(Refusal::Privileged);
        }
        return Ok(Confinement {
            capabilities: None,
            no_new_privs: false,
            read_only_root: sc.read_only_root_filesystem == Some(true),
        });
    }
    let caps = sc.capabilities.unwrap_or_default();
    let drop: Vec<String> = caps
        .drop
        .iter()
        .flatten()
        .map(|c| normalise(c))
        .collect::<Result<_, _>>()?;
    let add: Vec<String> = caps
        .add
        .iter()
        .flatten()
        .map(|c| normalise(c))
        .collect::<Result<_, _>>()?;
    if !allow_privileged && let Some(refused) = add.iter().find(|c| !ADDABLE_CAPABILITIES.contains(&c.as_str())) {
        return Err(Refusal::Capability(refused.clone()));
    }
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

/// A capability name as `setpriv` knows it (upper case, no `CAP_`), or `ALL`.
fn normalise(name: &str) -> Result<String, Refusal> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper).to_owned();
    if bare == "ALL" || KNOWN_CAPABILITIES.contains(&bare.as_str()) {
        Ok(bare)
    } else {
        Err(Refusal::UnknownCapability(name.to_owned()))
    }
}

/// Settings a kubelet would apply and this node cannot: running the Pod without them would
/// silently give it less confinement (or other kernel settings) than its spec asks for.
fn refuse_what_cannot_be_honoured(
    pod: Option<&PodSecurityContext>,
    sc: &SecurityContext,
    apparmor_annotation: Option<&str>,
) -> Result<(), Refusal> {
    let sysctls: Vec<String> = pod
        .and_then(|p| p.sysctls.as_ref())
        .into_iter()
        .flatten()
        .map(|s| format!("{}={}", s.name, s.value))
        .collect();
    if !sysctls.is_empty() {
        return Err(Refusal::Sysctls(sysctls));
    }
    if let Some(proc_mount) = sc.proc_mount.as_deref().filter(|m| *m != "Default") {
        return Err(Refusal::ProcMount(proc_mount.to_owned()));
    }
    let labelled = |o: Option<&SELinuxOptions>| {
        o.is_some_and(|o| {
            [&o.user, &o.role, &o.type_, &o.level]
                .iter()
                .any(|f| f.as_deref().is_some_and(|v| !v.is_empty()))
        })
    };
    if labelled(sc.se_linux_options.as_ref()) {
        return Err(Refusal::SeLinux("securityContext"));
    }
    if labelled(pod.and_then(|p| p.se_linux_options.as_ref())) {
        return Err(Refusal::SeLinux("spec.securityContext"));
    }
    let field = |profile: Option<&AppArmorProfile>, field: &str| match profile {
        Some(p) if p.type_ != "Unconfined" => Err(Refusal::AppArmor {
            profile: match &p.localhost_profile {
                Some(name) => format!("{} {name}", p.type_),
                None => p.type_.clone(),
            },
            field: field.to_owned(),
        }),
        _ => Ok(()),
    };
    field(sc.app_armor_profile.as_ref(), "securityContext.appArmorProfile")?;
    field(
        pod.and_then(|p| p.app_armor_profile.as_ref()),
        "spec.securityContext.appArmorProfile",
    )?;
    if let Some(value) = apparmor_annotation.filter(|v| *v != "unconfined") {
        return Err(Refusal::AppArmor {
            profile: value.to_owned(),
            field: format!("annotation {APPARMOR_ANNOTATION_PREFIX}<container>"),
        });
    }
    Ok(())
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
    use k8s_openapi::api::core::v1::{Capabilities, SeccompProfile, Sysctl};

    use super::*;

    fn sc(f: impl FnOnce(&mut SecurityContext)) -> SecurityContext {
        let mut sc = SecurityContext::default();
        f(&mut sc);
        sc
    }

    #[test]
    fn drop_all_leaves_no_capability_and_add_puts_one_back() -> Result<(), Refusal> {
        let none = confinement(
            None,
            Some(&sc(|s| {
                s.capabilities = Some(Capabilities {
                    drop: Some(vec!["ALL".into()]),
                    add: None,
                })
            })),
            None,
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
            None,
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
    fn defaults_are_the_runtime_set_with_no_new_privs() -> Result<(), Refusal> {
        let c = confinement(None, None, None, false)?;
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
        assert!(
            confinement(None, Some(&privileged), None, false)
                .is_err_and(|r| r == Refusal::Privileged && r.to_string().contains("--allow-privileged"))
        );
        assert!(confinement(None, Some(&privileged), None, true).is_ok_and(|c| c.capabilities.is_none()));
        let unknown = sc(|s| {
            s.capabilities = Some(Capabilities {
                add: Some(vec!["EVERYTHING".into()]),
                drop: None,
            })
        });
        assert_eq!(
            confinement(None, Some(&unknown), None, false),
            Err(Refusal::UnknownCapability("EVERYTHING".into()))
        );
    }

    #[test]
    fn runtime_default_seccomp_and_read_only_root_are_accepted() -> Result<(), Refusal> {
        let restricted = sc(|s| {
            s.read_only_root_filesystem = Some(true);
            s.allow_privilege_escalation = Some(false);
            s.seccomp_profile = Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            });
        });
        let c = confinement(None, Some(&restricted), None, false)?;
        assert!(c.read_only_root && c.no_new_privs);
        Ok(())
    }

    fn adding(caps: &[&str]) -> SecurityContext {
        sc(|s| {
            s.capabilities = Some(Capabilities {
                add: Some(caps.iter().map(|c| (*c).to_owned()).collect()),
                drop: Some(vec!["ALL".into()]),
            })
        })
    }

    #[test]
    fn the_default_set_is_containerds_without_mknod() {
        assert_eq!(DEFAULT_CAPABILITIES.len(), 13);
        assert!(!DEFAULT_CAPABILITIES.contains(&"MKNOD"));
        assert!(DEFAULT_CAPABILITIES.iter().all(|c| KNOWN_CAPABILITIES.contains(c)));
    }

    #[test]
    fn only_allowlisted_capabilities_may_be_added() -> Result<(), Refusal> {
        for cap in ADDABLE_CAPABILITIES {
            let c = confinement(None, Some(&adding(&[cap])), None, false)?;
            assert_eq!(c.capabilities, Some(vec![(*cap).to_owned()]));
        }
        for (asked, named) in [
            ("SYS_ADMIN", "SYS_ADMIN"),
            ("CAP_SYS_ADMIN", "SYS_ADMIN"),
            ("sys_module", "SYS_MODULE"),
            ("ALL", "ALL"),
            ("SYS_TIME", "SYS_TIME"),
            ("NET_ADMIN", "NET_ADMIN"),
            ("MKNOD", "MKNOD"),
            ("DAC_READ_SEARCH", "DAC_READ_SEARCH"),
            ("SYS_PTRACE", "SYS_PTRACE"),
        ] {
            let refused = confinement(None, Some(&adding(&["CHOWN", asked])), None, false);
            assert_eq!(refused, Err(Refusal::Capability(named.to_owned())), "{asked}");
            let message = refused.err().map(|r| r.to_string()).unwrap_or_default();
            assert!(
                message.contains(named) && message.contains("--allow-privileged"),
                "{message}"
            );
        }
        // A node started with --allow-privileged grants what privileged would.
        let all = confinement(None, Some(&adding(&["ALL"])), None, true)?;
        assert_eq!(all.capabilities.map(|c| c.len()), Some(KNOWN_CAPABILITIES.len()));
        Ok(())
    }

    #[test]
    fn what_the_node_cannot_honour_is_refused() {
        let pod = |f: fn(&mut PodSecurityContext)| {
            let mut p = PodSecurityContext::default();
            f(&mut p);
            p
        };
        let sysctls = pod(|p| {
            p.sysctls = Some(vec![Sysctl {
                name: "kernel.shm_rmid_forced".into(),
                value: "1".into(),
            }])
        });
        let refused = confinement(Some(&sysctls), None, None, true);
        assert_eq!(refused, Err(Refusal::Sysctls(vec!["kernel.shm_rmid_forced=1".into()])));
        assert!(refused.is_err_and(|r| r.to_string().contains("sysctls")));

        let unmasked = sc(|s| s.proc_mount = Some("Unmasked".into()));
        assert_eq!(
            confinement(None, Some(&unmasked), None, true),
            Err(Refusal::ProcMount("Unmasked".into()))
        );
        assert!(confinement(None, Some(&sc(|s| s.proc_mount = Some("Default".into()))), None, false).is_ok());

        let selinux = SELinuxOptions {
            type_: Some("spc_t".into()),
            ..SELinuxOptions::default()
        };
        let labelled = sc(|s| s.se_linux_options = Some(selinux.clone()));
        assert_eq!(
            confinement(None, Some(&labelled), None, false),
            Err(Refusal::SeLinux("securityContext"))
        );
        let pod_labelled = PodSecurityContext {
            se_linux_options: Some(selinux),
            ..PodSecurityContext::default()
        };
        assert_eq!(
            confinement(Some(&pod_labelled), None, None, false),
            Err(Refusal::SeLinux("spec.securityContext"))
        );
        let empty = sc(|s| s.se_linux_options = Some(SELinuxOptions::default()));
        assert!(confinement(None, Some(&empty), None, false).is_ok());

        let profile = |type_: &str| AppArmorProfile {
            type_: type_.into(),
            localhost_profile: (type_ == "Localhost").then(|| "mine".into()),
        };
        for type_ in ["RuntimeDefault", "Localhost"] {
            let confined = sc(|s| s.app_armor_profile = Some(profile(type_)));
            let refused = confinement(None, Some(&confined), None, false);
            assert!(
                refused
                    .as_ref()
                    .is_err_and(|r| matches!(r, Refusal::AppArmor { .. }) && r.to_string().contains(type_)),
                "{refused:?}"
            );
        }
        let unconfined = sc(|s| s.app_armor_profile = Some(profile("Unconfined")));
        assert!(confinement(None, Some(&unconfined), None, false).is_ok());
        assert!(
            confinement(None, None, Some("runtime/default"), false)
                .is_err_and(|r| r.to_string().contains("runtime/default"))
        );
        assert!(confinement(None, None, Some("unconfined"), false).is_ok());
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
