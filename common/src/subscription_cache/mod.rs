//! Subscriptions as the hot paths see them, cached in a JetStream KV bucket.
//!
//! PostgreSQL is the source of truth. Writers invalidate the key before changing a row and
//! store the new value after commit; readers use the bucket, fall back to PostgreSQL on a
//! miss or when NATS is unreachable, and refill the key. Each value carries the row's
//! `version`, and every store is a compare-and-set that never replaces a newer version with
//! an older one, so a reader that refills concurrently with a writer cannot leave a stale
//! value behind. In front of the bucket, each process keeps a copy of it that a watch keeps
//! current (see [`mirror`]), so most reads never leave the process.

mod mirror;

use std::sync::Arc;

use async_nats::jetstream::kv;
use entity::subscription;
use sea_orm::{DatabaseConnection, DbErr, EntityTrait};
use serde::{Deserialize, Serialize};

use crate::ids::SubscriptionId;

/// What ingestion and delivery need to know about a subscription.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedSubscription {
    pub id: SubscriptionId,
    pub target_url: String,
    /// Left out of the `Debug` output, so it cannot reach a log line by accident.
    pub secret: Option<String>,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub version: i64,
}

impl From<&subscription::Model> for CachedSubscription {
    fn from(model: &subscription::Model) -> Self {
        Self {
            id: SubscriptionId(model.id),
            target_url: model.target_url.clone(),
            secret: model.secret.clone(),
            event_types: model.event_types.clone(),
            enabled: model.enabled,
            version: model.version,
        }
    }
}

impl CachedSubscription {
    /// Whether a webhook of this event type is for this subscription: an empty list takes
    /// every event, and a non-empty one only typed events it names.
    pub fn wants(&self, event_type: Option<&str>) -> bool {
        if self.event_types.is_empty() {
            return true;
        }
        event_type.is_some_and(|kind| self.event_types.iter().any(|wanted| wanted == kind))
    }
}

/// Errors from writing the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheWriteError {
    #[error("cannot read the cached subscription")]
    Read(#[source] kv::EntryError),
    #[error("cannot write the cached subscription")]
    Write(#[source] kv::UpdateError),
    #[error("cannot remove the cached subscription")]
    Delete(#[source] kv::DeleteError),
    #[error("the cached subscription kept changing while it was being written")]
    Contended,
}

/// Reads and writes subscriptions through the KV bucket.
#[derive(Clone)]
pub struct SubscriptionCache {
    bucket: kv::Store,
    database: DatabaseConnection,
    /// Consulted for the connection state only.
    client: async_nats::Client,
    mirror: Arc<mirror::Mirror>,
}

impl SubscriptionCache {
    pub fn new(
        bucket: kv::Store,
        database: DatabaseConnection,
        client: async_nats::Client,
    ) -> Self {
        Self {
            mirror: mirror::Mirror::start(bucket.clone(), client.clone()),
            bucket,
            database,
            client,
        }
    }

    /// The subscription, from this process's copy of the bucket, the bucket, or PostgreSQL,
    /// in that order. Fails only when PostgreSQL fails too.
    pub async fn get(&self, id: SubscriptionId) -> Result<Option<CachedSubscription>, DbErr> {
        // While NATS is down every call would wait out its timeout: go straight to the
        // database, and do not try to refill what cannot be written.
        if !self.nats_connected() {
            return self.read_database(id).await;
        }
        if let Some(held) = self.mirror.get(id, self.connection()) {
            return Ok(Some(held));
        }
        match self.bucket.get(id.to_string()).await {
            Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
                Ok(cached) => return Ok(Some(cached)),
                Err(err) => tracing::warn!(subscription_id = %id, cause = %err,
                    "unreadable cache entry; reading the database"),
            },
            Ok(None) => {}
            Err(err) => {
                tracing::debug!(subscription_id = %id, cause = %err,
                    "subscription cache unavailable; reading the database");
                return self.read_database(id).await;
            }
        }

        let cached = self.read_database(id).await?;
        if let Some(cached) = &cached
            && let Err(err) = self.store(cached).await
        {
            tracing::debug!(subscription_id = %id, cause = %err, "cannot refill the cache");
        }
        Ok(cached)
    }

    async fn read_database(&self, id: SubscriptionId) -> Result<Option<CachedSubscription>, DbErr> {
        let model = subscription::Entity::find_by_id(id.0)
            .one(&self.database)
            .await?;
        Ok(model.as_ref().map(CachedSubscription::from))
    }

    /// How many times the client has connected; changes with every reconnect.
    fn connection(&self) -> u64 {
        self.client
            .statistics()
            .connects
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// What this process's copy of the bucket would serve for an id; for tests and
    /// diagnostics.
    pub fn mirrored(&self, id: SubscriptionId) -> Option<CachedSubscription> {
        self.mirror.get(id, self.connection())
    }

    fn nats_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Stores a subscription unless the bucket already holds the same or a newer version.
    pub async fn store(&self, subscription: &CachedSubscription) -> Result<(), CacheWriteError> {
        self.mirror.stored(subscription.id, subscription.version);
        let key = subscription.id.to_string();
        // Serialising plain strings and numbers cannot fail.
        let value: bytes::Bytes = serde_json::to_vec(subscription).unwrap_or_default().into();

        // A few rounds are plenty: each lost race means another writer made progress.
        for _ in 0..5 {
            let current = self
                .bucket
                .entry(key.clone())
                .await
                .map_err(CacheWriteError::Read)?;
            let revision = match current {
                None => 0,
                Some(entry) => {
                    if entry.operation == kv::Operation::Put
                        && let Ok(held) = serde_json::from_slice::<CachedSubscription>(&entry.value)
                        && held.version >= subscription.version
                    {
                        return Ok(());
                    }
                    entry.revision
                }
            };
            match self.bucket.update(&key, value.clone(), revision).await {
                Ok(_) => return Ok(()),
                Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(err) => return Err(CacheWriteError::Write(err)),
            }
        }
        Err(CacheWriteError::Contended)
    }

    /// Removes a subscription from the bucket. This process stops serving its copy of it
    /// until a newer version is stored.
    pub async fn invalidate(&self, id: SubscriptionId) -> Result<(), CacheWriteError> {
        self.mirror.changing(id);
        self.bucket
            .delete(id.to_string())
            .await
            .map_err(CacheWriteError::Delete)
    }

    /// The bucket's raw value for an id; for tests and diagnostics.
    pub async fn raw(&self, id: SubscriptionId) -> Result<Option<bytes::Bytes>, kv::EntryError> {
        self.bucket.get(id.to_string()).await
    }
}

impl std::fmt::Debug for CachedSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedSubscription")
            .field("id", &self.id)
            .field("target_url", &self.target_url)
            .field("has_secret", &self.secret.is_some())
            .field("event_types", &self.event_types)
            .field("enabled", &self.enabled)
            .field("version", &self.version)
            .finish()
    }
}
