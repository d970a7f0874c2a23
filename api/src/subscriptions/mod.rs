//! The subscriptions resource: CRUD over PostgreSQL with write-through to the cache.

mod model;
mod validation;

use chrono::Utc;
use common::ids::SubscriptionId;
use common::subscription_cache::CachedSubscription;
use entity::subscription;
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::MaybeUndefined;
use poem_openapi::{ApiResponse, OpenApi};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ActiveModelTrait, ActiveValue, ColumnTrait, EntityTrait, QueryFilter};
use sea_orm::{QueryOrder, QuerySelect};
use uuid::Uuid;

use crate::auth::ApiKey;
use crate::error::ApiError;
use crate::pagination;
use crate::state::AppState;
use crate::tags::Tag;

pub use model::{NewSubscription, Subscription, SubscriptionPage, SubscriptionPatch};

#[derive(ApiResponse)]
pub enum CreatedSubscription {
    /// Created. `Location` is the new subscription's URL.
    #[oai(status = 201)]
    Created(Json<Subscription>, #[oai(header = "Location")] String),
}

#[derive(ApiResponse)]
pub enum DeletedSubscription {
    /// Deleted, with all its deliveries and attempt logs.
    #[oai(status = 204)]
    Deleted,
}

pub struct SubscriptionsApi;

#[OpenApi(tag = "Tag::Subscriptions")]
impl SubscriptionsApi {
    /// Create a subscription.
    #[oai(path = "/subscriptions", method = "post")]
    async fn create(
        &self,
        state: Data<&AppState>,
        _auth: ApiKey,
        body: Json<NewSubscription>,
    ) -> Result<CreatedSubscription, ApiError> {
        let new = body.0;
        let target_url =
            validation::target_url(&new.target_url, state.settings.allow_private_targets).await?;
        if let Some(secret) = &new.secret {
            validation::secret(secret)?;
        }
        if let Some(description) = &new.description {
            validation::description(description)?;
        }
        let event_types = validation::event_types(new.event_types.unwrap_or_default())?;

        let now = Utc::now();
        let row = subscription::ActiveModel {
            id: ActiveValue::Set(SubscriptionId::new().0),
            target_url: ActiveValue::Set(target_url),
            secret: ActiveValue::Set(new.secret),
            event_types: ActiveValue::Set(event_types),
            description: ActiveValue::Set(new.description),
            enabled: ActiveValue::Set(new.enabled.unwrap_or(true)),
            version: ActiveValue::Set(1),
            created_at: ActiveValue::Set(now),
            updated_at: ActiveValue::Set(now),
        }
        .insert(&state.database)
        .await
        .map_err(ApiError::database)?;

        // A failed cache write is harmless here: readers miss and fill the key themselves.
        if let Err(err) = state
            .subscriptions
            .store(&CachedSubscription::from(&row))
            .await
        {
            tracing::warn!(subscription_id = %row.id, cause = %err, "cannot cache subscription");
        }
        tracing::info!(subscription_id = %row.id, "subscription created");
        let location = format!("/subscriptions/{}", row.id);
        Ok(CreatedSubscription::Created(Json(row.into()), location))
    }

    /// List subscriptions, newest first.
    #[oai(path = "/subscriptions", method = "get")]
    async fn list(
        &self,
        state: Data<&AppState>,
        _auth: ApiKey,
        /// Page size, 1 to 200.
        #[oai(
            default = "default_page_size",
            validator(minimum(value = "1"), maximum(value = "200"))
        )]
        limit: Query<u64>,
        /// `next_cursor` from the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<Json<SubscriptionPage>, ApiError> {
        let cursor = pagination::parse_cursor(cursor.0.as_deref())?;
        let mut query = subscription::Entity::find();
        if let Some(cursor) = cursor {
            query = query.filter(subscription::Column::Id.lt(cursor));
        }
        let rows = query
            .order_by_desc(subscription::Column::Id)
            .limit(limit.0 + 1)
            .all(&state.database)
            .await
            .map_err(ApiError::database)?;

