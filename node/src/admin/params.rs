//! Validation of what the admin API receives: names, query parameters, body sizes, and
//! the mapping of error kinds to HTTP statuses. Plain functions, unit-tested below.

use crate::api::{ApiError, Delivery, ErrorKind, LimitsRequest};
use crate::caps::{MAX_DEADLINE_MS, MAX_MAILBOX, MAX_MEMORY_MB};
use axum::http::StatusCode;
use std::str::FromStr;
use std::time::Duration;

pub use crate::caps::{
    check_size, too_large, DEFAULT_REQUEST_TIMEOUT_MS, MAX_BINARY_BYTES, MAX_PAYLOAD_BYTES,
    MAX_QUOTA_MB, MAX_REQUEST_TIMEOUT_MS,
};

/// Query parameters as decoded pairs, in the order given.
pub type QueryPairs = [(String, String)];

/// The HTTP status an error kind is reported with.
///
/// `trapped` and `rejected` are 502 Bad Gateway: the node is fine, the component
/// behind it failed to produce an answer.
pub fn status_for(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::AlreadyExists | ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::InvalidName | ErrorKind::BadRequest | ErrorKind::InvalidComponent => {
            StatusCode::BAD_REQUEST
        }
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::MailboxFull => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Trapped | ErrorKind::Rejected => StatusCode::BAD_GATEWAY,
        ErrorKind::QuotaExceeded => StatusCode::INSUFFICIENT_STORAGE,
        ErrorKind::Unavailable | ErrorKind::NotLeader => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

/// The `Idempotency-Key` header of a request, checked; `None` without one.
pub fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().map_err(|_| {
        ApiError::new(
            ErrorKind::BadRequest,
            "the Idempotency-Key header is not plain ASCII",
        )
    })?;
    crate::messaging::idempotency::validate_client_key(key)
        .map_err(|m| ApiError::new(ErrorKind::BadRequest, m))?;
    Ok(Some(key.to_string()))
}

/// Checks a component name ([`crate::names::validate`]) as an API error.
pub fn validate_name(name: &str) -> Result<(), ApiError> {
    crate::names::validate(name).map_err(|m| ApiError::new(ErrorKind::InvalidName, m))
}

/// Query of `PUT /v1/components/{name}`: `memory_mb, deadline_ms, mailbox, quota_mb, fuel`.
pub fn parse_install_query(pairs: &QueryPairs) -> Result<LimitsRequest, ApiError> {
    check_known(
        pairs,
        &["memory_mb", "deadline_ms", "mailbox", "quota_mb", "fuel"],
    )?;
    Ok(LimitsRequest {
        memory_mb: opt_num(pairs, "memory_mb", 1, MAX_MEMORY_MB)?,
        deadline_ms: opt_num(pairs, "deadline_ms", 1, MAX_DEADLINE_MS)?,
        mailbox: opt_num(pairs, "mailbox", 1, MAX_MAILBOX)?,
        quota_mb: opt_num(pairs, "quota_mb", 0, MAX_QUOTA_MB)?,
        fuel: opt_num(pairs, "fuel", 1, u64::MAX)?,
    })
}

/// Query of `POST /v1/components/{name}/messages`: `delivery`.
pub fn parse_send_query(pairs: &QueryPairs) -> Result<Delivery, ApiError> {
    check_known(pairs, &["delivery"])?;
    delivery_param(pairs)
}

/// Query of `POST /v1/components/{name}/requests`: `timeout_ms`, `delivery`.
pub fn parse_request_query(pairs: &QueryPairs) -> Result<(Duration, Delivery), ApiError> {
    check_known(pairs, &["timeout_ms", "delivery"])?;
    let timeout_ms = opt_num(pairs, "timeout_ms", 1, MAX_REQUEST_TIMEOUT_MS)?
        .unwrap_or(DEFAULT_REQUEST_TIMEOUT_MS);
    Ok((Duration::from_millis(timeout_ms), delivery_param(pairs)?))
}

/// `durable` or `fast`.
pub fn parse_delivery(value: &str) -> Result<Delivery, ApiError> {
    match value {
        "durable" => Ok(Delivery::Durable),
        "fast" => Ok(Delivery::Fast),
        other => Err(bad_param(
            "delivery",
            format!("must be `durable` or `fast`, got {other:?}"),
        )),
    }
}

/// The query-string value of a delivery class.
pub fn delivery_str(delivery: Delivery) -> &'static str {
    delivery.as_str()
}

/// `replace=true|false` (default false), the only parameter of an import.
pub fn parse_import_query(pairs: &QueryPairs) -> Result<bool, ApiError> {
    check_known(pairs, &["replace"])?;
    match get(pairs, "replace") {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(bad_param(
            "replace",
            format!("must be `true` or `false`, got {other:?}"),
        )),
    }
}

fn delivery_param(pairs: &QueryPairs) -> Result<Delivery, ApiError> {
    match get(pairs, "delivery") {
        Some(v) => parse_delivery(v),
        None => Ok(Delivery::Durable),
    }
}

fn bad_param(name: &str, what: String) -> ApiError {
    ApiError::new(
        ErrorKind::BadRequest,
        format!("query parameter `{name}` {what}"),
    )
}

