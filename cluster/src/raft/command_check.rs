//! What a command must be before it may change the registry. Entries come from peers (a
//! buggy or hostile one included), so the state machine checks each one with these rules,
//! the same on every node: a command that breaks one is refused, deterministically, and
//! never reaches storage. Without this, an entry that storage cannot take (a component name
//! that is not a valid store name) fails apply, which openraft treats as fatal, on every
//! node, and again at every restart, since the entry stays in the log.
//!
//! The leader runs the same checks but the binary's hash before it proposes, so a bad
//! command is answered at once and costs no log entry; the state machine's check (which
//! hashes the binary) is the one that must hold. (The admin API hashed the binary already;
//! a lying peer's install costs one refused entry.)

use super::types::{Command, ComponentSpec, Refusal};

/// The most bytes of a component's configuration (its limits, as the node layer encodes
/// them) an entry may carry.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;

/// Whether `digest` is a SHA-256 digest as the registry keeps them: 64 lowercase hex
/// digits. It names files and keys, so nothing else may pass.
pub fn is_sha256_hex(digest: &str) -> bool {
    digest.len() == 64
        && digest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The SHA-256 digest of `bytes` as 64 lowercase hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a command as the leader receives it, before it is proposed. Only an install
/// and an upgrade carry what storage must take as given (a name, a digest, bytes); the state machine
/// answers every other malformed command itself (an unknown name is not found, an unknown
/// node refused, a commit checked against its fence).
pub fn check_command(command: &Command) -> Result<(), Refusal> {
    match command {
        Command::Install { spec, binary, .. } => check_install_shape(spec, binary),
        Command::Upgrade(upgrade) => check_install_shape(&upgrade.spec, &upgrade.binary),
        _ => Ok(()),
    }
}

/// Checks an install's spec and the binary it carries (empty: the registry has it already,
/// or the command is refused for a missing binary elsewhere). A binary is stored under its
/// claimed digest, so the claim is checked against the bytes.
pub fn check_install(spec: &ComponentSpec, binary: &[u8]) -> Result<(), Refusal> {
    check_install_shape(spec, binary)?;
    if !binary.is_empty() {
        let actual = sha256_hex(binary);
        if actual != spec.sha256 {
            return Err(Refusal::Invalid(format!(
                "the binary's digest is {actual}, the spec claims {}",
                spec.sha256
            )));
        }
    }
    Ok(())
}

/// Everything [`check_install`] checks but the binary's hash.
fn check_install_shape(spec: &ComponentSpec, binary: &[u8]) -> Result<(), Refusal> {
    if let Some(problem) = airssys_storage::name_problem(&spec.name) {
        return Err(Refusal::Invalid(problem));
    }
    if !is_sha256_hex(&spec.sha256) {
        return Err(Refusal::Invalid(format!(
            "binary digest {:?} is not 64 lowercase hex digits",
            truncated(&spec.sha256)
        )));
    }
    if spec.config.len() > MAX_CONFIG_BYTES {
        return Err(Refusal::Invalid(format!(
            "configuration of {} bytes; the most is {MAX_CONFIG_BYTES}",
            spec.config.len()
        )));
    }
    if !binary.is_empty() && binary.len() as u64 != spec.size_bytes {
        return Err(Refusal::Invalid(format!(
            "the binary is {} bytes, the spec says {}",
            binary.len(),
            spec.size_bytes
        )));
    }
    Ok(())
}

/// At most 80 characters of a string a peer chose, for an error message.
fn truncated(s: &str) -> &str {
    match s.char_indices().nth(80) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec(name: &str, binary: &[u8]) -> ComponentSpec {
        ComponentSpec {
            name: name.into(),
            sha256: sha256_hex(binary),
            size_bytes: binary.len() as u64,
            config: Vec::new(),
            installed_at_ms: 0,
        }
    }

    #[test]
    fn a_well_formed_install_passes_with_its_binary_or_without() {
        assert_eq!(check_install(&spec("counter", b"wasm"), b"wasm"), Ok(()));
        assert_eq!(check_install(&spec("counter", b"wasm"), b""), Ok(()));
    }

    #[test]
    fn an_invalid_name_is_refused() {
        for name in ["", "../etc", "a/b", "UPPER", &"x".repeat(300)] {
            let refused = check_install(&spec(name, b"wasm"), b"wasm");
            assert!(
                matches!(refused, Err(Refusal::Invalid(_))),
                "{name:?}: {refused:?}"
            );
        }
    }

    #[test]
    fn a_digest_that_is_not_64_lowercase_hex_digits_is_refused() {
        let good = sha256_hex(b"wasm");
        for digest in [
            String::new(),
            "../../etc/passwd".to_string(),
            good.to_uppercase(),
            good[..63].to_string(),
            format!("{good}0"),
        ] {
            let mut s = spec("counter", b"wasm");
            s.sha256 = digest.clone();
            // Without the binary too: the digest names a key and a file on its own.
            assert!(
                matches!(check_install(&s, b""), Err(Refusal::Invalid(_))),
                "{digest:?}"
            );
        }
        assert!(is_sha256_hex(&good));
    }

    #[test]
    fn a_binary_that_is_not_what_its_spec_claims_is_refused() {
        let mut s = spec("counter", b"wasm");
        assert!(matches!(
            check_install(&s, b"wasn"),
            Err(Refusal::Invalid(m)) if m.contains("digest")
        ));
        s.size_bytes = 3;
        assert!(matches!(
            check_install(&s, b"wasm"),
            Err(Refusal::Invalid(m)) if m.contains("bytes")
        ));
    }

    #[test]
    fn an_oversized_configuration_is_refused() {
        let mut s = spec("counter", b"wasm");
        s.config = vec![b' '; MAX_CONFIG_BYTES + 1];
        assert!(matches!(
            check_install(&s, b"wasm"),
            Err(Refusal::Invalid(_))
        ));
        s.config.pop();
        assert_eq!(check_install(&s, b"wasm"), Ok(()));
    }

    #[test]
    fn the_digest_is_the_standard_one() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
