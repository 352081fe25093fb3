//! A Pod's sandbox: its network namespace, and a holder process that owns the Pod's mount and UTS
//! namespaces. The holder mounts an overlay of the host's `/` with a per-Pod upper layer, a private
//! `/proc`, `/sys`, `/tmp` and a minimal `/dev`, stages the volumes inside the new root,
//! `pivot_root`s into it, detaches the host's mounts, and only then moves the volumes to their
//! `mountPath`s (so creating a mount path can never touch the host), and sleeps as PID 1 of the Pod's
//! own PID namespace. Containers join it with `nsenter --target <holder>`. The mounts live and die with the
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
                "--ipc",
                "--pid",
                "--fork",
                "--kill-child",
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
        // `unshare --fork` makes the shell PID 1 of the Pod's PID namespace: containers join it.
        let unshare_pid = holder.id().unwrap_or_default();
        let holder_pid = child_of(unshare_pid, READY_TIMEOUT).await.unwrap_or(unshare_pid);
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
    let r = q(root);
    let mut s = String::from("set -e\n");
    // `nodev` everywhere a Pod can write or read files: a device node in the host's root file
    // system (the lower layer) or planted in a volume opens nothing. The root stays `exec`: the
    // Pod's programs are the host's.
    s += &format!(
        "mount -t overlay overlay -o nodev,lowerdir=/,upperdir={},workdir={} {r}\n",
        upper.to_string_lossy(),
        work.to_string_lossy()
    );
    // This shell is PID 1 of the Pod's own PID namespace: this /proc shows the Pod's processes only.
    s += &format!("mount -t proc -o nosuid,nodev,noexec proc {r}/proc\n");
    s += &format!("mount -t sysfs -o ro,nosuid,nodev,noexec sysfs {r}/sys\n");
    s += &format!("mount -t tmpfs -o mode=1777,nosuid,nodev,size={TMP_SIZE} tmpfs {r}/tmp\n");
    // A minimal /dev, never the host's, as runc makes it: the agent creates the nodes on the Pod's
    // own tmpfs (a bind mount of the host's would let the Pod chmod the host's /dev/null). The tmpfs
    // cannot be `nodev`, but no Pod can make a node in it: `MKNOD` is never granted without
    // --allow-privileged, and nothing can be renamed or linked into it from another mount.
    s += &format!("mount -t tmpfs -o mode=755,nosuid,noexec,size=1m tmpfs {r}/dev\n");
    for (device, kind, major, minor) in DEVICES {
        s += &format!("mknod -m 666 {r}/dev/{device} {kind} {major} {minor}\n");
    }
    s += &format!(
        "mkdir {r}/dev/shm {r}/dev/pts\nmount -t tmpfs -o mode=1777,nosuid,nodev,noexec,size={TMP_SIZE} shm {r}/dev/shm\n\
         mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,nosuid,noexec devpts {r}/dev/pts\n\
         ln -s pts/ptmx {r}/dev/ptmx\nln -s /proc/self/fd {r}/dev/fd\nln -s /proc/self/fd/0 {r}/dev/stdin\n\
         ln -s /proc/self/fd/1 {r}/dev/stdout\nln -s /proc/self/fd/2 {r}/dev/stderr\n"
    );
    // /proc and /sys show the host's kernel: what reads its memory, keys or timers is masked,
    // what changes it (sysctls, sysrq, IRQ affinity) is read-only, as runc's defaults do.
    for path in MASKED_KERNEL_PATHS {
        s += &mask(&r, path);
    }
    for path in READ_ONLY_KERNEL_PATHS {
        s += &format!(
            "if [ -e {r}{path} ]; then mount --bind {r}{path} {r}{path}; \
             mount -o remount,bind,ro,nosuid,nodev,noexec {r}{path}; fi\n"
        );
    }
    // The host's root file system is the Pod's lower layer: hide its users' homes and password hashes.
    for dir in MASKED_DIRS {
        s += &format!("if [ -d {r}{dir} ]; then mount -t tmpfs -o mode=755,nosuid,nodev,size=16m tmpfs {r}{dir}; fi\n");
    }
    for file in MASKED_FILES {
        s += &format!("if [ -f {r}{file} ]; then mount --bind {r}/dev/null {r}{file}; fi\n");
    }
    // Volumes are staged inside the new root while the host is still reachable, and moved to their
    // mount paths only once it is not: creating a mount path can never touch the host's root.
    s += &format!("mkdir {r}{STAGING}\n");
    for (i, mount) in spec.mounts.iter().enumerate() {
        let stage = format!("{r}{STAGING}/{i}");
        s += if mount.is_file { "touch " } else { "mkdir " };
        // The state tmpfs behind most volumes is `noexec`, a hostPath's file system may allow
        // devices: each volume gets its own flags, executable (scripts and binaries copied in by
        // init containers run from volumes) and never `dev`.
        s += &format!(
            "{stage}\nmount --bind {} {stage}\nmount -o remount,bind,nosuid,nodev,exec {stage}\n",
            host::shell_quote(&mount.source.to_string_lossy())
        );
    }
    s += &format!("hostname {}\n", host::shell_quote(&spec.hostname));
    s +=
        &format!("cd {r}\nmkdir {OLD_ROOT}\npivot_root . {OLD_ROOT}\ncd /\numount -l /{OLD_ROOT}\nrmdir /{OLD_ROOT}\n");
    // From here on no path reaches the host: absolute symlinks resolve inside the Pod's root.
    for dir in &spec.dirs {
        let path = host::shell_quote(&dir.path);
        s += &format!("mkdir -p {path}\nchown {}:{} {path}\n", dir.uid, dir.gid);
    }
    for (i, mount) in spec.mounts.iter().enumerate() {
        let target = host::shell_quote(&mount.target);
        if mount.is_file {
            s += &format!("mkdir -p \"$(dirname {target})\"\n[ -e {target} ] || touch {target}\n");
        } else {
            s += &format!("mkdir -p {target}\n");
        }
        s += &format!("mount --move {STAGING}/{i} {target}\n");
        if mount.read_only {
            s += &format!("mount -o remount,bind,ro,nosuid,nodev {target}\n");
        }
        s += &format!("rm -d {STAGING}/{i}\n");
    }
    s += &format!("rmdir {STAGING}\n");
    s += "echo ready\nexec sleep infinity\n";
    s
}

