//! hookline's benchmark: drives the api on 127.0.0.1, receives what the worker delivers,
//! and reports throughput, latency, completeness, retry timing and resource use.
//!
//! `cargo run --release -p bench -- --help` lists the options; the README of this crate
//! says how to read the figures.

mod analysis;
mod environment;
mod load;
mod machine;
mod options;
mod processes;
mod receiver;
mod report;
mod resources;
mod scenario;
mod table;

use std::process::ExitCode;

use clap::Parser as _;

use crate::options::{Mode, Options};
use crate::report::Report;
use crate::scenario::Kind;

#[tokio::main]
async fn main() -> ExitCode {
    let options = Options::parse();
    if let Err(err) = options.validate() {
        eprintln!("bench: {err:#}");
        return ExitCode::from(2);
    }

    // Dropping the run on a signal unwinds its guards, which stop the services and remove
    // the databases and streams; exiting straight away would leave them behind.
    let outcome = tokio::select! {
        outcome = run(&options) => outcome,
        () = interrupted() => Err(anyhow::anyhow!("interrupted; cleaned up")),
    };
    let report = match outcome {
        Ok(report) => report,
        Err(err) => {
            eprintln!("bench: {err:#}");
            return ExitCode::FAILURE;
        }
    };

    report::print(&report);
    if let Err(err) = report.write_json(&options.json_out) {
        eprintln!("bench: {err:#}");
        return ExitCode::FAILURE;
    }
    eprintln!("bench: figures written to {}", options.json_out.display());

    let violations = violations(&report);
    if violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        for violation in &violations {
            eprintln!("bench: check failed: {violation}");
        }
        ExitCode::from(3)
    }
}

async fn run(options: &Options) -> anyhow::Result<Report> {
    let date = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let machine = machine::Machine::describe();
    let kinds = match options.mode {
        Mode::Load => vec![
            Kind::FixedConcurrency(options.concurrency),
            Kind::FixedRate(options.rate()),
        ],
        Mode::Concurrency => vec![Kind::FixedConcurrency(options.concurrency)],
        Mode::Rate => vec![Kind::FixedRate(options.rate())],
        Mode::RetryTiming => vec![Kind::RetryTiming(options.rate())],
    };

    let mut scenarios = Vec::new();
    for kind in kinds {
        scenarios.push(scenario::run(options, kind).await?);
    }
    Ok(Report {
        date,
        git: machine::GitState::read(),
        machine,
        options: serde_json::to_value(options)?,
        scenarios,
    })
}

/// What must hold after every run: nothing lost, nothing early.
fn violations(report: &Report) -> Vec<String> {
    let mut found = Vec::new();
    for scenario in &report.scenarios {
        let name = &scenario.name;
        if scenario.delivery.not_delivered > 0 {
            found.push(format!(
                "{name}: {} accepted webhooks were never delivered",
                scenario.delivery.not_delivered
            ));
        }
        for retry in &scenario.retries {
            if retry.early > 0 {
                found.push(format!(
                    "{name}: retry {} came early {} times",
                    retry.retry, retry.early
                ));
            }
        }
    }
    found
}

/// Completes on the first SIGINT or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
