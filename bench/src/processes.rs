//! The api and worker as child processes: started with a controlled environment, awaited
//! until ready, and always stopped (SIGTERM, then SIGKILL after a grace period).

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;

use crate::environment::Environment;

/// How long a child gets between SIGTERM and SIGKILL. The api allows requests in flight ten
/// seconds and the worker its shutdown grace (15 s), so this is longer than both.
const STOP_GRACE: Duration = Duration::from_secs(20);
/// Longest wait for the api to answer `/ready` and for the worker to register its consumer.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A child process that is stopped when this is dropped, whatever path drops it.
pub struct ChildProcess {
    pub name: String,
    pub pid: u32,
    pub log_path: PathBuf,
    child: Option<Child>,
}

/// How a child ended.
#[derive(Clone, Debug, Serialize)]
pub struct Stopped {
    /// `exit 0`, `signal 9`, ...
    pub how: String,
    /// From the stop request to exit.
    pub after_ms: u64,
    /// Whether it had to be killed because SIGTERM did not end it within the grace period.
    pub killed: bool,
}

impl ChildProcess {
    /// Starts `program` with only the given variables, writing its output to `log_path`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[&str],
        env: &[(String, String)],
        log_path: PathBuf,
    ) -> anyhow::Result<Self> {
        let log = File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let child = Command::new(program)
            .args(args)
            // Nothing from the caller's shell (an API_KEY, a RUST_LOG) changes what is measured.
            .env_clear()
            .envs(env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {name} from {}", program.display()))?;
        Ok(Self {
            name: name.to_owned(),
            pid: child.id(),
            log_path,
            child: Some(child),
        })
    }

    /// `None` while it runs; how it ended otherwise.
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(describe(status)),
            Ok(None) => None,
            Err(err) => Some(format!("unknown ({err})")),
        }
    }

    /// SIGTERM, a bounded wait, then SIGKILL. Blocks; call it off the async runtime.
    pub fn stop(&mut self, grace: Duration) -> Option<Stopped> {
        let mut child = self.child.take()?;
        let started = Instant::now();
        let stopped = |how: String, killed: bool| Stopped {
            how,
            after_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            killed,
        };
        if let Ok(Some(status)) = child.try_wait() {
            return Some(stopped(
                format!("had already ended: {}", describe(status)),
                false,
            ));
        }

        if let Ok(pid) = i32::try_from(self.pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        while started.elapsed() < grace {
            match child.try_wait() {
                Ok(Some(status)) => return Some(stopped(describe(status), false)),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        let _ = child.kill();
        let how = match child.wait() {
            Ok(status) => describe(status),
            Err(err) => format!("unknown ({err})"),
        };
        Some(stopped(how, true))
    }

    /// The last lines of the log, to explain a failed start.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if let Some(stopped) = self.stop(STOP_GRACE)
            && stopped.killed
        {
            eprintln!("bench: {} ignored SIGTERM and was killed", self.name);
        }
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => "unknown".to_owned(),
    }
}

/// What the services are started with beyond the run's environment.
pub struct ServiceSettings<'a> {
    pub api_bin: &'a Path,
    pub worker_bin: &'a Path,
    pub log_dir: &'a Path,
    /// Names the log files, so runs of several scenarios keep theirs apart.
    pub scenario: &'a str,
    pub retry_schedule: Option<String>,
    pub extra_env: &'a [(String, String)],
}

/// The started api and worker.
pub struct Services {
    pub api_url: String,
    pub api: ChildProcess,
    pub worker: ChildProcess,
}

