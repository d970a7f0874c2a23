//! CPU time and memory of processes, and of the whole machine, from `/proc`.

use std::collections::HashMap;
use std::sync::OnceLock;

use anyhow::Context as _;
use serde::Serialize;

use crate::report::Resources;

/// Clock ticks per second, the unit of CPU times in `/proc/<pid>/stat`.
fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .and_then(|text| text.trim().parse::<f64>().ok())
            .filter(|ticks| *ticks > 0.0)
            // What Linux uses on every common architecture.
            .unwrap_or(100.0)
    })
}

/// User plus system CPU seconds a process has used so far, all its threads together.
/// `pid` is `"self"` or a number.
fn cpu_seconds(pid: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // The command name, field 2, is in parentheses and may hold spaces: count fields from
    // after its closing parenthesis, where field 3 starts.
    let after_name = stat
        .rfind(')')
        .map(|end| &stat[end + 1..])
        .context("unexpected /proc/<pid>/stat format")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15, so 11 and 12 counted from field 3.
    let ticks = |index: usize| -> anyhow::Result<f64> {
        fields
            .get(index)
            .and_then(|field| field.parse::<u64>().ok())
            .map(|ticks| ticks as f64)
            .context("unexpected /proc/<pid>/stat format")
    };
    Ok((ticks(11)? + ticks(12)?) / clock_ticks())
}

/// The most resident memory a process has had since it started (`VmHWM`), in MiB.
fn peak_rss_mib(pid: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .context("no VmHWM in /proc/<pid>/status")?;
    Ok(kib / 1024.0)
}

/// Busy and total CPU time of the whole machine so far, in ticks of all CPUs together.
#[derive(Clone, Copy, Debug)]
struct MachineCpu {
    busy: u64,
    total: u64,
}

impl MachineCpu {
    fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().find(|line| line.starts_with("cpu "))?;
        let values: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|value| value.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal; guest time is already in user.
        let total: u64 = values.iter().take(8).sum();
        let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
        Some(Self {
            busy: total.saturating_sub(idle),
            total,
        })
    }

    /// Share of all CPUs that was busy between `earlier` and `self`, in percent.
    fn busy_percent_since(&self, earlier: &Self) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let busy = self.busy.checked_sub(earlier.busy)?;
        (total > 0).then(|| busy as f64 * 100.0 / total as f64)
    }
}

/// CPU seconds so far of every process whose command name is `name`, by pid.
///
/// PostgreSQL and NATS serve other users of the machine too, so what this measures for
/// them is an upper bound on what the run cost them.
fn cpu_seconds_by_name(name: &str) -> HashMap<u32, f64> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Default::default();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == name)
        })
        .filter_map(|pid| Some((pid, cpu_seconds(&pid.to_string()).ok()?)))
        .collect()
}

/// CPU seconds between two readings of [`cpu_seconds_by_name`]. A process that started in
/// between counts in full; one that ended in between is missed (short-lived PostgreSQL
/// backends, which the services' connection pools avoid).
fn cpu_seconds_between(earlier: &HashMap<u32, f64>, later: &HashMap<u32, f64>) -> f64 {
    later
        .iter()
        .map(|(pid, seconds)| seconds - earlier.get(pid).copied().unwrap_or(0.0))
        .filter(|delta| *delta > 0.0)
        .sum()
}

/// CPU and memory of one process over a scenario.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProcessUsage {
    /// CPU seconds while the load was sent.
    pub cpu_seconds_load: f64,
    /// CPU seconds from the end of the load until everything was delivered.
    pub cpu_seconds_drain: f64,
    /// CPU seconds during the load per second of load, in percent of one core.
    pub cpu_percent_of_core_load: f64,
    /// `VmHWM` at the end: the peak since the process started, warm-up included.
    pub peak_rss_mib: f64,
}

/// The CPU counters the report accounts for, read at one moment of a scenario.
pub struct CpuSnapshot {
    machine: Option<MachineCpu>,
    bench: f64,
    api: f64,
    worker: f64,
    postgres: HashMap<u32, f64>,
    nats: HashMap<u32, f64>,
}

impl CpuSnapshot {
    /// Reads the counters. A process that cannot be read (it has exited) counts as zero.
    pub fn take(api_pid: u32, worker_pid: u32) -> Self {
        let cpu = |pid: &str| cpu_seconds(pid).unwrap_or(0.0);
        Self {
            machine: MachineCpu::now(),
            bench: cpu("self"),
            api: cpu(&api_pid.to_string()),
            worker: cpu(&worker_pid.to_string()),
            postgres: cpu_seconds_by_name("postgres"),
            nats: cpu_seconds_by_name("nats-server"),
        }
    }
}

/// Resource use from snapshots taken at the start and end of the load and once all was
/// delivered, with the peak memory of the api and worker read now.
pub fn usage(
    snapshots: [&CpuSnapshot; 3],
    load_seconds: f64,
    api_pid: u32,
    worker_pid: u32,
) -> Resources {
    let [start, end, drained] = snapshots;
    let percent = |cpu_seconds: f64| {
        if load_seconds > 0.0 {
            cpu_seconds * 100.0 / load_seconds
        } else {
            0.0
        }
    };
    let process = |pick: fn(&CpuSnapshot) -> f64, pid: u32| ProcessUsage {
        cpu_seconds_load: pick(end) - pick(start),
        cpu_seconds_drain: pick(drained) - pick(end),
        cpu_percent_of_core_load: percent(pick(end) - pick(start)),
        peak_rss_mib: peak_rss_mib(&pid.to_string()).unwrap_or(0.0),
    };
    Resources {
        api: process(|snapshot| snapshot.api, api_pid),
        worker: process(|snapshot| snapshot.worker, worker_pid),
        bench_cpu_percent_of_core_load: percent(end.bench - start.bench),
        postgres_cpu_percent_of_core_load: percent(cpu_seconds_between(
            &start.postgres,
            &end.postgres,
        )),
        nats_cpu_percent_of_core_load: percent(cpu_seconds_between(&start.nats, &end.nats)),
        machine_busy_percent_load: start
            .machine
            .zip(end.machine)
            .and_then(|(start, end)| end.busy_percent_since(&start)),
    }
}
