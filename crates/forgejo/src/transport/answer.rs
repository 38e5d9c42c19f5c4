//! Describing an answer without quoting it (errors never carry body text), and reading its
//! `Retry-After` and redirect target.

use super::*;

/// A redirect's target without its query or fragment, scrubbed and cut short.
pub(super) fn redirect_location(headers: &HeaderMap, secret: &str) -> Option<String> {
    let location = headers.get(LOCATION)?.to_str().ok()?;
    let shown = match url::Url::parse(location) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        // A relative target: its path only.
        Err(_) => location
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .to_owned(),
    };
    Some(sanitize(&shown, secret)).filter(|l| !l.is_empty())
}

/// What an answer's body is, without quoting a byte of it: its kind (from its content and
/// `Content-Type`) and size, e.g. "an HTML page of 5123 bytes".
pub(crate) fn describe_body(headers: &HeaderMap, body: &[u8]) -> String {
    if body.is_empty() {
        return "an empty body".into();
    }
    let media = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let start = body.trim_ascii_start();
    let start = &start[..start.len().min(16)];
    let looks_html = start.to_ascii_lowercase().starts_with(b"<!doctype html")
        || start.to_ascii_lowercase().starts_with(b"<html");
    let kind = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) if map.contains_key("message") => {
            "a JSON error message (not shown)".to_owned()
        }
        Ok(serde_json::Value::Object(_)) => "a JSON object".to_owned(),
        Ok(serde_json::Value::Array(_)) => "a JSON array".to_owned(),
        Ok(_) => "a JSON value".to_owned(),
        Err(_) if looks_html || media.contains("html") => "an HTML page".to_owned(),
        Err(_) if media.contains("json") => "a body labelled JSON that does not parse".to_owned(),
        Err(_) if media.contains("xml") => "an XML document".to_owned(),
        Err(_) if media.starts_with("text/") => "text".to_owned(),
        Err(_) if is_media_type(&media) => format!("a body of type {media}"),
        Err(_) => "a body of unknown type".to_owned(),
    };
    format!("{kind} of {} bytes", body.len())
}

/// Whether `media` is a plain `type/subtype` (so it can be shown without carrying server text).
pub(super) fn is_media_type(media: &str) -> bool {
    let token = |t: &str| {
        !t.is_empty()
            && t.len() <= 40
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    media
        .split_once('/')
        .is_some_and(|(kind, sub)| token(kind) && token(sub))
}

/// Why a body is not the JSON expected, with the position but without the body's values
/// (serde's own text quotes them, e.g. ``invalid type: string "…"``).
pub(crate) fn describe_json_error(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let at = format!("at line {} column {}", error.line(), error.column());
    match error.classify() {
        Category::Syntax => format!("not valid JSON (syntax error {at})"),
        Category::Eof => format!("JSON that ends early ({at})"),
        Category::Io => "JSON that could not be read".to_owned(),
        Category::Data => {
            let text = error.to_string();
            let text = text.split(" at line ").next().unwrap_or_default();
            // Field names and expectations come from this crate's types, values from the body.
            let hint = if let Some(field) = text.strip_prefix("missing field ") {
                format!(" (missing field {field})")
            } else if let Some(rest) = text
                .strip_prefix("invalid type: ")
                .or_else(|| text.strip_prefix("invalid value: "))
            {
                let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
                let found = found.split(['"', '`']).next().unwrap_or_default().trim();
                let expected = expected.split(['"', '`']).next().unwrap_or_default().trim();
                if expected.is_empty() {
                    format!(" (found {found})")
                } else {
                    format!(" (found {found}, expected {expected})")
                }
            } else {
                String::new()
            };
            format!("JSON that does not match the expected shape{hint} {at}")
        }
    }
}

/// The longest `Retry-After` honoured; a longer one is read as this.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(10 * 60);

/// `Retry-After` as delta-seconds or an HTTP date (relative to `now`), at most [`MAX_RETRY_AFTER`].
pub(crate) fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let delay = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}
