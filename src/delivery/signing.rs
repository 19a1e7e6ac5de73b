//! Standard Webhooks v1 signatures (`webhook-signature`).
//!
//! A [`SigningKey`] is parsed from a `whsec_<base64>` secret; [`signature`]
//! signs `<webhook-id>.<webhook-timestamp>.<raw body>` with HMAC-SHA256 under
//! every configured key and joins the results (`v1,<base64>`) with spaces, so
//! a receiver keeps verifying while secrets are rotated.
//!
//! Invariants: key bytes never appear in `Debug` output or error messages;
//! signing cannot fail once a key is parsed.

use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use ring::hmac;

/// The prefix of a Standard Webhooks secret.
pub const PREFIX: &str = "whsec_";
/// Fewest key bytes accepted (the specification's lower bound).
pub const MIN_KEY_BYTES: usize = 24;
/// Most key bytes accepted (the specification's upper bound).
pub const MAX_KEY_BYTES: usize = 64;

/// Base64 with or without padding: secrets are pasted from many tools.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One HMAC key. `Debug` shows nothing of it.
#[derive(Clone)]
pub struct SigningKey {
    /// The decoded bytes, kept for equality (a reload compares configurations).
    bytes: Vec<u8>,
    key: hmac::Key,
}

impl PartialEq for SigningKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for SigningKey {}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// Why a signing secret was refused. Never quotes the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningKeyError {
    #[error("must start with whsec_ (a Standard Webhooks secret: whsec_ and base64 of 24 to 64 random bytes)")]
    Prefix,
    #[error("the part after whsec_ is not valid base64")]
    Base64,
    #[error("the key is {0} bytes long; use 24 to 64 random bytes (e.g. whsec_$(head -c 32 /dev/urandom | base64))")]
    Length(usize),
}

impl SigningKey {
    /// Parses `whsec_<base64 of 24..=64 bytes>`.
    pub fn parse(secret: &str) -> Result<Self, SigningKeyError> {
        let encoded = secret
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(SigningKeyError::Prefix)?;
        let bytes = LENIENT
            .decode(encoded)
            .map_err(|_| SigningKeyError::Base64)?;
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&bytes.len()) {
            return Err(SigningKeyError::Length(bytes.len()));
        }
        let key = hmac::Key::new(hmac::HMAC_SHA256, &bytes);
        Ok(Self { bytes, key })
    }

    /// `v1,<base64 HMAC-SHA256 of id.timestamp.body>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
    }
}

/// The `webhook-signature` value: one `v1,<sig>` per key, space-separated.
/// `None` when no key is configured.
pub fn signature(keys: &[SigningKey], id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    if keys.is_empty() {
        return None;
    }
    let sigs: Vec<String> = keys.iter().map(|k| k.sign(id, timestamp, body)).collect();
    Some(sigs.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TS: i64 = 1649367553;
    const BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;

    #[test]
    fn the_specifications_test_vector_is_reproduced() {
        let key = SigningKey::parse(SECRET).unwrap();
        assert_eq!(
            key.sign(ID, TS, BODY),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn several_keys_give_one_signature_each_space_separated() {
        let other = SigningKey::parse(&format!("{PREFIX}{}", STANDARD.encode([7u8; 32]))).unwrap();
        let first = SigningKey::parse(SECRET).unwrap();
        let joined = signature(&[first.clone(), other.clone()], ID, TS, BODY).unwrap();
        let parts: Vec<&str> = joined.split(' ').collect();
        assert_eq!(parts, [first.sign(ID, TS, BODY), other.sign(ID, TS, BODY)]);
        assert_ne!(parts[0], parts[1]);
        assert_eq!(signature(&[], ID, TS, BODY), None);
    }

    #[test]
    fn the_signature_covers_id_timestamp_and_body() {
        let key = SigningKey::parse(SECRET).unwrap();
        let base = key.sign(ID, TS, BODY);
        assert_ne!(key.sign("msg_other", TS, BODY), base);
        assert_ne!(key.sign(ID, TS + 1, BODY), base);
        assert_ne!(key.sign(ID, TS, b"{}"), base);
    }

    #[test]
    fn bad_secrets_are_refused_without_quoting_them() {
        assert_eq!(
            SigningKey::parse("C2FVsBQIhrscChlQIMV+b5sSYspob7oD"),
            Err(SigningKeyError::Prefix)
        );
        assert_eq!(
            SigningKey::parse("whsec_not base64!"),
            Err(SigningKeyError::Base64)
        );
        assert_eq!(
            SigningKey::parse("whsec_AAAA"),
            Err(SigningKeyError::Length(3))
        );
        let long = format!("{PREFIX}{}", STANDARD.encode([1u8; 65]));
        assert_eq!(SigningKey::parse(&long), Err(SigningKeyError::Length(65)));
        // Unpadded base64 is accepted.
        let unpadded = format!(
            "{PREFIX}{}",
            STANDARD.encode([1u8; 32]).trim_end_matches('=')
        );
        assert!(SigningKey::parse(&unpadded).is_ok());
        let key = SigningKey::parse(SECRET).unwrap();
        assert_eq!(format!("{key:?}"), "SigningKey(<redacted>)");
    }
}
