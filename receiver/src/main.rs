//! A demo webhook receiver for the tour: answers `200` to every POST on any path and logs one
//! line per webhook, with whether its signatures verify when `RECEIVER_SECRET` is set.

mod verify;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use common::config::{self, ConfigError};
use poem::error::ReadBodyError;
use poem::http::{Method, StatusCode, header};
use poem::listener::{Listener, TcpListener};
use poem::{Endpoint, Request, Response, Server};

use verify::StandardHeaders;

/// Characters of the body shown in a log line.
const BODY_PREVIEW_CHARS: usize = 500;

/// Largest body read: the most the API's `MAX_PAYLOAD_BYTES` allows.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

struct Config {
    /// Where to listen (`RECEIVER_ADDR`, default `0.0.0.0:9000`).
    addr: SocketAddr,
    /// The subscription's secret (`RECEIVER_SECRET`, default unset). When set, each
    /// webhook's `X-Hub-Signature-256` and `webhook-signature` are checked and the result
    /// logged; a webhook that fails the check is still answered `200`.
    secret: Option<String>,
}

impl Config {
    fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            addr: config::parse_or(
                "RECEIVER_ADDR",
                SocketAddr::from(([0, 0, 0, 0], 9000)),
                |value| {
                    value
                        .parse()
                        .map_err(|_| "expected host:port such as 0.0.0.0:9000".to_owned())
                },
            )?,
            secret: config::optional("RECEIVER_SECRET")?,
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::telemetry::init()?;
    let config = Config::from_env()?;
    let shutdown = common::shutdown::on_signal();

    let acceptor = TcpListener::bind(config.addr)
        .into_acceptor()
        .await
        .with_context(|| format!("cannot listen on {}", config.addr))?;
    tracing::info!(
        addr = %config.addr,
        checks_signatures = config.secret.is_some(),
        "receiver ready"
    );

    let receiver = Receiver {
        secret: config.secret,
    };
    Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(
            receiver,
            shutdown.cancelled_owned(),
            Some(Duration::from_secs(5)),
        )
        .await
        .context("the receiver's server failed")?;
    tracing::info!("receiver stopped");
    Ok(())
}

/// The one endpoint, serving every path.
struct Receiver {
    secret: Option<String>,
}

impl Endpoint for Receiver {
    type Output = Response;

    async fn call(&self, mut request: Request) -> poem::Result<Response> {
        if request.method() != Method::POST {
            return Ok(Response::builder()
                .status(StatusCode::METHOD_NOT_ALLOWED)
                .header(header::ALLOW, "POST")
                .finish());
        }
        let body = match request.take_body().into_bytes_limit(MAX_BODY_BYTES).await {
            Ok(body) => body,
            Err(ReadBodyError::PayloadTooLarge) => {
                return Ok(StatusCode::PAYLOAD_TOO_LARGE.into());
            }
            Err(err) => {
                tracing::warn!(cause = %err, "cannot read a request body");
                return Ok(StatusCode::BAD_REQUEST.into());
            }
        };

        log_webhook(&request, &body, self.secret.as_deref());
        Ok(StatusCode::OK.into())
    }
}

fn log_webhook(request: &Request, body: &Bytes, secret: Option<&str>) {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
    };
    let verdicts = secret.map(|secret| {
        let hub = verify::hub_signature(
            secret,
            request
                .headers()
                .get("x-hub-signature-256")
                .map(|value| value.as_bytes()),
            body,
        );
        let standard = StandardHeaders {
            id: header("webhook-id"),
            timestamp: header("webhook-timestamp"),
            signature: header("webhook-signature"),
        };
        let now = chrono::Utc::now().timestamp();
        (
            hub,
            verify::standard_signature(secret, &standard, body, now),
        )
    });

    // Showing the body is what this demo is for. A real receiver would not log payloads.
    tracing::info!(
        method = %request.method(),
        path = request.uri().path(),
        webhook_id = header("webhook-id"),
        event_type = header("x-event-type"),
        hub_signature = verdicts.map(|(hub, _)| hub.as_str()),
        standard_signature = verdicts.map(|(_, standard)| standard.as_str()),
        body = %preview(body),
        "webhook received"
    );
}

/// The body as text, cut after [`BODY_PREVIEW_CHARS`] characters.
fn preview(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut chars = text.chars();
    let mut shown: String = chars.by_ref().take(BODY_PREVIEW_CHARS).collect();
    if chars.next().is_some() {
        shown.push('…');
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_bodies_are_cut_and_short_ones_kept() {
        assert_eq!(preview(br#"{"a":1}"#), r#"{"a":1}"#);

        let long = "é".repeat(BODY_PREVIEW_CHARS + 1);
        let shown = preview(long.as_bytes());
        assert_eq!(shown.chars().count(), BODY_PREVIEW_CHARS + 1);
        assert!(shown.ends_with('…'));
    }
}
