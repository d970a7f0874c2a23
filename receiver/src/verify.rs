//! Checking the two signatures hookline puts on a delivery, the way a receiver should.

use base64::Engine;
use common::signing::{self, SignatureError};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// How far a `webhook-timestamp` may be from the receiver's clock: the tolerance Standard
/// Webhooks libraries use by default. It stops a captured request from being replayed later.
pub const TIMESTAMP_TOLERANCE_SECONDS: i64 = 5 * 60;

/// The result of checking one signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    /// The header (or one the signature depends on) is absent.
    Missing,
    /// The header is present but not in the scheme's format.
    Malformed,
    /// Well-formed, but not made with this secret over this body.
    Mismatch,
    /// The signature matches but its timestamp is outside the tolerance.
    Stale,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Mismatch => "mismatch",
            Self::Stale => "stale timestamp",
        }
    }
}

/// Checks `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn hub_signature(secret: &str, header: Option<&[u8]>, body: &[u8]) -> Verdict {
    match signing::verify_hub_signature(header, secret, body) {
        Ok(()) => Verdict::Valid,
        Err(SignatureError::Missing) => Verdict::Missing,
        Err(SignatureError::Malformed) => Verdict::Malformed,
        Err(SignatureError::Mismatch) => Verdict::Mismatch,
    }
}

/// The Standard Webhooks headers of one request.
pub struct StandardHeaders<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// Checks `webhook-signature`: space-separated `v1,<base64 HMAC-SHA256>` entries over
/// `{webhook-id}.{webhook-timestamp}.{body}`, keyed by the secret's UTF-8 bytes. One matching
/// entry is enough; entries of other versions are skipped, as the scheme requires.
pub fn standard_signature(
    secret: &str,
    headers: &StandardHeaders<'_>,
    body: &[u8],
    now: i64,
) -> Verdict {
    let (Some(id), Some(timestamp), Some(signature)) =
        (headers.id, headers.timestamp, headers.signature)
    else {
        return Verdict::Missing;
    };
    let Ok(seconds) = timestamp.parse::<i64>() else {
        return Verdict::Malformed;
    };

    // HMAC takes keys of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return Verdict::Mismatch;
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);

    let mut any_v1 = false;
    let mut matched = false;
    for entry in signature.split(' ') {
        let Some(encoded) = entry.strip_prefix("v1,") else {
            continue;
        };
        let Ok(presented) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
            continue;
        };
        any_v1 = true;
        // verify_slice compares in constant time, so timing does not leak the signature.
        if mac.clone().verify_slice(&presented).is_ok() {
            matched = true;
            break;
        }
    }

    if !any_v1 {
        Verdict::Malformed
    } else if !matched {
        Verdict::Mismatch
    } else if (now - seconds).abs() > TIMESTAMP_TOLERANCE_SECONDS {
        Verdict::Stale
    } else {
        Verdict::Valid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_770_000;
    const ID: &str = "0193e0a4-5b6c-7d8e-9f00-112233445566";
    const BODY: &[u8] = br#"{"order":42}"#;

    fn check(secret: &str, signature: &str, timestamp: i64) -> Verdict {
        let timestamp = timestamp.to_string();
        let headers = StandardHeaders {
            id: Some(ID),
            timestamp: Some(&timestamp),
            signature: Some(signature),
        };
        standard_signature(secret, &headers, BODY, NOW)
    }

    #[test]
    fn the_services_own_signatures_verify() {
        let standard = signing::standard_webhooks_signature("s3cret", ID, NOW, BODY);
        assert_eq!(check("s3cret", &standard, NOW), Verdict::Valid);

        let hub = signing::hub_signature("s3cret", BODY);
        assert_eq!(
            hub_signature("s3cret", Some(hub.as_bytes()), BODY),
            Verdict::Valid
        );
    }

    #[test]
    fn one_matching_entry_among_several_is_enough() {
        let good = signing::standard_webhooks_signature("s3cret", ID, NOW, BODY);
        let other = signing::standard_webhooks_signature("rotated", ID, NOW, BODY);
        let header = format!("v1a,c2lnbmF0dXJl {other} {good}");
        assert_eq!(check("s3cret", &header, NOW), Verdict::Valid);
    }

    #[test]
    fn wrong_secret_bad_format_and_old_timestamps_are_told_apart() {
        let standard = signing::standard_webhooks_signature("s3cret", ID, NOW, BODY);
        assert_eq!(check("other", &standard, NOW), Verdict::Mismatch);
        assert_eq!(check("s3cret", "v2,abc", NOW), Verdict::Malformed);

        let old = NOW - TIMESTAMP_TOLERANCE_SECONDS - 1;
        let signed_long_ago = signing::standard_webhooks_signature("s3cret", ID, old, BODY);
        assert_eq!(check("s3cret", &signed_long_ago, old), Verdict::Stale);

        let absent = StandardHeaders {
            id: Some(ID),
            timestamp: None,
            signature: Some(&standard),
        };
        assert_eq!(
            standard_signature("s3cret", &absent, BODY, NOW),
            Verdict::Missing
        );
        assert_eq!(hub_signature("s3cret", None, BODY), Verdict::Missing);
        assert_eq!(
            hub_signature("s3cret", Some(b"sha256=00"), BODY),
            Verdict::Malformed
        );
    }
}
