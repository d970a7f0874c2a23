//! The webhook target: an in-process HTTP server on 127.0.0.1 that records when each attempt
//! of each delivery arrived, and fails the first attempts when told to.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// One attempt as the receiver saw it.
#[derive(Clone, Copy, Debug)]
pub struct Arrival {
    pub at: Instant,
    /// What the receiver answered.
    pub status: u16,
}

impl Arrival {
    pub fn succeeded(&self) -> bool {
        self.status == 200
    }
}

struct Shared {
    /// Attempts answered with 500 before a delivery's attempts are answered with 200.
    fail_first: usize,
    /// Every attempt by `webhook-id`, in arrival order.
    arrivals: Mutex<HashMap<Uuid, Vec<Arrival>>>,
    /// Requests without a readable `webhook-id`: not from the worker, or a bug in it.
    unidentified: AtomicU64,
}

impl Shared {
    fn arrivals(&self) -> MutexGuard<'_, HashMap<Uuid, Vec<Arrival>>> {
        // A panic while holding the lock cannot leave the map half-updated (each update is
        // one push), so a poisoned lock is still good to read.
        self.arrivals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The running receiver; it stops accepting when dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accepting: JoinHandle<()>,
}

impl Receiver {
    pub async fn start(fail_first: u32) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            fail_first: usize::try_from(fail_first).unwrap_or(usize::MAX),
            arrivals: Mutex::new(HashMap::new()),
            unidentified: AtomicU64::new(0),
        });
        let accepting = tokio::spawn(accept(listener, shared.clone()));
        Ok(Self {
            addr,
            shared,
            accepting,
        })
    }

    /// The target URL for subscription `index`.
    pub fn url(&self, index: u32) -> String {
        format!("http://{}/s/{index}", self.addr)
    }

    /// How many of `ids` have not been answered 200 yet.
    pub fn undelivered(&self, ids: &[Uuid]) -> usize {
        let arrivals = self.shared.arrivals();
        ids.iter()
            .filter(|id| {
                !arrivals
                    .get(id)
                    .is_some_and(|attempts| attempts.iter().any(Arrival::succeeded))
            })
            .count()
    }

    /// A copy of everything recorded so far.
    pub fn snapshot(&self) -> HashMap<Uuid, Vec<Arrival>> {
        self.shared.arrivals().clone()
    }

    /// Forgets what arrived so far, so a measurement does not see the warm-up.
    pub fn clear(&self) {
        self.shared.arrivals().clear();
    }

    pub fn unidentified(&self) -> u64 {
        self.shared.unidentified.load(Ordering::Relaxed)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of file descriptors and the like: the worker sees refused connections
            // and retries, which the report shows as lateness or missing deliveries.
            Err(err) => {
                eprintln!("bench: receiver cannot accept: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(request, shared.clone()));
            // A connection the worker drops mid-request is its business, not a bench error.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    request: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let at = Instant::now();
    let id = request
        .headers()
        .get("webhook-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| Uuid::parse_str(value).ok());
    // Reading the whole body lets the worker reuse the connection.
    let body_read = request.into_body().collect().await.is_ok();
    let Some(id) = id.filter(|_| body_read) else {
        shared.unidentified.fetch_add(1, Ordering::Relaxed);
        return Ok(reply(StatusCode::BAD_REQUEST));
    };

    let status = {
        let mut arrivals = shared.arrivals();
        let attempts = arrivals.entry(id).or_default();
        let status = if attempts.len() < shared.fail_first {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        };
        attempts.push(Arrival {
            at,
            status: status.as_u16(),
        });
        status
    };
    Ok(reply(status))
}

fn reply(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}
