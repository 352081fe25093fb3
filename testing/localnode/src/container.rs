//! What a container runs and how it is started: the image table (which host binary stands in for
//! an image, and what it adds to the Pod's root), the environment (`env`, `envFrom`, `$(VAR)`
//! expansion), the user, groups and confinement its Pod asks for, and the process itself, a host
//! process placed into the Pod's namespaces and root by `nsenter`, with its user set by `setpriv`.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::Client;
use tokio::process::Command;

use crate::{
    pod_data,
    prerequisites::which,
    sandbox::{RootDir, RootFile, Sandbox},
    security::{self, Confinement},
    status::WaitingReason,
};

/// The official redis image's uid and gid (`redis`); the entrypoint drops to it from root.
pub const REDIS_ID: u32 = 999;
/// The official memcached image's uid and gid (`memcache`, its `USER`).
pub const MEMCACHED_ID: u32 = 11211;
/// The PATH of the official images (and of a kubelet's containers by default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Which emulation an image gets, by the last path component of its name without tag or digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image {
    Memcached,
    Redis,
    Busybox,
    /// An image mapped to a host binary by [`crate::LocalNodeConfig::images`].
    Binary(PathBuf),
    /// Anything else: runnable only with an explicit `command`.
    Other,
}

/// The last path component of an image reference without tag or digest:
/// `docker.io/library/redis:7.2@sha256:…` → `redis`.
pub fn image_name(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split(':').next().unwrap_or(last)
}

pub fn classify(image: &str, binaries: &[(String, PathBuf)]) -> Image {
    let name = image_name(image);
    if let Some((_, binary)) = binaries.iter().find(|(prefix, _)| name.starts_with(prefix.as_str())) {
        return Image::Binary(binary.clone());
    }
    if name.starts_with("memcached") {
        Image::Memcached
    } else if name.starts_with("redis") {
        Image::Redis
    } else if name.starts_with("busybox") {
        Image::Busybox
    } else {
        Image::Other
    }
}

/// Where an emulated image's binary is placed inside the Pod's root, readable and executable by
/// any user (a locally built binary may live under `/root`).
pub fn in_pod_binary_path(binary: &Path) -> String {
    let name = binary
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("/usr/local/bin/{name}")
}

/// What an emulated image adds to the Pod's root: the redis image's `redis-server` and
/// `redis-sentinel` (protected mode off, as the image is built) and its `/data`, or the host binary
/// a configured prefix maps to.
pub fn root_additions(image: &Image, c: &Container) -> Result<(Vec<RootFile>, Vec<RootDir>), String> {
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    match image {
        Image::Redis => {
            for program in ["redis-server", "redis-sentinel"] {
                files.push(RootFile {
                    path: format!("/usr/local/bin/{program}"),
                    contents: format!(
                        "#!/bin/sh\n# capstan-localnode: the official redis image is built with protected mode off.\nexec /usr/bin/{program} \"$@\" --protected-mode no\n"
                    )
                    .into_bytes(),
                    mode: 0o755,
                });
            }
            if c.working_dir.is_none() {
                dirs.push(RootDir {
                    path: "/data".into(),
                    uid: REDIS_ID,
                    gid: REDIS_ID,
                });
            }
        }
        Image::Binary(binary) => {
            let contents = std::fs::read(binary).map_err(|e| format!("{}: {e}", binary.display()))?;
            files.push(RootFile {
                path: in_pod_binary_path(binary),
                contents,
                mode: 0o755,
            });
        }
        Image::Memcached | Image::Busybox | Image::Other => {}
    }
    Ok((files, dirs))
}

/// The argv of a container, its image's default user and working directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub argv: Vec<String>,
    pub default_user: Option<(u32, u32)>,
    pub default_workdir: Option<String>,
}

