//! The admin HTTP client: what the `airssys` CLI (and tests) use to talk to a node.

use crate::api::{ApiError, ComponentInfo, Delivery, ErrorKind, LimitsRequest, NodeStatus};
use crate::caps::{MAX_BINARY_BYTES, MAX_PAYLOAD_BYTES};
use reqwest::{Method, StatusCode, Url};
use std::time::Duration;

/// How long to wait for a TCP connection to the node.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP timeout of ordinary calls (list, describe, remove, send, status).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// HTTP timeout of an install (a large binary is uploaded and compiled).
pub const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest a whole backup download may take.
pub const BACKUP_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// How much longer than the request's own timeout the HTTP call waits, so the node's
/// `timeout` answer arrives before the client gives up.
pub const REQUEST_SLACK: Duration = Duration::from_secs(10);

/// Why a call to the admin API failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node answered with an error.
    #[error("{0}")]
    Api(ApiError),
    /// No connection to the node.
    #[error(
        "cannot reach airssys node at {endpoint}: {} (is `airssys node start` running?)",
        root_cause(.source)
    )]
    Connect {
        endpoint: String,
        source: reqwest::Error,
    },
    /// The node did not answer within the HTTP timeout.
    #[error("no answer from airssys node at {endpoint} within {}s", .after.as_secs())]
    Timeout { endpoint: String, after: Duration },
    /// The TLS handshake with the node failed (its certificate, or no TLS there).
    #[error("TLS with airssys node at {endpoint}: {message}")]
    Tls { endpoint: String, message: String },
    /// The endpoint is not a usable `http(s)://host:port` URL.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    /// The node (or something in between) answered with an error that is not an
    /// airssys error body.
    #[error("unexpected HTTP {status} from {endpoint}: {body}")]
    Http {
        endpoint: String,
        status: u16,
        body: String,
    },
    /// A success answer whose body could not be read or decoded.
    #[error("bad answer from {endpoint}: {message}")]
    Decode { endpoint: String, message: String },
    /// Any other transport failure.
    #[error("talking to airssys node at {endpoint}: {}", root_cause(.source))]
    Transport {
        endpoint: String,
        source: reqwest::Error,
    },
}

impl ClientError {
    /// The name this error is reported under (`not-found`, `unreachable`, …).
    pub fn kind_name(&self) -> &'static str {
        match self {
            ClientError::Api(e) => e.error.as_str(),
            ClientError::Connect { .. } => "unreachable",
            ClientError::Tls { .. } => "tls",
            ClientError::Timeout { .. } => "timeout",
            ClientError::InvalidEndpoint { .. } => "invalid-endpoint",
            ClientError::Http { .. } => "http",
            ClientError::Decode { .. } => "bad-response",
            ClientError::Transport { .. } => "transport",
        }
    }

    /// The API error kind, when the node reported one.
    pub fn api_kind(&self) -> Option<ErrorKind> {
        match self {
            ClientError::Api(e) => Some(e.error),
            _ => None,
        }
    }

    /// The message without the kind prefix.
    pub fn message(&self) -> String {
        match self {
            ClientError::Api(e) => e.message.clone(),
            other => other.to_string(),
        }
    }
}

/// The innermost cause of an error, readably: an IO error by its kind ("connection
/// refused"), else the last error's text.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = err;
    loop {
        if let Some(io) = cur.downcast_ref::<std::io::Error>() {
            let kind = io.kind().to_string();
            // Kinds without a specific name ("other error", "uncategorized error") say
            // less than the error itself.
            return if kind.ends_with("error") {
                io.to_string()
            } else {
                kind
            };
        }
        match cur.source() {
            Some(next) => cur = next,
            None => return cur.to_string(),
        }
    }
}

pub use crate::crypto::install_crypto_provider;

/// The rustls error somewhere in `err`'s chain, if the failure was TLS's.
fn tls_cause<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // An io::Error's `source()` skips the error it wraps (and io errors nest): step
        // into the wrapped one by hand.
        cur = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// A TLS failure in the words an operator acts on.
