//! A nats-server with JetStream of the test's own, which it can stop and start again on the
//! same port and file store.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a start may take before the test gives up.
const START_WITHIN: Duration = Duration::from_secs(20);

pub struct NatsServer {
    binary: PathBuf,
    store: PathBuf,
    log: PathBuf,
    port: u16,
    monitor_port: u16,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server storing its data under `dir` and waits until JetStream is ready.
    pub async fn start(dir: &Path) -> Self {
        let mut server = Self {
            binary: locate(),
            store: dir.join("nats-store"),
            log: dir.join("nats.log"),
            port: super::free_port(),
            monitor_port: super::free_port(),
            child: None,
        };
        server.start_again().await;
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Starts the server on the same port and store, and waits until JetStream is ready.
    pub async fn start_again(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the nats-server log");
        let child = Command::new(&self.binary)
            .args(["-js", "-a", "127.0.0.1", "-sd"])
            .arg(&self.store)
            .args(["-p", &self.port.to_string()])
            .args(["-m", &self.monitor_port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("duplicate the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", self.binary.display()));
        self.child = Some(child);

        // /healthz answers 200 only once JetStream has loaded its store.
        let health = format!("http://127.0.0.1:{}/healthz", self.monitor_port);
        let http = reqwest::Client::new();
        let ready = super::poll_until(START_WITHIN, || async {
            http.get(&health)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success())
        })
        .await;
        assert!(
            ready,
            "nats-server did not become healthy within {START_WITHIN:?}; its log:\n{}",
            super::tail(&self.log, 30)
        );
    }

    /// SIGKILL: the server stops at once, as in a crash; the store stays on disk.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- last lines of the nats-server log ---\n{}",
                super::tail(&self.log, 20)
            );
        }
    }
}

/// `HOOKLINE_NATS_SERVER`, else the binary `scripts/test-env.sh` installs, else `nats-server`
/// on the `PATH`.
fn locate() -> PathBuf {
    if let Some(path) = std::env::var_os("HOOKLINE_NATS_SERVER").filter(|path| !path.is_empty()) {
        return PathBuf::from(path);
    }
    let installed = super::repo_root().join(".ci/cache/venv/bin/nats-server");
    if installed.is_file() {
        return installed;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("nats-server"))
                .find(|path| path.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "no nats-server: set HOOKLINE_NATS_SERVER, or `source scripts/test-env.sh`, \
                 which installs one under .ci/cache"
            )
        })
}
