//! Topic filters: which subscription a topic belongs to.
//!
//! Matching follows MQTT 3.1.1 section 4.7: `+` is one level, `#` the rest (and the parent),
//! and topics starting with `$` are not matched by a leading wildcard.

/// Checks a subscription filter's syntax.
pub fn validate_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() {
        return Err("must not be empty".into());
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i != levels.len() - 1) {
            return Err("'#' must be a whole last level".into());
        }
        if level.contains('+') && *level != "+" {
            return Err("'+' must be a whole level".into());
        }
    }
    Ok(())
}

/// Whether `topic` matches `filter`.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_the_broker() {
        let cases = [
            ("ati/+/status", "ati/tugger-01/status", true),
            ("ati/+/status", "ati/tugger-01/status/x", false),
            ("ati/+/status", "ati/status", false),
            ("#", "ati/x/status", true),
            ("#", "$SYS/broker/uptime", false),
            ("ati/#", "ati", true),
            ("ati/#", "ati/a/b", true),
            ("ati_fm/sherpa/status", "ati_fm/sherpa/status", true),
            ("ati_fm/sherpa/status", "ati_fm/sherpa/statusx", false),
            ("+/+", "a/b", true),
            ("+", "", true),
        ];
        for (filter, topic, want) in cases {
            assert_eq!(matches(filter, topic), want, "{filter} vs {topic}");
        }
    }

    #[test]
    fn malformed_filters_are_refused() {
        assert!(validate_filter("ati/#/status").is_err());
        assert!(validate_filter("ati/x+/status").is_err());
        assert!(validate_filter("").is_err());
        assert!(validate_filter("ati/+/status").is_ok());
    }
}