fn explain_tls(e: &rustls::Error) -> String {
    use rustls::{CertificateError, Error};
    match e {
        Error::InvalidCertificate(CertificateError::UnknownIssuer)
        | Error::InvalidCertificate(CertificateError::BadSignature) => format!(
            "{e}: the node's certificate is not from the CA given with --ca (use the cluster's ca.pem)"
        ),
        Error::InvalidCertificate(CertificateError::NotValidForName)
        | Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => format!(
            "{e}: the node's certificate does not name this host (make it with `airssys cert node --host HOST`)"
        ),
        Error::InvalidMessage(_) => format!(
            "{e}: the node does not speak TLS on this port (is its admin API plain http://?)"
        ),
        other => other.to_string(),
    }
}

/// Normalizes an endpoint: adds `http://` when no scheme is given, refuses any scheme
/// but `http` and `https`, and any path, query or fragment.
pub fn parse_endpoint(endpoint: &str) -> Result<Url, ClientError> {
    let invalid = |reason: &str| ClientError::InvalidEndpoint {
        endpoint: endpoint.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = endpoint.trim();
    if trimmed.is_empty() {
        return Err(invalid("it is empty; expected e.g. http://127.0.0.1:7070"));
    }
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_string()
    } else {
        format!("http://{trimmed}")
    };
    let url = Url::parse(&with_scheme)
        .map_err(|e| invalid(&format!("{e}; expected e.g. http://127.0.0.1:7070")))?;
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(invalid(&format!(
                "unsupported scheme `{other}`; use http:// or https://"
            )))
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host; expected e.g. http://127.0.0.1:7070"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            "give only scheme, host and port, e.g. http://127.0.0.1:7070",
        ));
    }
    Ok(url)
}

/// A client for one node's admin API.
#[derive(Clone)]
pub struct AdminClient {
    http: reqwest::Client,
    base: Url,
    endpoint: String,
    token: Option<String>,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl AdminClient {
    /// A client for the node at `endpoint` (`http://host:port`; `host:port` is taken
    /// as http). `token` is sent as `Authorization: Bearer <token>`.
    pub fn new(endpoint: &str, token: Option<String>) -> Result<AdminClient, ClientError> {
        AdminClient::with_ca(endpoint, token, None)
    }

    /// Like [`AdminClient::new`]; an `https://` endpoint must present a certificate that
    /// chains to `ca_pem` (the cluster CA) and is valid for the endpoint's host. No
    /// system roots are trusted.
    pub fn with_ca(
        endpoint: &str,
        token: Option<String>,
        ca_pem: Option<String>,
    ) -> Result<AdminClient, ClientError> {
        install_crypto_provider();
        let base = parse_endpoint(endpoint)?;
        let shown = base.as_str().trim_end_matches('/').to_string();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .no_proxy();
        if base.scheme() == "https" {
            let ca_pem = ca_pem.ok_or_else(|| ClientError::InvalidEndpoint {
                endpoint: shown.clone(),
                reason: "an https endpoint needs the cluster CA certificate: give --ca FILE \
                         (ca.pem) or set AIRSSYS_CA"
                    .into(),
            })?;
            let tls = airssys_cluster::tls::admin_client_config(&ca_pem).map_err(|e| {
                ClientError::InvalidEndpoint {
                    endpoint: shown.clone(),
                    reason: format!("the CA certificate: {e}"),
                }
            })?;
            builder = builder.tls_backend_preconfigured(tls);
        } else {
            // reqwest wants a TLS configuration even for plain http (it would otherwise
            // look for a process-wide crypto provider): one that trusts no one.
            let tls =
                airssys_cluster::tls::admin_client_config_trusting_nothing().map_err(|e| {
                    ClientError::InvalidEndpoint {
                        endpoint: shown.clone(),
                        reason: format!("TLS set-up: {e}"),
                    }
                })?;
            builder = builder.tls_backend_preconfigured(tls);
        }
        let http = builder.build().map_err(|source| ClientError::Transport {
            endpoint: shown.clone(),
            source,
        })?;
        Ok(AdminClient {
            http,
            base,
            endpoint: shown,
            token: token.filter(|t| !t.is_empty()),
        })
    }

    /// The endpoint, as shown in messages (`http://127.0.0.1:7070`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// `PUT /v1/components/{name}`: installs `binary` under `name`.
    pub async fn install(
        &self,
        name: &str,
        binary: Vec<u8>,
        limits: &LimitsRequest,
    ) -> Result<ComponentInfo, ClientError> {
        self.upload(Method::PUT, &["v1", "components", name], binary, limits)
            .await
    }

    /// `POST /v1/components/{name}/upgrade?<limits>` with the new binary as the body.
    pub async fn upgrade(
        &self,
        name: &str,
        binary: Vec<u8>,
        limits: &LimitsRequest,
    ) -> Result<ComponentInfo, ClientError> {
        self.upload(
            Method::POST,
            &["v1", "components", name, "upgrade"],
            binary,
            limits,
        )
        .await
    }

    /// `POST /v1/components/{name}/rollback`.
    pub async fn rollback(&self, name: &str) -> Result<ComponentInfo, ClientError> {
        let url = self.url(&["v1", "components", name, "rollback"], &[]);
        let resp = self.call(Method::POST, url, None, INSTALL_TIMEOUT).await?;
        self.json(resp).await
    }

    /// A binary upload (install or upgrade) with its limits in the query.
    async fn upload(
        &self,
        method: Method,
        path: &[&str],
        binary: Vec<u8>,
        limits: &LimitsRequest,
    ) -> Result<ComponentInfo, ClientError> {
        if binary.len() > MAX_BINARY_BYTES {
            return Err(ClientError::Api(crate::caps::too_large(
                MAX_BINARY_BYTES,
                "component binary",
            )));
        }
        let mut query: Vec<(&str, String)> = Vec::new();
        let mut add = |k: &'static str, v: Option<String>| {
            if let Some(v) = v {
                query.push((k, v));
            }
        };
        add("memory_mb", limits.memory_mb.map(|v| v.to_string()));
        add("deadline_ms", limits.deadline_ms.map(|v| v.to_string()));
        add("mailbox", limits.mailbox.map(|v| v.to_string()));
        add("quota_mb", limits.quota_mb.map(|v| v.to_string()));
        add("fuel", limits.fuel.map(|v| v.to_string()));
        let url = self.url(path, &query);
        let resp = self
            .call(method, url, Some(binary), INSTALL_TIMEOUT)
            .await?;
        self.json(resp).await
    }

