//! Bearer-token protection of the management endpoints.

use poem::http::StatusCode;
use poem::{Endpoint, IntoResponse, Middleware, Request, Response, Result};
use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// Requires `Authorization: Bearer <key>` on every path but the public ones.
pub struct RequireApiKey {
    key: Option<String>,
}

impl RequireApiKey {
    pub fn new(key: Option<String>) -> Self {
        Self { key }
    }
}

/// Paths anyone may call: senders of webhooks, health probes and the documentation.
fn is_public(path: &str) -> bool {
    path.starts_with("/ingest/")
        || matches!(path, "/health" | "/ready" | "/openapi.json" | "/docs")
        || path.starts_with("/docs/")
}

impl<E: Endpoint> Middleware<E> for RequireApiKey {
    type Output = RequireApiKeyEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        RequireApiKeyEndpoint {
            inner,
            key: self.key.clone(),
        }
    }
}

pub struct RequireApiKeyEndpoint<E> {
    inner: E,
    key: Option<String>,
}

impl<E: Endpoint> Endpoint for RequireApiKeyEndpoint<E> {
    type Output = Response;

    async fn call(&self, request: Request) -> Result<Self::Output> {
        if let Some(key) = &self.key
            && !is_public(request.uri().path())
            && !presents_key(&request, key)
        {
            return Ok(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send the API key as `Authorization: Bearer <key>`",
            )
            .into_response());
        }
        self.inner
            .call(request)
            .await
            .map(IntoResponse::into_response)
    }
}

fn presents_key(request: &Request, key: &str) -> bool {
    let Some(header) = request.headers().get("authorization") else {
        return false;
    };
    let Some(presented) = header.as_bytes().strip_prefix(b"Bearer ") else {
        return false;
    };
    // Constant time, so response timing does not reveal how much of a guess was right.
    presented.ct_eq(key.as_bytes()).into()
}

/// `Authorization: Bearer <API_KEY>`, required on management endpoints when the service
/// runs with `API_KEY` set.
#[derive(SecurityScheme)]
#[oai(ty = "bearer")]
// The token is checked by the middleware, not read here.
pub struct ApiKeyBearer(#[allow(dead_code)] Bearer);

/// Declares the API key in the generated documentation, so its UI can send it. The check
/// itself is [`RequireApiKey`], one place for every route; the fallback lets requests
/// through here when no key is configured.
#[derive(SecurityScheme)]
pub enum ApiKey {
    // Present only for the documentation; the middleware has already checked it.
    Bearer(#[allow(dead_code)] ApiKeyBearer),
    #[oai(fallback)]
    NotRequired,
}
