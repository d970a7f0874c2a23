//! A webhook target that fails a chosen fraction of requests, and on command hangs every
//! request or closes every connection without answering. It records what it answered to
//! each `webhook-id`, so a test can tell delivered webhooks and duplicates apart.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Paths under this prefix never fail on their own; only a target-wide [`Mode`] stops them.
/// Probes use it to measure recovery without the chosen failure rate in the way.
pub const RELIABLE_PREFIX: &str = "/reliable";

/// Longest a hanging request is held when the client does not give up first.
const LONGEST_HANG: Duration = Duration::from_secs(30);

/// How the whole target behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Answer after a short delay: `500` for the chosen fraction of requests, else `200`.
    Normal,
    /// Read the request and never answer; hold the connection until the client gives up.
    Hang,
    /// Read the request and close the connection without a word.
    Close,
}

/// What the target did with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered with this status, and the answer was written to the socket.
    Answered(u16),
    Hung,
    Closed,
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Hit {
    /// When the answer was written, or the request given up on.
    pub at: Instant,
    pub path: String,
    pub webhook_id: Option<String>,
    pub body: Vec<u8>,
    pub outcome: Outcome,
}

impl Hit {
    pub fn succeeded(&self) -> bool {
        matches!(self.outcome, Outcome::Answered(status) if (200..300).contains(&status))
    }
}

struct State {
    mode: Mutex<Mode>,
    fail_fraction: f64,
    hits: Mutex<Vec<Hit>>,
    in_flight: AtomicUsize,
}

/// See the module documentation. Stops accepting when dropped.
pub struct FlakyTarget {
    pub addr: SocketAddr,
    state: Arc<State>,
    acceptor: JoinHandle<()>,
}

impl FlakyTarget {
    /// Starts a target on a free port of 127.0.0.1 that answers `500` to `fail_fraction` of
    /// requests (0.0 to 1.0) outside [`RELIABLE_PREFIX`].
    pub async fn start(fail_fraction: f64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind target");
        let addr = listener.local_addr().expect("target address");
        let state = Arc::new(State {
            mode: Mutex::new(Mode::Normal),
            fail_fraction,
            hits: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
        });
        let accepting = state.clone();
        let acceptor = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, accepting.clone()));
            }
        });
        Self {
            addr,
            state,
            acceptor,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.state.mode) = mode;
    }

    /// Requests read and not yet answered or given up on.
    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::SeqCst)
    }

    pub fn hits(&self) -> Vec<Hit> {
        lock(&self.state.hits).clone()
    }

    /// The requests answered with 2xx, by `webhook-id`.
    pub fn successes(&self) -> HashMap<String, Vec<Hit>> {
        let mut by_id: HashMap<String, Vec<Hit>> = HashMap::new();
        for hit in lock(&self.state.hits).iter().filter(|hit| hit.succeeded()) {
            if let Some(id) = &hit.webhook_id {
                by_id.entry(id.clone()).or_default().push(hit.clone());
            }
        }
        by_id
    }

    /// Whether a request with this `webhook-id` was answered with 2xx.
    pub fn delivered(&self, webhook_id: &str) -> Option<Instant> {
        lock(&self.state.hits)
            .iter()
            .find(|hit| hit.succeeded() && hit.webhook_id.as_deref() == Some(webhook_id))
            .map(|hit| hit.at)
    }
}

impl Drop for FlakyTarget {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking test thread may poison the lock; the data is still worth reading.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn serve(mut stream: TcpStream, state: Arc<State>) {
    loop {
        let Some(request) = crate::receiver::read_request(&mut stream).await else {
            return;
        };
        state.in_flight.fetch_add(1, Ordering::SeqCst);
        let mode = *lock(&state.mode);
        let (outcome, keep_going) = match mode {
            Mode::Normal => {
                let reliable = request.path.starts_with(RELIABLE_PREFIX);
                let status = if !reliable && rand::random::<f64>() < state.fail_fraction {
                    500
                } else {
                    200
                };
                // Some latency, so a crash can find attempts in flight.
                let delay = rand::random_range(5..30);
                tokio::time::sleep(Duration::from_millis(delay)).await;
                let response = format!("HTTP/1.1 {status} Flaky\r\ncontent-length: 2\r\n\r\nok");
                if stream.write_all(response.as_bytes()).await.is_ok() {
                    (Outcome::Answered(status), true)
                } else {
                    (Outcome::Closed, false)
                }
            }
            Mode::Hang => {
                // Waits for the client to give up (end of stream), not for a fixed time.
                let mut sink = [0u8; 1024];
                let _ = tokio::time::timeout(LONGEST_HANG, async {
                    while matches!(stream.read(&mut sink).await, Ok(read) if read > 0) {}
                })
                .await;
                (Outcome::Hung, false)
            }
            Mode::Close => (Outcome::Closed, false),
        };
        lock(&state.hits).push(Hit {
            at: Instant::now(),
            webhook_id: request.header("webhook-id").map(str::to_owned),
            path: request.path,
            body: request.body,
            outcome,
        });
        state.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !keep_going {
            return;
        }
    }
}
