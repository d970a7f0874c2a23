//! A PostgreSQL cluster of the test's own (initdb into a temporary directory, a free port),
//! which it can stop, crash and start again without touching the machine's shared server.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::process::run_to_completion;

/// The OS user PostgreSQL runs as when the tests run as root: initdb and postgres refuse root.
const OS_USER: &str = "postgres";

/// How a running cluster is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// `pg_ctl stop -m fast`: sessions are ended with an error, then a clean shutdown.
    Fast,
    /// `pg_ctl stop -m immediate`: every process quits at once, as in a crash; the next start
    /// replays the WAL.
    Immediate,
}

pub struct Postgres {
    bindir: PathBuf,
    /// Owned by the OS user the server runs as; holds the data directory, the socket and the
    /// log.
    home: PathBuf,
    port: u16,
    as_other_user: bool,
    running: bool,
}

impl Postgres {
    /// Creates a cluster under `dir` with trust authentication for `postgres`, starts it on
    /// a free port of 127.0.0.1, and waits until it accepts connections.
    pub async fn start(dir: &Path) -> Self {
        let home = dir.join("pg");
        std::fs::create_dir(&home).expect("create the PostgreSQL directory");
        let as_other_user = super::running_as_root();
        if as_other_user {
            let status = Command::new("chown")
                .arg(format!("{OS_USER}:"))
                .arg(&home)
                .status();
            assert!(
                status.is_ok_and(|status| status.success()),
                "cannot give {} to the OS user {OS_USER}; PostgreSQL refuses to run as root",
                home.display()
            );
        }
        let mut postgres = Self {
            bindir: bindir(),
            home,
            port: super::free_port(),
            as_other_user,
            running: false,
        };

        let mut initdb = postgres.command("initdb");
        initdb.arg("-D").arg(postgres.data()).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        postgres
            .run(initdb, "initdb", Duration::from_secs(60))
            .await;
        postgres.start_again().await;
        postgres
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.home.join("server.log")
    }

    fn data(&self) -> PathBuf {
        self.home.join("data")
    }

    /// Starts the cluster on the same data directory and port, and waits until it accepts
    /// connections.
    pub async fn start_again(&mut self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200",
            self.port,
            self.home.display()
        );
        let mut start = self.command("pg_ctl");
        start
            .arg("start")
            .arg("-w")
            .args(["-t", "30"])
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.log_path())
            .args(["-o", &options]);
        self.run(start, "pg_ctl start", Duration::from_secs(40))
            .await;
        self.running = true;
    }

    /// Stops the cluster and waits until it has.
    pub async fn stop(&mut self, mode: StopMode) {
        let mut stop = self.stop_command(mode);
        stop.arg("-w");
        self.run(stop, "pg_ctl stop", Duration::from_secs(40)).await;
        self.running = false;
    }

    fn stop_command(&self, mode: StopMode) -> Command {
        let mode = match mode {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        };
        let mut stop = self.command("pg_ctl");
        stop.arg("stop")
            .arg("-D")
            .arg(self.data())
            .args(["-m", mode]);
        stop
    }

    /// A PostgreSQL program, run as the OS user `postgres` when the test runs as root.
    fn command(&self, program: &str) -> Command {
        let path = self.bindir.join(program);
        if self.as_other_user {
            let mut command = Command::new("runuser");
            command.args(["-u", OS_USER, "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    async fn run(&self, command: Command, what: &str, within: Duration) {
        let log = self.home.join("commands.log");
        let (status, output) =
            tokio::task::spawn_blocking(move || run_to_completion(command, &log, within))
                .await
                .expect("the PostgreSQL command's thread");
        assert!(
            status.is_some_and(|status| status.success()),
            "{what} failed ({status:?}):\n{output}\nserver log:\n{}",
            super::tail(&self.log_path(), 30)
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- last lines of the PostgreSQL log ---\n{}",
                super::tail(&self.log_path(), 20)
            );
        }
        if !self.running {
            return;
        }
        let mut stop = self.stop_command(StopMode::Immediate);
        stop.arg("-w");
        let log = self.home.join("commands.log");
        let (status, _) = run_to_completion(stop, &log, Duration::from_secs(20));
        if !status.is_some_and(|status| status.success()) {
            // The postmaster's pid is the first line of postmaster.pid.
            let pid = std::fs::read_to_string(self.data().join("postmaster.pid"))
                .ok()
                .and_then(|text| text.lines().next().map(str::to_owned));
            if let Some(pid) = pid {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
            }
        }
    }
}

/// `HOOKLINE_PG_BINDIR`, else `pg_config --bindir`, else /usr/local/bin, else the newest
/// /usr/lib/postgresql/<version>/bin.
fn bindir() -> PathBuf {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("HOOKLINE_PG_BINDIR").filter(|dir| !dir.is_empty()) {
        return PathBuf::from(dir);
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    if let Some(dir) = from_pg_config.filter(|dir| has_initdb(dir)) {
        return dir;
    }
    let local = PathBuf::from("/usr/local/bin");
    if has_initdb(&local) {
        return local;
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|dir| has_initdb(dir))
        .collect();
    versions.sort_by_key(|dir| {
        dir.parent()
            .and_then(|version| version.file_name())
            .and_then(|name| name.to_str())
            .and_then(|name| name.parse::<u32>().ok())
    });
    versions.pop().unwrap_or_else(|| {
        panic!("no initdb found: install PostgreSQL or set HOOKLINE_PG_BINDIR to its bin directory")
    })
}
