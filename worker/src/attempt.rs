//! One HTTP attempt to deliver a webhook, and a short readable account of how it ended.

use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::signing;
use common::subscription_cache::CachedSubscription;
use common::target;
use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER, USER_AGENT};

use crate::resolver::{NonPublicTarget, PublicOnlyResolver};

/// How much of a response body is read, only so the connection can be reused.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Builds the client all attempts share.
pub fn client(timeout: Duration, allow_private: bool) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        // A redirect would let a target send our signed request somewhere else, including
        // into a private network.
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would resolve the target's name itself, bypassing the resolver below.
        .no_proxy()
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(common::USER_AGENT);
    if !allow_private {
        builder = builder.dns_resolver(Arc::new(PublicOnlyResolver));
    }
    builder.build()
}

/// What to send.
pub struct Request<'a> {
    pub subscription: &'a CachedSubscription,
    pub delivery_id: &'a str,
    pub event_type: Option<&'a str>,
    pub payload: Bytes,
}

/// How an attempt ended.
#[derive(Debug)]
pub struct Report {
    pub status_code: Option<u16>,
    /// `None` on success.
    pub error: Option<String>,
    pub duration: Duration,
    /// A `Retry-After` from a 429 or 503 answer.
    pub retry_after: Option<Duration>,
}

impl Report {
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }
}

pub async fn send(
    client: &reqwest::Client,
    request: Request<'_>,
    timeout: Duration,
    allow_private: bool,
) -> Report {
    let started = Instant::now();
    let failed = |error: String| Report {
        status_code: None,
        error: Some(error),
        duration: started.elapsed(),
        retry_after: None,
    };

    let url = match target::parse_target_url(&request.subscription.target_url) {
        Ok(url) => url,
        Err(err) => return failed(err.to_string()),
    };
    // The resolver only sees names; literal addresses are checked here.
    if !allow_private && target::literal_ip(&url).is_some_and(|ip| !target::is_public(ip)) {
        return failed(NonPublicTarget.to_string());
    }

    let response = client
        .post(url)
        .headers(headers(&request))
        .body(request.payload)
        .send()
        .await;
    let response = match response {
        Ok(response) => response,
        Err(err) => return failed(describe(&err, timeout)),
    };

    let status = response.status();
    let retry_after = if matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        response
            .headers()
            .get(RETRY_AFTER)
            .and_then(parse_retry_after)
    } else {
        None
    };
    drain(response).await;

    Report {
        status_code: Some(status.as_u16()),
        error: (!status.is_success()).then(|| format!("HTTP {}", status.as_u16())),
        duration: started.elapsed(),
        retry_after,
    }
}

fn headers(request: &Request<'_>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(USER_AGENT, HeaderValue::from_static(common::USER_AGENT));
    let timestamp = chrono::Utc::now().timestamp();
    insert(&mut headers, "webhook-id", request.delivery_id);
    insert(&mut headers, "webhook-timestamp", &timestamp.to_string());
    if let Some(secret) = &request.subscription.secret {
        let standard = signing::standard_webhooks_signature(
            secret,
            request.delivery_id,
            timestamp,
            &request.payload,
        );
        insert(&mut headers, "webhook-signature", &standard);
        insert(
            &mut headers,
            "x-hub-signature-256",
            &signing::hub_signature(secret, &request.payload),
        );
    }
    if let Some(event_type) = request.event_type {
        insert(&mut headers, "x-event-type", event_type);
    }
    headers
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    // Every value here is ASCII by construction (ids, digits, base64, hex) or was checked
    // at ingest (event types have no control characters); skip rather than panic if not.
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// Reads a little of the body so the connection goes back to the pool, then drops the rest.
async fn drain(response: reqwest::Response) {
    let mut read = 0;
    let mut chunks = response.bytes_stream();
    while let Some(Ok(chunk)) = chunks.next().await {
        read += chunk.len();
        if read > MAX_RESPONSE_BYTES {
            break;
        }
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = chrono::DateTime::parse_from_rfc2822(text).ok()?;
    let wait = date.with_timezone(&chrono::Utc) - chrono::Utc::now();
    wait.to_std().ok()
}

/// A short cause such as `timeout after 10s` or `connection refused`.
fn describe(err: &reqwest::Error, timeout: Duration) -> String {
    if err.is_timeout() {
        return format!("timeout after {}", humantime::format_duration(timeout));
    }
    let mut source = err.source();
    while let Some(cause) = source {
        if cause.is::<NonPublicTarget>() {
            return NonPublicTarget.to_string();
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                std::io::ErrorKind::ConnectionReset => "connection reset by target".to_owned(),
                std::io::ErrorKind::TimedOut => {
                    format!("timeout after {}", humantime::format_duration(timeout))
                }
                _ => format!("network error: {}", short(&io.to_string())),
            };
        }
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>()
            && (hyper.is_incomplete_message() || hyper.is_closed() || hyper.is_canceled())
        {
            return "connection closed by target".to_owned();
        }
        source = cause.source();
    }
    if err.is_connect() {
        return "connection failed".to_owned();
    }
    format!("request failed: {}", short(&err.to_string()))
}

fn short(text: &str) -> String {
    text.chars().take(200).collect()
}
