//! Host-side names and commands. Everything the agent creates on the host starts with [`PREFIX`],
//! so a crashed run's leftovers can be found and removed without touching anything else.

use std::{
    path::{Path, PathBuf},
    process::{Command as StdCommand, Stdio},
    sync::atomic::{AtomicU64, Ordering},
};

use tokio::{io::AsyncWriteExt, process::Command};

use crate::Error;

/// The prefix of every interface, network namespace and nftables table the agent creates.
pub const PREFIX: &str = "capst";
/// The one host bridge all Pods hang off.
pub const BRIDGE: &str = "capst0";
/// Network namespaces: `capst-<id>`.
pub const NETNS_PREFIX: &str = "capst-";
/// Host ends of Pod veth pairs: `capstv<id>` (15 characters at most, the kernel's limit).
pub const VETH_PREFIX: &str = "capstv";
/// The nftables table (family `ip`), on the host only.
pub const NFT_TABLE: &str = "capstan_localnode";

/// `nft` processes this process started (directly or through `ip netns exec`).
static NFT_PROCESSES: AtomicU64 = AtomicU64::new(0);

pub fn nft_processes() -> u64 {
    NFT_PROCESSES.load(Ordering::Relaxed)
}

/// Counts `program args` if it runs `nft`, whichever way it is wrapped.
fn count_nft(program: &str, args: &[&str]) {
    let runs_nft = |word: &str| Path::new(word).file_name().is_some_and(|name| name == "nft");
    if runs_nft(program) || args.iter().any(|a| runs_nft(a)) {
        NFT_PROCESSES.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs a command to completion; a non-zero exit is an error carrying its stderr.
pub async fn run(program: &str, args: &[&str]) -> Result<String, Error> {
    run_with_input(program, args, None).await
}

/// Like [`run`], feeding `input` on stdin (for `nft -f -`).
pub async fn run_with_input(program: &str, args: &[&str], input: Option<&str>) -> Result<String, Error> {
    let describe = || format!("{program} {}", args.join(" "));
    count_nft(program, args);
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::Command {
            command: describe(),
            message: e.to_string(),
        })?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input.as_bytes()).await.map_err(|e| Error::Command {
            command: describe(),
            message: format!("writing stdin: {e}"),
        })?;
    }
    let output = child.wait_with_output().await.map_err(|e| Error::Command {
        command: describe(),
        message: e.to_string(),
    })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: describe(),
            message: format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim()),
        })
    }
}

