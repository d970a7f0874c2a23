//! The figures of a run: one plain-text table on stdout and the same figures as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use crate::analysis::{DeliveryStats, Latency, RetryLateness};
use crate::machine::{GitState, Machine};
use crate::processes::{LogSummary, Stopped};
use crate::resources::ProcessUsage;
use crate::table::Table;

#[derive(Debug, Serialize)]
pub struct Report {
    /// When the run started, RFC 3339 in UTC.
    pub date: String,
    pub git: Option<GitState>,
    pub machine: Machine,
    pub options: serde_json::Value,
    pub scenarios: Vec<ScenarioReport>,
}

#[derive(Debug, Serialize)]
pub struct ScenarioReport {
    /// `fixed-concurrency`, `fixed-rate` or `retry-timing`.
    pub name: String,
    /// `c=64`, `1000/s`, ...
    pub load: String,
    pub nats_version: Option<String>,
    pub postgres_version: Option<String>,
    pub ingest: IngestStats,
    pub delivery: DeliveryStats,
    /// Retry-timing mode only.
    pub retries: Vec<RetryLateness>,
    /// Absent for an external api.
    pub resources: Option<Resources>,
    pub checks: Checks,
}

#[derive(Debug, Serialize)]
pub struct IngestStats {
    pub seconds: f64,
    pub requests: u64,
    /// Answered `202`.
    pub accepted: u64,
    pub accepted_per_second: f64,
    /// Requests answered per second, whatever the answer.
    pub requests_per_second: f64,
    /// Fixed rate only.
    pub offered_per_second: Option<f64>,
    /// Fixed rate only: how far behind its timetable the sender fell at worst.
    pub max_send_lag_ms: Option<f64>,
    pub latency: Option<Latency>,
    /// Every answer that was not a `202`, by status code or transport failure.
    pub errors: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct Resources {
    pub api: ProcessUsage,
    pub worker: ProcessUsage,
    /// The bench itself (sender and receiver) during the load, in percent of one core.
    pub bench_cpu_percent_of_core_load: f64,
    /// Every `postgres` process on the machine during the load, in percent of one core.
    pub postgres_cpu_percent_of_core_load: f64,
    /// Every `nats-server` process on the machine during the load, in percent of one core.
    pub nats_cpu_percent_of_core_load: f64,
    /// All CPUs of the machine during the load, in percent of all of them: what is left
    /// after the api, worker and bench went to PostgreSQL, NATS and anything else running.
    pub machine_busy_percent_load: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
pub struct Checks {
    /// The run's `deliveries` rows by status at the end.
    pub delivery_statuses: Vec<(String, i64)>,
    /// Jobs left in the work-queue stream at the end; zero when all were acknowledged.
    pub jobs_left: Option<u64>,
    /// Requests to the receiver without a usable `webhook-id`.
    pub receiver_unidentified: u64,
    pub api_log: Option<LogSummary>,
    pub worker_log: Option<LogSummary>,
    pub api_stop: Option<Stopped>,
    pub worker_stop: Option<Stopped>,
}

impl Report {
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(directory) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(directory)
                .with_context(|| format!("cannot create {}", directory.display()))?;
        }
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// The table, one column per scenario.
    pub fn table(&self) -> String {
        let mut table = Table::new(
            self.scenarios
                .iter()
                .map(|s| format!("{} {}", s.name, s.load)),
        );
        self.ingest_rows(&mut table);
        self.delivery_rows(&mut table);
        self.retry_rows(&mut table);
        self.resource_rows(&mut table);
        self.check_rows(&mut table);

        let mut out = String::new();
        let git = self
            .git
            .as_ref()
            .map_or("unknown commit".to_owned(), |git| {
                let short = &git.commit[..git.commit.len().min(12)];
                format!(
                    "commit {short}{}",
                    if git.dirty {
                        " + uncommitted changes"
                    } else {
                        ""
                    }
                )
            });
        let machine = &self.machine;
        let _ = writeln!(out, "hookline bench, {}, {git}", self.date);
        let _ = writeln!(
            out,
            "{} CPUs ({}), {} MiB, Linux {}, load average at start {:.2}",
            machine.nproc,
            machine.cpu_model,
            machine.memory_mib,
            machine.kernel,
            machine.load_average_at_start
        );
        if let Some(first) = self.scenarios.first() {
            let _ = writeln!(
                out,
                "nats-server {}, PostgreSQL {}",
                first.nats_version.as_deref().unwrap_or("?"),
                first.postgres_version.as_deref().unwrap_or("?")
            );
        }
        out.push('\n');
        out.push_str(&table.render());
        out
    }

    fn column<T>(&self, cell: impl Fn(&ScenarioReport) -> T) -> Vec<T> {
        self.scenarios.iter().map(cell).collect()
    }

    fn ingest_rows(&self, table: &mut Table) {
        table.section("ingest (POST /ingest/{id})");
        table.row(
            "requests sent",
            self.column(|s| s.ingest.requests.to_string()),
        );
        table.row(
            "accepted (202)",
            self.column(|s| s.ingest.accepted.to_string()),
        );
        table.row(
            "offered rate /s",
            self.column(|s| s.ingest.offered_per_second.map_or("-".to_owned(), rate)),
        );
        table.row(
            "accepted /s",
            self.column(|s| rate(s.ingest.accepted_per_second)),
        );
        let latency = |pick: fn(&Latency) -> f64| {
            self.column(move |s| {
                s.ingest
                    .latency
                    .as_ref()
                    .map_or("-".to_owned(), |l| ms(pick(l)))
            })
        };
        table.row("latency p50 ms", latency(|l| l.p50_ms));
        table.row("latency p90 ms", latency(|l| l.p90_ms));
        table.row("latency p99 ms", latency(|l| l.p99_ms));
        table.row("latency p99.9 ms", latency(|l| l.p99_9_ms));
        table.row("latency max ms", latency(|l| l.max_ms));
        table.row(
            "errors by status",
            self.column(|s| {
                if s.ingest.errors.is_empty() {
                    "none".to_owned()
                } else {
                    let parts: Vec<String> = s
                        .ingest
                        .errors
                        .iter()
                        .map(|(status, count)| format!("{status}: {count}"))
                        .collect();
                    parts.join(", ")
                }
            }),
        );
        if self
            .scenarios
            .iter()
            .any(|s| s.ingest.max_send_lag_ms.is_some())
        {
            table.row(
                "sender max lag ms",
                self.column(|s| s.ingest.max_send_lag_ms.map_or("-".to_owned(), ms)),
            );
        }
    }

    fn delivery_rows(&self, table: &mut Table) {
        table.section("delivery (at the receiver)");
        table.row(
            "delivered",
            self.column(|s| s.delivery.delivered.to_string()),
        );
        table.row(
            "delivered /s during load",
            self.column(|s| rate(s.delivery.per_second_during_load)),
        );
        table.row(
            "delivered /s overall",
            self.column(|s| rate(s.delivery.per_second_overall)),
        );
        let latency = |pick: fn(&Latency) -> f64| {
            self.column(move |s| {
                s.delivery
                    .latency
                    .as_ref()
                    .map_or("-".to_owned(), |l| ms(pick(l)))
            })
        };
        table.row("202 to arrival p50 ms", latency(|l| l.p50_ms));
        table.row("202 to arrival p99 ms", latency(|l| l.p99_ms));
        table.row("202 to arrival max ms", latency(|l| l.max_ms));
        table.row(
            "arrived before their 202",
            self.column(|s| s.delivery.arrived_before_accepted.to_string()),
        );
        table.row(
            "backlog drain s",
            self.column(|s| format!("{:.2}", s.delivery.drain_seconds)),
        );
        table.row(
            "accepted, not delivered",
            self.column(|s| s.delivery.not_delivered.to_string()),
        );
        table.row(
            "delivered twice",
            self.column(|s| s.delivery.delivered_twice.to_string()),
        );
        table.row(
            "attempts seen / extra",
            self.column(|s| format!("{} / {}", s.delivery.attempts, s.delivery.extra_attempts)),
        );
    }

    fn retry_rows(&self, table: &mut Table) {
        let most = self
            .scenarios
            .iter()
            .map(|s| s.retries.len())
            .max()
            .unwrap_or(0);
        if most == 0 {
            return;
        }
        table.section("retry lateness (gap - scheduled delay), ms");
        for index in 0..most {
            let cell = |s: &ScenarioReport, text: fn(&RetryLateness) -> String| {
                s.retries.get(index).map_or("-".to_owned(), text)
            };
            let label = self
                .scenarios
                .iter()
                .find_map(|s| s.retries.get(index))
                .map_or(format!("retry {}", index + 1), |r| {
                    format!(
                        "retry {} (after {}, jitter <= {})",
                        r.retry,
                        ms(r.scheduled_ms),
                        ms(r.jitter_allowance_ms)
                    )
                });
            table.row(
                &label,
                self.column(|s| cell(s, |r| format!("n={}", r.count))),
            );
            table.row(
                "  min / p50",
                self.column(|s| cell(s, |r| format!("{} / {}", ms(r.min_ms), ms(r.p50_ms)))),
            );
            table.row(
                "  p99 / max",
                self.column(|s| cell(s, |r| format!("{} / {}", ms(r.p99_ms), ms(r.max_ms)))),
            );
            table.row("  early", self.column(|s| cell(s, |r| r.early.to_string())));
        }
    }

    fn resource_rows(&self, table: &mut Table) {
        table.section("resources (CPU s during load / drain, % of one core, peak RSS)");
        let usage = |pick: fn(&Resources) -> &ProcessUsage| {
            self.column(move |s| {
                s.resources.as_ref().map_or("n/a".to_owned(), |r| {
                    let usage = pick(r);
                    format!(
                        "{:.1} / {:.1} s, {:.0}%, {:.0} MiB",
                        usage.cpu_seconds_load,
                        usage.cpu_seconds_drain,
                        usage.cpu_percent_of_core_load,
                        usage.peak_rss_mib
                    )
                })
            })
        };
        table.row("api", usage(|r| &r.api));
        table.row("worker", usage(|r| &r.worker));
        table.row(
            "bench (sender + receiver)",
            self.column(|s| {
                s.resources.as_ref().map_or("n/a".to_owned(), |r| {
                    format!("{:.0}%", r.bench_cpu_percent_of_core_load)
                })
            }),
        );
        let shared = |pick: fn(&Resources) -> f64| {
            self.column(move |s| {
                s.resources
                    .as_ref()
                    .map_or("n/a".to_owned(), |r| format!("{:.0}%", pick(r)))
            })
        };
        table.row(
            "all postgres processes",
            shared(|r| r.postgres_cpu_percent_of_core_load),
        );
        table.row(
            "all nats-server processes",
            shared(|r| r.nats_cpu_percent_of_core_load),
        );
        table.row(
            "machine busy (all CPUs)",
            self.column(|s| {
                s.resources
                    .as_ref()
                    .and_then(|r| r.machine_busy_percent_load)
                    .map_or("n/a".to_owned(), |busy| format!("{busy:.0}%"))
            }),
        );
    }

    fn check_rows(&self, table: &mut Table) {
        table.section("checks");
        table.row(
            "deliveries rows (with warm-up)",
            self.column(|s| {
                let parts: Vec<String> = s
                    .checks
                    .delivery_statuses
                    .iter()
                    .map(|(status, count)| format!("{status}={count}"))
                    .collect();
                if parts.is_empty() {
                    "n/a".to_owned()
                } else {
                    parts.join(" ")
                }
            }),
        );
        table.row(
            "jobs left in stream",
            self.column(|s| {
                s.checks
                    .jobs_left
                    .map_or("n/a".to_owned(), |n| n.to_string())
            }),
        );
        table.row(
            "receiver: no webhook-id",
            self.column(|s| s.checks.receiver_unidentified.to_string()),
        );
        let logs = |pick: fn(&Checks) -> &Option<LogSummary>| {
            self.column(move |s| {
                pick(&s.checks).as_ref().map_or("n/a".to_owned(), |log| {
                    format!("{} warn, {} error", log.warnings, log.errors)
                })
            })
        };
        table.row("api log", logs(|c| &c.api_log));
        table.row("worker log", logs(|c| &c.worker_log));
        let stops = |pick: fn(&Checks) -> &Option<Stopped>| {
            self.column(move |s| {
                pick(&s.checks).as_ref().map_or("n/a".to_owned(), |stop| {
                    let killed = if stop.killed { ", killed" } else { "" };
                    format!("{} after {} ms{killed}", stop.how, stop.after_ms)
                })
            })
        };
        table.row("api stop (SIGTERM)", stops(|c| &c.api_stop));
        table.row("worker stop (SIGTERM)", stops(|c| &c.worker_stop));
    }
}

fn ms(value: f64) -> String {
    if value.abs() < 10.0 {
        format!("{value:.2}")
    } else if value.abs() < 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}

fn rate(value: f64) -> String {
    format!("{value:.0}")
}

/// Writes the table to stdout.
// Printing the table is what the bench is for; progress and errors go to stderr.
#[allow(clippy::print_stdout)]
pub fn print(report: &Report) {
    println!("{}", report.table());
}
