//! The API token: a string that is only ever sent as `Authorization: token …` and that no
//! `Debug` output, error or log line can reveal.

use std::fmt;

/// A Forgejo access token (or a runner token); `Debug` prints `Token(***)`, there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token, dropping surrounding whitespace (Secrets often end with a newline).
    pub fn new(token: impl Into<String>) -> Self {
        let token = token.into();
        let trimmed = token.trim();
        if trimmed.len() == token.len() {
            Self(token)
        } else {
            Self(trimmed.to_owned())
        }
    }

    /// The secret itself: use it only to put it where it belongs (a header, a Secret).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the token is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_secret() {
        let token = Token::new("abc123secret");
        assert_eq!(format!("{token:?}"), "Token(***)");
        assert_eq!(format!("{token:#?}"), "Token(***)");
    }

    #[test]
    fn surrounding_whitespace_is_trimmed() {
        assert_eq!(Token::new("  abc\n").expose(), "abc");
        assert!(Token::new("\n").is_empty());
    }
}