/// Device nodes a Pod gets (runc's default set: name, type, major, minor), besides its own `shm`
/// and `pts`.
const DEVICES: &[(&str, char, u32, u32)] = &[
    ("null", 'c', 1, 3),
    ("zero", 'c', 1, 5),
    ("full", 'c', 1, 7),
    ("random", 'c', 1, 8),
    ("urandom", 'c', 1, 9),
    ("tty", 'c', 5, 0),
];
/// runc's default `maskedPaths` (with containerd's `/sys/devices/virtual/powercap`, whose energy
/// counters leak what other processes compute): an empty read-only tmpfs over a directory, the
/// Pod's `/dev/null` over a file.
pub const MASKED_KERNEL_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
/// runc's default `readonlyPaths`.
pub const READ_ONLY_KERNEL_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];
/// Host directories replaced by an empty tmpfs in every Pod's root.
const MASKED_DIRS: &[&str] = &["/root", "/home"];
/// Host files replaced by an empty file in every Pod's root.
const MASKED_FILES: &[&str] = &["/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-"];
/// Where volumes wait for the host's root to be detached.
const STAGING: &str = "/.capstan-volumes";
const OLD_ROOT: &str = ".capstan-oldroot";
/// The size of each Pod's private `/tmp` and `/dev/shm`.
const TMP_SIZE: &str = "256m";

/// Hides `path` (inside the Pod's root `r`, as the holder sees it) if this kernel has it.
fn mask(r: &str, path: &str) -> String {
    format!(
        "if [ -d {r}{path} ]; then mount -t tmpfs -o ro,nosuid,nodev,noexec tmpfs {r}{path}; \
         elif [ -e {r}{path} ]; then mount --bind {r}/dev/null {r}{path}; fi\n"
    )
}

