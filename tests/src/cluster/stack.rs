//! The whole service on real processes: the `api` and `worker` binaries against a
//! PostgreSQL cluster and a nats-server of the stack's own.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{NatsServer, Postgres, Service, TempDir};

/// The JetStream namespace of every stack; the servers are the stack's own.
const NAMESPACE: &str = "stack";

/// Fields drop in declaration order: processes first, the directory they use last.
pub struct Stack {
    pub api: Service,
    pub worker: Service,
    pub nats: NatsServer,
    pub postgres: Postgres,
    pub api_url: String,
    /// A client with a 15 s timeout, so an API that hangs fails a request, not the test.
    pub http: reqwest::Client,
    pub dir: TempDir,
}

impl Stack {
    /// Starts PostgreSQL, nats-server, the API (which applies the migrations) and one
    /// worker configured with `worker_env` on top of the shared settings, and waits until
    /// the API answers.
    pub async fn start(worker_env: &[(&str, &str)]) -> Self {
        let api_binary = super::required_binary("api", &["api", "common", "entity", "migration"]);
        let worker_binary = super::required_binary("worker", &["worker", "common", "entity"]);
        let dir = TempDir::new("hookline-stack");
        let postgres = Postgres::start(dir.path()).await;
        let nats = NatsServer::start(dir.path()).await;

        let api_addr = format!("127.0.0.1:{}", super::free_port());
        let mut api_env = shared_env(&postgres, &nats);
        api_env.push(("API_ADDR".to_owned(), api_addr.clone()));
        let api = Service::start("api", &api_binary, &[], api_env, dir.path());
        let mut env = shared_env(&postgres, &nats);
        env.extend(
            worker_env
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
        );
        let worker = Service::start("worker", &worker_binary, &[], env, dir.path());

        let mut stack = Self {
            api,
            worker,
            nats,
            postgres,
            api_url: format!("http://{api_addr}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("an HTTP client"),
            dir,
        };
        stack.wait_for_api().await;
        stack
    }

    /// The settings every process of the stack shares: where the servers are, private
    /// targets allowed (test targets listen on 127.0.0.1), and warnings only, as JSON.
    pub fn env(&self) -> Vec<(String, String)> {
        shared_env(&self.postgres, &self.nats)
    }

    /// Waits until the API process answers `/health`; panics if it exits first.
    pub async fn wait_for_api(&mut self) {
        let health = format!("{}/health", self.api_url);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answered = self.http.get(&health).send().await;
            if answered.is_ok_and(|response| response.status().is_success()) {
                return;
            }
            assert!(self.api.is_running(), "the api exited at start");
            assert!(Instant::now() < deadline, "the api did not answer /health");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn ingest_url(&self, subscription_id: &str) -> String {
        format!("{}/ingest/{subscription_id}", self.api_url)
    }

    /// Creates a subscription to `target_url` and returns its id.
    pub async fn create_subscription(&self, target_url: &str) -> String {
        let response = self
            .http
            .post(format!("{}/subscriptions", self.api_url))
            .json(&json!({ "target_url": target_url }))
            .send()
            .await
            .expect("create a subscription");
        let status = response.status();
        let body: Value = response.json().await.expect("a JSON subscription");
        assert_eq!(status, 201, "creating a subscription: {body}");
        body["id"].as_str().expect("an id").to_owned()
    }

    /// Runs `janitor --once` with the stack's settings and `extra_env`, if the binary was
    /// built. Returns its exit status (`None` when it timed out) and output, or `None`
    /// without a binary.
    pub async fn run_janitor(
        &self,
        extra_env: &[(&str, &str)],
    ) -> Option<(Option<std::process::ExitStatus>, String)> {
        let binary = super::binary("janitor")?;
        let mut command = Command::new(binary);
        command
            .arg("--once")
            .env_clear()
            .envs(self.env())
            .envs(extra_env.iter().copied());
        let log = self.dir.path().join("janitor.log");
        let result = tokio::task::spawn_blocking(move || {
            super::run_to_completion(command, &log, Duration::from_secs(60))
        })
        .await
        .expect("the janitor's thread");
        Some(result)
    }
}

fn shared_env(postgres: &Postgres, nats: &NatsServer) -> Vec<(String, String)> {
    [
        ("DATABASE_URL", postgres.url()),
        ("NATS_URL", nats.url()),
        ("NATS_NAMESPACE", NAMESPACE.to_owned()),
        ("ALLOW_PRIVATE_TARGETS", "true".to_owned()),
        ("DATABASE_MAX_CONNECTIONS", "10".to_owned()),
        ("LOG_FORMAT", "json".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}