        let (rows, next_cursor) = pagination::split_page(rows, limit.0, |row| row.id);
        let items = rows.into_iter().map(Subscription::from).collect();
        Ok(Json(SubscriptionPage { items, next_cursor }))
    }

    /// Get one subscription.
    #[oai(path = "/subscriptions/:id", method = "get")]
    async fn get(
        &self,
        state: Data<&AppState>,
        _auth: ApiKey,
        id: Path<Uuid>,
    ) -> Result<Json<Subscription>, ApiError> {
        let row = subscription::Entity::find_by_id(id.0)
            .one(&state.database)
            .await
            .map_err(ApiError::database)?
            .ok_or_else(ApiError::subscription_not_found)?;
        Ok(Json(row.into()))
    }

    /// Change a subscription. Deliveries not yet attempted, and retries, use the new
    /// target and secret.
    #[oai(path = "/subscriptions/:id", method = "patch")]
    async fn update(
        &self,
        state: Data<&AppState>,
        _auth: ApiKey,
        id: Path<Uuid>,
        body: Json<SubscriptionPatch>,
    ) -> Result<Json<Subscription>, ApiError> {
        let patch = body.0;
        let mut changes = <subscription::ActiveModel as Default>::default();
        if let Some(raw) = &patch.target_url {
            let url = validation::target_url(raw, state.settings.allow_private_targets).await?;
            changes.target_url = ActiveValue::Set(url);
        }
        match patch.secret {
            MaybeUndefined::Value(secret) => {
                validation::secret(&secret)?;
                changes.secret = ActiveValue::Set(Some(secret));
            }
            MaybeUndefined::Null => changes.secret = ActiveValue::Set(None),
            MaybeUndefined::Undefined => {}
        }
        if let Some(types) = patch.event_types {
            changes.event_types = ActiveValue::Set(validation::event_types(types)?);
        }
        match patch.description {
            MaybeUndefined::Value(description) => {
                validation::description(&description)?;
                changes.description = ActiveValue::Set(Some(description));
            }
            MaybeUndefined::Null => changes.description = ActiveValue::Set(None),
            MaybeUndefined::Undefined => {}
        }
        if let Some(enabled) = patch.enabled {
            changes.enabled = ActiveValue::Set(enabled);
        }

        let id = SubscriptionId(id.0);
        invalidate_cache(&state, id).await?;
        let updated = subscription::Entity::update_many()
            .set(changes)
            .col_expr(
                subscription::Column::Version,
                Expr::col(subscription::Column::Version).add(1),
            )
            .col_expr(subscription::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(subscription::Column::Id.eq(id.0))
            .exec_with_returning(&state.database)
            .await
            .map_err(ApiError::database)?;
        let row = updated
            .into_iter()
            .next()
            .ok_or_else(ApiError::subscription_not_found)?;

        // The key was removed above, so if this write fails readers go to the database.
        if let Err(err) = state
            .subscriptions
            .store(&CachedSubscription::from(&row))
            .await
        {
            tracing::warn!(subscription_id = %id, cause = %err, "cannot cache subscription");
        }
        tracing::info!(subscription_id = %id, version = row.version, "subscription updated");
        Ok(Json(row.into()))
    }

    /// Delete a subscription, its deliveries and their attempt logs. Nothing more is
    /// delivered to it, including retries already scheduled.
    #[oai(path = "/subscriptions/:id", method = "delete")]
    async fn delete(
        &self,
        state: Data<&AppState>,
        _auth: ApiKey,
        id: Path<Uuid>,
    ) -> Result<DeletedSubscription, ApiError> {
        let id = SubscriptionId(id.0);
        invalidate_cache(&state, id).await?;
        let result = subscription::Entity::delete_by_id(id.0)
            .exec(&state.database)
            .await
            .map_err(ApiError::database)?;
        if result.rows_affected == 0 {
            return Err(ApiError::subscription_not_found());
        }
        // A reader may have refilled the key between the first removal and the delete.
        if let Err(err) = state.subscriptions.invalidate(id).await {
            tracing::warn!(subscription_id = %id, cause = %err, "cannot uncache subscription");
        }
        tracing::info!(subscription_id = %id, "subscription deleted");
        Ok(DeletedSubscription::Deleted)
    }
}

fn default_page_size() -> u64 {
    50
}

/// Removes the cached copy before a change, so no reader can see the old version after the
/// change commits. If the cache cannot be reached the change is refused, since it could
/// not be made visible to readers.
async fn invalidate_cache(state: &AppState, id: SubscriptionId) -> Result<(), ApiError> {
    state.subscriptions.invalidate(id).await.map_err(|err| {
        tracing::warn!(subscription_id = %id, cause = %err, "cannot invalidate the cache");
        ApiError::unavailable(
            "cache_unavailable",
            "the subscription cache (NATS) is unavailable; nothing was changed, retry later",
        )
    })
}
