//! A copy of the subscription bucket in this process's memory, kept current by a watch.
//!
//! Hits skip a NATS round trip on every ingest and every delivery attempt; what it does not
//! hold yet is read from the bucket as before. It is used only while its watch runs on the
//! client's current connection: after a reconnect it is dropped and rebuilt from a new watch,
//! since what changed while the connection was down may not have reached it yet. Another
//! process's change reaches it as fast as NATS pushes it, usually well under a millisecond.
//! This process's own writes are visible at once: a writer sets a floor below which the
//! copy's value for that subscription is not served, so a change pushed late can never undo
//! one made here.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;

use super::CachedSubscription;
use crate::ids::SubscriptionId;

/// `live_for_connection` when no watch is running.
const NOT_LIVE: u64 = u64::MAX;
/// How often the watch checks whether the client has reconnected, and how long it waits
/// before starting again after a failure.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

pub(super) struct Mirror {
    /// The bucket's values, by key.
    values: RwLock<HashMap<String, CachedSubscription>>,
    /// What this process's own writes require of a served value.
    floors: RwLock<HashMap<SubscriptionId, Floor>>,
    /// The client's connection count when the running watch started, or `NOT_LIVE`.
    live_for_connection: AtomicU64,
}

#[derive(Clone, Copy)]
enum Floor {
    /// Being changed or deleted here: serve nothing until the new value is stored.
    Changing,
    /// Serve only this version or a newer one.
    AtLeast(i64),
}

impl Mirror {
    /// Starts following the bucket; the watch stops when the mirror is dropped.
    pub(super) fn start(bucket: kv::Store, client: async_nats::Client) -> Arc<Self> {
        let mirror = Arc::new(Self {
            values: RwLock::new(HashMap::new()),
            floors: RwLock::new(HashMap::new()),
            live_for_connection: AtomicU64::new(NOT_LIVE),
        });
        tokio::spawn(follow(Arc::downgrade(&mirror), bucket, client));
        mirror
    }

    /// The subscription, if the watch runs on the client's current connection (its count of
    /// connects so far) and the copy holds a value this process may serve.
    pub(super) fn get(&self, id: SubscriptionId, connection: u64) -> Option<CachedSubscription> {
        let live = self.live_for_connection.load(Ordering::Acquire);
        if live == NOT_LIVE || live != connection {
            return None;
        }
        let floor = self.floors.read().ok()?.get(&id).copied();
        let value = self.values.read().ok()?.get(&id.to_string()).cloned()?;
        match floor {
            Some(Floor::Changing) => None,
            Some(Floor::AtLeast(version)) if value.version < version => None,
            _ => Some(value),
        }
    }

    /// This process is about to change or delete the subscription.
    pub(super) fn changing(&self, id: SubscriptionId) {
        if let Ok(mut floors) = self.floors.write() {
            floors.insert(id, Floor::Changing);
        }
    }

    /// This process read or wrote this version from PostgreSQL: never serve an older one.
    pub(super) fn stored(&self, id: SubscriptionId, version: i64) {
        if let Ok(mut floors) = self.floors.write() {
            let floor = match floors.get(&id) {
                Some(Floor::AtLeast(held)) => (*held).max(version),
                _ => version,
            };
            floors.insert(id, Floor::AtLeast(floor));
        }
    }

    /// The bucket's value for a key changed; `None` when it was removed.
    fn apply(&self, key: String, value: Option<CachedSubscription>) {
        let Ok(mut values) = self.values.write() else {
            return;
        };
        match value {
            Some(value) => values.insert(key, value),
            None => values.remove(&key),
        };
    }

    fn reset(&self) {
        self.live_for_connection.store(NOT_LIVE, Ordering::Release);
        if let Ok(mut values) = self.values.write() {
            values.clear();
        }
    }
}

async fn follow(mirror: Weak<Mirror>, bucket: kv::Store, client: async_nats::Client) {
    loop {
        let Some(current) = mirror.upgrade() else {
            return;
        };
        current.reset();
        drop(current);

        let connection = client.statistics().connects.load(Ordering::Acquire);
        if client.connection_state() == async_nats::connection::State::Connected {
            match bucket.watch_with_history(">").await {
                Ok(watch) => {
                    if follow_watch(&mirror, watch, &client, connection)
                        .await
                        .is_break()
                    {
                        return;
                    }
                }
                Err(err) => tracing::debug!(cause = %err, "cannot watch the subscription bucket"),
            }
        }

        if let Some(current) = mirror.upgrade() {
            current.reset();
        }
        tokio::time::sleep(CHECK_INTERVAL).await;
    }
}

