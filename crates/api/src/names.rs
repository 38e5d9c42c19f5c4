//! The name rules of the fields that end up in a Forgejo request path or a Kubernetes
//! lookup: `spec.organization`, `spec.user`, `spec.repository` and `spec.tokenSecretRef`.
//!
//! Each rule is written twice: as a regular expression the CRD schema checks (a CEL
//! `matches`, RE2 syntax in the apiserver) and as a plain Rust check that
//! [`RunnerDeploymentSpec::validate`](crate::RunnerDeploymentSpec::validate) runs for objects
//! that got past the schema. `tests/schema.rs` proves the two writings agree.
//!
//! A name that passes cannot change the path of a Forgejo API request: none holds `/`, `?`,
//! `#`, `%` or whitespace, and none is `.` or `..`.

/// A Forgejo user or organization name, as `spec.organization`, `spec.user` and the owner
/// part of `spec.repository`.
///
/// Forgejo's rule (`modules/validation/helpers.go`, `IsValidUsername`; organizations use the
/// same check): it matches `^[\da-zA-Z][-.\w]*$` and not `[-._]{2,}|[-._]$`, that is ASCII
/// letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit, never two of
/// `-_.` in a row. Written here as one RE2 expression. (With `ALLOW_DOTS_IN_USERNAMES =
/// false` Forgejo refuses dots too; accepting them here is a superset.)
pub const OWNER_NAME_PATTERN: &str = r"^[0-9A-Za-z]([-._]?[0-9A-Za-z])*$";

/// A Forgejo repository name, the part of `spec.repository` after the `/`.
///
/// Forgejo's rule (`models/repo/repo.go`, `IsUsableRepoName`, with `models/db/name.go`): only
/// `[-.\w]` (AlphaDashDot; `+` too where `[repository] ALLOW_PLUS_IN_NAMES` is on, so
/// accepted here), not `.`, `..` or `-`, and not ending in `.git`, `.wiki`, `.rss` or
/// `.atom` (any case). This expression is the character rule and the reserved names; the
/// suffixes are [`RESERVED_REPO_SUFFIX_PATTERN`].
pub const REPO_NAME_PATTERN: &str =
    r"^([+0-9A-Za-z_]|[-+0-9A-Za-z_][-+.0-9A-Za-z_]|[.][-+0-9A-Za-z_]|[-+.0-9A-Za-z_]{3,})$";

/// `spec.repository`: `owner/name`, the owner per [`OWNER_NAME_PATTERN`] and the name per
/// [`REPO_NAME_PATTERN`].
pub const REPOSITORY_PATTERN: &str = r"^[0-9A-Za-z]([-._]?[0-9A-Za-z])*/([+0-9A-Za-z_]|[-+0-9A-Za-z_][-+.0-9A-Za-z_]|[.][-+0-9A-Za-z_]|[-+.0-9A-Za-z_]{3,})$";

/// The repository name suffixes Forgejo reserves (`reservedRepoPatterns`), matched without
/// regard to case; a `spec.repository` matching this is refused.
pub const RESERVED_REPO_SUFFIX_PATTERN: &str = r"(?i)[.](git|wiki|rss|atom)$";

/// `spec.tokenSecretRef.name`: a Secret name is a DNS subdomain (RFC 1123): lower-case
/// letters, digits, `-` and `.`, each dot-separated part starting and ending with a letter or
/// digit, at most 253 characters (Kubernetes' `IsDNS1123Subdomain`).
pub const SECRET_NAME_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// `spec.tokenSecretRef.key`: a Secret data key (Kubernetes' `IsConfigMapKey`): letters,
/// digits, `-`, `_` and `.`, not `.` or `..` and not starting with `..`, at most 253
/// characters.
pub const SECRET_KEY_PATTERN: &str = r"^[.]?[-_a-zA-Z0-9][-._a-zA-Z0-9]*$";

/// The longest Secret name or key.
pub const SECRET_NAME_MAX: usize = 253;

/// The rule of [`OWNER_NAME_PATTERN`], in words (for messages).
pub const OWNER_NAME_RULE: &str = "ASCII letters, digits, '-', '_' and '.', starting and \
     ending with a letter or digit, without two of '-_.' in a row";
/// The rule of [`REPOSITORY_PATTERN`] and [`RESERVED_REPO_SUFFIX_PATTERN`], in words.
pub const REPOSITORY_RULE: &str = "the owner a Forgejo user or organization name (ASCII \
     letters, digits, '-', '_' and '.', starting and ending with a letter or digit, without \
     two of '-_.' in a row), the name ASCII letters, digits, '-', '_', '.' and '+', not '.', \
     '..' or '-' and not ending in .git, .wiki, .rss or .atom";
