//! Names of runner Jobs: a pure function of (pool uid, Forgejo job id, attempt).
//!
//! Duplicate prevention rests here. The same Forgejo job attempt always gets the same Job
//! name in a pool, so a second create (after a restart, by a second replica, on a stale
//! cache) fails with `AlreadyExists` instead of starting a second runner. The pool part of
//! the name is a hash of the RunnerDeployment uid, so two pools serving the same job never
//! collide, and a runner registration named after a Job can be told to be ours by its name.
//!
//! Shape: `forgejo-job-{id}-{attempt}-{pool hash}`, e.g. `forgejo-job-4711-1-3f9a0c27be`,
//! at most 62 characters, a valid DNS-1123 label.

use std::fmt;

use sha2::{Digest, Sha256};

/// Every runner Job name starts with this.
pub const JOB_NAME_PREFIX: &str = "forgejo-job-";
/// Hex digits of the pool hash in a Job name.
pub const POOL_HASH_LEN: usize = 10;
/// The longest name a Kubernetes label value or DNS-1123 label may have.
pub const MAX_NAME_LEN: usize = 63;

/// Why no name can be made for a Forgejo job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The pool has no uid yet (it was never stored by the apiserver).
    #[error("the RunnerDeployment has no uid")]
    EmptyUid,
    /// Forgejo ids are positive; anything else is not a Forgejo job.
    #[error("Forgejo job id {0} is not positive")]
    InvalidJobId(i64),
    /// Attempts count from 1 (0 means unknown).
    #[error("Forgejo job attempt {0} is negative")]
    InvalidAttempt(i64),
}

/// The name of the runner Job (and of its Secret and runner registration) for one Forgejo
/// job attempt in one pool.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunnerJobName(String);