    /// `GET /v1/backup`: hands each chunk of the backup file to `sink` as it arrives;
    /// answers the bytes received. The file is checked by its reader, not here: a stream
    /// cut short leaves a file its checksum refuses.
    pub async fn backup(
        &self,
        sink: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<u64, ClientError> {
        self.download(&["v1", "backup"], sink).await
    }

    /// `GET /v1/components/{name}/export`: the export file's chunks to `sink`, as
    /// [`AdminClient::backup`].
    pub async fn export(
        &self,
        name: &str,
        sink: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<u64, ClientError> {
        self.download(&["v1", "components", name, "export"], sink)
            .await
    }

    /// `POST /v1/components/{name}/import?replace=…` with an export file as the body.
    pub async fn import(
        &self,
        name: &str,
        file: Vec<u8>,
        replace: bool,
    ) -> Result<ComponentInfo, ClientError> {
        if file.len() > crate::caps::MAX_IMPORT_FILE_BYTES {
            return Err(ClientError::Api(crate::caps::too_large(
                crate::caps::MAX_IMPORT_FILE_BYTES,
                "export file",
            )));
        }
        let url = self.url(
            &["v1", "components", name, "import"],
            &[("replace", replace.to_string())],
        );
        let resp = self
            .call(Method::POST, url, Some(file), INSTALL_TIMEOUT)
            .await?;
        self.json(resp).await
    }

    /// A streamed GET: each chunk of the body to `sink`; answers the bytes received.
    async fn download(
        &self,
        path: &[&str],
        mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<u64, ClientError> {
        let url = self.url(path, &[]);
        let mut resp = self.call(Method::GET, url, None, BACKUP_TIMEOUT).await?;
        let mut received = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.body_error(e))? {
            received += chunk.len() as u64;
            sink(&chunk).map_err(|e| ClientError::Decode {
                endpoint: self.endpoint.clone(),
                message: format!("cannot keep the backup's bytes: {e}"),
            })?;
        }
        Ok(received)
    }

    /// `GET /v1/components`.
    pub async fn list(&self) -> Result<Vec<ComponentInfo>, ClientError> {
        let url = self.url(&["v1", "components"], &[]);
        let resp = self.call(Method::GET, url, None, CALL_TIMEOUT).await?;
        self.json(resp).await
    }

    /// `GET /v1/components/{name}`.
    pub async fn describe(&self, name: &str) -> Result<ComponentInfo, ClientError> {
        let url = self.url(&["v1", "components", name], &[]);
        let resp = self.call(Method::GET, url, None, CALL_TIMEOUT).await?;
        self.json(resp).await
    }

    /// `DELETE /v1/components/{name}`.
    pub async fn remove(&self, name: &str) -> Result<(), ClientError> {
        let url = self.url(&["v1", "components", name], &[]);
        self.call(Method::DELETE, url, None, CALL_TIMEOUT).await?;
        Ok(())
    }

    /// `POST /v1/components/{name}/messages`: fire-and-forget.
    pub async fn send(
        &self,
        name: &str,
        payload: Vec<u8>,
        delivery: Delivery,
    ) -> Result<(), ClientError> {
        self.send_with_key(name, payload, delivery, None).await
    }

    /// [`AdminClient::send`] with an `Idempotency-Key` header (durable only): the node accepts
    /// the message once per key and answers every retry accepted. One try; retrying is
    /// the caller's (the CLI's `send --idempotency-key` retries by itself).
    pub async fn send_with_key(
        &self,
        name: &str,
        payload: Vec<u8>,
        delivery: Delivery,
        key: Option<&str>,
    ) -> Result<(), ClientError> {
        check_payload(&payload)?;
        let url = self.url(
            &["v1", "components", name, "messages"],
            &[("delivery", delivery.as_str().to_string())],
        );
        let header = key.map(|k| ("idempotency-key", k));
        self.call_with(Method::POST, url, Some(payload), CALL_TIMEOUT, header)
            .await?;
        Ok(())
    }

    /// `POST /v1/components/{name}/requests`: the reply's bytes, exactly.
    pub async fn request(
        &self,
        name: &str,
        payload: Vec<u8>,
        timeout_ms: u64,
        delivery: Delivery,
    ) -> Result<Vec<u8>, ClientError> {
        self.request_with_key(name, payload, timeout_ms, delivery, None)
            .await
    }

    /// [`Client::request`] with an `Idempotency-Key` header: the node runs the request
    /// once per key and answers every retry with the first attempt's outcome. One try;
    /// retrying is the caller's (the CLI's `request --idempotency-key` retries by itself).
    pub async fn request_with_key(
        &self,
        name: &str,
        payload: Vec<u8>,
        timeout_ms: u64,
        delivery: Delivery,
        key: Option<&str>,
    ) -> Result<Vec<u8>, ClientError> {
        check_payload(&payload)?;
        let url = self.url(
            &["v1", "components", name, "requests"],
            &[
                ("timeout_ms", timeout_ms.to_string()),
                ("delivery", delivery.as_str().to_string()),
            ],
        );
        let http_timeout = Duration::from_millis(timeout_ms)
            .saturating_add(crate::caps::REQUEST_GRACE)
            .saturating_add(REQUEST_SLACK);
        let header = key.map(|k| ("idempotency-key", k));
        let resp = self
            .call_with(Method::POST, url, Some(payload), http_timeout, header)
            .await?;
        let bytes = resp.bytes().await.map_err(|e| self.body_error(e))?;
        Ok(Vec::from(bytes))
    }

    /// `POST /v1/components/{name}/move?to=N`.
    pub async fn move_component(&self, name: &str, to: u64) -> Result<ComponentInfo, ClientError> {
        let url = self.url(
            &["v1", "components", name, "move"],
            &[("to", to.to_string())],
        );
        let resp = self.call(Method::POST, url, None, INSTALL_TIMEOUT).await?;
        self.json(resp).await
    }

    /// `POST /v1/components/{name}/restart`.
    pub async fn restart(&self, name: &str) -> Result<ComponentInfo, ClientError> {
        let url = self.url(&["v1", "components", name, "restart"], &[]);
        let resp = self.call(Method::POST, url, None, INSTALL_TIMEOUT).await?;
        self.json(resp).await
    }

    /// `GET /v1/cluster`.
    pub async fn cluster_status(&self) -> Result<airssys_cluster::ClusterStatus, ClientError> {
        let url = self.url(&["v1", "cluster"], &[]);
        let resp = self.call(Method::GET, url, None, CALL_TIMEOUT).await?;
        self.json(resp).await
    }

    /// `DELETE /v1/cluster/nodes/{id}`.
    pub async fn remove_node(&self, id: u64) -> Result<(), ClientError> {
        let url = self.url(&["v1", "cluster", "nodes", &id.to_string()], &[]);
        self.call(Method::DELETE, url, None, INSTALL_TIMEOUT)
            .await?;
        Ok(())
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<NodeStatus, ClientError> {
        let url = self.url(&["v1", "status"], &[]);
        let resp = self.call(Method::GET, url, None, CALL_TIMEOUT).await?;
        self.json(resp).await
    }

    /// `GET /readyz`: whether the node is ready.
    pub async fn ready(&self) -> Result<bool, ClientError> {
        let url = self.url(&["readyz"], &[]);
        match self.call(Method::GET, url, None, CALL_TIMEOUT).await {
            Ok(_) => Ok(true),
            Err(ClientError::Api(e)) if e.error == ErrorKind::Unavailable => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `GET /metrics`: Prometheus text.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let url = self.url(&["metrics"], &[]);
        let resp = self.call(Method::GET, url, None, CALL_TIMEOUT).await?;
        resp.text().await.map_err(|e| self.body_error(e))
    }

    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.clear().extend(segments);
        }
        if !query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        url
    }

    /// Sends one HTTP call; a non-2xx answer becomes an error.
    async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<reqwest::Response, ClientError> {
        self.call_with(method, url, body, timeout, None).await
    }

    /// [`Client::call`] with one extra header.
    async fn call_with(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        timeout: Duration,
        header: Option<(&str, &str)>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut req = self.http.request(method, url).timeout(timeout);
        if let Some((name, value)) = header {
            req = req.header(name, value);
        }
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(body);
        }
        let resp = req.send().await.map_err(|e| self.send_error(e, timeout))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.bytes().await.map_err(|e| self.body_error(e))?;
        Err(self.error_from(status, &body))
    }

    fn error_from(&self, status: StatusCode, body: &[u8]) -> ClientError {
        match serde_json::from_slice::<ApiError>(body) {
            Ok(api) => ClientError::Api(api),
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let mut text: String = text.trim().chars().take(300).collect();
                if text.is_empty() {
                    text = status.canonical_reason().unwrap_or("no body").to_string();
                }
                ClientError::Http {
                    endpoint: self.endpoint.clone(),
                    status: status.as_u16(),
                    body: text,
                }
            }
        }
    }

