//! A `capstan-manager run` child process, as tests and the bench start it: admin endpoints on
//! free ports, read from the JSON line the manager prints on stdout once it has bound them
//! (`{"bound":{"metrics":"127.0.0.1:…","health":"127.0.0.1:…"}}`), its log forwarded.
use std::{
    fs,
    io::{self, BufRead, BufReader, Write},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use crate::{Error, process};

/// Where the manager's log (its stderr) goes.
#[derive(Debug, Clone)]
pub enum Log {
    /// To this process's stderr, each line prefixed with the manager's pid.
    Stderr,
    /// Into a file, created anew.
    File(PathBuf),
}

pub struct ManagerProcess {
    pub child: Child,
    pub metrics: SocketAddr,
    pub health: SocketAddr,
}

#[derive(serde::Deserialize)]
struct BoundLine {
    bound: Bound,
}

#[derive(serde::Deserialize)]
struct Bound {
    metrics: SocketAddr,
    health: SocketAddr,
}

/// The admin addresses in one line of the manager's stdout, if it is the `bound` line.
pub fn parse_bound(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let parsed: BoundLine = serde_json::from_str(line).ok()?;
    Some((parsed.bound.metrics, parsed.bound.health))
}

impl ManagerProcess {
    /// Starts `binary run --metrics-addr 127.0.0.1:0 --health-addr 127.0.0.1:0 <args>` against
    /// `kubeconfig` and returns once it has bound its admin endpoints (at most `bind_timeout`).
    /// The child is SIGKILLed if this process dies (see [`process::spawn`]).
    pub fn start(
        binary: &Path,
        kubeconfig: &Path,
        args: &[&str],
        log: Log,
        bind_timeout: Duration,
    ) -> Result<ManagerProcess, Error> {
        Self::start_as(binary, kubeconfig, args, log, bind_timeout, None)
    }

    /// [`Self::start`], running the manager under `uid` (and the same gid) when given: a fault
    /// test can then cut the operator alone off the network by its uid (`meta skuid`).
    pub fn start_as(
        binary: &Path,
        kubeconfig: &Path,
        args: &[&str],
        log: Log,
        bind_timeout: Duration,
        uid: Option<u32>,
    ) -> Result<ManagerProcess, Error> {
        let mut command = Command::new(binary);
        if let Some(uid) = uid {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(uid);
        }
        command
            .args(["run", "--metrics-addr", "127.0.0.1:0", "--health-addr", "127.0.0.1:0"])
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = process::spawn(command).map_err(|source| Error::Spawn {
            component: "capstan-manager",
            binary: binary.to_path_buf(),
            source,
        })?;
        let pid = child.id();
        let (stdout, stderr) = match (child.stdout.take(), child.stderr.take()) {
            (Some(stdout), Some(stderr)) => (stdout, stderr),
            _ => {
                stop_now(&mut child);
                return Err(Error::Invalid("the manager's output pipes are missing".into()));
            }
        };
        if let Err(source) = forward_log(stderr, pid, &log) {
            stop_now(&mut child);
            return Err(Error::Io {
                what: "the manager's log",
                path: match &log {
                    Log::File(path) => path.clone(),
                    Log::Stderr => PathBuf::from("/dev/stderr"),
                },
                source,
            });
        }
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(bound) = parse_bound(&line) {
                    let _ = tx.send(bound);
                }
            }
        });
        match rx.recv_timeout(bind_timeout) {
            Ok((metrics, health)) => Ok(ManagerProcess { child, metrics, health }),
            Err(_) => {
                let exited = child.try_wait().ok().flatten();
                stop_now(&mut child);
                Err(Error::Invalid(format!(
                    "the manager did not report its admin addresses within {bind_timeout:?} (exit: {exited:?}); see its log ({log:?})"
                )))
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits up to `grace` for the exit status (SIGKILL after that: `None`).
    pub fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        while started.elapsed() < grace {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        stop_now(&mut self.child);
        None
    }

    /// SIGKILL: no chance to release anything.
    pub fn kill(mut self) {
        stop_now(&mut self.child);
    }

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for ManagerProcess {
    fn drop(&mut self) {
        stop_now(&mut self.child);
    }
}

fn stop_now(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
    }
    let _ = child.wait();
}

fn forward_log(stderr: std::process::ChildStderr, pid: u32, log: &Log) -> io::Result<()> {
    let mut file = match log {
        Log::Stderr => None,
        Log::File(path) => {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir)?;
            }
            Some(fs::File::create(path)?)
        }
    };
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            match file.as_mut() {
                Some(file) => {
                    let _ = writeln!(file, "{line}");
                }
                None => eprintln!("  manager[{pid}]| {line}"),
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_line_is_told_from_other_output() {
        assert_eq!(
            parse_bound(r#"{"bound":{"metrics":"127.0.0.1:4001","health":"127.0.0.1:4002"}}"#),
            Some((
                SocketAddr::from(([127, 0, 0, 1], 4001)),
                SocketAddr::from(([127, 0, 0, 1], 4002))
            ))
        );
        assert_eq!(parse_bound("admin server listening metrics_addr=127.0.0.1:1"), None);
    }
}
