//! The admin HTTP API (axum): components, messages, requests, status, health, metrics.
//!
//! Every route but `/healthz` requires `Authorization: Bearer <token>`. Every error is
//! an [`ApiError`] as JSON (`{"error": "<kind>", "message": "..."}`) with the status
//! [`status_for`] gives its kind. Handlers are thin: parsing and validation live in
//! [`params`], auth in [`auth`], and the work in the [`AdminBackend`].
//!
//! | route | success |
//! |---|---|
//! | `PUT /v1/components/{name}?memory_mb&deadline_ms&mailbox&quota_mb&fuel` (body: wasm, ≤ 64 MiB) | 201 `ComponentInfo` |
//! | `GET /v1/components` | 200 `[ComponentInfo]` |
//! | `GET /v1/components/{name}` | 200 `ComponentInfo` |
//! | `DELETE /v1/components/{name}` | 204 |
//! | `POST /v1/components/{name}/upgrade?memory_mb&deadline_ms&mailbox&quota_mb&fuel` (body: wasm) | 200 `ComponentInfo` |
//! | `POST /v1/components/{name}/rollback` | 200 `ComponentInfo` |
//! | `GET /v1/components/{name}/export` | 200 the export file, streamed |
//! | `POST /v1/components/{name}/import?replace=true\|false` (body: an export file) | 200 `ComponentInfo` |
//! | `POST /v1/components/{name}/messages?delivery=durable\|fast` (body ≤ 1 MiB) | 202 `{"accepted":true}` |
//! | `POST /v1/components/{name}/requests?timeout_ms&delivery` (body ≤ 1 MiB) | 200 reply bytes |
//! | `GET /v1/backup` | 200 the backup file, streamed (see `airssys_cluster::backup`) |
//! | `GET /v1/status` | 200 `NodeStatus` |
//! | `GET /healthz` (no auth) | 200 `ok` |
//! | `GET /readyz` | 200 `ready` (`ready; compiling N binaries …` while code compiles), or 503 `unavailable` |
//! | `GET /metrics` | 200 Prometheus text |
//!
//! The node serves it over HTTPS with its own certificate unless the admin address is a
//! loopback one ([`tls`]).

pub mod auth;
pub mod params;
pub mod tls;

pub use auth::{check_bearer, read_token_file, AdminAuth};
pub use params::{
    status_for, DEFAULT_REQUEST_TIMEOUT_MS, MAX_BINARY_BYTES, MAX_PAYLOAD_BYTES,
    MAX_REQUEST_TIMEOUT_MS,
};

use crate::api::{
    AdminBackend, ApiError, ComponentInfo, ErrorKind, ImportRequest, InstallRequest, LimitsRequest,
    NodeStatus, UpgradeRequest,
};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use std::future::Future;
use std::sync::Arc;
use tracing::Instrument;

use crate::caps::MAX_IMPORT_FILE_BYTES;
pub use crate::caps::REQUEST_GRACE;

