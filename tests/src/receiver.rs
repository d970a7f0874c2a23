//! A small HTTP target for tests: it records every request and answers as told, including
//! by hanging or by closing the connection without a response.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the receiver answers a request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// This status with an empty body.
    Status(u16),
    /// This status and these extra headers.
    StatusWithHeaders(u16, Vec<(String, String)>),
    /// Wait this long, then answer with this status.
    After(Duration, u16),
    /// Never answer; hold the connection until the client gives up.
    Hang,
    /// Close the connection without answering.
    Close,
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Received {
    pub at: Instant,
    pub path: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

#[derive(Default)]
struct Shared {
    received: Vec<Received>,
    /// Replies to use first, in order; then `default`.
    script: VecDeque<Reply>,
    default: Option<Reply>,
}

#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
}

impl Receiver {
    /// Starts a receiver on a free port of 127.0.0.1 that answers 200 until told otherwise.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        let shared = Arc::new(Mutex::new(Shared::default()));
        let accepting = shared.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, accepting.clone()));
            }
        });
        Self { addr, shared }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers every later request this way.
    pub fn reply_with(&self, reply: Reply) {
        let mut shared = self.shared.lock().unwrap();
        shared.script.clear();
        shared.default = Some(reply);
    }

    /// Answers the next requests with these replies, in order, then as before.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.lock().unwrap().script.extend(replies);
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().unwrap().received.clone()
    }

    /// Requests received for one delivery, by its `webhook-id`.
    pub fn received_for(&self, delivery_id: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.header("webhook-id") == Some(delivery_id))
            .collect()
    }

    /// Waits until at least `count` requests arrived, or panics after `within`.
    pub async fn wait_for(&self, count: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "receiver got {} of {count} requests: {received:?}",
                received.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn serve(mut stream: TcpStream, shared: Arc<Mutex<Shared>>) {
    loop {
        let Some(request) = read_request(&mut stream).await else {
            return;
        };
        let reply = {
            let mut shared = shared.lock().unwrap();
            shared.received.push(request);
            shared
                .script
                .pop_front()
                .or_else(|| shared.default.clone())
                .unwrap_or(Reply::Status(200))
        };
        let (status, headers) = match reply {
            Reply::Status(status) => (status, Vec::new()),
            Reply::StatusWithHeaders(status, headers) => (status, headers),
            Reply::After(delay, status) => {
                tokio::time::sleep(delay).await;
                (status, Vec::new())
            }
            Reply::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            Reply::Close => return,
        };
        let mut response = format!("HTTP/1.1 {status} Test\r\ncontent-length: 0\r\n");
        for (name, value) in headers {
            response.push_str(&format!("{name}: {value}\r\n"));
        }
        response.push_str("\r\n");
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Reads one HTTP/1.1 request with a Content-Length body; `None` when the peer is gone.
pub(crate) async fn read_request(stream: &mut TcpStream) -> Option<Received> {
    let mut buffer = Vec::new();
    let header_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let mut chunk = [0u8; 8192];
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buffer[header_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = vec![0u8; length - body.len()];
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..read]);
    }
    Some(Received {
        at: Instant::now(),
        path,
        headers,
        body,
    })
}
