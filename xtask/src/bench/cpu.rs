//! CPU accounting from /proc: how much the manager and the floor's client used, and how much
//! *other* processes took from this (shared, 2-core) machine while a phase was timed. The ratios
//! are only as good as the two phases were equally undisturbed; this says whether they were.
use std::fs;

use anyhow::Context;

/// What /proc counts CPU time in (USER_HZ): 100 on every Linux architecture's user ABI.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time (user + system, all threads, dead ones included) of process `pid`, in seconds.
pub fn process_seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces; count fields after it.
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after the name.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .with_context(|| format!("unexpected {path}: {stat}"))
    };
    Ok((ticks(11)? + ticks(12)?) / TICKS_PER_SECOND)
}

/// CPU time the whole machine spent busy (everything but idle and iowait), plus time the
/// hypervisor stole, in seconds.
fn machine_busy_seconds() -> anyhow::Result<f64> {
    let stat = fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    // cpu user nice system idle iowait irq softirq steal guest guest_nice; guest time is already
    // counted in user.
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|t| t.parse::<f64>().unwrap_or(0.0))
        .collect();
    if ticks.len() < 8 {
        anyhow::bail!("unexpected /proc/stat: {line}");
    }
    let busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7];
    Ok(busy / TICKS_PER_SECOND)
}

/// A reading of the machine's busy time and of the bench's own processes (control plane,
/// manager, this process).
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    machine: f64,
    ours: f64,
}

/// Reads CPU time for a fixed set of our processes.
#[derive(Debug, Clone)]
pub struct Meter {
    pids: Vec<u32>,
}

impl Meter {
    pub fn new(pids: impl IntoIterator<Item = u32>) -> Meter {
        Meter {
            pids: pids.into_iter().collect(),
        }
    }

    pub fn read(&self) -> anyhow::Result<Reading> {
        let mut ours = 0.0;
        for pid in &self.pids {
            ours += process_seconds(*pid)?;
        }
        Ok(Reading {
            machine: machine_busy_seconds()?,
            ours,
        })
    }

    /// CPU seconds processes other than ours used since `before`.
    pub fn others_since(&self, before: Reading) -> anyhow::Result<f64> {
        let now = self.read()?;
        Ok(((now.machine - before.machine) - (now.ours - before.ours)).max(0.0))
    }
}

/// CPU used during one timed phase: by the process doing the work (the manager, or this process
/// for the floor) and by processes that are none of ours.
#[derive(Debug, Clone, Copy, Default)]
pub struct PhaseCpu {
    pub worker: f64,
    pub others: f64,
}

/// A phase being timed; [`Phase::finish`] says what it cost.
pub struct Phase {
    meter: Meter,
    worker: u32,
    worker_before: f64,
    before: Reading,
}

impl Phase {
    /// Starts counting; `worker` is the pid doing the phase's work.
    pub fn start(meter: Meter, worker: u32) -> anyhow::Result<Phase> {
        Ok(Phase {
            worker_before: process_seconds(worker)?,
            before: meter.read()?,
            meter,
            worker,
        })
    }

    pub fn finish(self) -> anyhow::Result<PhaseCpu> {
        Ok(PhaseCpu {
            worker: process_seconds(self.worker)? - self.worker_before,
            others: self.meter.others_since(self.before)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_and_the_machine_have_used_some_cpu() {
        let spent: u64 = (0..2_000_000u64).map(|i| i.wrapping_mul(i) % 7).sum();
        assert!(spent > 0);
        let own = process_seconds(std::process::id()).expect("own /proc stat");
        assert!((0.0..1e6).contains(&own), "{own}");
        let meter = Meter::new([std::process::id()]);
        let before = meter.read().expect("reading");
        assert!(before.machine >= before.ours);
        assert!(meter.others_since(before).expect("reading") >= 0.0);
        let phase = Phase::start(meter, std::process::id()).expect("phase");
        let cpu = phase.finish().expect("phase");
        assert!(cpu.worker >= 0.0 && cpu.others >= 0.0);
    }
}
