//! Ingest load: subscriptions to send to, signed bodies, and the two ways of sending them
//! (a fixed number of requests in flight, or a fixed offered rate).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde::Deserialize;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::analysis::micros_histogram;

/// Distinct bodies per subscription. A few are enough to keep the api from seeing one
/// body over and over; signing them all up front keeps the bench's own CPU use low.
const BODIES_PER_SUBSCRIPTION: usize = 16;

/// One subscription and what to send to it.
pub struct Target {
    pub subscription_id: Uuid,
    url: reqwest::Url,
    /// Bodies with their `X-Hub-Signature-256`, when the subscription has a secret.
    bodies: Vec<(Bytes, Option<HeaderValue>)>,
}

/// Creates `count` subscriptions to the receiver, every second one with a secret.
pub async fn create_targets(
    client: &reqwest::Client,
    api_url: &str,
    api_key: Option<&str>,
    target_urls: impl Iterator<Item = String>,
    body_size: usize,
) -> anyhow::Result<Vec<Target>> {
    let mut targets = Vec::new();
    for (index, target_url) in target_urls.enumerate() {
        let secret = (index % 2 == 0).then(|| format!("bench-secret-{index}"));
        let request = serde_json::json!({
            "target_url": target_url,
            "secret": secret,
            "description": "hookline bench",
        });
        let mut call = client
            .post(format!("{api_url}/subscriptions"))
            .header(CONTENT_TYPE, "application/json")
            .body(request.to_string());
        if let Some(key) = api_key {
            call = call.bearer_auth(key);
        }
        let response = call.send().await.context("cannot create a subscription")?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status != reqwest::StatusCode::CREATED {
            anyhow::bail!("creating a subscription answered {status}: {text}");
        }
        #[derive(Deserialize)]
        struct Created {
            id: Uuid,
        }
        let created: Created = serde_json::from_str(&text)
            .with_context(|| format!("unexpected subscription answer: {text}"))?;

        let url = format!("{api_url}/ingest/{}", created.id)
            .parse()
            .context("ingest URL")?;
        let bodies = (0..BODIES_PER_SUBSCRIPTION)
            .map(|number| {
                let body = json_body(index, number, body_size);
                let signature = secret.as_deref().map(|secret| {
                    let header = common::signing::hub_signature(secret, &body);
                    // Hex digits and `sha256=`: always a valid header value.
                    HeaderValue::from_str(&header).unwrap_or(HeaderValue::from_static(""))
                });
                (body, signature)
            })
            .collect();
        targets.push(Target {
            subscription_id: created.id,
            url,
            bodies,
        });
    }
    Ok(targets)
}

/// Deletes subscriptions made on an external api, whose database the bench does not own.
pub async fn delete_targets(
    client: &reqwest::Client,
    api_url: &str,
    api_key: Option<&str>,
    targets: &[Target],
) {
    for target in targets {
        let mut call = client.delete(format!(
            "{api_url}/subscriptions/{}",
            target.subscription_id
        ));
        if let Some(key) = api_key {
            call = call.bearer_auth(key);
        }
        if let Err(err) = call.send().await {
            eprintln!(
                "bench: cannot delete subscription {}: {err}",
                target.subscription_id
            );
        }
    }
}

/// A JSON object of exactly `size` bytes (at least [`crate::options::MIN_BODY_SIZE`]).
fn json_body(subscription: usize, number: usize, size: usize) -> Bytes {
    let head = format!(r#"{{"bench":true,"subscription":{subscription},"n":{number},"pad":""#);
    let tail = r#""}"#;
    let padding = size.saturating_sub(head.len() + tail.len());
    let mut body = String::with_capacity(size);
    body.push_str(&head);
    body.extend(std::iter::repeat_n('x', padding));
    body.push_str(tail);
    Bytes::from(body)
}

/// The client all ingest requests share: one pool of keep-alive connections, no proxy.
pub fn client(pool_size: usize, timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .pool_max_idle_per_host(pool_size)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .no_proxy()
        .build()
}

/// Everything one load run produced.
pub struct LoadResult {
    pub started: Instant,
    /// When the last response arrived.
    pub ended: Instant,
    pub requests: u64,
    /// Microseconds from the (planned) send to the response.
    pub latency_us: Histogram<u64>,
    /// Responses by outcome: `202`, `503`, `timeout`, ...
    pub outcomes: BTreeMap<String, u64>,
    /// Accepted and queued deliveries with when their `202` arrived.
    pub accepted: Vec<(Uuid, Instant)>,
    /// Accepted but not queued (status `skipped`); none are expected.
    pub skipped: u64,
    /// Fixed rate only: how far behind plan the latest send went, in milliseconds.
    pub max_send_lag_ms: f64,
}

impl LoadResult {
    pub fn accepted_count(&self) -> u64 {
        self.accepted.len() as u64 + self.skipped
    }
}

struct Recorder {
    latency_us: Histogram<u64>,
    outcomes: BTreeMap<String, u64>,
    accepted: Vec<(Uuid, Instant)>,
    skipped: u64,
}

impl Recorder {
    fn new() -> Self {
        Self {
            latency_us: micros_histogram(),
            outcomes: BTreeMap::new(),
            accepted: Vec::new(),
            skipped: 0,
        }
    }

    fn record(&mut self, latency: Duration, outcome: Outcome, at: Instant) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us.saturating_record(micros.max(1));
        let key = match outcome {
            Outcome::Queued(id) => {
                self.accepted.push((id, at));
                "202".to_owned()
            }
            Outcome::Skipped => {
                self.skipped += 1;
                "202 skipped".to_owned()
            }
            Outcome::Status(status) => status.to_string(),
            Outcome::Transport(kind) => kind.to_owned(),
        };
        *self.outcomes.entry(key).or_default() += 1;
    }
}

