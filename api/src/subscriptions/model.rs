//! The JSON shapes of the subscriptions API.

use chrono::{DateTime, Utc};
use entity::subscription;
use poem_openapi::Object;
use poem_openapi::types::Example;
use poem_openapi::types::MaybeUndefined;
use uuid::Uuid;

/// A subscription as the API shows it. The secret is write-only and never shown; only
/// whether one is set.
#[derive(Debug, Clone, Object)]
pub struct Subscription {
    pub id: Uuid,
    /// Where webhooks are POSTed.
    #[oai(validator(max_length = 2048))]
    pub target_url: String,
    /// Event types delivered; empty means every event.
    pub event_types: Vec<String>,
    pub description: Option<String>,
    /// A disabled subscription records incoming webhooks as `skipped` and delivers nothing.
    pub enabled: bool,
    /// Whether a secret is set: incoming webhooks must then be signed with it, and
    /// deliveries are signed with it.
    pub has_secret: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<subscription::Model> for Subscription {
    fn from(model: subscription::Model) -> Self {
        Self {
            id: model.id,
            target_url: model.target_url,
            event_types: model.event_types,
            description: model.description,
            enabled: model.enabled,
            has_secret: model.secret.is_some(),
            created_at: model.created_at,
            updated_at: model.updated_at,
        }
    }
}

/// A new subscription.
// TODO: poem-openapi parses a JSON number or boolean into a `String` field, so
// `"secret": 1234` is taken as "1234". A string newtype whose parser accepts only JSON strings
// would refuse it with 400; the README lists this under its assumptions until then.
#[derive(Debug, Object)]
#[oai(example)]
pub struct NewSubscription {
    /// Absolute `http` or `https` URL webhooks are POSTed to, at most 2,048 characters. Its
    /// host must resolve to public addresses unless the service runs with
    /// `ALLOW_PRIVATE_TARGETS=true`.
    pub target_url: String,
    /// Shared secret, 1 to 256 characters. When set, incoming webhooks must carry a valid
    /// `X-Hub-Signature-256`, and deliveries are signed with it. Never returned.
    pub secret: Option<String>,
    /// Event types to receive, each 1 to 128 characters without spaces; at most 64.
    /// Empty or absent means every event.
    pub event_types: Option<Vec<String>>,
    /// Free text for people, at most 1,024 characters.
    pub description: Option<String>,
    /// Default `true`.
    pub enabled: Option<bool>,
}

impl Example for NewSubscription {
    fn example() -> Self {
        Self {
            target_url: "https://example.com/webhooks".to_owned(),
            secret: Some("s3cret".to_owned()),
            event_types: Some(vec!["order.created".to_owned(), "order.paid".to_owned()]),
            description: Some("orders to the billing service".to_owned()),
            enabled: Some(true),
        }
    }
}

/// Changes to a subscription; absent fields stay as they are.
#[derive(Debug, Object)]
#[oai(example)]
pub struct SubscriptionPatch {
    pub target_url: Option<String>,
    /// A new secret, or `null` to remove the secret.
    pub secret: MaybeUndefined<String>,
    pub event_types: Option<Vec<String>>,
    /// A new description, or `null` to remove it.
    pub description: MaybeUndefined<String>,
    pub enabled: Option<bool>,
}

impl Example for SubscriptionPatch {
    fn example() -> Self {
        Self {
            target_url: Some("https://example.com/webhooks/v2".to_owned()),
            secret: MaybeUndefined::Undefined,
            event_types: None,
            description: MaybeUndefined::Undefined,
            enabled: Some(false),
        }
    }
}

/// One page of subscriptions, newest first.
#[derive(Debug, Object)]
pub struct SubscriptionPage {
    pub items: Vec<Subscription>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}
