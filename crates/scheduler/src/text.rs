//! Text for people, cut to fit: event notes and condition messages have size limits, and
//! Forgejo job names and pod messages come from users. A leaf, so that every decision can
//! cut its messages without importing another decision.

/// At most `max` bytes of `text`, cut at a character boundary, with an ellipsis if cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_cuts_at_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h…");
        assert_eq!(truncate("hello", 10), "hello");
    }
}
