//! Clients that keep sending webhooks at a steady pace, as real senders would: a webhook
//! refused with `503`, or not answered at all, is sent again until it is accepted or the
//! client gives up on it. Every try is recorded with when it started and ended.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How the API answered one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `202`, with the delivery id from the receipt.
    Accepted(Uuid),
    /// Any other status, with the `error` code of the body (`<not json>` when it had none).
    Refused { status: u16, code: String },
    /// No answer: refused connection, reset, timeout.
    Unreachable(String),
}

impl Answer {
    /// Whether a sender should try again: the service said so, or did not answer.
    pub fn worth_retrying(&self) -> bool {
        matches!(
            self,
            Self::Unreachable(_) | Self::Refused { status: 503, .. }
        )
    }
}

/// One request of one webhook.
#[derive(Clone, Debug)]
pub struct Try {
    /// The webhook's number; its body carries it.
    pub number: usize,
    pub started: Instant,
    pub finished: Instant,
    pub answer: Answer,
}

impl Try {
    /// Whether the request was sent and answered entirely inside `[from, to]`.
    pub fn within(&self, from: Instant, to: Instant) -> bool {
        self.started >= from && self.finished <= to
    }
}

/// The body of webhook `number`.
pub fn body(number: usize) -> Vec<u8> {
    format!(r#"{{"n":{number},"sent_by":"fault-test","note":"exact bytes kept"}}"#).into_bytes()
}

/// The number a body made by [`body`] carries.
pub fn number_of(payload: &[u8]) -> Option<usize> {
    let value: Value = serde_json::from_slice(payload).ok()?;
    usize::try_from(value.get("n")?.as_u64()?).ok()
}

/// Sends one webhook and classifies the answer.
pub async fn ingest(
    http: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    idempotency_key: Option<&str>,
) -> Answer {
    let mut request = http
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(key) = idempotency_key {
        request = request.header("idempotency-key", key);
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(err) => return Answer::Unreachable(error_kind(&err)),
    };
    let status = response.status().as_u16();
    let text = match response.text().await {
        Ok(text) => text,
        Err(err) => return Answer::Unreachable(error_kind(&err)),
    };
    let json: Option<Value> = serde_json::from_str(&text).ok();
    if status == 202
        && let Some(id) = json
            .as_ref()
            .and_then(|json| json["delivery_id"].as_str())
            .and_then(|id| Uuid::parse_str(id).ok())
    {
        return Answer::Accepted(id);
    }
    let code = json
        .as_ref()
        .and_then(|json| json["error"].as_str())
        .unwrap_or("<not json>")
        .to_owned();
    Answer::Refused { status, code }
}

fn error_kind(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "timeout".to_owned()
    } else if err.is_connect() {
        "connect".to_owned()
    } else {
        "request".to_owned()
    }
}

/// How the clients behave.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub clients: usize,
    /// Each client starts a new webhook at most this often.
    pub interval: Duration,
    /// The clients stop after this many webhooks even if not told to.
    pub max_webhooks: usize,
    /// A client stops sending one webhook again after this long.
    pub give_up_after: Duration,
    /// Pause between two tries of one webhook.
    pub retry_pause: Duration,
    /// Webhooks whose number is even carry an `Idempotency-Key` made from this and the
    /// number; odd ones go through the API's batch writer without one.
    pub key_prefix: String,
}

/// Clients sending webhooks to one subscription until stopped.
pub struct Load {
    tries: Arc<Mutex<Vec<Try>>>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    pub fn start(ingest_url: String, config: LoadConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .expect("an HTTP client");
        let tries = Arc::new(Mutex::new(Vec::new()));
        let next = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let tasks = (0..config.clients)
            .map(|_| {
                let client = Client {
                    http: http.clone(),
                    url: ingest_url.clone(),
                    config: config.clone(),
                    tries: tries.clone(),
                    next: next.clone(),
                    stop: stop.clone(),
                };
                tokio::spawn(client.run())
            })
            .collect();
        Self { tries, stop, tasks }
    }

    pub fn tries(&self) -> Vec<Try> {
        lock(&self.tries).clone()
    }

    pub fn accepted(&self) -> usize {
        lock(&self.tries)
            .iter()
            .filter(|attempt| matches!(attempt.answer, Answer::Accepted(_)))
            .count()
    }

    /// Tells the clients to start no new webhook, and waits up to `within` for the ones in
    /// progress. Returns every try.
    pub async fn stop(self, within: Duration) -> Vec<Try> {
        self.stop.cancel();
        let all = futures::future::join_all(self.tasks);
        let finished = tokio::time::timeout(within, all).await;
        assert!(
            finished.is_ok(),
            "clients still busy {within:?} after being stopped"
        );
        lock(&self.tries).clone()
    }
}

struct Client {
    http: reqwest::Client,
    url: String,
    config: LoadConfig,
    tries: Arc<Mutex<Vec<Try>>>,
    next: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Client {
    async fn run(self) {
        let mut pace = tokio::time::interval(self.config.interval);
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = pace.tick() => {}
                () = self.stop.cancelled() => return,
            }
            let number = self.next.fetch_add(1, Ordering::SeqCst);
            if number >= self.config.max_webhooks {
                return;
            }
            self.send(number).await;
        }
    }

    async fn send(&self, number: usize) {
        let key = number
            .is_multiple_of(2)
            .then(|| format!("{}-{number}", self.config.key_prefix));
        let give_up = Instant::now() + self.config.give_up_after;
        loop {
            let started = Instant::now();
            let answer = ingest(&self.http, &self.url, body(number), key.as_deref()).await;
            let retry = answer.worth_retrying();
            lock(&self.tries).push(Try {
                number,
                started,
                finished: Instant::now(),
                answer,
            });
            if !retry || Instant::now() >= give_up {
                return;
            }
            // A sender's back-off between tries, not a wait for anything in the test.
            tokio::time::sleep(self.config.retry_pause).await;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
