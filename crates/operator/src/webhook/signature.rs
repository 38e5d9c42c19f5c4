//! The signature Forgejo puts on a delivery: hex HMAC-SHA256 of the raw body, keyed with the
//! hook's secret (`X-Forgejo-Signature`, the same in `X-Gitea-Signature`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The headers that may carry the signature, in the order they are tried.
pub const SIGNATURE_HEADERS: [&str; 2] = ["x-forgejo-signature", "x-gitea-signature"];

/// Whether `signature` (lowercase or uppercase hex) is the HMAC-SHA256 of `body` keyed with
/// `secret`. The comparison takes the same time wherever the first wrong byte is.
pub fn is_valid(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let Some(expected) = decode_hex(signature.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// The bytes of a hex string of even length; `None` for anything else.
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16);
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8))
        .collect()
}

/// The signature Forgejo sends for `body` with `secret`, for tests and the stand-in's peers.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_of_the_body_with_the_secret_is_valid_and_nothing_else_is() {
        let body = br#"{"action":"new_job_attempt"}"#;
        let signature = sign(b"s3cret", body);
        assert_eq!(signature.len(), 64);
        assert!(is_valid(b"s3cret", body, &signature));
        assert!(is_valid(b"s3cret", body, &signature.to_uppercase()));
        assert!(!is_valid(b"other", body, &signature));
        assert!(!is_valid(b"s3cret", b"{}", &signature));
        assert!(!is_valid(b"s3cret", body, &signature[..62]));
        assert!(!is_valid(b"s3cret", body, "zz"));
        assert!(!is_valid(b"s3cret", body, ""));
        assert!(!is_valid(b"s3cret", body, &format!("sha256={signature}")));
    }

    #[test]
    fn a_known_vector_matches() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
