//! Host-side names and commands. Everything the agent creates on the host starts with [`PREFIX`],
//! so a crashed run's leftovers can be found and removed without touching anything else.

use std::{
    path::Path,
    process::{Command as StdCommand, Stdio},
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
/// The nftables table (family `ip`) on the host and in every Pod's network namespace.
pub const NFT_TABLE: &str = "capstan_localnode";

/// Runs a command to completion; a non-zero exit is an error carrying its stderr.
pub async fn run(program: &str, args: &[&str]) -> Result<String, Error> {
    run_with_input(program, args, None).await
}

/// Like [`run`], feeding `input` on stdin (for `nft -f -`).
pub async fn run_with_input(program: &str, args: &[&str], input: Option<&str>) -> Result<String, Error> {
    let describe = || format!("{program} {}", args.join(" "));
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

/// Removes everything a run of the agent may have left on the host: processes in our network
/// namespaces, the namespaces, our interfaces, our nftables table and the state directory.
/// Returns what could not be removed.
pub fn remove_all(state_dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for netns in our_netns() {
        kill_netns_processes(&netns);
        if let Err(e) = run_sync("ip", &["netns", "delete", &netns]) {
            problems.push(e);
        }
    }
    for link in our_links() {
        // Deleting one end of a veth pair removes both; the list may hold a peer already gone.
        if let Err(e) = run_sync("ip", &["link", "delete", &link])
            && !our_links().iter().all(|l| l != &link)
        {
            problems.push(e);
        }
    }
    if run_sync("nft", &["list", "table", "ip", NFT_TABLE]).is_ok()
        && let Err(e) = run_sync("nft", &["delete", "table", "ip", NFT_TABLE])
    {
        problems.push(e);
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
