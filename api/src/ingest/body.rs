//! The webhook body: the exact bytes received, read with a size limit and checked to be JSON.

use bytes::Bytes;
use poem::{Request, RequestBody};
use poem_openapi::registry::{MetaMediaType, MetaRequest, MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};

use crate::error::ApiError;
use crate::state::AppState;

/// Any JSON document, kept byte for byte: signatures are computed over these bytes and the
/// same bytes are delivered.
pub struct WebhookBody(pub Bytes);

fn is_json(content_type: &str) -> bool {
    content_type.parse::<mime::Mime>().is_ok_and(|mime| {
        mime.type_() == "application"
            && (mime.subtype() == "json" || mime.suffix().is_some_and(|suffix| suffix == "json"))
    })
}

impl<'a> ApiExtractor<'a> for WebhookBody {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];

    type ParamType = ();
    type ParamRawType = ();

    fn register(_registry: &mut Registry) {}

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: Some("Any JSON document, up to `MAX_PAYLOAD_BYTES` (default 1 MiB)."),
            content: vec![MetaMediaType {
                content_type: "application/json",
                schema: MetaSchemaRef::Inline(Box::new(MetaSchema::ANY)),
            }],
            required: true,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _options: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        if !request.content_type().is_some_and(is_json) {
            return Err(ApiError::new(
                poem::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the webhook as JSON with `Content-Type: application/json`",
            )
            .into());
        }
        let limit = request
            .data::<AppState>()
            .map_or(1024 * 1024, |state| state.settings.max_payload_bytes);

        // Reading with a limit stops a huge or endless body early; a Content-Length check
        // alone would trust the client.
        let bytes = body
            .take()?
            .into_bytes_limit(limit)
            .await
            .map_err(|err| match err {
                poem::error::ReadBodyError::PayloadTooLarge => ApiError::new(
                    poem::http::StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("the body is larger than {limit} bytes"),
                ),
                _ => ApiError::bad_request("unreadable_body", "the body could not be read"),
            })?;

        if let Err(err) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
            let reason = if err.is_eof() && bytes.iter().all(u8::is_ascii_whitespace) {
                "the body is empty".to_owned()
            } else {
                format!(
                    "line {} column {}: {}",
                    err.line(),
                    err.column(),
                    err.classify_reason()
                )
            };
            return Err(ApiError::bad_request(
                "invalid_json",
                format!("the body is not JSON: {reason}"),
            )
            .into());
        }
        Ok(Self(bytes))
    }
}

trait ClassifyReason {
    fn classify_reason(&self) -> &'static str;
}

impl ClassifyReason for serde_json::Error {
    /// A fixed description, because serde_json's own messages can quote the input.
    fn classify_reason(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "could not be read",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "invalid data",
            serde_json::error::Category::Eof => "unexpected end of input",
        }
    }
}