/// Applies the image table. `Err` is the reason the container stays Waiting.
pub fn resolve(image: &Image, image_ref: &str, command: &[String], args: &[String]) -> Result<Resolved, String> {
    let mut resolved = Resolved {
        argv: Vec::new(),
        default_user: None,
        default_workdir: None,
    };
    match image {
        Image::Memcached => {
            // docker-entrypoint.sh: a first argument that is a flag means "memcached <flags>".
            resolved.argv = entrypoint(command, args, "memcached", |first| first.starts_with('-'));
            resolved.default_user = Some((MEMCACHED_ID, MEMCACHED_ID));
            resolved.argv[0] = resolve_program(&resolved.argv[0])?;
        }
        Image::Redis => {
            // docker-entrypoint.sh: a flag or a `.conf` file means "redis-server <args>"; running as
            // root with redis-server first, it drops to the redis user.
            resolved.argv = entrypoint(command, args, "redis-server", |first| {
                first.starts_with('-') || first.ends_with(".conf")
            });
            let program = resolved.argv[0].rsplit('/').next().unwrap_or_default().to_owned();
            if program == "redis-server" || program == "redis-sentinel" {
                // The wrapper the sandbox places there turns protected mode off, as the image does.
                resolved.argv[0] = format!("/usr/local/bin/{program}");
                if command.is_empty() {
                    resolved.default_user = Some((REDIS_ID, REDIS_ID));
                }
            } else {
                resolved.argv[0] = resolve_program(&resolved.argv[0])?;
            }
            resolved.default_workdir = Some("/data".to_owned());
        }
        Image::Busybox => {
            // Every program of the busybox image is a busybox applet.
            let mut argv = if command.is_empty() && args.is_empty() {
                vec!["sh".to_owned()]
            } else {
                command.iter().chain(args).cloned().collect()
            };
            let applet = argv[0].rsplit('/').next().unwrap_or_default().to_owned();
            argv[0] = applet;
            let busybox = which("busybox").ok_or("busybox is not installed on the host (Debian package busybox)")?;
            argv.insert(0, busybox.to_string_lossy().into_owned());
            resolved.argv = argv;
        }
        Image::Binary(binary) => {
            let path = in_pod_binary_path(binary);
            resolved.argv = if command.is_empty() {
                std::iter::once(path).chain(args.iter().cloned()).collect()
            } else {
                let mut argv: Vec<String> = command.iter().chain(args).cloned().collect();
                if argv[0] != path && !argv[0].contains('/') {
                    argv[0] = resolve_program(&argv[0]).unwrap_or(path);
                }
                argv
            };
        }
        Image::Other => {
            if command.is_empty() {
                return Err(format!(
                    "image {image_ref} is not in the capstan-localnode image table (memcached, redis, \
                     busybox) and the container has no command to run on the host"
                ));
            }
            resolved.argv = command.iter().chain(args).cloned().collect();
            resolved.argv[0] = resolve_program(&resolved.argv[0])?;
        }
    }
    Ok(resolved)
}

fn entrypoint(command: &[String], args: &[String], default: &str, prepend: impl Fn(&str) -> bool) -> Vec<String> {
    if !command.is_empty() {
        return command.iter().chain(args).cloned().collect();
    }
    match args.first() {
        None => vec![default.to_owned()],
        Some(first) if prepend(first) => std::iter::once(default.to_owned())
            .chain(args.iter().cloned())
            .collect(),
        Some(_) => args.to_vec(),
    }
}

fn resolve_program(program: &str) -> Result<String, String> {
    if program.starts_with('/') {
        return Ok(program.to_owned());
    }
    which(program)
        .map(|p| p.to_string_lossy().into_owned())
        .ok_or_else(|| format!("executable {program:?} was not found on the host's PATH"))
}

/// Expands `$(VAR)` like the kubelet: `$$` escapes, unknown references stay as written.
pub fn expand(input: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, value)) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// What [`prepare`] needs besides the container: its Pod, the Pod's sandbox and what the node
/// decides.
pub struct ContainerContext<'a> {
    pub client: &'a Client,
    pub pod: &'a Pod,
    pub sandbox: &'a Sandbox,
    /// The node's image table ([`crate::LocalNodeConfig::images`]).
    pub images: &'a [(String, PathBuf)],
    pub allow_privileged: bool,
    pub hostname: String,
    pub host_ip: String,
    /// The `kubernetes` Service's address, once known, for KUBERNETES_SERVICE_HOST.
    pub kubernetes_ip: Option<String>,
}

