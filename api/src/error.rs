//! The one place where failures become HTTP responses.
//!
//! Every error the API returns has the body `{"error": "<snake_case_code>", "message":
//! "<sentence for a person>"}`. Handlers return [`ApiError`]; errors raised by poem and
//! poem-openapi before a handler runs (a malformed id, a body that is not JSON, an unknown
//! route) are converted by [`into_json_response`].

use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses, Registry};
use poem_openapi::types::Example;
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiResponse, Object};
use sea_orm::{DbErr, RuntimeErr, SqlErr};

/// The body of every error response.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct ErrorBody {
    /// A stable machine-readable code, such as `subscription_not_found`.
    pub error: String,
    /// What went wrong, for a person.
    pub message: String,
}

impl Example for ErrorBody {
    fn example() -> Self {
        Self {
            error: "subscription_not_found".to_owned(),
            message: "no subscription has this id".to_owned(),
        }
    }
}

/// An error a handler answers with.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    pub fn subscription_not_found() -> Self {
        Self::not_found("subscription_not_found", "no subscription has this id")
    }

    /// A database failure. Lost connections and exhausted pools are a `503` the client
    /// may retry; anything else is logged in full and answered without details.
    pub fn database(err: DbErr) -> Self {
        if let Some(value_error) = invalid_value(&err) {
            return value_error;
        }
        if is_connection_error(&err) {
            tracing::warn!(cause = %err, "database unavailable");
            Self::unavailable(
                "database_unavailable",
                "the database is unavailable; retry later",
            )
        } else {
            tracing::error!(cause = %err, "database error");
            Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "the request could not be completed; it has been logged",
            )
        }
    }

    fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.code.to_owned(),
            message: self.message.clone(),
        }
    }
}

fn sqlx_error(err: &DbErr) -> Option<&sea_orm::sqlx::Error> {
    match err {
        DbErr::Exec(RuntimeErr::SqlxError(inner)) | DbErr::Query(RuntimeErr::SqlxError(inner)) => {
            Some(inner.as_ref())
        }
        _ => None,
    }
}

fn sqlstate(err: &DbErr) -> Option<String> {
    match sqlx_error(err)? {
        sea_orm::sqlx::Error::Database(database) => database.code().map(|code| code.into_owned()),
        _ => None,
    }
}

/// Whether the database is unreachable or going away, as opposed to refusing a statement.
fn is_connection_error(err: &DbErr) -> bool {
    if matches!(err, DbErr::ConnectionAcquire(_) | DbErr::Conn(_)) {
        return true;
    }
    // SQLSTATE class 08 is a lost connection; 57P01 to 57P03 a server shutting down or
    // starting up, sent to statements that were running at the time.
    if let Some(code) = sqlstate(err) {
        return code.starts_with("08") || code.starts_with("57P");
    }
    matches!(
        sqlx_error(err),
        Some(
            sea_orm::sqlx::Error::Io(_)
                | sea_orm::sqlx::Error::PoolTimedOut
                | sea_orm::sqlx::Error::PoolClosed
                | sea_orm::sqlx::Error::WorkerCrashed
        )
    )
}

/// A value PostgreSQL cannot store (SQLSTATE class 22, such as a NUL character in text),
/// which is the client's input at fault, not the server.
fn invalid_value(err: &DbErr) -> Option<ApiError> {
    sqlstate(err)
        .filter(|code| code.starts_with("22"))
        .map(|_| ApiError::unprocessable("invalid_value", "a value cannot be stored as sent"))
}

/// Whether a database error is a foreign-key violation, classified by SQLSTATE.
pub fn is_foreign_key_violation(err: &DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(SqlErr::ForeignKeyConstraintViolation(_))
    )
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl poem::error::ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        self.status
    }

    fn as_response(&self) -> Response {
        json_response(self.status, &self.body())
    }
}

fn json_response(status: StatusCode, body: &ErrorBody) -> Response {
    let json = body.to_json_string();
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(json)
}

/// The error statuses documented on every operation, with what each means.
const DOCUMENTED: &[(u16, &str)] = &[
    (
        400,
        "The request is malformed: a body that is not JSON, an id that is not a UUID.",
    ),
    (
        401,
        "A missing or wrong API key, or (on ingest) an invalid signature.",
    ),
    (404, "No such subscription or delivery."),
    (413, "The body is larger than the configured limit."),
    (415, "The body is not declared as JSON."),
    (422, "Well-formed input with invalid values."),
    (
        503,
        "PostgreSQL or NATS is unavailable; nothing was changed or accepted. Retry later.",
    ),
];

impl ApiResponse for ApiError {
    fn meta() -> MetaResponses {
        let responses = DOCUMENTED
            .iter()
            .map(|&(status, description)| MetaResponse {
                description,
                status: Some(status),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: "application/json; charset=utf-8",
                    schema: <ErrorBody as poem_openapi::types::Type>::schema_ref(),
                }],
                headers: vec![],
            })
            .collect();
        MetaResponses { responses }
    }

    fn register(registry: &mut Registry) {
        <ErrorBody as poem_openapi::types::Type>::register(registry);
    }
}

/// Converts any error that reaches the top of the router into the JSON error shape.
pub fn into_json_response(err: poem::Error) -> Response {
    use poem_openapi::error::{
        ContentTypeError, ParseParamError, ParsePathError, ParseRequestPayloadError,
    };

    if let Some(api_error) = err.downcast_ref::<ApiError>() {
        return json_response(api_error.status, &api_error.body());
    }
    let (status, code, message) = if let Some(path) = err.downcast_ref::<ParsePathError>() {
        (
            StatusCode::BAD_REQUEST,
            "invalid_id",
            format!("`{}` must be a UUID", path.name),
        )
    } else if let Some(param) = err.downcast_ref::<ParseParamError>() {
        (
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            without_values(&param.to_string()),
        )
    } else if let Some(payload) = err.downcast_ref::<ParseRequestPayloadError>() {
        let reason = without_values(&payload.reason);
        (
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("the body is not valid: {reason}"),
        )
    } else if err.is::<ContentTypeError>() {
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with `Content-Type: application/json`".to_owned(),
        )
    } else if let Some(poem::error::ReadBodyError::PayloadTooLarge) = err.downcast_ref() {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the body is too large".to_owned(),
        )
    } else {
        let status = err.status();
        let code = match status {
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::UNAUTHORIZED => "unauthorized",
            s if s.is_client_error() => "bad_request",
            _ => "internal_error",
        };
        if status.is_server_error() {
            tracing::error!(cause = %err, "unhandled error");
        }
        let message = status.canonical_reason().unwrap_or("error").to_lowercase();
        (status, code, message)
    };
    json_response(
        status,
        &ErrorBody {
            error: code.to_owned(),
            message,
        },
    )
}

/// Removes quoted input from a parser's message. serde quotes offending values in
/// backticks, and a value may be a secret sent in the wrong field.
fn without_values(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut inside = false;
    for c in reason.chars() {
        if c == '`' {
            if !inside {
                out.push_str("`…`");
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    out
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.status, &self.body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_are_removed_from_parser_messages() {
        assert_eq!(
            without_values("invalid type: string `hunter2`, expected a boolean"),
            "invalid type: string `…`, expected a boolean"
        );
    }
}
