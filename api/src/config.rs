//! The API's configuration, read once at start.

use std::net::SocketAddr;

use common::config::{self, CommonConfig, ConfigError};

/// Largest accepted webhook body by default: 1 MiB.
const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

#[derive(Clone)]
pub struct ApiConfig {
    pub common: CommonConfig,
    /// Where the API listens (`API_ADDR`, default `0.0.0.0:8080`).
    pub listen_addr: SocketAddr,
    /// When set (`API_KEY`), every endpoint but ingestion, health checks and the docs
    /// requires `Authorization: Bearer <API_KEY>`. Unset leaves the management API open to
    /// anyone who can reach the port; the API warns about that at start.
    pub api_key: Option<String>,
    /// Largest accepted webhook body in bytes (`MAX_PAYLOAD_BYTES`, default 1 MiB); larger
    /// ones get `413`.
    pub max_payload_bytes: usize,
    /// Connections in the PostgreSQL pool (`DATABASE_MAX_CONNECTIONS`, default 20).
    pub database_max_connections: u32,
}

impl ApiConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env()?,
            listen_addr: config::parse_or(
                "API_ADDR",
                SocketAddr::from(([0, 0, 0, 0], 8080)),
                |value| {
                    value
                        .parse()
                        .map_err(|_| "expected host:port such as 0.0.0.0:8080".to_owned())
                },
            )?,
            api_key: config::optional("API_KEY")?,
            max_payload_bytes: config::parse_or(
                "MAX_PAYLOAD_BYTES",
                DEFAULT_MAX_PAYLOAD_BYTES,
                |value| config::parse_in_range(value, 1, 64 * 1024 * 1024),
            )?,
            database_max_connections: config::parse_or("DATABASE_MAX_CONNECTIONS", 20, |value| {
                config::parse_in_range(value, 1, 1000)
            })?,
        })
    }
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The database URL may hold a password and the API key is a secret.
        f.debug_struct("ApiConfig")
            .field("listen_addr", &self.listen_addr)
            .field("nats_namespace", &self.common.nats_namespace)
            .field("allow_private_targets", &self.common.allow_private_targets)
            .field("api_key_set", &self.api_key.is_some())
            .field("max_payload_bytes", &self.max_payload_bytes)
            .finish()
    }
}
