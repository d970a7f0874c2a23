//! What every handler shares.

use std::sync::Arc;

use async_nats::jetstream;
use common::jetstream::Names;
use common::subscription_cache::SubscriptionCache;
use sea_orm::DatabaseConnection;

use crate::ingest::BatchWriter;

#[derive(Clone)]
pub struct AppState {
    pub database: DatabaseConnection,
    pub jetstream: jetstream::Context,
    /// The job stream, for asking whether it still holds a given job.
    pub job_stream: jetstream::stream::Stream,
    pub names: Names,
    pub subscriptions: SubscriptionCache,
    /// Inserts deliveries from concurrent requests in shared statements.
    pub batch_writer: BatchWriter,
    pub settings: Arc<Settings>,
}

/// Request-handling settings taken from the configuration.
#[derive(Debug)]
pub struct Settings {
    pub allow_private_targets: bool,
    pub max_payload_bytes: usize,
}