    fn send_error(&self, e: reqwest::Error, timeout: Duration) -> ClientError {
        let endpoint = self.endpoint.clone();
        if let Some(tls) = tls_cause(&e) {
            return ClientError::Tls {
                endpoint,
                message: explain_tls(tls),
            };
        }
        if e.is_connect() {
            ClientError::Connect {
                endpoint,
                source: e,
            }
        } else if e.is_timeout() {
            ClientError::Timeout {
                endpoint,
                after: timeout,
            }
        } else {
            ClientError::Transport {
                endpoint,
                source: e,
            }
        }
    }

    fn body_error(&self, e: reqwest::Error) -> ClientError {
        if e.is_timeout() {
            return ClientError::Timeout {
                endpoint: self.endpoint.clone(),
                after: CALL_TIMEOUT,
            };
        }
        ClientError::Decode {
            endpoint: self.endpoint.clone(),
            message: root_cause(&e),
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        resp: reqwest::Response,
    ) -> Result<T, ClientError> {
        let body = resp.bytes().await.map_err(|e| self.body_error(e))?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode {
            endpoint: self.endpoint.clone(),
            message: format!("cannot decode the JSON answer: {e}"),
        })
    }
}

fn check_payload(payload: &[u8]) -> Result<(), ClientError> {
    crate::caps::check_size(payload.len(), MAX_PAYLOAD_BYTES, "payload").map_err(ClientError::Api)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            parse_endpoint("http://127.0.0.1:7070").unwrap().as_str(),
            "http://127.0.0.1:7070/"
        );
        assert_eq!(
            parse_endpoint("127.0.0.1:7070").unwrap().as_str(),
            "http://127.0.0.1:7070/"
        );
        assert_eq!(
            parse_endpoint("localhost:7070/").unwrap().as_str(),
            "http://localhost:7070/"
        );
        assert_eq!(
            parse_endpoint("https://10.0.0.5:7070").unwrap().as_str(),
            "https://10.0.0.5:7070/"
        );
        for bad in ["", "ftp://x", "http://x:1/api", "http://"] {
            assert!(
                matches!(
                    parse_endpoint(bad),
                    Err(ClientError::InvalidEndpoint { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_https_endpoint_needs_a_usable_ca() {
        let e = AdminClient::new("https://127.0.0.1:7070", None).unwrap_err();
        assert!(
            matches!(&e, ClientError::InvalidEndpoint { reason, .. } if reason.contains("--ca")),
            "{e}"
        );
        let e =
            AdminClient::with_ca("https://127.0.0.1:7070", None, Some("junk".into())).unwrap_err();
        assert!(
            matches!(&e, ClientError::InvalidEndpoint { reason, .. } if reason.contains("CA certificate")),
            "{e}"
        );
        let ca = airssys_cluster::tls::ClusterCa::generate("t").unwrap();
        let c = AdminClient::with_ca("https://127.0.0.1:7070", None, Some(ca.cert_pem().into()))
            .unwrap();
        assert_eq!(c.endpoint(), "https://127.0.0.1:7070");
    }

    #[test]
    fn tls_failures_are_explained_from_deep_in_the_chain() {
        let wrapped = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let found = tls_cause(&wrapped).expect("the rustls error inside an io::Error");
        assert!(explain_tls(found).contains("--ca"));
        assert!(tls_cause(&std::io::Error::other("plain")).is_none());
    }

    #[test]
    fn urls_encode_segments_and_query() {
        let c = AdminClient::new("http://127.0.0.1:7070", Some("t".into())).unwrap();
        assert_eq!(c.endpoint(), "http://127.0.0.1:7070");
        let u = c.url(
            &["v1", "components", "a/b c"],
            &[("delivery", "fast".into())],
        );
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:7070/v1/components/a%2Fb%20c?delivery=fast"
        );
    }

    #[test]
    fn error_bodies_decode() {
        let c = AdminClient::new("http://127.0.0.1:7070", None).unwrap();
        let e = c.error_from(
            StatusCode::NOT_FOUND,
            br#"{"error":"not-found","message":"no component named x"}"#,
        );
        match e {
            ClientError::Api(api) => {
                assert_eq!(
                    api,
                    ApiError::new(ErrorKind::NotFound, "no component named x")
                )
            }
            other => panic!("{other:?}"),
        }
        let e = c.error_from(StatusCode::BAD_GATEWAY, b"proxy says no");
        assert!(
            matches!(&e, ClientError::Http { status: 502, body, .. } if body == "proxy says no"),
            "{e:?}"
        );
        assert_eq!(e.kind_name(), "http");
    }

    #[test]
    fn oversized_payload_is_refused_before_sending() {
        let e = check_payload(&vec![0u8; MAX_PAYLOAD_BYTES + 1]).unwrap_err();
        assert_eq!(e.api_kind(), Some(ErrorKind::TooLarge));
        assert!(check_payload(&vec![0u8; MAX_PAYLOAD_BYTES]).is_ok());
    }
}
