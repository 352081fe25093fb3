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

/// The control plane's processes, in the order [`PhaseCpu::components`] reports them.
pub const COMPONENTS: [&str; 3] = ["etcd", "kube-apiserver", "kube-controller-manager"];

/// How the report names each of [`COMPONENTS`].
pub const COMPONENT_LABELS: [&str; 3] = ["etcd", "apiserver", "controller-manager"];

/// Our processes during a phase, in the roles the report tells apart.
#[derive(Debug, Clone)]
pub struct Processes {
    /// The pid of each of [`COMPONENTS`], where it runs.
    pub control_plane: [Option<u32>; 3],
    /// The process doing the phase's work: the manager, or this process for the floor.
    pub worker: u32,
    /// Ours, but neither: this process while the manager works (it creates the objects).
    pub helpers: Vec<u32>,
}

/// CPU seconds used during one timed phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct PhaseCpu {
    pub worker: f64,
    pub control_plane: f64,
    /// `control_plane` by component, in the order of [`COMPONENTS`]: which part of the control
    /// plane a phase's requests cost (the controller-manager's share is not the manager's doing).
    pub components: [f64; 3],
    /// Processes that are none of ours: other work on this machine, and steal.
    pub others: f64,
}

/// A phase being timed; [`Phase::finish`] says what it cost.
pub struct Phase {
    processes: Processes,
    before: Reading,
}

#[derive(Debug, Clone, Copy)]
struct Reading {
    machine: f64,
    worker: f64,
    components: [f64; 3],
    helpers: f64,
}

impl Phase {
    pub fn start(processes: Processes) -> anyhow::Result<Phase> {
        let before = read(&processes)?;
        Ok(Phase { processes, before })
    }

    pub fn finish(self) -> anyhow::Result<PhaseCpu> {
        let now = read(&self.processes)?;
        let before = self.before;
        let worker = now.worker - before.worker;
        let components: [f64; 3] = std::array::from_fn(|i| now.components[i] - before.components[i]);
        let control_plane = components.iter().sum::<f64>();
        let ours = worker + control_plane + (now.helpers - before.helpers);
        Ok(PhaseCpu {
            worker,
            control_plane,
            components,
            others: ((now.machine - before.machine) - ours).max(0.0),
        })
    }
}

fn read(processes: &Processes) -> anyhow::Result<Reading> {
    let sum = |pids: &[u32]| -> anyhow::Result<f64> { pids.iter().map(|pid| process_seconds(*pid)).sum() };
    let mut components = [0.0; 3];
    for (seconds, pid) in components.iter_mut().zip(processes.control_plane) {
        *seconds = pid.map(process_seconds).transpose()?.unwrap_or(0.0);
    }
    Ok(Reading {
        machine: machine_busy_seconds()?,
        worker: process_seconds(processes.worker)?,
        components,
        helpers: sum(&processes.helpers)?,
    })
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
        let phase = Phase::start(Processes {
            control_plane: [None, Some(std::process::id()), None],
            worker: std::process::id(),
            helpers: Vec::new(),
        })
        .expect("phase");
        let spent: u64 = (0..2_000_000u64).map(|i| i.wrapping_mul(i) % 7).sum();
        assert!(spent > 0);
        let cpu = phase.finish().expect("phase");
        assert!(cpu.worker >= 0.0 && cpu.others >= 0.0);
        assert_eq!(cpu.components[0], 0.0, "no etcd");
        assert_eq!(cpu.control_plane, cpu.components[1], "the total is the components' sum");
    }
}