/// Unknown or repeated parameters are refused, so a typo never silently means "default".
fn check_known(pairs: &QueryPairs, allowed: &[&str]) -> Result<(), ApiError> {
    for (i, (key, _)) in pairs.iter().enumerate() {
        if !allowed.contains(&key.as_str()) {
            return Err(ApiError::new(
                ErrorKind::BadRequest,
                format!(
                    "unknown query parameter `{key}` (expected {})",
                    allowed
                        .iter()
                        .map(|a| format!("`{a}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        if pairs[..i].iter().any(|(k, _)| k == key) {
            return Err(bad_param(key, "is given more than once".into()));
        }
    }
    Ok(())
}

fn get<'a>(pairs: &'a QueryPairs, key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn opt_num<T>(pairs: &QueryPairs, key: &str, min: T, max: T) -> Result<Option<T>, ApiError>
where
    T: FromStr + PartialOrd + Copy + std::fmt::Display,
{
    let Some(raw) = get(pairs, key) else {
        return Ok(None);
    };
    let range_err = || {
        bad_param(
            key,
            format!("must be an integer from {min} to {max}, got {raw:?}"),
        )
    };
    let value: T = raw.trim().parse().map_err(|_| range_err())?;
    if value < min || value > max {
        return Err(range_err());
    }
    Ok(Some(value))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn names() {
        for ok in ["a", "0", "counter", "my-comp-2", &"a".repeat(63)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "A", "a_b", "a.b", "é", "a b", &"a".repeat(64)] {
            let err = validate_name(bad).unwrap_err();
            assert_eq!(err.error, ErrorKind::InvalidName, "{bad}");
        }
    }

    #[test]
    fn install_query_defaults_to_none() {
        assert_eq!(parse_install_query(&[]).unwrap(), LimitsRequest::default());
    }

    #[test]
    fn install_query_parses_all() {
        let l = parse_install_query(&q(&[
            ("memory_mb", "128"),
            ("deadline_ms", "500"),
            ("mailbox", "10"),
            ("quota_mb", "0"),
            ("fuel", "1000000"),
        ]))
        .unwrap();
        assert_eq!(
            l,
            LimitsRequest {
                memory_mb: Some(128),
                deadline_ms: Some(500),
                mailbox: Some(10),
                quota_mb: Some(0),
                fuel: Some(1_000_000),
            }
        );
    }

    #[test]
    fn install_query_errors_name_the_parameter() {
        for (k, v) in [
            ("memory_mb", "abc"),
            ("memory_mb", "0"),
            ("memory_mb", "99999"),
            ("deadline_ms", "-1"),
            ("mailbox", ""),
            ("fuel", "0"),
        ] {
            let err = parse_install_query(&q(&[(k, v)])).unwrap_err();
            assert_eq!(err.error, ErrorKind::BadRequest);
            assert!(err.message.contains(&format!("`{k}`")), "{}", err.message);
        }
        let err = parse_install_query(&q(&[("memroy_mb", "1")])).unwrap_err();
        assert!(err.message.contains("`memroy_mb`"), "{}", err.message);
        let err = parse_install_query(&q(&[("fuel", "1"), ("fuel", "2")])).unwrap_err();
        assert!(err.message.contains("more than once"), "{}", err.message);
    }

    #[test]
    fn request_query() {
        let (t, d) = parse_request_query(&[]).unwrap();
        assert_eq!(t, Duration::from_millis(DEFAULT_REQUEST_TIMEOUT_MS));
        assert_eq!(d, Delivery::Durable);
        let (t, d) =
            parse_request_query(&q(&[("timeout_ms", "250"), ("delivery", "fast")])).unwrap();
        assert_eq!(t, Duration::from_millis(250));
        assert_eq!(d, Delivery::Fast);
        let err = parse_request_query(&q(&[("timeout_ms", "soon")])).unwrap_err();
        assert!(err.message.contains("`timeout_ms`"), "{}", err.message);
        let err = parse_request_query(&q(&[("delivery", "slow")])).unwrap_err();
        assert!(err.message.contains("`delivery`"), "{}", err.message);
    }

    #[test]
    fn send_query() {
        assert_eq!(parse_send_query(&[]).unwrap(), Delivery::Durable);
        assert_eq!(
            parse_send_query(&q(&[("delivery", "fast")])).unwrap(),
            Delivery::Fast
        );
        assert!(parse_send_query(&q(&[("timeout_ms", "1")])).is_err());
        for d in [Delivery::Durable, Delivery::Fast] {
            assert_eq!(parse_delivery(delivery_str(d)).unwrap(), d);
        }
    }

    #[test]
    fn sizes() {
        assert!(check_size(MAX_PAYLOAD_BYTES, MAX_PAYLOAD_BYTES, "payload").is_ok());
        let err = check_size(MAX_PAYLOAD_BYTES + 1, MAX_PAYLOAD_BYTES, "payload").unwrap_err();
        assert_eq!(err.error, ErrorKind::TooLarge);
        assert_eq!(err.message, "payload is larger than the 1 MiB limit");
    }

    #[test]
    fn statuses() {
        assert_eq!(status_for(ErrorKind::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(status_for(ErrorKind::Timeout), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            status_for(ErrorKind::TooLarge),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(status_for(ErrorKind::Trapped), StatusCode::BAD_GATEWAY);
        assert_eq!(
            status_for(ErrorKind::Internal),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