/// The rule of [`SECRET_NAME_PATTERN`], in words.
pub const SECRET_NAME_RULE: &str = "a DNS subdomain: lower-case letters, digits, '-' and \
     '.', starting and ending with a letter or digit, at most 253 characters";
/// The rule of [`SECRET_KEY_PATTERN`], in words.
pub const SECRET_KEY_RULE: &str = "letters, digits, '-', '_' and '.', not '.' or '..' and \
     not starting with '..', at most 253 characters";

fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn is_owner_separator(b: u8) -> bool {
    matches!(b, b'-' | b'_' | b'.')
}

/// Whether `name` is a usable Forgejo user or organization name ([`OWNER_NAME_PATTERN`]).
pub fn is_owner_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) if is_alnum(first) && is_alnum(last) => {}
        _ => return false,
    }
    bytes.iter().all(|&b| is_alnum(b) || is_owner_separator(b))
        && !bytes
            .windows(2)
            .any(|w| is_owner_separator(w[0]) && is_owner_separator(w[1]))
}

/// Whether `name` is a usable Forgejo repository name ([`REPO_NAME_PATTERN`] and not
/// [`RESERVED_REPO_SUFFIX_PATTERN`]).
pub fn is_repo_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !name.is_empty()
        && name
            .bytes()
            .all(|b| is_alnum(b) || matches!(b, b'-' | b'_' | b'.' | b'+'))
        && !matches!(name, "." | ".." | "-")
        && ![".git", ".wiki", ".rss", ".atom"]
            .iter()
            .any(|suffix| lower.ends_with(suffix))
}

/// Splits `owner/name` when both parts are usable Forgejo names.
pub fn split_repository(full: &str) -> Option<(&str, &str)> {
    let (owner, repo) = full.split_once('/')?;
    (is_owner_name(owner) && is_repo_name(repo)).then_some((owner, repo))
}

/// Whether `name` is a DNS subdomain, as a Secret name must be ([`SECRET_NAME_PATTERN`]).
pub fn is_secret_name(name: &str) -> bool {
    let lower_alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    name.len() <= SECRET_NAME_MAX
        && name.split('.').all(|part| {
            let bytes = part.as_bytes();
            match (bytes.first(), bytes.last()) {
                (Some(&first), Some(&last)) => {
                    lower_alnum(first)
                        && lower_alnum(last)
                        && bytes.iter().all(|&b| lower_alnum(b) || b == b'-')
                }
                _ => false,
            }
        })
}

/// Whether `key` is a valid Secret data key ([`SECRET_KEY_PATTERN`]).
pub fn is_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= SECRET_NAME_MAX
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !key.starts_with("..")
        && key != "."
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_names_follow_forgejo() {
        for good in ["faro", "a", "A1", "ana-b", "a.b", "a_b", "a-b.c_d", "0x"] {
            assert!(is_owner_name(good), "{good:?}");
        }
        for bad in [
            "", "..", ".", "-a", "a-", "_a", "a_", ".a", "a.", "a--b", "a.-b", "a/b", "a b", "ä",
            "a%2f", "a?b", "a#b", "a\n",
        ] {
            assert!(!is_owner_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn repo_names_follow_forgejo() {
        for good in [
            "app", "a", "_", "a..b", ".profile", "-a", "a-", "c++", "...", "--", "my.repo", "gitx",
        ] {
            assert!(is_repo_name(good), "{good:?}");
        }
        for bad in [
            "", ".", "..", "-", "a/b", "a b", "a.git", "A.GIT", "x.wiki", "x.rss", "x.atom",
            "a%2e", "a?", "é",
        ] {
            assert!(!is_repo_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn repository_splits_only_two_usable_names() {
        assert_eq!(split_repository("faro/app"), Some(("faro", "app")));
        for bad in [
            "../admin",
            "faro/..",
            "faro/.",
            "faro",
            "faro/",
            "/app",
            "a/b/c",
            "faro/app.git",
            "fa ro/app",
        ] {
            assert_eq!(split_repository(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn secret_names_are_dns_subdomains() {
        for good in ["t", "forgejo-token", "a.b-c", "0", "a1.b2"] {
            assert!(is_secret_name(good), "{good:?}");
        }
        let long = "a".repeat(254);
        for bad in [
            "",
            "A",
            "-a",
            "a-",
            ".a",
            "a.",
            "a..b",
            "a_b",
            "../x",
            "a/b",
            long.as_str(),
        ] {
            assert!(!is_secret_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn secret_keys_are_config_map_keys() {
        for good in ["token", ".token", "a..b", "A_b-c.d", "-"] {
            assert!(is_secret_key(good), "{good:?}");
        }
        let long = "k".repeat(254);
        for bad in ["", ".", "..", "..a", "a/b", "a b", long.as_str()] {
            assert!(!is_secret_key(bad), "{bad:?}");
        }
    }
}
