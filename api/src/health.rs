//! Liveness and readiness probes.

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use sea_orm::ConnectionTrait;

use crate::state::AppState;
use crate::tags::Tag;

/// Health of the process and its dependencies.
#[derive(Debug, Object)]
pub struct Health {
    /// `ok`, or `unavailable` when a dependency does not answer.
    pub status: String,
    /// `ok` or `unavailable`; present on `/ready` only.
    pub database: Option<String>,
    /// `ok` or `unavailable`; present on `/ready` only.
    pub nats: Option<String>,
}

#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// PostgreSQL and NATS both answer.
    #[oai(status = 200)]
    Ready(Json<Health>),
    /// PostgreSQL or NATS does not answer; the body says which.
    #[oai(status = 503)]
    NotReady(Json<Health>),
}

pub struct HealthApi;

#[OpenApi(tag = "Tag::Health")]
impl HealthApi {
    /// Liveness: answers while the process runs.
    #[oai(path = "/health", method = "get")]
    async fn health(&self) -> Json<Health> {
        Json(Health {
            status: "ok".to_owned(),
            database: None,
            nats: None,
        })
    }

    /// Readiness: answers `200` when PostgreSQL and NATS both answer, `503` otherwise.
    #[oai(path = "/ready", method = "get")]
    async fn ready(&self, state: Data<&AppState>) -> ReadyResponse {
        let database_ok = state.database.execute_unprepared("SELECT 1").await.is_ok();
        let nats_ok = tokio::time::timeout(std::time::Duration::from_secs(2), state.nats.flush())
            .await
            .is_ok_and(|flushed| flushed.is_ok())
            && state.nats.connection_state() == async_nats::connection::State::Connected;

        let word = |ok: bool| if ok { "ok" } else { "unavailable" }.to_owned();
        let health = Health {
            status: word(database_ok && nats_ok),
            database: Some(word(database_ok)),
            nats: Some(word(nats_ok)),
        };
        if database_ok && nats_ok {
            ReadyResponse::Ready(Json(health))
        } else {
            ReadyResponse::NotReady(Json(health))
        }
    }
}
