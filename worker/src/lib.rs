//! The delivery worker: takes jobs from the shared JetStream consumer, makes one attempt
//! per job, records it, and acknowledges, schedules a retry, or ends the job.

mod attempt;
pub mod config;
mod in_flight;
mod process;
mod resolver;
mod schedule;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{Consumer, pull};
use common::jetstream::{self as js, Names};
use common::subscription_cache::SubscriptionCache;
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::WorkerConfig;
use process::Context;

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot connect to PostgreSQL")]
    Database(#[source] sea_orm::DbErr),
    #[error(transparent)]
    Nats(#[from] js::SetupError),
    #[error("cannot build the HTTP client")]
    HttpClient(#[source] reqwest::Error),
}

/// A connected worker, ready to run.
pub struct Worker {
    context: Arc<Context>,
    consumer: Consumer<pull::Config>,
    jetstream: async_nats::jetstream::Context,
    names: Names,
    ack_wait: Duration,
    concurrency: usize,
    shutdown_grace: Duration,
}

impl Worker {
    /// Connects to PostgreSQL and NATS and sets up the JetStream objects it needs.
    pub async fn connect(config: &WorkerConfig) -> Result<Self, StartError> {
        let database = common::database::connect_planning_each_execution(
            &config.common.database_url,
            config.database_max_connections,
        )
        .await
        .map_err(StartError::Database)?;
        let js::Deployment {
            context: jetstream,
            names,
            job_stream,
            subscription_bucket,
        } = js::set_up(&config.common.nats_url, &config.common.nats_namespace).await?;
        let consumer = js::ensure_worker_consumer(&job_stream, &names, config.ack_wait).await?;
        let http = attempt::client(config.timeout, config.common.allow_private_targets)
            .map_err(StartError::HttpClient)?;

        let context = Context {
            subscriptions: SubscriptionCache::new(
                subscription_bucket,
                database.clone(),
                jetstream.client(),
            ),
            deliveries: store::DeliveryLoader::start(database.clone(), config.concurrency),
            recorder: store::AttemptRecorder::start(database.clone(), config.concurrency),
            database,
            http,
            timeout: config.timeout,
            schedule: schedule::RetrySchedule::new(config.retry_schedule.clone()),
            allow_private_targets: config.common.allow_private_targets,
            // Well inside the ack wait, and never a busy loop.
            in_flight: in_flight::InFlight::new(config.subscription_concurrency),
            progress_interval: (config.ack_wait / 3).max(Duration::from_millis(100)),
        };
        Ok(Self {
            context: Arc::new(context),
            consumer,
            jetstream,
            names,
            ack_wait: config.ack_wait,
            concurrency: config.concurrency,
            shutdown_grace: config.shutdown_grace,
        })
    }

    /// Runs until `shutdown` is cancelled, then waits for attempts in flight (bounded by
    /// the shutdown grace). Jobs not finished by then go back to JetStream.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let tasks = TaskTracker::new();
        tracing::info!(
            concurrency = self.concurrency,
            per_subscription = self.context.in_flight_limit(),
            "worker ready"
        );

        while !shutdown.is_cancelled() {
            // Fetch only as many jobs as there are free slots: a job waiting in a client
            // buffer still runs down its ack wait.
            let first = tokio::select! {
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                () = shutdown.cancelled() => break,
            };
            let mut slots = vec![first];
            while let Ok(permit) = permits.clone().try_acquire_owned() {
                slots.push(permit);
            }

            let batch = self
                .consumer
                .batch()
                .max_messages(slots.len())
                .expires(Duration::from_secs(1))
                .messages()
                .await;
            let mut batch = match batch {
                Ok(batch) => batch,
                Err(err) => {
                    tracing::warn!(cause = %err, "cannot fetch jobs; retrying");
                    pause(&shutdown, Duration::from_secs(1)).await;
                    self.recreate_consumer().await;
                    continue;
                }
            };
            loop {
                let next = tokio::select! {
                    next = batch.next() => next,
                    () = shutdown.cancelled() => None,
                };
                match next {
                    None => break,
                    Some(Ok(message)) => {
                        let Some(slot) = slots.pop() else {
                            // The server never sends more than asked; if it did, the job
                            // is redelivered after its ack wait.
                            break;
                        };
                        let context = self.context.clone();
                        tasks.spawn(async move {
                            process::handle(&context, message).await;
                            drop(slot);
                        });
                    }
                    Some(Err(err)) => {
                        tracing::warn!(cause = %err, "job fetch interrupted");
                        pause(&shutdown, Duration::from_millis(200)).await;
                        break;
                    }
                }
            }
        }

        tasks.close();
        tracing::info!(in_flight = tasks.len(), "worker stopping");
        if tokio::time::timeout(self.shutdown_grace, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                unfinished = tasks.len(),
                "shutdown grace over; unfinished jobs will be redelivered"
            );
        }
        tracing::info!("worker stopped");
    }
}

impl Worker {
    /// Sets the stream and consumer up again, in case the server lost them (a restart
    /// without its store, an operator's mistake). Idempotent when both exist.
    async fn recreate_consumer(&mut self) {
        let consumer = async {
            let stream = js::ensure_job_stream(&self.jetstream, &self.names).await?;
            js::ensure_worker_consumer(&stream, &self.names, self.ack_wait).await
        };
        match consumer.await {
            Ok(consumer) => self.consumer = consumer,
            Err(err) => tracing::debug!(cause = %err, "cannot set up the consumer yet"),
        }
    }
}

async fn pause(shutdown: &CancellationToken, duration: Duration) {
    tokio::select! {
        () = tokio::time::sleep(duration) => {}
        () = shutdown.cancelled() => {}
    }
}
