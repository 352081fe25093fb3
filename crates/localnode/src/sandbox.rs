//! A Pod's sandbox: its network namespace, and a holder process that owns the Pod's mount and UTS
//! namespaces. The holder mounts an overlay of the host's `/` with a per-Pod upper layer, a private
//! `/proc`, `/sys` and `/tmp`, `pivot_root`s into it, bind-mounts the volumes at their `mountPath`s
//! (created inside the new root, so the host is never touched), detaches the host's mounts and then
//! sleeps. Containers join it with `nsenter --target <holder>`. The mounts live and die with the
//! holder's mount namespace: they never appear in the host's mount table.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use crate::{Error, host, network::PodNetwork, volumes::Mount};

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A file to place in the Pod's root before it starts (written into the overlay's upper layer).
#[derive(Debug, Clone)]
pub struct RootFile {
    pub path: String,
    pub contents: Vec<u8>,
    pub mode: u32,
}

/// A directory to create in the Pod's root, with its owner.
#[derive(Debug, Clone)]
pub struct RootDir {
    pub path: String,
    pub uid: u32,
    pub gid: u32,
}

pub struct SandboxSpec {
    pub dir: PathBuf,
    pub hostname: String,
    pub mounts: Vec<Mount>,
    pub files: Vec<RootFile>,
    pub dirs: Vec<RootDir>,
}

pub struct Sandbox {
    pub network: PodNetwork,
    pub holder_pid: u32,
    holder: Child,
    dir: PathBuf,
}

impl Sandbox {
    /// Starts the holder inside `network` (which must exist) and waits until its mounts are ready.
    pub async fn start(spec: SandboxSpec, network: PodNetwork) -> Result<Sandbox, Error> {
        let upper = spec.dir.join("upper");
        let work = spec.dir.join("work");
        let root = spec.dir.join("root");
        for dir in [&upper, &work, &root] {
            std::fs::create_dir_all(dir).map_err(Error::io("creating", dir.clone()))?;
        }
        for file in &spec.files {
            let path = upper.join(file.path.trim_start_matches('/'));
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(Error::io("creating", parent))?;
            }
            std::fs::write(&path, &file.contents).map_err(Error::io("writing", path.clone()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(file.mode))
                .map_err(Error::io("chmod", path.clone()))?;
        }
        let log = std::fs::File::create(spec.dir.join("sandbox.log"))
            .map_err(Error::io("creating", spec.dir.join("sandbox.log")))?;
        let script = holder_script(&spec, &upper, &work, &root);
        let mut holder = Command::new("setpriv")
            .args(["--pdeathsig=KILL", "nsenter"])
            .arg(format!("--net={}", network.netns_path()))
            .args([
                "unshare",
                "--mount",
                "--uts",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
            ])
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::Command {
                command: "the sandbox holder (setpriv nsenter unshare sh)".into(),
                message: e.to_string(),
            })?;
        let holder_pid = holder.id().unwrap_or_default();
        let stdout = holder.stdout.take();
        let ready = async {
            let mut lines = BufReader::new(stdout?).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.trim() == "ready" {
                    return Some(());
                }
            }
            None
        };
        let sandbox = Sandbox {
            network,
            holder_pid,
            holder,
            dir: spec.dir.clone(),
        };
        match tokio::time::timeout(READY_TIMEOUT, ready).await {
            Ok(Some(())) => Ok(sandbox),
            _ => {
                let log = std::fs::read_to_string(spec.dir.join("sandbox.log")).unwrap_or_default();
                sandbox.stop().await;
                Err(Error::Other(format!("the Pod sandbox did not start: {}", log.trim())))
            }
        }
    }

    /// Kills the holder and everything in the Pod's network namespace, removes the namespace, the
    /// veth pair and the Pod's files.
    pub async fn stop(mut self) {
        let _ = self.holder.start_kill();
        let _ = self.holder.wait().await;
        self.network.delete().await;
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::debug!(error = %e, dir = %self.dir.display(), "removing a Pod's files");
        }
    }
}

fn holder_script(spec: &SandboxSpec, upper: &Path, work: &Path, root: &Path) -> String {
    let q = |p: &Path| host::shell_quote(&p.to_string_lossy());
    let root_q = q(root);
    let mut s = String::from("set -e\n");
    s += &format!(
        "mount -t overlay overlay -o lowerdir=/,upperdir={},workdir={} {root_q}\n",
        upper.to_string_lossy(),
        work.to_string_lossy()
    );
    s += &format!("mount -t proc proc {root_q}/proc\n");
    s += &format!("mount --rbind /dev {root_q}/dev\n");
    s += &format!("mount -t sysfs sysfs {root_q}/sys\n");
    s += &format!("mount -t tmpfs -o mode=1777 tmpfs {root_q}/tmp\n");
    s += &format!("hostname {}\n", host::shell_quote(&spec.hostname));
    s += &format!("cd {root_q}\nmkdir -p .capstan-oldroot\npivot_root . .capstan-oldroot\ncd /\n");
    // From here on paths resolve inside the Pod's root (absolute symlinks such as /var/run too).
    for dir in &spec.dirs {
        let path = host::shell_quote(&dir.path);
        s += &format!("mkdir -p {path}\nchown {}:{} {path}\n", dir.uid, dir.gid);
    }
    for mount in &spec.mounts {
        let source = host::shell_quote(&format!("/.capstan-oldroot{}", mount.source.to_string_lossy()));
        let target = host::shell_quote(&mount.target);
        if mount.source.is_file() {
            s += &format!("mkdir -p \"$(dirname {target})\"\n[ -e {target} ] || touch {target}\n");
        } else {
            s += &format!("mkdir -p {target}\n");
        }
        s += &format!("mount --bind {source} {target}\n");
        if mount.read_only {
            s += &format!("mount -o remount,bind,ro {target}\n");
        }
    }
    s += "umount -l /.capstan-oldroot\nrmdir /.capstan-oldroot\n";
    s += "echo ready\nexec sleep infinity\n";
    s
}