/// Blocking variant for `Drop` and start-up cleanup; failures are returned as text.
pub fn run_sync(program: &str, args: &[&str]) -> Result<String, String> {
    count_nft(program, args);
    let output = StdCommand::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Network namespaces named with our prefix.
pub fn our_netns() -> Vec<String> {
    run_sync("ip", &["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(NETNS_PREFIX))
        .map(str::to_owned)
        .collect()
}

/// Host interfaces named with our prefix.
pub fn our_links() -> Vec<String> {
    run_sync("ip", &["-o", "link", "show"])
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(':').nth(1))
        .map(|name| name.trim().split('@').next().unwrap_or_default().to_owned())
        .filter(|name| name.starts_with(PREFIX))
        .collect()
}

/// SIGKILLs every process in a network namespace: every process of a Pod (its sandbox holder and
/// its containers, with their children) lives in the Pod's network namespace, so this is the one
/// sweep that cannot miss a process.
pub fn kill_netns_processes(netns: &str) {
    for _ in 0..20 {
        let pids: Vec<i32> = run_sync("ip", &["netns", "pids", netns])
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// What marks the host objects of the agent with one state directory: the alias of its interfaces,
/// the comment of its nftables table, and a file per network namespace under `<state>/netns/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub text: String,
    pub netns_dir: PathBuf,
}

impl Marker {
    pub fn new(state_dir: &Path) -> Marker {
        Marker {
            text: format!("capstan-localnode:{}", state_dir.display()),
            netns_dir: state_dir.join("netns"),
        }
    }

    /// Records a network namespace as ours before it is created.
    pub fn record_netns(&self, netns: &str) -> Result<(), Error> {
        std::fs::create_dir_all(&self.netns_dir).map_err(Error::io("creating", self.netns_dir.clone()))?;
        let path = self.netns_dir.join(netns);
        std::fs::write(&path, b"").map_err(Error::io("writing", path))
    }

    pub fn forget_netns(&self, netns: &str) {
        let _ = std::fs::remove_file(self.netns_dir.join(netns));
    }

    fn owns_link(&self, link: &str) -> bool {
        link_alias(link).as_deref() == Some(self.text.as_str())
    }

    fn owns_netns(&self, netns: &str) -> bool {
        self.netns_dir.join(netns).exists()
            || netns
                .strip_prefix(NETNS_PREFIX)
                .is_some_and(|id| self.owns_link(&format!("{VETH_PREFIX}{id}")))
    }

    fn owns_table(&self) -> bool {
        run_sync("nft", &["list", "table", "ip", NFT_TABLE]).is_ok_and(|t| t.contains(&self.text))
    }
}

/// An interface's alias (`ip link set … alias`), if it has one.
pub fn link_alias(link: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/net/{link}/ifalias"))
        .ok()
        .map(|a| a.trim().to_owned())
        .filter(|a| !a.is_empty())
}

/// Marks an interface as ours.
pub async fn mark_link(link: &str, marker: &Marker) -> Result<(), Error> {
    run("ip", &["link", "set", "dev", link, "alias", &marker.text])
        .await
        .map(drop)
}

/// The lock file of a state directory: beside it, as the directory itself is removed and made
/// anew by every run.
pub fn lock_path(state_dir: &Path) -> PathBuf {
    PathBuf::from(format!("{}.lock", state_dir.display()))
}

/// Takes the exclusive lock of a state directory, or says which agent holds it.
pub fn lock_state_dir(state_dir: &Path) -> Result<std::fs::File, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let lock = lock_path(state_dir);
    if let Some(parent) = lock.parent() {
        std::fs::create_dir_all(parent).map_err(Error::io("creating", parent))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock)
        .map_err(Error::io("opening", lock.clone()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::AlreadyRunning { lock }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io("locking", lock)(e)),
    }
}

/// Refuses to go on when the bridge exists and is not ours: another agent (with another state
/// directory) or something else owns it, and its names clash with ours.
pub fn check_no_foreign_bridge(marker: &Marker) -> Result<(), Error> {
    if our_links().iter().any(|l| l == BRIDGE) && !marker.owns_link(BRIDGE) {
        return Err(Error::Other(format!(
            "the interface {BRIDGE} exists and is not this agent's (alias {:?}, expected {:?}): another \
             capstan-localnode runs with another state directory, or an older run left it; stop that agent \
             or remove it with `ip link delete {BRIDGE}`",
            link_alias(BRIDGE).unwrap_or_default(),
            marker.text
        )));
    }
    Ok(())
}

/// Mounts a size-capped tmpfs on the state directory, so what Pods write there (root layers,
/// emptyDirs, claims, logs) cannot fill the host's `/run`. Nothing there is run or opened as a
/// device from the host's side: Pods see it only through their overlay (whose own mount decides
/// `exec`) and volume mounts (which set their own flags).
pub async fn mount_state_dir(state_dir: &Path, size_mib: u64) -> Result<(), Error> {
    std::fs::create_dir_all(state_dir).map_err(Error::io("creating", state_dir))?;
    let dir = state_dir.to_string_lossy();
    run(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size_mib}m,mode=0700,nosuid,nodev,noexec"),
            "capstan-localnode",
            &dir,
        ],
    )
    .await
    .map(drop)
}

fn is_mount_point(path: &Path) -> bool {
    let wanted = path.to_string_lossy().replace(' ', "\\040");
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(wanted.as_str()))
}

/// Removes what a run of the agent with this state directory left on the host, and only that:
/// processes in its network namespaces, the namespaces, its interfaces, its nftables table and the
/// state directory. Returns what could not be removed.
pub fn remove_all(state_dir: &Path) -> Vec<String> {
    let marker = Marker::new(state_dir);
    let mut problems = Vec::new();
    for netns in our_netns().into_iter().filter(|n| marker.owns_netns(n)) {
        kill_netns_processes(&netns);
        if let Err(e) = run_sync("ip", &["netns", "delete", &netns]) {
            problems.push(e);
        }
    }
    for link in our_links().into_iter().filter(|l| marker.owns_link(l)) {
        // Deleting one end of a veth pair removes both; the list may hold a peer already gone.
        if let Err(e) = run_sync("ip", &["link", "delete", &link])
            && !our_links().iter().all(|l| l != &link)
        {
            problems.push(e);
        }
    }
    if marker.owns_table()
        && let Err(e) = run_sync("nft", &["delete", "table", "ip", NFT_TABLE])
    {
        problems.push(e);
    }
    for _ in 0..3 {
        if !is_mount_point(state_dir) {
            break;
        }
        if let Err(e) = run_sync("umount", &["-l", &state_dir.to_string_lossy()]) {
            problems.push(e);
            break;
        }
    }
    if state_dir.exists()
        && let Err(e) = std::fs::remove_dir_all(state_dir)
    {
        problems.push(format!("removing {}: {e}", state_dir.display()));
    }
    problems
}

/// `'…'`-quotes a string for `sh`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_survives_single_quotes() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }
}