/// Installs whose bodies a node takes at once: each is held in memory whole (up to
/// `MAX_BINARY_BYTES`), so more would let a few clients take the node's memory. One past
/// this is answered `unavailable` at once, before its body is read.
pub const MAX_CONCURRENT_INSTALLS: usize = 4;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_for(self.error);
        if self.error == ErrorKind::Internal {
            tracing::warn!(message = %self.message, "admin API internal error");
        }
        let mut resp = (status, Json(self)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

type Pairs = Vec<(String, String)>;

/// The admin API over `backend`, with every route but `/healthz` behind `auth`.
pub fn router<B: AdminBackend>(backend: Arc<B>, auth: AdminAuth) -> Router {
    let auth = Arc::new(auth);
    // Installs and upgrades share the upload slots.
    let uploads = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_INSTALLS));
    let protected = Router::new()
        .route(
            "/v1/components",
            get(list::<B>).fallback(method_not_allowed),
        )
        .route(
            "/v1/components/{name}",
            put(install::<B>)
                .layer(DefaultBodyLimit::max(MAX_BINARY_BYTES))
                .layer(middleware::from_fn_with_state(
                    uploads.clone(),
                    limit_uploads,
                ))
                .get(describe::<B>)
                .delete(remove::<B>)
                .fallback(method_not_allowed),
        )
        .route(
            "/v1/components/{name}/messages",
            post(send::<B>)
                .layer(DefaultBodyLimit::max(MAX_PAYLOAD_BYTES))
                .fallback(method_not_allowed),
        )
        .route(
            "/v1/components/{name}/requests",
            post(request::<B>)
                .layer(DefaultBodyLimit::max(MAX_PAYLOAD_BYTES))
                .fallback(method_not_allowed),
        )
        .route(
            "/v1/components/{name}/move",
            post(move_component::<B>).fallback(method_not_allowed),
        )
        .route(
            "/v1/components/{name}/upgrade",
            post(upgrade::<B>)
                .layer(DefaultBodyLimit::max(MAX_BINARY_BYTES))
                .layer(middleware::from_fn_with_state(
                    uploads.clone(),
                    limit_uploads,
                ))
                .fallback(method_not_allowed),
        )
        .route(
            "/v1/components/{name}/export",
            get(export::<B>).fallback(method_not_allowed),
        )
        .route(
            "/v1/components/{name}/import",
            post(import::<B>)
                .layer(DefaultBodyLimit::max(MAX_IMPORT_FILE_BYTES))
                .layer(middleware::from_fn_with_state(
                    uploads.clone(),
                    limit_uploads,
                ))
                .fallback(method_not_allowed),
        )
        .route(
            "/v1/components/{name}/rollback",
            post(rollback::<B>).fallback(method_not_allowed),
        )
        .route(
            "/v1/components/{name}/restart",
            post(restart::<B>).fallback(method_not_allowed),
        )
        .route(
            "/v1/cluster",
            get(cluster_status::<B>).fallback(method_not_allowed),
        )
        .route(
            "/v1/cluster/nodes/{id}",
            delete(remove_node::<B>).fallback(method_not_allowed),
        )
        .route("/v1/backup", get(backup::<B>).fallback(method_not_allowed))
        .route("/v1/status", get(status::<B>).fallback(method_not_allowed))
        .route("/readyz", get(readyz::<B>).fallback(method_not_allowed))
        .route("/metrics", get(metrics::<B>).fallback(method_not_allowed))
        .route_layer(middleware::from_fn_with_state(auth, require_token))
        .with_state(backend);
    Router::new()
        .route("/healthz", get(healthz))
        .merge(protected)
        .fallback(not_found)
}

/// Serves the admin API on `listener` until `shutdown` resolves, then finishes the
/// requests in flight and returns.
pub async fn serve<B: AdminBackend, L>(
    listener: L,
    backend: Arc<B>,
    auth: AdminAuth,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
{
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin API listening");
    }
    axum::serve(listener, router(backend, auth))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn require_token(State(auth): State<Arc<AdminAuth>>, req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match check_bearer(header, &auth.token) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Lets an install in only while fewer than [`MAX_CONCURRENT_INSTALLS`] are being taken;
/// the permit is held until it is answered (its body read and the install done).
async fn limit_uploads(
    State(uploads): State<Arc<tokio::sync::Semaphore>>,
    req: Request,
    next: Next,
) -> Response {
    match uploads.try_acquire_owned() {
        Ok(_permit) => next.run(req).await,
        Err(_) => ApiError::new(
            ErrorKind::Unavailable,
            format!(
                "{MAX_CONCURRENT_INSTALLS} installs are being uploaded to this node already \
                 (each binary is held in memory whole); retry when one is done"
            ),
        )
        .into_response(),
    }
}

// ---- extractor rejections, as ApiError ----

fn name_of(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(name) = path.map_err(|r| ApiError::new(ErrorKind::BadRequest, r.body_text()))?;
    params::validate_name(&name)?;
    Ok(name)
}

fn query_of(query: Result<Query<Pairs>, QueryRejection>) -> Result<Pairs, ApiError> {
    query.map(|Query(q)| q).map_err(|r| {
        ApiError::new(
            ErrorKind::BadRequest,
            format!("bad query string: {}", r.body_text()),
        )
    })
}

fn body_of(body: Result<Bytes, BytesRejection>, cap: usize, what: &str) -> Result<Bytes, ApiError> {
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            params::too_large(cap, what)
        } else {
            ApiError::new(
                ErrorKind::BadRequest,
                format!("cannot read the request body: {}", r.body_text()),
            )
        }
    })?;
    params::check_size(body.len(), cap, what)?;
    Ok(body)
}

