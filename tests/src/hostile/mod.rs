//! Sending hostile input to the live API: requests described byte by byte, an arena that
//! counts every request and remembers every 5xx, the fixed cases ([`corpus`]) and the
//! generators ([`generate`]) the hostile tests draw from.

pub mod corpus;
pub mod generate;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use entity::{delivery, idempotency_key, subscription};
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::{Value, json};

use crate::{TestApi, TestEnv};

/// The secret of the arena's subscription. No hostile case signs with it, so nothing a
/// case sends can be stored.
pub const SECRET: &str = "hostile-secret";
/// Ingest's body limit in the arena; small, so oversized bodies are cheap to send.
pub const MAX_PAYLOAD: usize = 16 * 1024;

/// A request by its parts. Header values are raw bytes, so they can hold anything HTTP/1.1
/// allows, bytes that are not ASCII included.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub method: reqwest::Method,
    pub path: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Case {
    pub fn post(name: impl Into<String>, path: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            method: reqwest::Method::POST,
            path: path.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header; a second one of the same name is sent as well, not replaced.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_owned(), value.as_ref().to_vec()));
        self
    }

    /// Sets the body and declares it JSON.
    pub fn json_body(self, body: impl AsRef<[u8]>) -> Self {
        self.header("content-type", "application/json").body(body)
    }

    pub fn body(mut self, body: impl AsRef<[u8]>) -> Self {
        self.body = body.as_ref().to_vec();
        self
    }

    pub fn method(mut self, method: reqwest::Method) -> Self {
        self.method = method;
        self
    }
}

/// What a case expects: a status and the `error` code of the body.
pub type Expected = (Case, u16, &'static str);

/// An answer: its status, and its body as text and, when it is JSON, parsed.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub json: Option<Value>,
    pub text: String,
}

impl Answer {
    pub fn code(&self) -> Option<&str> {
        self.json.as_ref()?.get("error")?.as_str()
    }

    /// Whether the body is the API's error shape: an `error` code and a `message`.
    pub fn is_error_body(&self) -> bool {
        self.code().is_some_and(|code| !code.is_empty())
            && self
                .json
                .as_ref()
                .and_then(|json| json.get("message")?.as_str())
                .is_some_and(|message| !message.is_empty())
    }

    /// `None` when this is `status` with the error `code`, otherwise what is wrong.
    pub fn mismatch(&self, status: u16, code: &str) -> Option<String> {
        if self.status == status && self.code() == Some(code) && self.is_error_body() {
            None
        } else {
            Some(format!(
                "expected {status} {code}, got {} {}",
                self.status,
                short(&self.text)
            ))
        }
    }

    /// Whether this is one of the refusals `expected`.
    pub fn is_one_of(&self, expected: &[(u16, &str)]) -> bool {
        expected
            .iter()
            .any(|(status, code)| self.mismatch(*status, code).is_none())
    }
}

/// The first 160 characters, for failure messages.
pub fn short(text: &str) -> String {
    text.chars().take(160).collect()
}

/// The live API (private targets refused, a small body limit) with one subscription that
/// requires a signature and takes only `order.created` events.
pub struct Arena {
    pub env: TestEnv,
    pub api: TestApi,
    pub signed: String,
    tried: AtomicUsize,
    server_errors: Mutex<Vec<String>>,
}

impl Arena {
    pub async fn new() -> Self {
        let env = TestEnv::new().await;
        let mut config = env.api_config();
        config.max_payload_bytes = MAX_PAYLOAD;
        config.common.allow_private_targets = false;
        let api = TestApi::start(config).await;
        let signed = api
            .create_subscription(json!({
                "target_url": "http://93.184.216.34/hooks",
                "secret": SECRET,
                "event_types": ["order.created"],
            }))
            .await["id"]
            .as_str()
            .expect("an id")
            .to_owned();
        Self {
            env,
            api,
            signed,
            tried: AtomicUsize::new(0),
            server_errors: Mutex::new(Vec::new()),
        }
    }

    pub fn ingest_path(&self) -> String {
        format!("/ingest/{}", self.signed)
    }

