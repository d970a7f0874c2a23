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

        // JSON text is UTF-8; serde_json does not check strings it is told to skip.
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return Err(ApiError::bad_request("invalid_json", "the body is not UTF-8").into());
        };
        if let Err(err) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
            let reason = if err.is_eof() && bytes.iter().all(u8::is_ascii_whitespace) {
                "the body is empty".to_owned()
            } else {
                format!(
                    "line {} column {}: {}",
                    err.line(),
                    err.column(),
                    category(&err)
                )
            };
            return Err(ApiError::bad_request(
                "invalid_json",
                format!("the body is not JSON: {reason}"),
            )
            .into());
        }
        if nesting_depth(&bytes) > MAX_NESTING {
            let message = format!("the body nests arrays and objects deeper than {MAX_NESTING}");
            return Err(ApiError::bad_request("invalid_json", message).into());
        }
        Ok(Self(bytes))
    }
}

/// Deepest nesting accepted. Receivers parse what we deliver, and many parsers recurse.
const MAX_NESTING: usize = 128;

/// The deepest nesting of arrays and objects in a JSON text known to be valid.
fn nesting_depth(json: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &byte in json {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// A fixed description, because serde_json's own messages can quote the input.
fn category(err: &serde_json::Error) -> &'static str {
    match err.classify() {
        serde_json::error::Category::Io => "could not be read",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "invalid data",
        serde_json::error::Category::Eof => "unexpected end of input",
    }
}

#[cfg(test)]
mod tests {
    use super::nesting_depth;

    #[test]
    fn depth_counts_brackets_outside_strings_only() {
        assert_eq!(nesting_depth(b"1"), 0);
        assert_eq!(nesting_depth(br#"{"a":[1,{"b":[]}]}"#), 4);
        assert_eq!(nesting_depth(br#"["[[[[", "\"[[", {}]"#), 2);
    }
}