/// The one child of `pid` (the process `unshare --fork` or `nsenter` started), once it exists;
/// `None` at once when `pid` has already exited (a container that crashed on start leaves no
/// child to find, and waiting out `wait` would add to its back-off).
pub async fn child_of(pid: u32, wait: Duration) -> Option<u32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    let started = std::time::Instant::now();
    loop {
        if let Some(child) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        {
            return Some(child);
        }
        if !is_running(pid) || started.elapsed() > wait {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether `pid` exists and is not a zombie (the state field follows the parenthesised name,
/// which may itself hold spaces and parentheses).
fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| !matches!(state, "Z" | "X" | "x"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn child_of_finds_a_child_and_gives_up_at_once_on_an_exited_parent() {
        let mut parent = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .expect("spawn sh");
        let child = child_of(parent.id(), Duration::from_secs(10)).await;
        assert!(child.is_some_and(|c| c != parent.id()), "{child:?}");
        parent.kill().expect("kill");
        parent.wait().expect("wait");

        // An exited (zombie) parent has no child to wait for.
        let mut exited = std::process::Command::new("true").spawn().expect("spawn true");
        let pid = exited.id();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while is_running(pid) {
            assert!(std::time::Instant::now() < deadline, "`true` did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
        let asked = std::time::Instant::now();
        assert_eq!(child_of(pid, Duration::from_secs(10)).await, None);
        assert!(asked.elapsed() < Duration::from_secs(5), "{:?}", asked.elapsed());
        exited.wait().expect("wait");
    }

    #[test]
    fn mount_paths_are_created_only_after_the_host_root_is_detached() {
        let spec = SandboxSpec {
            dir: "/s".into(),
            hostname: "h".into(),
            mounts: vec![Mount {
                source: "/s/volumes/v".into(),
                target: "/data/x".into(),
                read_only: true,
                is_file: false,
            }],
            files: vec![],
            dirs: vec![RootDir {
                path: "/work".into(),
                uid: 0,
                gid: 0,
            }],
        };
        let script = holder_script(&spec, Path::new("/s/upper"), Path::new("/s/work"), Path::new("/s/root"));
        let detached = script.find("umount -l /.capstan-oldroot").unwrap_or(usize::MAX);
        for created in ["mkdir -p '/data/x'", "mkdir -p '/work'", "mount --move"] {
            let at = script.find(created).unwrap_or(0);
            assert!(at > detached, "{created} before the host root is detached:\n{script}");
        }
        assert!(
            !script.contains("--rbind /dev"),
            "the host's /dev is never given to a Pod"
        );
    }

    #[test]
    fn no_mount_a_pod_reads_or_writes_opens_devices_and_the_kernel_paths_are_guarded() {
        let spec = SandboxSpec {
            dir: "/s".into(),
            hostname: "h".into(),
            mounts: vec![Mount {
                source: "/s/volumes/v".into(),
                target: "/data".into(),
                read_only: true,
                is_file: false,
            }],
            files: vec![],
            dirs: vec![],
        };
        let script = holder_script(&spec, Path::new("/s/upper"), Path::new("/s/work"), Path::new("/s/root"));
        let lines: Vec<&str> = script.lines().collect();
        let mounting = |what: &str| -> Vec<&str> { lines.iter().filter(|l| l.contains(what)).copied().collect() };
        let overlay = mounting("-t overlay");
        assert!(
            !overlay.is_empty() && overlay.iter().all(|l| l.contains("-o nodev,")),
            "{script}"
        );
        let tmpfs = mounting("-t tmpfs");
        assert!(tmpfs.iter().all(|l| l.contains("nosuid")), "{script}");
        // /dev holds the device nodes, so it alone may not be nodev.
        assert!(
            tmpfs
                .iter()
                .filter(|l| !l.ends_with("/dev"))
                .all(|l| l.contains("nodev")),
            "{script}"
        );
        assert!(mounting(" shm ").iter().any(|l| l.contains("noexec")), "{script}");
        // Devices are the Pod's own nodes, not bind mounts of the host's inodes.
        assert!(!script.contains("--bind /dev/"), "{script}");
        assert_eq!(mounting("mknod ").len(), DEVICES.len(), "{script}");
        // Every volume is remounted nodev (its source's flags are not trusted) and exec.
        assert!(
            mounting("mount -o remount,bind,nosuid,nodev,exec '/s/root'/.capstan-volumes/0").len() == 1,
            "{script}"
        );
        assert!(
            mounting("mount -o remount,bind,ro,nosuid,nodev '/data'").len() == 1,
            "{script}"
        );
        for path in MASKED_KERNEL_PATHS {
            assert!(
                mounting(&format!("'/s/root'{path} "))
                    .iter()
                    .any(|l| l.contains("/dev/null") && l.contains("tmpfs -o ro")),
                "{path}: {script}"
            );
        }
        for path in READ_ONLY_KERNEL_PATHS {
            assert!(
                mounting(&format!("remount,bind,ro,nosuid,nodev,noexec '/s/root'{path}; fi")).len() == 1,
                "{path}: {script}"
            );
        }
        // The masks go up after /dev exists (files are masked with the Pod's /dev/null) and
        // before the host's root is detached.
        let null = script.find("mknod -m 666 '/s/root'/dev/null").unwrap_or(usize::MAX);
        let masked = script.find("/proc/kcore").unwrap_or(0);
        let detached = script.find("pivot_root").unwrap_or(0);
        assert!(null < masked && masked < detached, "{script}");
    }
}
