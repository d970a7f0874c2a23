//! What every handler shares.

use std::ops::Deref;
use std::sync::Arc;

use async_nats::jetstream;
use common::jetstream::Names;
use common::subscription_cache::SubscriptionCache;
use sea_orm::DatabaseConnection;

use crate::ingest::BatchWriter;

/// A handle on what every handler shares. poem puts a clone of it into every request, so
/// cloning it must be one reference count, not a copy of the connections and names inside.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The connections, names and settings behind an [`AppState`].
pub struct Shared {
    pub database: DatabaseConnection,
    pub jetstream: jetstream::Context,
    /// The connection under `jetstream`, kept so asking its state clones nothing.
    pub nats: async_nats::Client,
    /// The job stream, for asking whether it still holds a given job.
    pub job_stream: jetstream::stream::Stream,
    pub names: Names,
    pub subscriptions: SubscriptionCache,
    /// Inserts deliveries from concurrent requests in shared statements.
    pub batch_writer: BatchWriter,
    pub settings: Settings,
}

/// Request-handling settings taken from the configuration.
#[derive(Debug)]
pub struct Settings {
    pub allow_private_targets: bool,
    pub max_payload_bytes: usize,
}