    /// A JSON webhook to the signed subscription, unsigned.
    pub fn webhook(&self, name: impl Into<String>, body: impl AsRef<[u8]>) -> Case {
        Case::post(name, self.ingest_path()).json_body(body)
    }

    pub fn tried(&self) -> usize {
        self.tried.load(Ordering::SeqCst)
    }

    /// Sends a case; a request that got no answer at all panics with the case's name.
    pub async fn send(&self, case: &Case) -> Answer {
        match self
            .try_send(case, reqwest::Body::from(case.body.clone()))
            .await
        {
            Ok(answer) => answer,
            Err(err) => panic!("{}: no answer: {err}", case.name),
        }
    }

    /// Sends a case with `body` in place of its own, and returns the transport error if no
    /// answer came.
    pub async fn try_send(&self, case: &Case, body: reqwest::Body) -> reqwest::Result<Answer> {
        self.tried.fetch_add(1, Ordering::SeqCst);
        let mut request = self
            .api
            .http
            .request(case.method.clone(), self.api.at(&case.path))
            .body(body);
        for (name, value) in &case.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .unwrap_or_else(|err| panic!("{}: header name {name:?}: {err}", case.name));
            let value = reqwest::header::HeaderValue::from_bytes(value)
                .unwrap_or_else(|err| panic!("{}: header value {value:?}: {err}", case.name));
            request = request.header(name, value);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        if status >= 500 {
            self.server_errors
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(format!("{}: {status} {}", case.name, short(&text)));
        }
        Ok(Answer {
            status,
            json: serde_json::from_str(&text).ok(),
            text,
        })
    }

    /// Sends every case, then panics listing every case that did not get its status and
    /// error code.
    pub async fn expect_all(&self, cases: Vec<Expected>) {
        let mut mismatches = Vec::new();
        for (case, status, code) in cases {
            let answer = self.send(&case).await;
            if let Some(problem) = answer.mismatch(status, code) {
                mismatches.push(format!("{}: {problem}", case.name));
            }
        }
        assert!(
            mismatches.is_empty(),
            "{} cases did not get their documented answer:\n{}",
            mismatches.len(),
            mismatches.join("\n")
        );
    }

    /// Panics unless no request got a 5xx and nothing was stored: no delivery, idempotency
    /// key or job, and no subscription but the arena's own. Returns a line saying how many
    /// cases were tried.
    pub async fn assert_nothing_stored(&self, suite: &str) -> String {
        let database = &self.env.database;
        let deliveries = delivery::Entity::find()
            .count(database)
            .await
            .expect("count");
        let keys = idempotency_key::Entity::find()
            .count(database)
            .await
            .expect("count");
        let subscriptions = subscription::Entity::find()
            .count(database)
            .await
            .expect("count");
        let mut stream = self
            .env
            .jetstream
            .get_stream(self.env.names().job_stream())
            .await
            .expect("the job stream");
        let jobs = stream.info().await.expect("stream info").state.messages;
        let server_errors = self
            .server_errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();

        assert!(server_errors.is_empty(), "5xx answers: {server_errors:#?}");
        assert_eq!(
            (deliveries, keys, subscriptions, jobs),
            (0, 0, 1, 0),
            "hostile input was stored (deliveries, idempotency keys, subscriptions, jobs)"
        );
        format!(
            "{suite}: {} cases tried, no 5xx, nothing stored",
            self.tried()
        )
    }
}

/// A proptest runner with a fixed number of cases that writes no regression files.
pub fn runner(cases: u32) -> TestRunner {
    let mut config = ProptestConfig::with_cases(cases);
    config.failure_persistence = None;
    config.max_shrink_iters = 256;
    TestRunner::new(config)
}

/// A runtime for property tests, whose runner is synchronous.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Everything outside RFC 3986's unreserved characters, percent-encoded.
pub fn encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// What an HTTP/1.1 server makes of a header value: white space around it goes.
pub fn as_received(value: &str) -> &str {
    value.trim_matches([' ', '\t'])
}

/// The deepest nesting of arrays and objects in a JSON value.
pub fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(fields) => 1 + fields.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}
