//! One of our binaries as a child process that a test can kill and start again.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A child process with its environment, so it can be started again exactly as before. Its
/// stdout and stderr go to a log file that survives restarts; dropping the service kills the
/// process and, during a panic, prints the end of the log.
pub struct Service {
    name: String,
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Service {
    /// Starts `binary` with only `env` (plus `RUST_BACKTRACE`) in its environment, so that
    /// nothing from the developer's shell leaks in.
    pub fn start(
        name: &str,
        binary: &Path,
        args: &[&str],
        env: Vec<(String, String)>,
        log_dir: &Path,
    ) -> Self {
        let mut service = Self {
            name: name.to_owned(),
            binary: binary.to_path_buf(),
            args: args.iter().map(|arg| (*arg).to_owned()).collect(),
            env,
            log: log_dir.join(format!("{name}.log")),
            child: None,
        };
        service.spawn();
        service
    }

    fn spawn(&mut self) {
        let log = append(&self.log);
        let child = Command::new(&self.binary)
            .args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(clone(&log))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", self.binary.display()));
        self.child = Some(child);
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Starts the process again with the same arguments and environment. Kills it first if
    /// it still runs.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGKILL, then reaps the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process is still running; reaps it if it has exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_)) | Err(_)) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// The last `lines` lines of the process's log.
    pub fn log_tail(&self, lines: usize) -> String {
        super::tail(&self.log, lines)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- last lines of the {} log ({}) ---\n{}\n--- end of the {} log ---",
                self.name,
                self.log.display(),
                self.log_tail(40),
                self.name
            );
        }
    }
}

fn append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|err| panic!("cannot open {}: {err}", path.display()))
}

fn clone(file: &File) -> File {
    file.try_clone().expect("duplicate a log file handle")
}

/// Runs a command to its end, its output appended to `log`, for at most `within`; a command
/// still running then is killed. Returns the exit status (`None` on timeout) and the output.
/// Blocking: call it from `spawn_blocking` inside a runtime.
pub fn run_to_completion(
    mut command: Command,
    log: &Path,
    within: Duration,
) -> (Option<ExitStatus>, String) {
    let start_of_output = std::fs::metadata(log).map_or(0, |meta| meta.len());
    let file = append(log);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(clone(&file))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    let deadline = Instant::now() + within;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let output = std::fs::read(log)
        .map(|bytes| {
            let start = usize::try_from(start_of_output)
                .unwrap_or(0)
                .min(bytes.len());
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        })
        .unwrap_or_default();
    (status, output)
}
