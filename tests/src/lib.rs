//! Test harness: a fresh database and JetStream namespace per test, the real API and worker
//! in-process on real sockets, and a recording HTTP receiver.
//!
//! Tests reach PostgreSQL through `TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`, used only to create and drop the test's own
//! database) and NATS through `TEST_NATS_URL` (default `nats://127.0.0.1:4222`).

pub mod cluster;
pub mod hostile;
pub mod receiver;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use api::ApiConfig;
use common::config::CommonConfig;
use sea_orm::{ConnectionTrait, DatabaseConnection};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use worker::WorkerConfig;

pub use receiver::{Received, Receiver, Reply};

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn nats_url() -> String {
    std::env::var("TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// Installs a log subscriber once per test binary; `RUST_LOG` selects what is shown.
pub fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// One test's private database and JetStream namespace. Dropping it removes both.
pub struct TestEnv {
    pub database_url: String,
    pub database: DatabaseConnection,
    pub namespace: String,
    pub jetstream: async_nats::jetstream::Context,
    database_name: String,
}

impl TestEnv {
    pub async fn new() -> Self {
        init_logging();
        let suffix = Uuid::new_v4().simple().to_string();
        let database_name = format!("hookline_test_{suffix}");
        let admin = common::database::connect(&admin_url(), 1)
            .await
            .expect("connect as admin");
        admin
            .execute_unprepared(&format!("CREATE DATABASE {database_name}"))
            .await
            .expect("create test database");
        admin.close().await.ok();

        let mut database_url = url::Url::parse(&admin_url()).expect("TEST_DATABASE_URL is a URL");
        database_url.set_path(&database_name);
        let database_url = database_url.to_string();
        // The API applies migrations at start; tests that never start it need them too.
        let database = common::database::connect(&database_url, 5)
            .await
            .expect("connect");
        {
            use migration::MigratorTrait;
            migration::Migrator::up(&database, None)
                .await
                .expect("migrate");
        }

        let client = async_nats::connect(nats_url())
            .await
            .expect("connect to NATS");
        Self {
            database_url,
            database,
            namespace: format!("t{suffix}"),
            jetstream: async_nats::jetstream::new(client),
            database_name,
        }
    }

    pub fn common_config(&self) -> CommonConfig {
        CommonConfig {
            database_url: self.database_url.clone(),
            nats_url: nats_url(),
            nats_namespace: self.namespace.clone(),
            // Test targets listen on 127.0.0.1.
            allow_private_targets: true,
        }
    }

    pub fn api_config(&self) -> ApiConfig {
        ApiConfig {
            common: self.common_config(),
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_key: None,
            max_payload_bytes: 1024 * 1024,
            database_max_connections: 10,
        }
    }

    /// A worker configuration with a fast schedule suited to tests.
    pub fn worker_config(&self) -> WorkerConfig {
        WorkerConfig {
            common: self.common_config(),
            concurrency: 16,
            subscription_concurrency: 16,
            timeout: Duration::from_secs(2),
            retry_schedule: vec![Duration::from_secs(1), Duration::from_secs(2)],
            ack_wait: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(5),
            database_max_connections: 10,
        }
    }

    pub async fn start_api(&self) -> TestApi {
        TestApi::start(self.api_config()).await
    }

    pub async fn start_worker(&self) -> TestWorker {
        TestWorker::start(self.worker_config()).await
    }

    pub fn names(&self) -> common::jetstream::Names {
        common::jetstream::Names::new(self.namespace.clone())
    }

    /// The subscription bucket, through the test's own NATS client.
    pub async fn subscription_bucket(&self) -> async_nats::jetstream::kv::Store {
        self.jetstream
            .get_key_value(self.names().subscription_bucket())
            .await
            .expect("the subscription bucket exists")
    }

    /// A subscription cache on the test's own NATS client, as another process would hold.
    pub async fn subscription_cache(&self) -> common::subscription_cache::SubscriptionCache {
        common::subscription_cache::SubscriptionCache::new(
            self.subscription_bucket().await,
            self.database.clone(),
            self.jetstream.client(),
        )
    }

    /// Jobs the work-queue stream holds: waiting, in progress or waiting out a retry delay.
    pub async fn jobs_in_stream(&self) -> u64 {
        let mut stream = self
            .jetstream
            .get_stream(self.names().job_stream())
            .await
            .unwrap();
        stream.info().await.unwrap().state.messages
    }

    /// The shared worker consumer's current state and configuration.
    pub async fn worker_consumer_info(&self) -> async_nats::jetstream::consumer::Info {
        let stream = self
            .jetstream
            .get_stream(self.names().job_stream())
            .await
            .unwrap();
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
            .get_consumer(&self.names().worker_consumer())
            .await
            .unwrap();
        consumer.info().await.unwrap().clone()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let database_name = self.database_name.clone();
        let names = self.names();
        // Drop runs inside the test's runtime, which is blocked until this returns: clean up
        // on a thread with a runtime, and connections, of its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let Ok(runtime) = runtime else { return };
            runtime.block_on(async move {
                if let Ok(client) = async_nats::connect(nats_url()).await {
                    let jetstream = async_nats::jetstream::new(client);
                    let _ = jetstream.delete_stream(names.job_stream()).await;
                    let _ = jetstream
                        .delete_key_value(names.subscription_bucket())
                        .await;
                }
                if let Ok(admin) = common::database::connect(&admin_url(), 1).await {
                    let _ = admin
                        .execute_unprepared(&format!(
                            "DROP DATABASE IF EXISTS {database_name} WITH (FORCE)"
                        ))
                        .await;
                    let _ = admin.close().await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// The API serving on a free port of 127.0.0.1.
pub struct TestApi {
    pub url: String,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl TestApi {
    pub async fn start(config: ApiConfig) -> Self {
        let state = api::connect(&config).await.expect("api connects");
        let listener = std::net::TcpListener::bind(config.listen_addr).expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let api_key = config.api_key.clone();
        let task = tokio::spawn(async move {
            api::serve(state, api_key, listener, stop)
                .await
                .expect("api serves");
        });
        Self {
            url,
            http: reqwest::Client::new(),
            shutdown,
            task,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Creates a subscription and returns its JSON; panics unless the answer is 201.
    pub async fn create_subscription(&self, body: Value) -> Value {
        let response = self
            .http
            .post(self.at("/subscriptions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 201, "creating {body} answered {status}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// Sends a webhook and returns the status and the JSON body.
    pub async fn ingest(
        &self,
        subscription_id: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut request = self
            .http
            .post(self.at(&format!("/ingest/{subscription_id}")))
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }

    /// GETs a path and returns the status and the JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.at(path)).send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Polls a delivery until `done` holds for it, or panics with its last state.
    pub async fn wait_for_delivery(
        &self,
        delivery_id: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let path = format!("/deliveries/{delivery_id}");
        let deadline = Instant::now() + within;
        loop {
            let (status, body) = self.get(&path).await;
            if status == 200 && done(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "delivery {delivery_id} did not get there: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A worker running on a runtime of its own, so that it can be killed outright: dropping
/// the runtime abandons every in-flight job without an acknowledgement, as SIGKILL would.
pub struct TestWorker {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestWorker {
    pub async fn start(config: WorkerConfig) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("worker runtime");
        let worker = runtime
            .spawn(async move {
                worker::Worker::connect(&config)
                    .await
                    .expect("worker connects")
            })
            .await
            .expect("worker start");
        let shutdown = CancellationToken::new();
        let task = runtime.spawn(worker.run(shutdown.clone()));
        Self {
            shutdown,
            task,
            runtime: Some(runtime),
        }
    }

    /// Graceful stop, as on SIGTERM.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let _ = (&mut self.task).await;
    }

    /// Abrupt stop, as on SIGKILL.
    pub fn kill(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads an RFC 3339 timestamp out of a JSON response. Compare instants, never the strings:
/// serialisations with different fraction lengths do not sort as the instants they denote.
pub fn instant(value: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a string"));
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|error| panic!("{text} is not RFC 3339: {error}"))
}