// ---- handlers ----

/// What an install or an upgrade uploads: the name, the limits asked for, the binary (not
/// empty; `empty` says what to send instead).
fn component_upload(
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Pairs>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
    empty: &str,
) -> Result<(String, LimitsRequest, Vec<u8>), ApiError> {
    let name = name_of(path)?;
    let limits = params::parse_install_query(&query_of(query)?)?;
    let binary = body_of(body, MAX_BINARY_BYTES, "component binary")?;
    if binary.is_empty() {
        return Err(ApiError::new(ErrorKind::InvalidComponent, empty));
    }
    Ok((name, limits, Vec::from(binary)))
}

async fn install<B: AdminBackend>(
    State(backend): State<Arc<B>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Pairs>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ComponentInfo>), ApiError> {
    let (name, limits, binary) = component_upload(
        path,
        query,
        body,
        "empty body: send the component's .wasm bytes as the request body",
    )?;
    let info = backend
        .install(InstallRequest {
            name,
            binary,
            limits,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(info)))
}

async fn upgrade<B: AdminBackend>(
    State(backend): State<Arc<B>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Pairs>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ComponentInfo>, ApiError> {
    let (name, limits, binary) = component_upload(
        path,
        query,
        body,
        "empty body: send the new .wasm bytes as the request body",
    )?;
    let info = backend
        .upgrade(UpgradeRequest {
            name,
            binary,
            limits,
        })
        .await?;
    Ok(Json(info))
}

async fn rollback<B: AdminBackend>(
    State(backend): State<Arc<B>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ComponentInfo>, ApiError> {
    let name = name_of(path)?;
    Ok(Json(backend.rollback(&name).await?))
}

async fn list<B: AdminBackend>(
    State(backend): State<Arc<B>>,
) -> Result<Json<Vec<ComponentInfo>>, ApiError> {
    Ok(Json(backend.list().await?))
}

async fn describe<B: AdminBackend>(
    State(backend): State<Arc<B>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ComponentInfo>, ApiError> {
    let name = name_of(path)?;
    Ok(Json(backend.describe(&name).await?))
}

async fn remove<B: AdminBackend>(
    State(backend): State<Arc<B>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let name = name_of(path)?;
    backend.remove(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn send<B: AdminBackend>(
    State(backend): State<Arc<B>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Pairs>, QueryRejection>,
    headers: header::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let name = name_of(path)?;
    let delivery = params::parse_send_query(&query_of(query)?)?;
    let key = params::idempotency_key(&headers)?;
    let payload = body_of(body, MAX_PAYLOAD_BYTES, "payload")?;
    let span = tracing::info_span!("airssys.admin.send", component = %name);
    backend
        .send(&name, Vec::from(payload), delivery, key)
        .instrument(span)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "accepted": true })),
    ))
}

async fn request<B: AdminBackend>(
    State(backend): State<Arc<B>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Pairs>, QueryRejection>,
    headers: header::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let name = name_of(path)?;
    let (timeout, delivery) = params::parse_request_query(&query_of(query)?)?;
    let key = params::idempotency_key(&headers)?;
    let payload = body_of(body, MAX_PAYLOAD_BYTES, "payload")?;
    // The request's trace starts here; its id goes back in a `traceparent` header.
    let span = tracing::info_span!("airssys.admin.request", component = %name);
    let traceparent = crate::telemetry::traceparent_of(&span);
    let call = backend
        .request(&name, Vec::from(payload), timeout, delivery, key)
        .instrument(span);
    let reply = match tokio::time::timeout(timeout + REQUEST_GRACE, call).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(ApiError::new(
                ErrorKind::Timeout,
                format!("no reply from {name} within {} ms", timeout.as_millis()),
            ))
        }
    };
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        )],
        reply,
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&traceparent) {
        if !traceparent.is_empty() {
            response.headers_mut().insert("traceparent", v);
        }
    }
    Ok(response)
}

