//! The JetStream objects the service uses, their names, and their idempotent set-up.
//!
//! One work-queue stream carries delivery jobs, one subject per delivery, so the recovery
//! sweep can ask whether the stream still holds a given job. One KV bucket caches
//! subscriptions. Every name starts with the deployment's namespace.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};

/// Errors from connecting to NATS or setting up JetStream objects.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot connect to NATS")]
    Connect(#[source] async_nats::ConnectError),
    #[error("cannot create or update stream {name}")]
    Stream {
        name: String,
        #[source]
        source: jetstream::context::CreateStreamError,
    },
    #[error("cannot look up stream {name}")]
    StreamLookup {
        name: String,
        #[source]
        source: jetstream::context::GetStreamError,
    },
    #[error("cannot create or update consumer {name}")]
    Consumer {
        name: String,
        #[source]
        source: jetstream::stream::ConsumerError,
    },
    #[error("cannot create or update key-value bucket {name}")]
    KeyValue {
        name: String,
        #[source]
        source: jetstream::context::CreateKeyValueError,
    },
}

/// Names of the JetStream objects of one deployment.
#[derive(Clone, Debug)]
pub struct Names {
    namespace: String,
}

impl Names {
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The work-queue stream of delivery jobs.
    pub fn job_stream(&self) -> String {
        format!("{}_deliveries", self.namespace)
    }

    /// The subject that carries the job of one delivery.
    pub fn job_subject(&self, delivery_id: impl std::fmt::Display) -> String {
        format!("{}.deliveries.{delivery_id}", self.namespace)
    }

    fn job_subjects(&self) -> String {
        format!("{}.deliveries.*", self.namespace)
    }

    /// The durable pull consumer that all workers share.
    pub fn worker_consumer(&self) -> String {
        format!("{}_workers", self.namespace)
    }

    /// The KV bucket that caches subscriptions by id.
    pub fn subscription_bucket(&self) -> String {
        format!("{}_subscriptions", self.namespace)
    }
}

/// The JetStream objects the api and the worker both use, ready for use.
pub struct Deployment {
    pub context: jetstream::Context,
    pub names: Names,
    pub job_stream: stream::Stream,
    pub subscription_bucket: kv::Store,
}

/// Connects to NATS and creates or updates the job stream and the subscription bucket.
pub async fn set_up(url: &str, namespace: &str) -> Result<Deployment, SetupError> {
    let context = self::context(connect(url).await?);
    let names = Names::new(namespace);
    let job_stream = ensure_job_stream(&context, &names).await?;
    let subscription_bucket = ensure_subscription_bucket(&context, &names).await?;
    Ok(Deployment {
        context,
        names,
        job_stream,
        subscription_bucket,
    })
}

/// Connects to NATS. The first connection is retried, so a process started together with
/// nats-server (as compose does) waits for it instead of exiting.
pub async fn connect(url: &str) -> Result<async_nats::Client, SetupError> {
    async_nats::ConnectOptions::new()
        .name(crate::USER_AGENT)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(SetupError::Connect)
}

/// A JetStream context whose requests give up after a few seconds, so that a NATS outage
/// turns into a prompt `503` rather than a request hanging on the client.
pub fn context(client: async_nats::Client) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(3))
        .build(client)
}

/// Largest job the stream accepts. Jobs carry ids only, so this is generous.
const MAX_JOB_BYTES: i32 = 64 * 1024;

/// Creates the job stream, or brings an existing one to this configuration.
pub async fn ensure_job_stream(
    context: &jetstream::Context,
    names: &Names,
) -> Result<stream::Stream, SetupError> {
    let name = names.job_stream();
    let config = stream::Config {
        name: name.clone(),
        description: Some("webhook delivery jobs, one subject per delivery".to_owned()),
        subjects: vec![names.job_subjects()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        max_message_size: MAX_JOB_BYTES,
        ..Default::default()
    };
    context
        .create_or_update_stream(config)
        .await
        .map_err(|source| SetupError::Stream {
            name: name.clone(),
            source,
        })?;
    context
        .get_stream(&name)
        .await
        .map_err(|source| SetupError::StreamLookup { name, source })
}

/// Creates the shared worker consumer, or updates it to this configuration.
///
/// `ack_wait` must exceed the longest attempt plus the time a message can sit in the
/// client before work starts on it, or a slow attempt is redelivered to a second worker.
pub async fn ensure_worker_consumer(
    job_stream: &stream::Stream,
    names: &Names,
    ack_wait: Duration,
) -> Result<consumer::Consumer<consumer::pull::Config>, SetupError> {
    let name = names.worker_consumer();
    let config = consumer::pull::Config {
        durable_name: Some(name.clone()),
        description: Some("delivery workers".to_owned()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait,
        // Retries are driven by NAK delays and the worker terminates a job after its last
        // attempt, so the server must never give up on a job by itself.
        max_deliver: -1,
        // Jobs waiting out a retry delay hold an ack-pending slot. With any finite limit a
        // backlog of failing targets would stall deliveries to healthy ones; the worker
        // bounds its own in-flight work instead.
        max_ack_pending: -1,
        // No `backoff`: it would replace `ack_wait` and add to every NAK delay.
        ..Default::default()
    };
    retrying(|| job_stream.create_consumer(config.clone()))
        .await
        .map_err(|source| SetupError::Consumer { name, source })
}

/// Creates the subscription cache bucket, or updates it to this configuration.
pub async fn ensure_subscription_bucket(
    context: &jetstream::Context,
    names: &Names,
) -> Result<kv::Store, SetupError> {
    let name = names.subscription_bucket();
    let config = kv::Config {
        bucket: name.clone(),
        description: "subscriptions by id, written through by the api".to_owned(),
        history: 1,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    retrying(|| context.create_or_update_key_value(config.clone()))
        .await
        .map_err(|source| SetupError::KeyValue { name, source })
}

/// Runs a set-up request up to five times. Right after nats-server starts, or while it is
/// busy, JetStream API requests can fail or time out once and then succeed; a process
/// should not die at start for that.
async fn retrying<T, E, F, Fut>(mut request: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut attempt = 1;
    loop {
        match request().await {
            Ok(value) => return Ok(value),
            Err(err) if attempt < 5 => {
                tracing::warn!(attempt, cause = %err, "JetStream set-up failed; retrying");
                tokio::time::sleep(Duration::from_millis(500) * attempt).await;
                attempt += 1;
            }
            Err(err) => return Err(err),
        }
    }
}
