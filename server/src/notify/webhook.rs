//! Generic webhooks: the signature and what the receiver's answer means.
//!
//! The body is the [`super::AlertEvent`] JSON exactly as serialized (its schema is in
//! `docs/alerts.md`). The signature is `sha256=` followed by the lowercase hex HMAC-SHA256,
//! keyed with the target's secret, of `"<timestamp>.<body>"`, where `<timestamp>` is the
//! `X-Medic-Timestamp` header (Unix seconds when the attempt was sent, so every retry is signed
//! afresh). Receivers recompute it over the raw body, compare in constant time, and reject
//! timestamps older than a few minutes so a captured request cannot be replayed later.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::event::Outcome;

/// The event kind (`triggered`, `renotified`, `acknowledged`, `resolved`).
pub const HEADER_EVENT: &str = "X-Medic-Event";
/// The event's `event_id`; the same on every retry of one event, so receivers can drop repeats.
pub const HEADER_DELIVERY: &str = "X-Medic-Delivery";
/// Unix seconds when this attempt was sent; part of the signed text.
pub const HEADER_TIMESTAMP: &str = "X-Medic-Timestamp";
/// `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
pub const HEADER_SIGNATURE: &str = "X-Medic-Signature";

/// The `User-Agent` of every notification request.
pub const USER_AGENT: &str = concat!("medic/", env!("CARGO_PKG_VERSION"));

/// The `X-Medic-Signature` value for `body` sent at `timestamp` (Unix seconds).
pub fn signature(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// What the receiver's status means: 2xx delivered; 408, 429 and 5xx try again; anything else
/// (redirects included — they are never followed) will not get better by retrying.
pub fn outcome(status: u16) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered {
            status,
            external_ref: None,
        },
        408 | 429 | 500..=599 => Outcome::Retry {
            status: Some(status),
            error: format!("receiver answered HTTP {status}"),
        },
        300..=399 => Outcome::Failed {
            status: Some(status),
            error: format!("receiver answered HTTP {status}; redirects are not followed"),
        },
        _ => Outcome::Failed {
            status: Some(status),
            error: format!("receiver answered HTTP {status}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Known answer for the signed form, computed independently (Python hmac module).
        assert_eq!(
            signature("s3cret", 1_764_547_200, br#"{"a":1}"#),
            "sha256=78583f9c7ac099b2c833b58f7323851695d0898535df9649085e882928df019b"
        );
    }

    #[test]
    fn statuses_map_to_outcomes() {
        assert!(matches!(
            outcome(200),
            Outcome::Delivered { status: 200, .. }
        ));
        assert!(matches!(
            outcome(204),
            Outcome::Delivered { status: 204, .. }
        ));
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(matches!(outcome(s), Outcome::Retry { .. }), "{s}");
        }
        for s in [301, 302, 307, 400, 401, 403, 404, 410, 413, 422] {
            assert!(matches!(outcome(s), Outcome::Failed { .. }), "{s}");
        }
    }
}
