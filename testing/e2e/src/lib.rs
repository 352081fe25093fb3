//! Packaging and end-to-end: where Helm comes from ([`helm`]), what the chart renders ([`chart`]),
//! and the scenarios `cargo xtask e2e` runs on any cluster ([`scenarios`]), with a probe of the
//! manager's `/readyz` ([`http`]). The chart, image, RBAC and workflow tests in `tests/` build on
//! these.
pub mod chart;
pub mod helm;
pub mod http;
pub mod scenarios;

use std::path::{Path, PathBuf};

/// The workspace root (this crate lives in `testing/e2e`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Whether a test should run without a tool it needs: prints `SKIPPED <test>: <reason>` and returns
/// false, except under `CI=true`, where a missing prerequisite fails the test (a panic naming it).
pub fn skip_without(test: &str, reason: &str) -> bool {
    let message = format!("{test}: {reason}");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{message} (CI=true: a missing prerequisite is a failure; `cargo xtask test` provisions it)"
    );
    eprintln!("SKIPPED {message}");
    false
}

/// A command that could not run or exited non-zero, with what it printed on stderr.
#[derive(Debug, thiserror::Error)]
#[error("`{command}` failed: {detail}")]
pub struct CommandFailed {
    pub command: String,
    pub detail: String,
}

/// Runs a command to completion: its trimmed stdout, or an error carrying its stderr.
pub fn run(command: &mut std::process::Command) -> Result<String, CommandFailed> {
    let shown = std::iter::once(command.get_program().to_string_lossy())
        .chain(command.get_args().map(|a| a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ");
    let output = command.output().map_err(|e| CommandFailed {
        command: shown.clone(),
        detail: e.to_string(),
    })?;
    if !output.status.success() {
        return Err(CommandFailed {
            command: shown,
            detail: format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim()),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The debug `capstan-manager` binary, built (or found up to date) with the cargo running us.
/// Tests and `cargo xtask e2e --cluster local` map the chart's image to it on the local node.
pub fn manager_binary() -> Result<PathBuf, CommandFailed> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(std::process::Command::new(cargo)
        .args(["build", "--quiet", "-p", "capstan-manager", "--bin", "capstan-manager"])
        .current_dir(workspace_root()))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    Ok(target.join("debug/capstan-manager"))
}

/// A kubectl: `KUBECTL` if set, else the one on PATH, else the one `cargo xtask helm` cached.
pub fn kubectl() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("KUBECTL") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("kubectl"))
        .find(|candidate| candidate.is_file())
        .or_else(|| Some(helm::cached_kubectl()).filter(|cached| cached.is_file()))
}

/// The manager's version (the workspace's): the image tag and the chart's appVersion.
pub const MANAGER_VERSION: &str = env!("CARGO_PKG_VERSION");
