//! The schema rules more than one field uses: a pattern as a CEL `matches` rule, and the
//! http(s) URL rule of `spec.forgejoServer` and `spec.cache.external.url` with its Rust twin.

/// The CEL rule of an http(s) URL field.
pub(crate) const URL_RULE: &str = r"self.matches('^https?://[^/?#\\s]+([/?#][^\\s]*)?$')";
/// What [`URL_RULE`] says when it refuses.
pub(crate) const URL_MESSAGE: &str =
    "must be an http:// or https:// URL, e.g. https://code.example.com";

/// A CEL rule matching `self` against an RE2 pattern (which must hold no `'`).
pub(crate) fn matches_rule(pattern: &str) -> String {
    format!("self.matches('{}')", pattern.replace('\\', "\\\\"))
}

/// Whether `url` is what [`URL_RULE`] accepts: `http(s)://` and a host part.
pub(crate) fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|r| {
        !r.is_empty() && !r.starts_with(['/', '?', '#']) && !r.contains(char::is_whitespace)
    })
}
