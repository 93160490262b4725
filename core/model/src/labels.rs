//! Labels on apps: `key: value` pairs that plugins and people select on.
//!
//! A key is an optional DNS prefix and a name (`team`, `example.com/tier`),
//! like Kubernetes label keys; a value is short and plain.

/// Longest label name and value.
pub const MAX_LABEL_LEN: usize = 63;
/// Most labels on one app.
pub const MAX_LABELS: usize = 64;

fn plain(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Checks one label; the error says what is wrong.
pub fn check(key: &str, value: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let dns = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && !part.starts_with('-')
                    && !part.ends_with('-')
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            });
        if !dns {
            return Err(format!("prefix {p:?} is not a DNS name"));
        }
    }
    if name.is_empty() || name.len() > MAX_LABEL_LEN || !plain(name) {
        return Err(format!(
            "name {name:?} is not 1-{MAX_LABEL_LEN} letters, digits, '-', '_' or '.'"
        ));
    }
    if value.len() > MAX_LABEL_LEN || !plain(value) {
        return Err(format!(
            "value {value:?} is not 0-{MAX_LABEL_LEN} letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values() {
        assert!(check("team", "ml-infra").is_ok());
        assert!(check("example.com/tier", "").is_ok());
        assert!(
            check("Example.com/tier", "x")
                .unwrap_err()
                .contains("prefix")
        );
        assert!(check("", "x").unwrap_err().contains("name"));
        assert!(check("team", "a b").unwrap_err().contains("value"));
        assert!(check(&"k".repeat(64), "x").is_err());
    }
}
