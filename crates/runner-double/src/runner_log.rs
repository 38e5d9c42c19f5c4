//! The runner's own log lines, as forgejo-runner writes them: logrus's text format without
//! colours (`time="…" level=info msg="…"`), on stderr, logrus's default stream. This is all
//! `kubectl logs` of a runner pod shows: step output goes to Forgejo only, as log rows.

use std::fmt;

/// A logrus level, by the name logrus prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `level=info`.
    Info,
    /// `level=warning`.
    Warning,
    /// `level=error`.
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
        })
    }
}

/// A value as logrus writes it: bare when it is only letters, digits and `-._/@^+` (or
/// empty), else quoted with escapes (Go's `%q`, which Rust's `Debug` of a string matches
/// for printable text).
fn value(text: &str) -> String {
    let bare = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._/@^+".contains(c));
    if bare {
        text.to_owned()
    } else {
        format!("{text:?}")
    }
}

/// One line at `time` (RFC 3339, whole seconds), with `fields` after the message in the
/// order given (logrus sorts them; callers pass them sorted).
pub fn format(time: &str, level: Level, message: &str, fields: &[(&str, &str)]) -> String {
    let mut line = format!("time={} level={level} msg={}", value(time), value(message));
    for (name, text) in fields {
        line.push_str(&format!(" {name}={}", value(text)));
    }
    line
}

/// Now, as logrus prints it in a container (UTC, whole seconds).
fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Writes one line with `fields` (sorted by name) to stderr.
pub fn log_with(level: Level, message: &str, fields: &[(&str, &str)]) {
    eprintln!("{}", format(&now(), level, message, fields));
}

/// Writes an info line.
pub fn info(message: &str) {
    log_with(Level::Info, message, &[]);
}

/// Writes a warning line.
pub fn warn(message: &str) {
    log_with(Level::Warning, message, &[]);
}

/// Writes an error line.
pub fn error(message: &str) {
    log_with(Level::Error, message, &[]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_look_like_logrus_text_without_colours() {
        assert_eq!(
            format("2026-09-30T10:45:24Z", Level::Info, "Starting job", &[]),
            r#"time="2026-09-30T10:45:24Z" level=info msg="Starting job""#
        );
        assert_eq!(
            format(
                "2026-09-30T10:45:24Z",
                Level::Error,
                "say \"no\"",
                &[("module", "cache_proxy")]
            ),
            r#"time="2026-09-30T10:45:24Z" level=error msg="say \"no\"" module=cache_proxy"#
        );
        assert_eq!(value("plain-word_1.2/x"), "plain-word_1.2/x");
        assert_eq!(value(""), "");
    }

    #[test]
    fn the_clock_reads_whole_seconds_in_utc() {
        let time = now();
        assert_eq!(time.len(), "2026-09-30T10:45:24Z".len(), "{time}");
        assert!(time.ends_with('Z'), "{time}");
    }
}
