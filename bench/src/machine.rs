//! Where and on what code a run happened, so figures from different runs can be compared.

use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub memory_mib: u64,
    pub kernel: String,
    /// The 1-minute load average at the start. Well above zero means other work (builds,
    /// other benchmarks) shared the CPUs, and the figures are pessimistic.
    pub load_average_at_start: f64,
}

impl Machine {
    pub fn describe() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpu_model = read("/proc/cpuinfo")
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, model)| model.trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        let memory_mib = read("/proc/meminfo")
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|value| {
                value
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |kib| kib / 1024);
        let load_average_at_start = read("/proc/loadavg")
            .split_whitespace()
            .next()
            .and_then(|value| value.parse().ok())
            .unwrap_or(0.0);
        Self {
            nproc: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model,
            memory_mib,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            load_average_at_start,
        }
    }
}

/// The commit the working tree is on, and whether it has changes on top.
#[derive(Clone, Debug, Serialize)]
pub struct GitState {
    pub commit: String,
    /// Uncommitted changes: the figures are for the tree, not quite for the commit.
    pub dirty: bool,
}

impl GitState {
    pub fn read() -> Option<Self> {
        let git = |args: &[&str]| {
            std::process::Command::new("git")
                .args(args)
                .output()
                .ok()
                .filter(|output| output.status.success())
                .and_then(|output| String::from_utf8(output.stdout).ok())
        };
        let commit = git(&["rev-parse", "HEAD"])?.trim().to_owned();
        let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
            .is_some_and(|changes| !changes.trim().is_empty());
        Some(Self { commit, dirty })
    }
}
