//! `cargo xtask test`: the one command CI and people run. Phases run in order and stop at the first
//! failure; each one's wall time is printed, since the CI budget is counted in them.

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::{cmd, envtest, prerequisites};

pub fn run() -> anyhow::Result<()> {
    let mut phases = Phases::default();
    let result = (|| {
        phases.run("fmt", || cmd::run(cmd::cargo().args(["fmt", "--all", "--", "--check"])))?;
        phases.run("clippy", || {
            cmd::run(cmd::cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))
        })?;
        phases.run("shellcheck", shellcheck_scripts)?;
        phases.run("envtest", || envtest::ensure().map(|_| ()))?;
        phases.run("localnode", prerequisites::ensure)?;
        phases.run("helm", || {
            prerequisites::ensure_programs(&[("npm", "npm"), ("unzip", "unzip")])?;
            crate::helm_path().map(|_| ())
        })?;
        // The image test runs what this builds; without podman it is skipped (a failure under CI=true).
        phases.run("image", || {
            if prerequisites::ensure_programs(&[("podman", "podman"), ("runc", "runc")])? {
                crate::image::run(crate::image::Args { tag: None })
            } else if std::env::var("CI").as_deref() == Ok("true") {
                anyhow::bail!("podman is missing (CI=true): apt-get install podman runc")
            } else {
                eprintln!("SKIPPED image: podman is not installed (Debian: apt-get install podman runc)");
                Ok(())
            }
        })?;
        // Plain `cargo test`, not nextest: tests in one binary share one control plane, which a
        // process per test would start over and over.
        phases.run("test", || cmd::run(cmd::cargo().args(["test", "--workspace"])))
    })();
    phases.print_summary(result.is_ok());
    result
}

/// `shellcheck -s sh` over every script the RedisHA Pods run, as rendered for sample RedisHAs
/// (the scripts are static files, but only the rendered text with its variables header is what
/// a Pod runs). Without shellcheck it is skipped (a failure under CI=true).
fn shellcheck_scripts() -> anyhow::Result<()> {
    if !prerequisites::ensure_programs(&[("shellcheck", "shellcheck")])? {
        if std::env::var("CI").as_deref() == Ok("true") {
            bail!("shellcheck is missing (CI=true): apt-get install shellcheck");
        }
        eprintln!("SKIPPED shellcheck: shellcheck is not installed (Debian: apt-get install shellcheck)");
        return Ok(());
    }
    let mut failed = Vec::new();
    for (name, text) in capstan_redis_ha::render::sample_scripts() {
        let mut child = Command::new("shellcheck")
            .args(["--shell=sh", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("running shellcheck")?;
        child
            .stdin
            .take()
            .context("shellcheck's stdin")?
            .write_all(text.as_bytes())
            .context("writing the script to shellcheck")?;
        let output = child.wait_with_output().context("waiting for shellcheck")?;
        if !output.status.success() {
            eprintln!("shellcheck {name}:\n{}", String::from_utf8_lossy(&output.stdout));
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        bail!("shellcheck found problems in {}", failed.join(", "));
    }
    Ok(())
}

#[derive(Default)]
struct Phases {
    done: Vec<(&'static str, Duration, bool)>,
}

impl Phases {
    fn run(&mut self, name: &'static str, phase: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
        eprintln!("==> {name}");
        let started = Instant::now();
        let result = phase();
        let took = started.elapsed();
        eprintln!(
            "==> {name}: {} in {}",
            if result.is_ok() { "ok" } else { "FAILED" },
            format_duration(took)
        );
        self.done.push((name, took, result.is_ok()));
        result.with_context(|| format!("phase `{name}` failed"))
    }

    fn print_summary(&self, passed: bool) {
        let total: Duration = self.done.iter().map(|(_, took, _)| *took).sum();
        eprintln!();
        eprintln!("{:<10} {:>9}  result", "phase", "time");
        for (name, took, ok) in &self.done {
            let result = if *ok { "ok" } else { "FAILED" };
            eprintln!("{name:<10} {:>9}  {result}", format_duration(*took));
        }
        eprintln!(
            "{:<10} {:>9}  {}",
            "total",
            format_duration(total),
            if passed { "passed" } else { "failed" }
        );
    }
}

fn format_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs >= 60.0 {
        format!("{}m{:04.1}s", (secs / 60.0).floor(), secs % 60.0)
    } else {
        format!("{secs:.1}s")
    }
}
