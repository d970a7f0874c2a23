//! The HTTP API: subscriptions, ingestion and delivery status, documented by its own
//! generated OpenAPI spec and UI.

mod auth;
pub mod config;
mod deliveries;
mod error;
mod health;
mod ingest;
mod migrate;
mod pagination;
mod state;
mod subscriptions;
mod tags;

use std::time::Duration;

use common::jetstream as js;
use common::subscription_cache::SubscriptionCache;
use poem::listener::TcpAcceptor;
use poem::{Endpoint, EndpointExt, Route, Server};
use poem_openapi::OpenApiService;
use tokio_util::sync::CancellationToken;

pub use config::ApiConfig;
pub use state::AppState;

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot connect to PostgreSQL")]
    Database(#[source] sea_orm::DbErr),
    #[error("cannot apply database migrations")]
    Migrate(#[source] sea_orm::DbErr),
    #[error(transparent)]
    Nats(#[from] js::SetupError),
    #[error("cannot listen")]
    Listen(#[source] std::io::Error),
}

/// Connects to PostgreSQL and NATS, applies migrations and sets up JetStream objects.
pub async fn connect(config: &ApiConfig) -> Result<AppState, StartError> {
    migrate::apply(&config.common.database_url)
        .await
        .map_err(StartError::Migrate)?;
    let database =
        common::database::connect(&config.common.database_url, config.database_max_connections)
            .await
            .map_err(StartError::Database)?;

    let nats = js::set_up(&config.common.nats_url, &config.common.nats_namespace).await?;

    Ok(AppState::new(state::Shared {
        subscriptions: SubscriptionCache::new(
            nats.subscription_bucket,
            database.clone(),
            nats.context.client(),
        ),
        batch_writer: ingest::BatchWriter::start(&database),
        database,
        nats: nats.context.client(),
        jetstream: nats.context,
        job_stream: nats.job_stream,
        names: nats.names,
        settings: state::Settings {
            allow_private_targets: config.common.allow_private_targets,
            max_payload_bytes: config.max_payload_bytes,
        },
    }))
}

/// The whole HTTP application.
pub fn app(state: AppState, api_key: Option<String>) -> impl Endpoint {
    let service = OpenApiService::new(
        (
            subscriptions::SubscriptionsApi,
            ingest::IngestApi,
            deliveries::DeliveriesApi,
            health::HealthApi,
        ),
        "hookline",
        env!("CARGO_PKG_VERSION"),
    )
    .description(include_str!("api-description.md"));
    let spec = service.spec_endpoint();
    let docs = service.swagger_ui();

    Route::new()
        .nest("/docs", docs)
        .at("/openapi.json", spec)
        .nest("/", service)
        .with(auth::RequireApiKey::new(api_key))
        .data(state)
        .catch_all_error(|err| async move { error::into_json_response(err) })
}

/// Serves the API on `listener` until `shutdown` is cancelled, then lets requests in
/// flight finish for up to ten seconds.
pub async fn serve(
    state: AppState,
    api_key: Option<String>,
    listener: std::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    listener.set_nonblocking(true).map_err(StartError::Listen)?;
    let acceptor = TcpAcceptor::from_std(listener).map_err(StartError::Listen)?;
    Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(
            app(state, api_key),
            shutdown.cancelled_owned(),
            Some(Duration::from_secs(10)),
        )
        .await
        .map_err(StartError::Listen)
}