/// The command and process settings of a container, or the Waiting reason and message.
pub async fn prepare(
    ctx: &ContainerContext<'_>,
    c: &Container,
) -> Result<(ProcessSpec, Vec<String>), (WaitingReason, String)> {
    let image_ref = c.image.clone().unwrap_or_default();
    let image = classify(&image_ref, ctx.images);
    let spec = ctx.pod.spec.clone().unwrap_or_default();
    let pod_sc = spec.security_context.clone().unwrap_or_default();
    let sc = c.security_context.clone().unwrap_or_default();
    let pod_ip = ctx.sandbox.network.ip.to_string();

    let mut base = vec![
        ("PATH".to_owned(), DEFAULT_PATH.to_owned()),
        ("HOSTNAME".to_owned(), ctx.hostname.clone()),
    ];
    if let Some(ip) = ctx.kubernetes_ip.clone() {
        base.extend([
            ("KUBERNETES_SERVICE_HOST".to_owned(), ip.clone()),
            ("KUBERNETES_SERVICE_PORT".to_owned(), "443".to_owned()),
            ("KUBERNETES_SERVICE_PORT_HTTPS".to_owned(), "443".to_owned()),
            ("KUBERNETES_PORT".to_owned(), format!("tcp://{ip}:443")),
            ("KUBERNETES_PORT_443_TCP".to_owned(), format!("tcp://{ip}:443")),
            ("KUBERNETES_PORT_443_TCP_PROTO".to_owned(), "tcp".to_owned()),
            ("KUBERNETES_PORT_443_TCP_PORT".to_owned(), "443".to_owned()),
            ("KUBERNETES_PORT_443_TCP_ADDR".to_owned(), ip),
        ]);
    }
    let env = environment(ctx.client, ctx.pod, c, base, &pod_ip, &ctx.host_ip)
        .await
        .map_err(|m| (WaitingReason::CreateContainerConfigError, m))?;
    let command: Vec<String> = c.command.iter().flatten().map(|s| expand(s, &env)).collect();
    let args: Vec<String> = c.args.iter().flatten().map(|s| expand(s, &env)).collect();
    let resolved =
        resolve(&image, &image_ref, &command, &args).map_err(|m| (WaitingReason::CreateContainerError, m))?;

    let to_u32 = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
    let uid = to_u32(sc.run_as_user.or(pod_sc.run_as_user))
        .or(resolved.default_user.map(|u| u.0))
        .unwrap_or(0);
    let gid = to_u32(sc.run_as_group.or(pod_sc.run_as_group))
        .or(resolved.default_user.map(|u| u.1))
        .unwrap_or(0);
    if sc.run_as_non_root.or(pod_sc.run_as_non_root) == Some(true) && uid == 0 {
        return Err((
            WaitingReason::CreateContainerConfigError,
            "container has runAsNonRoot and image will run as root".to_owned(),
        ));
    }
    let apparmor_annotation = ctx
        .pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(&format!("{}{}", security::APPARMOR_ANNOTATION_PREFIX, c.name)));
    let confinement = security::confinement(
        spec.security_context.as_ref(),
        c.security_context.as_ref(),
        apparmor_annotation.map(String::as_str),
        ctx.allow_privileged,
    )
    .map_err(|r| (WaitingReason::CreateContainerConfigError, r.to_string()))?;
    let private_tmp = !spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .flat_map(|c| c.volume_mounts.iter().flatten())
        .any(|m| m.mount_path.trim_end_matches('/') == "/tmp");
    let mut groups: Vec<u32> = pod_sc
        .fs_group
        .into_iter()
        .chain(pod_sc.supplemental_groups.into_iter().flatten())
        .filter_map(|g| u32::try_from(g).ok())
        .collect();
    groups.dedup();
    let mut env = env;
    if !env.iter().any(|(k, _)| k == "HOME") {
        env.push((
            "HOME".to_owned(),
            if uid == 0 { "/root".to_owned() } else { "/".to_owned() },
        ));
    }
    let workdir = c
        .working_dir
        .clone()
        .or(resolved.default_workdir)
        .unwrap_or_else(|| "/".to_owned());
    Ok((
        ProcessSpec {
            holder_pid: ctx.sandbox.holder_pid,
            uid,
            gid,
            groups,
            workdir,
            env,
            confinement,
            private_tmp,
            beside: None,
        },
        resolved.argv,
    ))
}

/// The container's environment: the Kubernetes Service variables, then `envFrom`, then `env`,
/// each with `$(VAR)` references to earlier entries expanded.
async fn environment(
    client: &Client,
    pod: &Pod,
    container: &Container,
    base: Vec<(String, String)>,
    pod_ip: &str,
    host_ip: &str,
) -> Result<Vec<(String, String)>, String> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut env = base;
    let set = |env: &mut Vec<(String, String)>, key: String, value: String| {
        env.retain(|(k, _)| k != &key);
        env.push((key, value));
    };
    for source in container.env_from.iter().flatten() {
        for (key, value) in pod_data::env_from_source(client, &namespace, source).await? {
            set(&mut env, key, value);
        }
    }
    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            None => Some(expand(var.value.as_deref().unwrap_or_default(), &env)),
            Some(source) => pod_data::env_value_from(client, pod, &var.name, source, pod_ip, host_ip).await?,
        };
        if let Some(value) = value {
            set(&mut env, var.name.clone(), value);
        }
    }
    Ok(env)
}

/// How to start a process inside a Pod: which sandbox, as whom, where, with what environment and
/// what confinement.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub holder_pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub workdir: String,
    pub env: Vec<(String, String)>,
    pub confinement: Confinement,
    /// Whether `/tmp` is the sandbox's own tmpfs (made read-only with a read-only root) rather
    /// than a volume.
    pub private_tmp: bool,
    /// For commands run beside a running container (exec, probes, hooks): its pid, whose mount
    /// namespace (read-only root) they join instead of the sandbox's.
    pub beside: Option<u32>,
}

