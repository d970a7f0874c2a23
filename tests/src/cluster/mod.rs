//! Real processes for fault tests: a PostgreSQL cluster and a nats-server of the test's own,
//! the `api`, `worker` and `janitor` binaries as child processes, and a target that fails on
//! demand. Everything listens on 127.0.0.1, and is stopped and its files removed on drop,
//! panics included.

pub mod load;
mod nats;
mod postgres;
mod process;
pub mod report;
mod stack;
mod target;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

pub use nats::NatsServer;
pub use postgres::{Postgres, StopMode};
pub use process::{Service, run_to_completion};
pub use stack::Stack;
pub use target::{FlakyTarget, Hit, Mode, Outcome, RELIABLE_PREFIX};

/// A port of 127.0.0.1 that was free a moment ago. Another process could take it before the
/// caller binds it; that shows up as a failed start, not as a silent mix-up.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port on 127.0.0.1")
}

/// A directory under the system's temporary directory, removed with everything in it on drop;
/// kept for a look at its logs when a test fails with `HOOKLINE_KEEP_TEST_DIRS=1` set.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        // Short, because PostgreSQL puts its Unix socket in here and socket paths are
        // limited to about 100 bytes.
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let path = std::env::temp_dir().join(format!("{prefix}-{}", &suffix[..10]));
        std::fs::create_dir(&path)
            .unwrap_or_else(|err| panic!("cannot create {}: {err}", path.display()));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() && std::env::var_os("HOOKLINE_KEEP_TEST_DIRS").is_some() {
            eprintln!("kept {} for inspection", self.path.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The workspace root: the parent of this crate's directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// A binary of this workspace, from the directory the running test executable was built
/// into (`target/<profile>/deps/<test>` → `target/<profile>/<name>`).
pub fn binary(name: &str) -> Option<PathBuf> {
    let executable = std::env::current_exe().ok()?;
    let profile_dir = executable.parent()?.parent()?;
    let path = profile_dir.join(name);
    path.is_file().then_some(path)
}

/// Like [`binary`], but panics with what to do when the binary has not been built, and warns
/// when it is older than the sources it is built from (a test run of this crate alone does
/// not rebuild the binaries of other crates).
pub fn required_binary(name: &str, source_crates: &[&str]) -> PathBuf {
    let Some(path) = binary(name) else {
        panic!(
            "target/<profile>/{name} is missing: run `cargo build --bins` (or `cargo test \
             --workspace`, which builds it) before this test"
        );
    };
    let built = modified(&path);
    let root = repo_root();
    let newer_source = source_crates
        .iter()
        .filter_map(|krate| newest_file(&root.join(krate).join("src")))
        .find(|(_, changed)| built.is_some_and(|built| *changed > built));
    if let Some((source, _)) = newer_source {
        eprintln!(
            "warning: {} is older than {}; run `cargo build --bins` to test the current code",
            path.display(),
            source.display()
        );
    }
    path
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path)
        .and_then(|meta| meta.modified())
        .ok()
}

/// The most recently modified file under `dir`, searched a few levels deep.
fn newest_file(dir: &Path) -> Option<(PathBuf, SystemTime)> {
    let mut newest: Option<(PathBuf, SystemTime)> = None;
    let mut pending = vec![(dir.to_path_buf(), 0)];
    while let Some((dir, depth)) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if depth < 4 {
                    pending.push((path, depth + 1));
                }
            } else if let Some(changed) = modified(&path)
                && newest.as_ref().is_none_or(|(_, seen)| changed > *seen)
            {
                newest = Some((path, changed));
            }
        }
    }
    newest
}

/// Whether this process runs as root, which PostgreSQL refuses to run as.
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

/// Polls `check` every 100 ms until it holds or `within` has passed; returns whether it held.
pub async fn poll_until<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last `lines` lines of a text file, for failure reports.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_else(|err| format!("(cannot read {}: {err})", path.display()));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