impl RunnerJobName {
    /// The name for `forgejo_job_id` at `attempt` (`None` or 0: unknown, before Forgejo v15).
    ///
    /// ```
    /// use scheduler::naming::{RunnerJobName, is_pool_job_name};
    ///
    /// let name = RunnerJobName::new("pool-uid", 4711, Some(2)).unwrap();
    /// assert!(name.as_str().starts_with("forgejo-job-4711-2-"));
    /// assert_eq!(name, RunnerJobName::new("pool-uid", 4711, Some(2)).unwrap());
    /// assert!(is_pool_job_name(name.as_str(), "pool-uid"));
    /// ```
    pub fn new(
        pool_uid: &str,
        forgejo_job_id: i64,
        attempt: Option<i64>,
    ) -> Result<Self, NameError> {
        if pool_uid.is_empty() {
            return Err(NameError::EmptyUid);
        }
        if forgejo_job_id <= 0 {
            return Err(NameError::InvalidJobId(forgejo_job_id));
        }
        let attempt = attempt.unwrap_or(0);
        if attempt < 0 {
            return Err(NameError::InvalidAttempt(attempt));
        }
        Ok(Self(format!(
            "{JOB_NAME_PREFIX}{forgejo_job_id}-{attempt}-{}",
            pool_hash(pool_uid)
        )))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for RunnerJobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for RunnerJobName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The parts of a runner Job name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedJobName {
    /// The Forgejo job id.
    pub forgejo_job_id: i64,
    /// The attempt, 0 when unknown.
    pub attempt: i64,
    /// The hash of the pool's uid.
    pub pool_hash: String,
}

/// Reads a runner Job name back; `None` when `name` is not one this module makes.
pub fn parse_job_name(name: &str) -> Option<ParsedJobName> {
    let rest = name.strip_prefix(JOB_NAME_PREFIX)?;
    let mut parts = rest.split('-');
    let (id, attempt, hash) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || hash.len() != POOL_HASH_LEN {
        return None;
    }
    if !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let forgejo_job_id = canonical_number(id)?;
    let attempt = canonical_number(attempt)?;
    if forgejo_job_id == 0 {
        return None;
    }
    Some(ParsedJobName {
        forgejo_job_id,
        attempt,
        pool_hash: hash.to_owned(),
    })
}

/// Whether `name` is a runner Job name of the pool with `pool_uid`, a warm runner's included.
pub fn is_pool_job_name(name: &str, pool_uid: &str) -> bool {
    let ours = pool_hash(pool_uid);
    parse_job_name(name).is_some_and(|parsed| parsed.pool_hash == ours)
        || parse_warm_name(name).is_some_and(|parsed| parsed.pool_hash == ours)
}

/// Every warm runner Job name starts with this.
pub const WARM_NAME_PREFIX: &str = "forgejo-warm-";

/// The name of a warm runner's Job (and of its Secret and registration): a pool and a
/// serial, `forgejo-warm-{serial}-{pool hash}`. A plan takes the smallest serials no Job of
/// the pool holds, so a plan repeated on the same caches makes the same names and a second
/// create fails with `AlreadyExists`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WarmRunnerName(String);

impl WarmRunnerName {
    /// The name of warm runner `serial` of the pool with `pool_uid`.
    pub fn new(pool_uid: &str, serial: u32) -> Result<Self, NameError> {
        if pool_uid.is_empty() {
            return Err(NameError::EmptyUid);
        }
        Ok(Self(format!(
            "{WARM_NAME_PREFIX}{serial}-{}",
            pool_hash(pool_uid)
        )))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for WarmRunnerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The parts of a warm runner name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedWarmName {
    /// The serial.
    pub serial: u32,
    /// The hash of the pool's uid.
    pub pool_hash: String,
}

/// Reads a warm runner name back; `None` when `name` is not one [`WarmRunnerName`] makes.
pub fn parse_warm_name(name: &str) -> Option<ParsedWarmName> {
    let rest = name.strip_prefix(WARM_NAME_PREFIX)?;
    let (serial, hash) = rest.split_once('-')?;
    if hash.len() != POOL_HASH_LEN || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    let serial = u32::try_from(canonical_number(serial)?).ok()?;
    Some(ParsedWarmName {
        serial,
        pool_hash: hash.to_owned(),
    })
}

/// The pool part of runner Job names: the first hex digits of SHA-256 over the pool uid.
pub fn pool_hash(pool_uid: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"forgejo-runner-controller/pool/")
        .chain_update(pool_uid.as_bytes())
        .finalize();
    let mut hex = String::with_capacity(POOL_HASH_LEN);
    for byte in digest.iter().take(POOL_HASH_LEN.div_ceil(2)) {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex.truncate(POOL_HASH_LEN);
    hex
}

/// Whether `name` is a DNS-1123 label: 1 to 63 of `[a-z0-9-]`, alphanumeric at both ends.
pub fn is_dns1123_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// Whether `value` is a valid Kubernetes label value (empty, or ≤ 63 of `[A-Za-z0-9._-]`
/// with alphanumeric ends).
pub fn is_label_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.is_empty()
        || (bytes.len() <= MAX_NAME_LEN
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric))
}

/// A decimal number without sign or leading zeros.
fn canonical_number(text: &str) -> Option<i64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if canonical { text.parse().ok() } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "6f1c2a9e-3b4d-4c5e-8f70-112233445566";

    #[test]
    fn name_has_id_attempt_and_pool_hash() {
        let name = RunnerJobName::new(UID, 4711, Some(2)).unwrap();
        assert_eq!(
            name.as_str(),
            format!("forgejo-job-4711-2-{}", pool_hash(UID))
        );
        assert!(is_dns1123_label(name.as_str()));
    }

    #[test]
    fn unknown_attempt_is_attempt_zero() {
        assert_eq!(
            RunnerJobName::new(UID, 9, None).unwrap(),
            RunnerJobName::new(UID, 9, Some(0)).unwrap()
        );
    }

    #[test]
    fn longest_possible_name_fits_a_label() {
        let name = RunnerJobName::new(UID, i64::MAX, Some(i64::MAX)).unwrap();
        assert!(
            name.as_str().len() <= MAX_NAME_LEN,
            "{}",
            name.as_str().len()
        );
        assert!(is_dns1123_label(name.as_str()));
    }

    #[test]
    fn invalid_inputs_are_refused() {
        assert_eq!(RunnerJobName::new("", 1, None), Err(NameError::EmptyUid));
        assert_eq!(
            RunnerJobName::new(UID, 0, None),
            Err(NameError::InvalidJobId(0))
        );
        assert_eq!(
            RunnerJobName::new(UID, -3, None),
            Err(NameError::InvalidJobId(-3))
        );
        assert_eq!(
            RunnerJobName::new(UID, 3, Some(-1)),
            Err(NameError::InvalidAttempt(-1))
        );
    }

    #[test]
    fn names_parse_back_and_know_their_pool() {
        let name = RunnerJobName::new(UID, 12, Some(3)).unwrap();
        let parsed = parse_job_name(name.as_str()).unwrap();
        assert_eq!((parsed.forgejo_job_id, parsed.attempt), (12, 3));
        assert!(is_pool_job_name(name.as_str(), UID));
        assert!(!is_pool_job_name(name.as_str(), "another-uid"));
    }

    #[test]
    fn warm_names_parse_back_and_are_not_job_names() {
        let name = WarmRunnerName::new(UID, 7).unwrap();
        assert_eq!(name.as_str(), format!("forgejo-warm-7-{}", pool_hash(UID)));
        assert!(is_dns1123_label(name.as_str()));
        assert_eq!(parse_warm_name(name.as_str()).unwrap().serial, 7);
        assert_eq!(parse_job_name(name.as_str()), None);
        assert!(is_pool_job_name(name.as_str(), UID));
        assert!(!is_pool_job_name(name.as_str(), "another-uid"));
        for foreign in [
            "forgejo-warm-07-0123456789",
            "forgejo-warm-7",
            "forgejo-warm-x-0123456789",
        ] {
            assert_eq!(parse_warm_name(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn foreign_names_do_not_parse() {
        for name in [
            "forgejo-job-12-3",
            "forgejo-job-012-3-0123456789",
            "forgejo-job-12-03-0123456789",
            "forgejo-job-0-1-0123456789",
            "forgejo-job-12-3-012345678",
            "forgejo-job-12-3-0123456789-x",
            "forgejo-job-12-3-ABCDEF0123",
            "runner-12-3-0123456789",
            "",
        ] {
            assert_eq!(parse_job_name(name), None, "{name}");
        }
    }

    #[test]
    fn dns_labels_and_label_values() {
        assert!(is_dns1123_label("a-1"));
        assert!(!is_dns1123_label("-a"));
        assert!(!is_dns1123_label("a-"));
        assert!(!is_dns1123_label("A"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_label_value(""));
        assert!(is_label_value("My.pool_1"));
        assert!(!is_label_value("pool/1"));
        assert!(!is_label_value(&"a".repeat(64)));
    }
}