impl Services {
    pub async fn start(
        settings: &ServiceSettings<'_>,
        environment: &Environment,
    ) -> anyhow::Result<Self> {
        for binary in [settings.api_bin, settings.worker_bin] {
            if !binary.is_file() {
                anyhow::bail!(
                    "{} does not exist; run `cargo build --release -p api -p worker` first",
                    binary.display()
                );
            }
        }
        std::fs::create_dir_all(settings.log_dir)
            .with_context(|| format!("cannot create {}", settings.log_dir.display()))?;
        let port = free_port()?;
        let mut env = vec![
            ("DATABASE_URL".to_owned(), environment.database_url.clone()),
            ("NATS_URL".to_owned(), environment.nats_url.clone()),
            (
                "NATS_NAMESPACE".to_owned(),
                environment.names.namespace().to_owned(),
            ),
            // The receiver listens on 127.0.0.1.
            ("ALLOW_PRIVATE_TARGETS".to_owned(), "true".to_owned()),
            ("LOG_FORMAT".to_owned(), "json".to_owned()),
            // Info logs a line per delivery, which would cost the worker noticeable CPU.
            ("RUST_LOG".to_owned(), "warn".to_owned()),
            ("API_ADDR".to_owned(), format!("127.0.0.1:{port}")),
        ];
        if let Some(schedule) = &settings.retry_schedule {
            env.push(("RETRY_SCHEDULE".to_owned(), schedule.clone()));
        }
        // Last, so that they win over the defaults above.
        env.extend(settings.extra_env.iter().cloned());

        let log = |name: &str| {
            settings
                .log_dir
                .join(format!("{}-{name}.log", settings.scenario))
        };
        let mut api = ChildProcess::spawn("api", settings.api_bin, &[], &env, log("api"))?;
        let api_url = format!("http://127.0.0.1:{port}");
        wait_until_ready(&mut api, &api_url).await?;

        // Started after the api has migrated the database, as compose does.
        let mut worker =
            ChildProcess::spawn("worker", settings.worker_bin, &[], &env, log("worker"))?;
        wait_for_consumer(&mut worker, environment).await?;
        Ok(Self {
            api_url,
            api,
            worker,
        })
    }

    /// Stops both, worker first so that it does not log errors about a vanished api.
    pub async fn stop(mut self) -> (Option<Stopped>, Option<Stopped>) {
        let stopping = tokio::task::spawn_blocking(move || {
            let worker = self.worker.stop(STOP_GRACE);
            let api = self.api.stop(STOP_GRACE);
            (api, worker)
        });
        stopping.await.unwrap_or((None, None))
    }
}

/// A port that was free a moment ago. Another process could take it before the api binds
/// it; that shows up as a failed start, not as a wrong measurement.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

async fn wait_until_ready(api: &mut ChildProcess, api_url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(how) = api.exited() {
            anyhow::bail!(
                "the api ended at start ({how}); its log:\n{}",
                api.log_tail()
            );
        }
        let ready = client.get(format!("{api_url}/ready")).send().await;
        if ready.is_ok_and(|response| response.status().is_success()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "the api was not ready within {}s; its log:\n{}",
                START_TIMEOUT.as_secs(),
                api.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The worker has no health endpoint; it is ready once its durable consumer exists.
async fn wait_for_consumer(
    worker: &mut ChildProcess,
    environment: &Environment,
) -> anyhow::Result<()> {
    let client = async_nats::connect(&environment.nats_url).await?;
    let jetstream = async_nats::jetstream::new(client);
    let names = &environment.names;
    let stream = jetstream
        .get_stream(names.job_stream())
        .await
        .context("the api did not create the job stream")?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(how) = worker.exited() {
            anyhow::bail!(
                "the worker ended at start ({how}); its log:\n{}",
                worker.log_tail()
            );
        }
        if stream.consumer_info(names.worker_consumer()).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "the worker did not register within {}s; its log:\n{}",
                START_TIMEOUT.as_secs(),
                worker.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Warnings and errors a service logged, by message, most frequent first.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LogSummary {
    pub warnings: u64,
    pub errors: u64,
    /// Up to five `(level, message, count)`, most frequent first.
    pub top: Vec<(String, String, u64)>,
}

/// Reads a service's JSON log and counts its warnings and errors.
pub fn summarize_log(path: &Path) -> LogSummary {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut summary = LogSummary::default();
    let mut counts: std::collections::HashMap<(String, String), u64> = Default::default();
    for line in text.lines() {
        // Lines that are not JSON (a panic message) count as errors.
        let (level, message) = match serde_json::from_str::<serde_json::Value>(line) {
            Ok(value) => (
                value["level"].as_str().unwrap_or("?").to_owned(),
                value["message"].as_str().unwrap_or("").to_owned(),
            ),
            Err(_) => ("ERROR".to_owned(), line.chars().take(160).collect()),
        };
        match level.as_str() {
            "WARN" => summary.warnings += 1,
            "ERROR" => summary.errors += 1,
            _ => continue,
        }
        *counts.entry((level, message)).or_default() += 1;
    }
    let mut top: Vec<_> = counts
        .into_iter()
        .map(|((level, message), count)| (level, message, count))
        .collect();
    top.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.1.cmp(&b.1)));
    top.truncate(5);
    summary.top = top;
    summary
}
