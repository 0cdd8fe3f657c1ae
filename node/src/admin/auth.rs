//! Bearer-token auth for the admin API, and the token file a local node writes.

use crate::api::{ApiError, ErrorKind};
use crate::config::TOKEN_FILE;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The token every admin route but `/healthz` requires as `Authorization: Bearer <token>`.
#[derive(Clone)]
pub struct AdminAuth {
    pub token: String,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("token", &"<redacted>")
            .finish()
    }
}

impl AdminAuth {
    pub fn new(token: impl Into<String>) -> Self {
        AdminAuth {
            token: token.into(),
        }
    }
}

/// Checks an `Authorization` header value against the expected token.
///
/// The comparison is over sha256 digests with a constant-time fold, so neither the
/// position of the first wrong byte nor the token's length leaks through timing. An
/// empty expected token refuses everything.
pub fn check_bearer(header: Option<&[u8]>, expected: &str) -> Result<(), ApiError> {
    let unauthorized = |m: &str| ApiError::new(ErrorKind::Unauthorized, m);
    let Some(header) = header else {
        return Err(unauthorized(
            "missing bearer token: pass --token or set AIRSSYS_TOKEN",
        ));
    };
    let header = std::str::from_utf8(header)
        .map_err(|_| unauthorized("malformed Authorization header: expected `Bearer <token>`"))?;
    let (scheme, presented) = header
        .trim()
        .split_once(' ')
        .ok_or_else(|| unauthorized("malformed Authorization header: expected `Bearer <token>`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthorized(
            "malformed Authorization header: expected `Bearer <token>`",
        ));
    }
    let presented = presented.trim();
    if presented.is_empty() {
        return Err(unauthorized(
            "missing bearer token: pass --token or set AIRSSYS_TOKEN",
        ));
    }
    if expected.is_empty() || !constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
        return Err(unauthorized("wrong bearer token"));
    }
    Ok(())
}

/// Equality of two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let da = Sha256::digest(a);
    let db = Sha256::digest(b);
    da.iter()
        .zip(db.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// `<data_dir>/admin-token`.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_FILE)
}

/// Reads the token file under `data_dir`, if it exists and is not empty.
pub fn read_token_file(data_dir: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(token_path(data_dir)) {
        Ok(s) => {
            let t = s.trim();
            Ok((!t.is_empty()).then(|| t.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bearer_checks() {
        assert!(check_bearer(Some(b"Bearer s3cret"), "s3cret").is_ok());
        assert!(check_bearer(Some(b"bearer s3cret"), "s3cret").is_ok());
        let e = check_bearer(None, "s3cret").unwrap_err();
        assert_eq!(e.error, ErrorKind::Unauthorized);
        assert!(
            e.message.starts_with("missing bearer token"),
            "{}",
            e.message
        );
        let e = check_bearer(Some(b"Bearer nope"), "s3cret").unwrap_err();
        assert_eq!(e.message, "wrong bearer token");
        let e = check_bearer(Some(b"Basic s3cret"), "s3cret").unwrap_err();
        assert!(e.message.contains("malformed"), "{}", e.message);
        assert!(check_bearer(Some(b"Bearer s3cre"), "s3cret").is_err());
        assert!(check_bearer(Some(b"Bearer "), "").is_err());
        assert!(check_bearer(Some(b"Bearer x"), "").is_err());
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn token_file_is_read_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_token_file(dir.path()).unwrap(), None);
        std::fs::write(token_path(dir.path()), "  \n").unwrap();
        assert_eq!(read_token_file(dir.path()).unwrap(), None);
        std::fs::write(token_path(dir.path()), "abc\n").unwrap();
        assert_eq!(read_token_file(dir.path()).unwrap().as_deref(), Some("abc"));
    }
}
