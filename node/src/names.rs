//! Component names: `[a-z0-9][a-z0-9-]{0,62}`.

/// Checks a component name; the error says what is wrong with it (the rule is
/// `airssys_storage::name_problem`'s, stated once).
pub fn validate(name: &str) -> Result<(), String> {
    match airssys_storage::name_problem(name) {
        None => Ok(()),
        Some(problem) => Err(problem),
    }
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
