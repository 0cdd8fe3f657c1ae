//! Component names: `[a-z0-9][a-z0-9-]{0,62}`.

/// Checks a component name; the error says what is wrong with it.
pub fn validate(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    let Some(&first) = bytes.first() else {
        return Err("a component name cannot be empty".into());
    };
    if bytes.len() > 63 {
        return Err(format!(
            "component name is {} characters long; at most 63 are allowed",
            bytes.len()
        ));
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(format!(
            "component name {name:?} must start with a lowercase letter or a digit"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "component name {name:?} contains {bad:?}; only a-z, 0-9 and '-' are allowed"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn accepts_valid_names() {
        for ok in ["a", "counter", "acct-1", "0x", &"a".repeat(63)] {
            assert!(validate(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_invalid_names_with_a_reason() {
        assert!(validate("").unwrap_err().contains("empty"));
        assert!(validate(&"a".repeat(64))
            .unwrap_err()
            .contains("at most 63"));
        assert!(validate("-a").unwrap_err().contains("must start"));
        assert!(validate("Counter").unwrap_err().contains("must start"));
        assert!(validate("a_b").unwrap_err().contains("'_'"));
        assert!(validate("a/b").unwrap_err().contains("'/'"));
        assert!(validate("@external").is_err());
    }
}