type SharedRecorder = Arc<Mutex<Recorder>>;

fn lock(recorder: &SharedRecorder) -> std::sync::MutexGuard<'_, Recorder> {
    // Each update is a few pushes and counter increments; a panic in one leaves the rest
    // consistent enough to report.
    recorder
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

enum Outcome {
    Queued(Uuid),
    Skipped,
    Status(u16),
    Transport(&'static str),
}

async fn send(client: &reqwest::Client, target: &Target, number: u64) -> Outcome {
    let index = usize::try_from(number).unwrap_or(0) % target.bodies.len();
    let (body, signature) = &target.bodies[index];
    let mut request = client
        .post(target.url.clone())
        .header(CONTENT_TYPE, "application/json")
        .header("x-event-type", "bench.event")
        .body(body.clone());
    if let Some(signature) = signature {
        request = request.header("x-hub-signature-256", signature.clone());
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(err) => return Outcome::Transport(transport_kind(&err)),
    };
    let status = response.status().as_u16();
    let text = match response.bytes().await {
        Ok(text) => text,
        Err(err) => return Outcome::Transport(transport_kind(&err)),
    };
    if status != 202 {
        return Outcome::Status(status);
    }
    #[derive(Deserialize)]
    struct Accepted {
        delivery_id: Uuid,
        status: String,
    }
    match serde_json::from_slice::<Accepted>(&text) {
        Ok(accepted) if accepted.status == "queued" => Outcome::Queued(accepted.delivery_id),
        Ok(_) => Outcome::Skipped,
        Err(_) => Outcome::Transport("202 with unreadable body"),
    }
}

fn transport_kind(err: &reqwest::Error) -> &'static str {
    if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connect error"
    } else if err.is_body() || err.is_decode() {
        "body error"
    } else {
        "transport error"
    }
}

/// What both ways of sending share.
pub struct Plan<'a> {
    pub client: &'a reqwest::Client,
    pub targets: &'a Arc<Vec<Target>>,
    pub duration: Duration,
    pub max_requests: u64,
}

/// Keeps `concurrency` requests in flight until the duration or the request budget is spent.
pub async fn fixed_concurrency(plan: &Plan<'_>, concurrency: u32) -> LoadResult {
    let recorder: SharedRecorder = Arc::new(Mutex::new(Recorder::new()));
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + plan.duration;

    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, targets) = (plan.client.clone(), plan.targets.clone());
        let (recorder, counter) = (recorder.clone(), counter.clone());
        let max_requests = plan.max_requests;
        senders.spawn(async move {
            loop {
                let number = counter.fetch_add(1, Ordering::Relaxed);
                if number >= max_requests || Instant::now() >= deadline {
                    break;
                }
                let target = &targets[usize::try_from(number).unwrap_or(0) % targets.len()];
                let sent = Instant::now();
                let outcome = send(&client, target, number / targets.len() as u64).await;
                let answered = Instant::now();
                lock(&recorder).record(answered - sent, outcome, answered);
            }
        });
    }
    while senders.join_next().await.is_some() {}

    let ended = Instant::now();
    // The counter also counts the draw of each sender that found the time up.
    let requests = lock(&recorder).outcomes.values().sum();
    finish(recorder, started, ended, requests, 0.0)
}

/// Sends at `rate` per second on a fixed timetable, however slowly the api answers, up to
/// `max_in_flight` at once. Latency counts from the planned send time, so a stall is not
/// hidden by the sends it delayed (coordinated omission).
pub async fn fixed_rate(plan: &Plan<'_>, rate: f64, max_in_flight: u32) -> LoadResult {
    let recorder: SharedRecorder = Arc::new(Mutex::new(Recorder::new()));
    let permits = Arc::new(Semaphore::new(max_in_flight as usize));
    let started = Instant::now();
    let deadline = started + plan.duration;
    let mut max_lag = Duration::ZERO;

    let mut number: u64 = 0;
    while number < plan.max_requests {
        // From the start each time, so rounding does not add up over many sends.
        let planned = started + Duration::from_secs_f64(number as f64 / rate);
        if planned >= deadline {
            break;
        }
        tokio::time::sleep_until(planned.into()).await;
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        max_lag = max_lag.max(Instant::now().saturating_duration_since(planned));

        let targets = plan.targets.clone();
        let (client, recorder) = (plan.client.clone(), recorder.clone());
        tokio::spawn(async move {
            let target = &targets[usize::try_from(number).unwrap_or(0) % targets.len()];
            let outcome = send(&client, target, number / targets.len() as u64).await;
            let answered = Instant::now();
            lock(&recorder).record(answered - planned, outcome, answered);
            drop(permit);
        });
        number += 1;
    }
    // Every permit back means every request has been answered.
    let _ = permits.acquire_many(max_in_flight).await;

    let ended = Instant::now();
    finish(
        recorder,
        started,
        ended,
        number,
        max_lag.as_secs_f64() * 1000.0,
    )
}

fn finish(
    recorder: SharedRecorder,
    started: Instant,
    ended: Instant,
    requests: u64,
    max_send_lag_ms: f64,
) -> LoadResult {
    let recorder = std::mem::replace(&mut *lock(&recorder), Recorder::new());
    LoadResult {
        started,
        ended,
        requests,
        latency_us: recorder.latency_us,
        outcomes: recorder.outcomes,
        accepted: recorder.accepted,
        skipped: recorder.skipped,
        max_send_lag_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::json_body;

    #[test]
    fn bodies_are_json_of_the_exact_size() {
        for size in [64, 100, 1024, 65_536] {
            let body = json_body(3, 7, size);
            assert_eq!(body.len(), size);
            let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(parsed["n"], 7);
        }
    }
}