impl ProcessSpec {
    /// The same process settings, for commands run beside the container with this pid.
    pub fn beside(&self, pid: Option<u32>) -> ProcessSpec {
        ProcessSpec {
            beside: pid,
            ..self.clone()
        }
    }

    /// `nsenter` joins the Pod's namespaces (mount, UTS, IPC, network, PID) and root and forks the
    /// container's process into the Pod's PID namespace: the spawned process is `nsenter`, its one
    /// child the container (see [`crate::sandbox::child_of`]). With a read-only root a private
    /// mount namespace remounts `/` read-only first. `setpriv` sets the user, groups, capability
    /// bounding set and `no_new_privs` (and SIGKILL should its parent die); `env` sets a clean
    /// environment and the working directory. Everything after `nsenter` `exec`s the next.
    pub fn command(&self, argv: &[String]) -> Command {
        let mut command = Command::new("setpriv");
        command
            .args(["--pdeathsig=KILL", "nsenter"])
            .arg(format!("--target={}", self.beside.unwrap_or(self.holder_pid)))
            .args(["--mount", "--uts", "--ipc", "--net", "--pid", "--root", "--wd", "--"]);
        if self.confinement.read_only_root && self.beside.is_none() {
            let tmp = if self.private_tmp {
                "mount -o remount,bind,ro,nosuid,nodev /tmp && "
            } else {
                ""
            };
            command.args(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c"]);
            command.arg(format!("mount -o remount,bind,ro,nodev / && {tmp}exec \"$@\""));
            command.arg("sh");
        }
        command
            .arg("setpriv")
            .arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid));
        if self.groups.is_empty() {
            command.arg("--clear-groups");
        } else {
            let groups: Vec<String> = self.groups.iter().map(u32::to_string).collect();
            command.arg(format!("--groups={}", groups.join(",")));
        }
        command.args(self.confinement.setpriv_args());
        command
            .args(["--pdeathsig=KILL", "--", "env", "-i"])
            .arg(format!("--chdir={}", self.workdir));
        for (k, v) in &self.env {
            command.arg(format!("{k}={v}"));
        }
        command.args(argv).stdin(Stdio::null()).kill_on_drop(false);
        command
    }

    /// Runs a one-off command in the sandbox (`kubectl exec`, exec probes and hooks) and collects
    /// its output. A bare program name resolves on the host's PATH, which the Pod's root shares.
    pub async fn exec(&self, argv: &[String]) -> std::io::Result<std::process::Output> {
        let mut argv = argv.to_vec();
        if let Some(first) = argv.first_mut()
            && !first.contains('/')
            && let Some(path) = crate::prerequisites::which(first)
        {
            *first = path.to_string_lossy().into_owned();
        }
        self.command(&argv)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output()
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn image_names_drop_registry_tag_and_digest() {
        assert_eq!(image_name("docker.io/library/redis:7.2@sha256:abc"), "redis");
        assert_eq!(image_name("localhost:5000/memcached"), "memcached");
        assert_eq!(image_name("busybox"), "busybox");
    }

    #[test]
    fn redis_flags_get_redis_server_prepended_and_the_redis_user() -> Result<(), String> {
        let resolved = resolve(&Image::Redis, "redis:7", &[], &strings(&["--port", "6380"]))?;
        assert_eq!(
            resolved.argv,
            strings(&["/usr/local/bin/redis-server", "--port", "6380"])
        );
        assert_eq!(resolved.default_user, Some((REDIS_ID, REDIS_ID)));
        let conf = resolve(&Image::Redis, "redis:7", &[], &strings(&["/etc/redis.conf"]))?;
        assert_eq!(conf.argv[0], "/usr/local/bin/redis-server");
        Ok(())
    }

    #[test]
    fn an_unknown_image_without_command_is_refused_with_a_reason() {
        let refused = resolve(&Image::Other, "nginx:1", &[], &[]);
        assert!(refused.is_err_and(|reason| reason.contains("nginx:1")));
    }

    #[test]
    fn busybox_programs_are_applets() -> Result<(), String> {
        if which("busybox").is_none() {
            return Ok(());
        }
        let resolved = resolve(&Image::Busybox, "busybox", &strings(&["/bin/sh", "-c", "true"]), &[])?;
        assert_eq!(&resolved.argv[1..], &strings(&["sh", "-c", "true"])[..]);
        Ok(())
    }

    #[test]
    fn expansion_follows_the_kubelet() {
        let env = vec![("A".to_owned(), "1".to_owned())];
        assert_eq!(expand("x$(A)y$(B)$$(A)", &env), "x1y$(B)$(A)");
    }
}
