//! Groups of operations in the generated documentation.

use poem_openapi::Tags;

#[derive(Tags)]
pub enum Tag {
    /// Create, read, update and delete subscriptions.
    Subscriptions,
    /// Send webhooks to a subscription.
    Ingest,
    /// What happened to each delivery and attempt.
    Deliveries,
    /// Probes for orchestrators.
    Health,
}