async fn restart<B: AdminBackend>(
    State(backend): State<Arc<B>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ComponentInfo>, ApiError> {
    let name = name_of(path)?;
    Ok(Json(backend.restart(&name).await?))
}

async fn move_component<B: AdminBackend>(
    State(backend): State<Arc<B>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Pairs>, QueryRejection>,
) -> Result<Json<ComponentInfo>, ApiError> {
    let name = name_of(path)?;
    let pairs = query_of(query)?;
    let to = pairs
        .iter()
        .find(|(k, _)| k == "to")
        .and_then(|(_, v)| v.parse::<u64>().ok())
        .ok_or_else(|| {
            ApiError::new(
                ErrorKind::BadRequest,
                "give the destination node as ?to=N (a node id)",
            )
        })?;
    Ok(Json(backend.move_component(&name, to).await?))
}

async fn cluster_status<B: AdminBackend>(
    State(backend): State<Arc<B>>,
) -> Result<Json<airssys_cluster::ClusterStatus>, ApiError> {
    Ok(Json(backend.cluster_status().await?))
}

async fn remove_node<B: AdminBackend>(
    State(backend): State<Arc<B>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let id = match path {
        Ok(Path(text)) => text.parse::<u64>().map_err(|_| {
            ApiError::new(ErrorKind::BadRequest, format!("{text} is not a node id"))
        })?,
        Err(e) => return Err(ApiError::new(ErrorKind::BadRequest, e.body_text())),
    };
    backend.remove_node(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn status<B: AdminBackend>(
    State(backend): State<Arc<B>>,
) -> Result<Json<NodeStatus>, ApiError> {
    Ok(Json(backend.status().await?))
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz<B: AdminBackend>(State(backend): State<Arc<B>>) -> Result<String, ApiError> {
    if backend.ready().await {
        Ok(match backend.compiling().await {
            0 => "ready".to_string(),
            n => format!("ready; compiling {n} binaries in the background"),
        })
    } else {
        Err(ApiError::new(
            ErrorKind::Unavailable,
            "node is not ready to serve yet",
        ))
    }
}

/// The backup file, streamed as the node writes it. Once the body has started, a failure
/// can only cut it short: the client's check of the trailer's checksum refuses it.
async fn backup<B: AdminBackend>(State(backend): State<Arc<B>>) -> Result<Response, ApiError> {
    Ok(file_response(backend.backup().await?))
}

/// A component's export file, streamed like a backup.
async fn export<B: AdminBackend>(
    State(backend): State<Arc<B>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = name_of(path)?;
    Ok(file_response(backend.export(&name).await?))
}

async fn import<B: AdminBackend>(
    State(backend): State<Arc<B>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Pairs>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ComponentInfo>, ApiError> {
    let name = name_of(path)?;
    let replace = params::parse_import_query(&query_of(query)?)?;
    let file = body_of(body, MAX_IMPORT_FILE_BYTES, "export file")?;
    let info = backend
        .import(ImportRequest {
            name,
            file: Vec::from(file),
            replace,
        })
        .await?;
    Ok(Json(info))
}

/// A file streamed from the node's chunks.
fn file_response(chunks: crate::api::BackupStream) -> Response {
    let stream = futures_util::stream::unfold(chunks, |mut chunks| async move {
        chunks.recv().await.map(|chunk| (chunk, chunks))
    });
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        )],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

async fn metrics<B: AdminBackend>(State(backend): State<Arc<B>>) -> Response {
    let text = backend.metrics().await;
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        ErrorKind::NotFound,
        format!("no admin route {} {}", req.method(), req.uri().path()),
    )
}

async fn method_not_allowed(req: Request) -> Response {
    let mut resp = ApiError::new(
        ErrorKind::BadRequest,
        format!(
            "method {} is not allowed on {}",
            req.method(),
            req.uri().path()
        ),
    )
    .into_response();
    *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    resp
}