/// Applies the watch's entries until it fails or the client reconnects (`Continue`: start
/// again), or until the mirror is dropped (`Break`).
async fn follow_watch(
    mirror: &Weak<Mirror>,
    mut watch: kv::Watch,
    client: &async_nats::Client,
    connection: u64,
) -> ControlFlow<()> {
    match mirror.upgrade() {
        Some(current) => current
            .live_for_connection
            .store(connection, Ordering::Release),
        None => return ControlFlow::Break(()),
    }
    let mut check = tokio::time::interval(CHECK_INTERVAL);
    loop {
        tokio::select! {
            entry = watch.next() => match (entry, mirror.upgrade()) {
                (_, None) => return ControlFlow::Break(()),
                (Some(Ok(entry)), Some(current)) => {
                    // An unreadable value is dropped: readers then ask the bucket itself.
                    let value = match entry.operation {
                        kv::Operation::Put => serde_json::from_slice(&entry.value).ok(),
                        kv::Operation::Delete | kv::Operation::Purge => None,
                    };
                    current.apply(entry.key, value);
                }
                (Some(Err(err)), Some(_)) => {
                    tracing::debug!(cause = %err, "subscription watch failed");
                    return ControlFlow::Continue(());
                }
                (None, Some(_)) => return ControlFlow::Continue(()),
            },
            _ = check.tick() => {
                if mirror.strong_count() == 0 {
                    return ControlFlow::Break(());
                }
                if client.statistics().connects.load(Ordering::Acquire) != connection {
                    return ControlFlow::Continue(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONNECTION: u64 = 3;

    fn live_mirror() -> Mirror {
        Mirror {
            values: RwLock::new(HashMap::new()),
            floors: RwLock::new(HashMap::new()),
            live_for_connection: AtomicU64::new(CONNECTION),
        }
    }

    fn subscription(id: SubscriptionId, version: i64) -> CachedSubscription {
        CachedSubscription {
            id,
            target_url: format!("https://example.com/v{version}"),
            secret: None,
            event_types: Vec::new(),
            enabled: true,
            version,
        }
    }

    #[test]
    fn serves_what_the_watch_delivered_until_it_is_removed() {
        let mirror = live_mirror();
        let id = SubscriptionId::new();

        mirror.apply(id.to_string(), Some(subscription(id, 1)));
        assert_eq!(mirror.get(id, CONNECTION), Some(subscription(id, 1)));

        mirror.apply(id.to_string(), None);
        assert_eq!(mirror.get(id, CONNECTION), None);
    }

    #[test]
    fn serves_nothing_after_a_reconnect_or_a_reset() {
        let mirror = live_mirror();
        let id = SubscriptionId::new();
        mirror.apply(id.to_string(), Some(subscription(id, 1)));

        assert_eq!(
            mirror.get(id, CONNECTION + 1),
            None,
            "the client reconnected since"
        );
        mirror.reset();
        assert_eq!(mirror.get(id, CONNECTION), None);
    }

    #[test]
    fn a_late_push_never_undoes_a_change_made_here() {
        let mirror = live_mirror();
        let id = SubscriptionId::new();
        mirror.apply(id.to_string(), Some(subscription(id, 1)));

        mirror.changing(id);
        assert_eq!(mirror.get(id, CONNECTION), None, "mid-change");
        mirror.stored(id, 2);
        assert_eq!(mirror.get(id, CONNECTION), None, "version 2 not pushed yet");
        mirror.apply(id.to_string(), Some(subscription(id, 2)));
        assert_eq!(mirror.get(id, CONNECTION), Some(subscription(id, 2)));

        // A reader that refilled from an older read lowers nothing.
        mirror.stored(id, 1);
        mirror.apply(id.to_string(), Some(subscription(id, 1)));
        assert_eq!(mirror.get(id, CONNECTION), None);
    }

    #[test]
    fn a_subscription_deleted_here_is_never_served_again() {
        let mirror = live_mirror();
        let id = SubscriptionId::new();
        mirror.apply(id.to_string(), Some(subscription(id, 4)));

        mirror.changing(id);
        mirror.apply(id.to_string(), Some(subscription(id, 4)));
        assert_eq!(mirror.get(id, CONNECTION), None);
    }
}
