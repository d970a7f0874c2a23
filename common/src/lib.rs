//! Pieces the `api`, `worker` and `janitor` binaries share: configuration, JetStream layout,
//! the job message, signatures, target address policy and the subscription cache.

pub mod batch;
pub mod config;
pub mod database;
pub mod event_type;
pub mod ids;
pub mod jetstream;
pub mod job;
pub mod shutdown;
pub mod signing;
pub mod subscription_cache;
pub mod target;
pub mod telemetry;

/// Product name and version, as sent in the `User-Agent` of every delivery.
pub const USER_AGENT: &str = concat!("hookline/", env!("CARGO_PKG_VERSION"));
