//! The signature the runner's cache proxy puts on each request it forwards to an external
//! cache server, and the server's check of it (forgejo-runner `act/cacheproxy` and
//! `act/artifactcache`): HMAC-SHA256 of `{repo}>{runNumber}>{timestamp}>{writeIsolationKey}`.

use http::HeaderMap;
use ring::hmac;

use crate::config::Secret;

/// Header: the repository's full name, e.g. `faro/app`.
pub const REPO: &str = "forgejo-cache-repo";
/// Header: the run number.
pub const RUN_NUMBER: &str = "forgejo-cache-runnumber";
/// Header: the run id, put in the archive URLs the server answers with.
pub const RUN_ID: &str = "forgejo-cache-runid";
/// Header: unix seconds when the proxy signed the request.
pub const TIMESTAMP: &str = "forgejo-cache-timestamp";
/// Header: lowercase hex of the HMAC.
pub const MAC: &str = "forgejo-cache-mac";
/// Header: the write isolation key, when the run has one.
pub const WRITE_ISOLATION_KEY: &str = "forgejo-cache-writeisolationkey";
/// Header: the proxy's own external URL, the base of archive URLs.
pub const HOST: &str = "forgejo-cache-host";

/// What a signed request says about the run it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The repository's full name.
    pub repo: String,
    /// The run number.
    pub run_number: String,
    /// The run id (empty when absent: it is not signed).
    pub run_id: String,
    /// When it was signed, unix seconds.
    pub timestamp: i64,
    /// The write isolation key, empty when none.
    pub write_isolation_key: String,
    /// The proxy's external URL (empty when absent: it is not signed).
    pub host: String,
}

fn message(repo: &str, run_number: &str, timestamp: &str, write_isolation_key: &str) -> String {
    format!("{repo}>{run_number}>{timestamp}>{write_isolation_key}")
}

/// The MAC header's value for these fields.
pub fn sign(
    secret: &Secret,
    repo: &str,
    run_number: &str,
    timestamp: i64,
    write_isolation_key: &str,
) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.bytes());
    let tag = hmac::sign(
        &key,
        message(
            repo,
            run_number,
            &timestamp.to_string(),
            write_isolation_key,
        )
        .as_bytes(),
    );
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The request's run, if its MAC verifies and it was not signed after `now` (unix
/// seconds); None is the server's 403 "validation error".
pub fn verify(headers: &HeaderMap, secret: &Secret, now: i64) -> Option<Signed> {
    let text = |name: &str| -> Option<String> {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let repo = text(REPO)?;
    let run_number = text(RUN_NUMBER)?;
    let timestamp_text = text(TIMESTAMP)?;
    let timestamp: i64 = timestamp_text.parse().ok()?;
    let write_isolation_key = text(WRITE_ISOLATION_KEY).unwrap_or_default();
    let mac = decode_hex(&text(MAC)?)?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.bytes());
    // The MAC covers the timestamp as sent, so it is checked on the header's own text.
    let signed = message(&repo, &run_number, &timestamp_text, &write_isolation_key);
    hmac::verify(&key, signed.as_bytes(), &mac).ok()?;
    if timestamp > now {
        return None;
    }
    Some(Signed {
        repo,
        run_number,
        run_id: text(RUN_ID).unwrap_or_default(),
        timestamp,
        write_isolation_key,
        host: text(HOST).unwrap_or_default(),
    })
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(secret: &Secret, timestamp: i64, write_isolation_key: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let mac = sign(secret, "faro/app", "7", timestamp, write_isolation_key);
        for (name, value) in [
            (REPO, "faro/app".to_owned()),
            (RUN_NUMBER, "7".to_owned()),
            (RUN_ID, "70".to_owned()),
            (TIMESTAMP, timestamp.to_string()),
            (MAC, mac),
            (HOST, "http://127.0.0.1:0".to_owned()),
        ] {
            headers.insert(name, value.parse().unwrap());
        }
        if !write_isolation_key.is_empty() {
            headers.insert(WRITE_ISOLATION_KEY, write_isolation_key.parse().unwrap());
        }
        headers
    }

    #[test]
    fn the_mac_is_hmac_sha256_of_the_joined_fields_in_lowercase_hex() {
        // The message is the fields joined by `>`; the HMAC itself is checked against
        // RFC 4231 test case 2 (key "Jefe", data "what do ya want for nothing?").
        let mac = sign(
            &Secret::new("Jefe"),
            "what do ya want ",
            "for nothing?",
            0,
            "",
        );
        let expected = hmac_of("Jefe", "what do ya want >for nothing?>0>");
        assert_eq!(mac, expected);
        assert_eq!(mac.len(), 64);
        assert!(
            mac.chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
        );
        assert_eq!(
            hmac_of("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    fn hmac_of(key: &str, data: &str) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes());
        let tag = hmac::sign(&key, data.as_bytes());
        tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn a_signed_request_verifies_with_its_secret_only() {
        let secret = Secret::new("right");
        let now = unix_now();
        let signed = verify(&headers(&secret, now, ""), &secret, now).unwrap();
        assert_eq!(
            (signed.repo.as_str(), signed.run_id.as_str()),
            ("faro/app", "70")
        );
        assert!(verify(&headers(&Secret::new("wrong"), now, ""), &secret, now).is_none());
        let isolated = verify(&headers(&secret, now, "pr-3"), &secret, now).unwrap();
        assert_eq!(isolated.write_isolation_key, "pr-3");
    }

    #[test]
    fn a_future_timestamp_or_a_missing_header_is_refused() {
        let secret = Secret::new("right");
        let now = unix_now();
        assert!(verify(&headers(&secret, now + 60, ""), &secret, now).is_none());
        assert!(verify(&headers(&secret, now - 60, ""), &secret, now).is_some());
        let mut missing = headers(&secret, now, "");
        missing.remove(MAC);
        assert!(verify(&missing, &secret, now).is_none());
        let mut odd = headers(&secret, now, "");
        odd.insert(MAC, "abc".parse().unwrap());
        assert!(verify(&odd, &secret, now).is_none());
    }
}
