//! The admin HTTP API against an in-memory fake backend, driven by `AdminClient` and by
//! raw HTTP.
#![allow(clippy::unwrap_used)]

use airssys_node::admin::{self, AdminAuth, MAX_BINARY_BYTES, MAX_PAYLOAD_BYTES};
use airssys_node::api::{
    AdminBackend, ApiError, ComponentInfo, ComponentState, Delivery, ErrorKind, InstallRequest,
    Limits, LimitsRequest, NodeStatus,
};
use airssys_node::client::{AdminClient, ClientError};
use airssys_node::config::DEFAULT_LIMITS;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "test-token-123";

const ALL_KINDS: [ErrorKind; 17] = [
    ErrorKind::NotFound,
    ErrorKind::AlreadyExists,
    ErrorKind::Conflict,
    ErrorKind::InvalidName,
    ErrorKind::InvalidComponent,
    ErrorKind::MailboxFull,
    ErrorKind::Timeout,
    ErrorKind::Trapped,
    ErrorKind::Rejected,
    ErrorKind::QuotaExceeded,
    ErrorKind::TooLarge,
    ErrorKind::Unavailable,
    ErrorKind::NotLeader,
    ErrorKind::BadRequest,
    ErrorKind::Unauthorized,
    ErrorKind::Internal,
    ErrorKind::KeyReused,
];

fn expected_status(kind: ErrorKind) -> u16 {
    match kind {
        ErrorKind::NotFound => 404,
        ErrorKind::AlreadyExists | ErrorKind::Conflict => 409,
        ErrorKind::InvalidName | ErrorKind::BadRequest | ErrorKind::InvalidComponent => 400,
        ErrorKind::TooLarge => 413,
        ErrorKind::MailboxFull => 429,
        ErrorKind::Timeout => 504,
        ErrorKind::Trapped | ErrorKind::Rejected => 502,
        ErrorKind::QuotaExceeded => 507,
        ErrorKind::Unavailable | ErrorKind::NotLeader => 503,
        ErrorKind::Unauthorized => 401,
        ErrorKind::Internal => 500,
        ErrorKind::KeyReused => 422,
    }
}

/// A component named `fail-<kind>` makes every call on it fail with that kind.
fn failing_kind(name: &str) -> Option<ErrorKind> {
    let kind = name.strip_prefix("fail-")?;
    ALL_KINDS.into_iter().find(|k| k.as_str() == kind)
}

#[derive(Debug, Clone, PartialEq)]
struct Received {
    name: String,
    payload: Vec<u8>,
    delivery: Delivery,
}

#[derive(Default)]
struct Fake {
    components: Mutex<BTreeMap<String, ComponentInfo>>,
    sent: Mutex<Vec<Received>>,
    last_timeout: Mutex<Option<Duration>>,
    last_key: Mutex<Option<String>>,
    not_ready: AtomicBool,
}

impl Fake {
    fn check(&self, name: &str) -> Result<(), ApiError> {
        match failing_kind(name) {
            Some(kind) => Err(ApiError::new(kind, format!("{kind} injected for {name}"))),
            None => Ok(()),
        }
    }
    fn get(&self, name: &str) -> Result<ComponentInfo, ApiError> {
        self.check(name)?;
        self.components
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::new(ErrorKind::NotFound, format!("no component named {name}")))
    }
}

impl AdminBackend for Fake {
    async fn install(&self, req: InstallRequest) -> Result<ComponentInfo, ApiError> {
        self.check(&req.name)?;
        let mut map = self.components.lock().unwrap();
        if map.contains_key(&req.name) {
            return Err(ApiError::new(
                ErrorKind::AlreadyExists,
                format!("{} is already installed", req.name),
            ));
        }
        let info = ComponentInfo {
            name: req.name.clone(),
            sha256: format!("{:064x}", req.binary.iter().map(|b| *b as u64).sum::<u64>()),
            size_bytes: req.binary.len() as u64,
            limits: Limits::resolve(&req.limits, &DEFAULT_LIMITS),
            node_id: 1,
            generation: 1,
            state: ComponentState::Running,
            mailbox_depth: 0,
            storage_bytes: 0,
            restarts: 0,
            installed_at_ms: 42,
            log_lines_dropped: 0,
            upgraded_at_ms: None,
            previous: None,
        };
        map.insert(req.name, info.clone());
        Ok(info)
    }
    async fn list(&self) -> Result<Vec<ComponentInfo>, ApiError> {
        Ok(self.components.lock().unwrap().values().cloned().collect())
    }
    async fn describe(&self, name: &str) -> Result<ComponentInfo, ApiError> {
        self.get(name)
    }
    async fn remove(&self, name: &str) -> Result<(), ApiError> {
        self.check(name)?;
        self.components
            .lock()
            .unwrap()
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| ApiError::new(ErrorKind::NotFound, format!("no component named {name}")))
    }
    async fn send(
        &self,
        name: &str,
        payload: Vec<u8>,
        delivery: Delivery,
        key: Option<String>,
    ) -> Result<(), ApiError> {
        self.get(name)?;
        *self.last_key.lock().unwrap() = key;
        self.sent.lock().unwrap().push(Received {
            name: name.into(),
            payload,
            delivery,
        });
        Ok(())
    }
    async fn request(
        &self,
        name: &str,
        payload: Vec<u8>,
        timeout: Duration,
        delivery: Delivery,
        key: Option<String>,
    ) -> Result<Vec<u8>, ApiError> {
        self.get(name)?;
        *self.last_key.lock().unwrap() = key;
        *self.last_timeout.lock().unwrap() = Some(timeout);
        // The reply: the payload reversed, then the delivery class.
        let mut reply: Vec<u8> = payload.into_iter().rev().collect();
        reply.push(match delivery {
            Delivery::Durable => b'D',
            Delivery::Fast => b'F',
        });
        Ok(reply)
    }
    async fn status(&self) -> Result<NodeStatus, ApiError> {
        Ok(NodeStatus {
            node_id: 1,
            admin_addr: "127.0.0.1:0".into(),
            version: "test".into(),
            components: self.components.lock().unwrap().len() as u64,
            uptime_ms: 1234,
        })
    }
    async fn metrics(&self) -> String {
        "# TYPE airssys_components gauge\nairssys_components 0\n".into()
    }
    async fn ready(&self) -> bool {
        !self.not_ready.load(Ordering::SeqCst)
    }
}

struct Server {
    url: String,
    backend: Arc<Fake>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start() -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let backend = Arc::new(Fake::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(admin::serve(
            listener,
            backend.clone(),
            AdminAuth::new(TOKEN),
            async move {
                let _ = stopped.await;
            },
        ));
        Server {
            url,
            backend,
            stop: Some(stop),
            task,
        }
    }
    fn client(&self) -> AdminClient {
        AdminClient::new(&self.url, Some(TOKEN.into())).unwrap()
    }
    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

fn raw() -> reqwest::Client {
    airssys_node::client::install_crypto_provider();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn api_error(resp: reqwest::Response) -> ApiError {
    let body = resp.bytes().await.unwrap();
    serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("not an ApiError ({e}): {}", String::from_utf8_lossy(&body)))
}

fn expect_api(result: Result<impl std::fmt::Debug, ClientError>) -> ApiError {
    match result {
        Err(ClientError::Api(e)) => e,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn auth_is_required_except_for_healthz() {
    let server = Server::start().await;
    let http = raw();

    let resp = http
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "ok");

    for path in [
        "/v1/components",
        "/v1/status",
        "/readyz",
        "/metrics",
        "/v1/components/x",
    ] {
        let resp = http
            .get(format!("{}{path}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        assert_eq!(
            resp.headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap()),
            Some("Bearer")
        );
        let e = api_error(resp).await;
        assert_eq!(
            e,
            ApiError::new(
                ErrorKind::Unauthorized,
                "missing bearer token: pass --token or set AIRSSYS_TOKEN"
            )
        );
    }

    let resp = http
        .get(format!("{}/v1/components", server.url))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(api_error(resp).await.message, "wrong bearer token");

    // An unauthenticated install is refused before anything reaches the backend.
    let resp = http
        .put(format!("{}/v1/components/sneaky", server.url))
        .body(vec![1u8; 100])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(server.backend.components.lock().unwrap().is_empty());

    // The client without a token, and with a wrong one, gets the same errors.
    let anon = AdminClient::new(&server.url, None).unwrap();
    let e = expect_api(anon.list().await);
    assert_eq!(e.error, ErrorKind::Unauthorized);
    assert!(e.message.contains("missing bearer token"));
    let wrong = AdminClient::new(&server.url, Some("nope".into())).unwrap();
    assert_eq!(
        expect_api(wrong.status().await).message,
        "wrong bearer token"
    );
    // Even with a large body the answer is the 401, not a broken connection.
    let e = expect_api(
        wrong
            .install(
                "big",
                vec![0u8; 20 * 1024 * 1024],
                &LimitsRequest::default(),
            )
            .await,
    );
    assert_eq!(e.error, ErrorKind::Unauthorized);

    // With the token it works.
    let ok = http
        .get(format!("{}/v1/components", server.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    server.shutdown().await;
}

#[tokio::test]
async fn install_list_describe_remove_roundtrip() {
    let server = Server::start().await;
    let client = server.client();
    assert!(client.list().await.unwrap().is_empty());

    let limits = LimitsRequest {
        memory_mb: Some(32),
        deadline_ms: Some(500),
        mailbox: Some(8),
        quota_mb: Some(1),
        fuel: Some(1_000_000),
    };
    let binary = vec![0u8, 97, 115, 109, 1, 0, 0, 0];
    let info = client
        .install("counter", binary.clone(), &limits)
        .await
        .unwrap();
    assert_eq!(info.name, "counter");
    assert_eq!(info.size_bytes, binary.len() as u64);
    assert_eq!(
        info.limits,
        Limits {
            memory_mb: 32,
            deadline_ms: 500,
            mailbox: 8,
            quota_mb: 1,
            fuel: Some(1_000_000)
        }
    );
    // Limits not given take the defaults.
    let info2 = client
        .install("echo", vec![1, 2, 3], &LimitsRequest::default())
        .await
        .unwrap();
    assert_eq!(info2.limits, DEFAULT_LIMITS);

    let names: Vec<String> = client
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["counter", "echo"]);
    assert_eq!(client.describe("counter").await.unwrap(), info);

    let e = expect_api(
        client
            .install("counter", vec![1], &LimitsRequest::default())
            .await,
    );
    assert_eq!(e.error, ErrorKind::AlreadyExists);

    let status = client.status().await.unwrap();
    assert_eq!(status.components, 2);

    client.remove("counter").await.unwrap();
    let e = expect_api(client.describe("counter").await);
    assert_eq!(
        e,
        ApiError::new(ErrorKind::NotFound, "no component named counter")
    );
    assert_eq!(
        expect_api(client.remove("counter").await).error,
        ErrorKind::NotFound
    );
    assert_eq!(client.list().await.unwrap().len(), 1);

    // Raw HTTP: the statuses of success.
    let http = raw();
    let resp = http
        .put(format!("{}/v1/components/raw?memory_mb=16", server.url))
        .bearer_auth(TOKEN)
        .body(vec![9u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let info: ComponentInfo = resp.json().await.unwrap();
    assert_eq!(info.limits.memory_mb, 16);
    let resp = http
        .delete(format!("{}/v1/components/raw", server.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    server.shutdown().await;
}

#[tokio::test]
async fn every_error_kind_maps_to_its_status_and_back() {
    let server = Server::start().await;
    let client = server.client();
    let http = raw();
    for kind in ALL_KINDS {
        let name = format!("fail-{kind}");
        let want = ApiError::new(kind, format!("{kind} injected for {name}"));

        let resp = http
            .get(format!("{}/v1/components/{name}", server.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), expected_status(kind), "{kind}");
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        assert_eq!(api_error(resp).await, want, "{kind}");

        assert_eq!(expect_api(client.describe(&name).await), want, "{kind}");
        assert_eq!(
            expect_api(
                client
                    .install(&name, vec![1], &LimitsRequest::default())
                    .await
            ),
            want
        );
        assert_eq!(expect_api(client.remove(&name).await), want);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn messages_and_requests_carry_bytes_exactly() {
    let server = Server::start().await;
    let client = server.client();
    client
        .install("echo", vec![1], &LimitsRequest::default())
        .await
        .unwrap();

    // Not UTF-8, with NULs and a trailing newline.
    let payload: Vec<u8> = vec![0xff, 0x00, 0xfe, b'a', 0x80, 0x00, b'\n'];
    let reply = client
        .request("echo", payload.clone(), 1500, Delivery::Fast)
        .await
        .unwrap();
    let mut want: Vec<u8> = payload.iter().rev().copied().collect();
    want.push(b'F');
    assert_eq!(reply, want);
    assert_eq!(
        *server.backend.last_timeout.lock().unwrap(),
        Some(Duration::from_millis(1500))
    );

    // Every byte value survives the trip.
    let all: Vec<u8> = (0..=255u8).collect();
    let reply = client
        .request("echo", all.clone(), 5000, Delivery::Durable)
        .await
        .unwrap();
    assert_eq!(
        &reply[..256],
        all.iter().rev().copied().collect::<Vec<_>>().as_slice()
    );
    assert_eq!(reply[256], b'D');

    // An idempotency key reaches the backend as given; a bad one is refused at the door.
    let keyed = client
        .request_with_key(
            "echo",
            vec![7],
            1500,
            Delivery::Durable,
            Some("order-7.a:1"),
        )
        .await
        .unwrap();
    assert_eq!(keyed, vec![7, b'D']);
    assert_eq!(
        server.backend.last_key.lock().unwrap().as_deref(),
        Some("order-7.a:1")
    );
    client
        .request("echo", vec![7], 1500, Delivery::Durable)
        .await
        .unwrap();
    assert_eq!(*server.backend.last_key.lock().unwrap(), None);
    // A send's key too.
    client
        .send_with_key("echo", vec![8], Delivery::Durable, Some("send-8"))
        .await
        .unwrap();
    assert_eq!(
        server.backend.last_key.lock().unwrap().as_deref(),
        Some("send-8")
    );
    let keyed_sent = std::mem::take(&mut *server.backend.sent.lock().unwrap());
    assert_eq!(keyed_sent.len(), 1);
    assert_eq!(keyed_sent[0].payload, vec![8]);
    let resp = raw()
        .post(format!("{}/v1/components/echo/messages", server.url))
        .bearer_auth(TOKEN)
        .header("idempotency-key", "a/b")
        .body(vec![1u8])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "a bad key on a send");
    for bad in ["a/b", "~fwd:1:x", &"k".repeat(129)] {
        let resp = raw()
            .post(format!("{}/v1/components/echo/requests", server.url))
            .bearer_auth(TOKEN)
            .header("idempotency-key", bad)
            .body(vec![1u8])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{bad:?}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "bad-request", "{bad:?}");
    }

    // Raw: 200 with octet-stream, default timeout and delivery.
    let resp = raw()
        .post(format!("{}/v1/components/echo/requests", server.url))
        .bearer_auth(TOKEN)
        .body(vec![1u8, 2])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &[2u8, 1, b'D']);
    assert_eq!(
        *server.backend.last_timeout.lock().unwrap(),
        Some(Duration::from_millis(5000))
    );

    client
        .send("echo", payload.clone(), Delivery::Durable)
        .await
        .unwrap();
    client.send("echo", vec![], Delivery::Fast).await.unwrap();
    assert_eq!(
        *server.backend.sent.lock().unwrap(),
        vec![
            Received {
                name: "echo".into(),
                payload: payload.clone(),
                delivery: Delivery::Durable
            },
            Received {
                name: "echo".into(),
                payload: vec![],
                delivery: Delivery::Fast
            },
        ]
    );
    let resp = raw()
        .post(format!(
            "{}/v1/components/echo/messages?delivery=fast",
            server.url
        ))
        .bearer_auth(TOKEN)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"accepted": true})
    );

    let e = expect_api(client.send("nobody", vec![1], Delivery::Durable).await);
    assert_eq!(e.error, ErrorKind::NotFound);
    let e = expect_api(
        client
            .request("fail-timeout", vec![1], 10, Delivery::Durable)
            .await,
    );
    assert_eq!(e.error, ErrorKind::Timeout);
    server.shutdown().await;
}

#[tokio::test]
async fn oversized_bodies_are_too_large() {
    let server = Server::start().await;
    let client = server.client();
    client
        .install("echo", vec![1], &LimitsRequest::default())
        .await
        .unwrap();
    let http = raw();

    // Exactly at the cap is fine.
    let reply = client
        .request(
            "echo",
            vec![7u8; MAX_PAYLOAD_BYTES],
            5000,
            Delivery::Durable,
        )
        .await
        .unwrap();
    assert_eq!(reply.len(), MAX_PAYLOAD_BYTES + 1);

    for path in ["messages", "requests"] {
        let resp = http
            .post(format!("{}/v1/components/echo/{path}", server.url))
            .bearer_auth(TOKEN)
            .body(vec![7u8; MAX_PAYLOAD_BYTES + 1])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 413, "{path}");
        let e = api_error(resp).await;
        assert_eq!(e.error, ErrorKind::TooLarge);
        assert_eq!(e.message, "payload is larger than the 1 MiB limit");
    }
    assert!(server.backend.sent.lock().unwrap().is_empty());

    // The client refuses before sending, with the same error.
    let e = expect_api(
        client
            .send("echo", vec![0u8; MAX_PAYLOAD_BYTES + 1], Delivery::Fast)
            .await,
    );
    assert_eq!(e.error, ErrorKind::TooLarge);

    // Installs: 64 MiB + 1 is refused by the server.
    let resp = http
        .put(format!("{}/v1/components/big", server.url))
        .bearer_auth(TOKEN)
        .body(vec![0u8; MAX_BINARY_BYTES + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let e = api_error(resp).await;
    assert_eq!(e.error, ErrorKind::TooLarge);
    assert!(e.message.contains("64 MiB"), "{}", e.message);
    assert!(!server
        .backend
        .components
        .lock()
        .unwrap()
        .contains_key("big"));
    server.shutdown().await;
}

#[tokio::test]
async fn large_install_within_the_cap_is_accepted() {
    let server = Server::start().await;
    let client = server.client();
    // Over axum's 2 MiB default body limit, well under ours.
    let info = client
        .install(
            "big",
            vec![1u8; 20 * 1024 * 1024],
            &LimitsRequest::default(),
        )
        .await
        .unwrap();
    assert_eq!(info.size_bytes, 20 * 1024 * 1024);
    server.shutdown().await;
}

#[tokio::test]
async fn bad_queries_and_names_are_bad_requests() {
    let server = Server::start().await;
    let client = server.client();
    client
        .install("echo", vec![1], &LimitsRequest::default())
        .await
        .unwrap();
    let http = raw();
    let cases = [
        ("PUT", "/v1/components/x?memory_mb=lots", "memory_mb"),
        ("PUT", "/v1/components/x?deadline_ms=0", "deadline_ms"),
        ("PUT", "/v1/components/x?mailbox=-3", "mailbox"),
        ("PUT", "/v1/components/x?fuel=1.5", "fuel"),
        ("PUT", "/v1/components/x?memroy_mb=1", "memroy_mb"),
        (
            "POST",
            "/v1/components/echo/messages?delivery=eventually",
            "delivery",
        ),
        (
            "POST",
            "/v1/components/echo/requests?timeout_ms=soon",
            "timeout_ms",
        ),
        (
            "POST",
            "/v1/components/echo/requests?timeout_ms=0",
            "timeout_ms",
        ),
    ];
    for (method, path, param) in cases {
        let resp = http
            .request(method.parse().unwrap(), format!("{}{path}", server.url))
            .bearer_auth(TOKEN)
            .body(vec![1u8])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{path}");
        let e = api_error(resp).await;
        assert_eq!(e.error, ErrorKind::BadRequest, "{path}");
        assert!(
            e.message.contains(&format!("`{param}`")),
            "{path}: {}",
            e.message
        );
    }
    assert!(!server.backend.components.lock().unwrap().contains_key("x"));

    // Invalid names are refused before the backend sees them.
    for name in ["Upper", "-dash", "a_b"] {
        let e = expect_api(
            client
                .install(name, vec![1], &LimitsRequest::default())
                .await,
        );
        assert_eq!(e.error, ErrorKind::InvalidName, "{name}");
    }
    let e = expect_api(
        client
            .install(&"a".repeat(64), vec![1], &LimitsRequest::default())
            .await,
    );
    assert_eq!(e.error, ErrorKind::InvalidName);

    // An empty install body is an invalid component, not a crash.
    let e = expect_api(
        client
            .install("empty", vec![], &LimitsRequest::default())
            .await,
    );
    assert_eq!(e.error, ErrorKind::InvalidComponent);

    // Unknown routes and methods answer JSON too.
    let resp = http
        .get(format!("{}/v2/nothing", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(api_error(resp).await.error, ErrorKind::NotFound);
    let resp = http
        .post(format!("{}/v1/status", server.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(api_error(resp).await.error, ErrorKind::BadRequest);
    server.shutdown().await;
}

#[tokio::test]
async fn status_readiness_and_metrics() {
    let server = Server::start().await;
    let client = server.client();
    let st = client.status().await.unwrap();
    assert_eq!(
        (st.node_id, st.version.as_str(), st.uptime_ms),
        (1, "test", 1234)
    );
    assert!(client.ready().await.unwrap());
    server.backend.not_ready.store(true, Ordering::SeqCst);
    assert!(!client.ready().await.unwrap());
    let resp = raw()
        .get(format!("{}/readyz", server.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(api_error(resp).await.error, ErrorKind::Unavailable);

    let resp = raw()
        .get(format!("{}/metrics", server.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert!(resp.text().await.unwrap().contains("airssys_components 0"));
    assert!(client
        .metrics()
        .await
        .unwrap()
        .contains("# TYPE airssys_components gauge"));
    server.shutdown().await;
}

#[tokio::test]
async fn client_reports_an_unreachable_node_clearly() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = AdminClient::new(&format!("http://{addr}"), Some(TOKEN.into())).unwrap();
    let err = client.list().await.unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "cannot reach airssys node at http://{addr}: connection refused"
        )),
        "{msg}"
    );
    assert!(msg.contains("airssys node start"), "{msg}");
    assert_eq!(err.kind_name(), "unreachable");
}

/// Install bodies are held in memory whole, so a node takes at most
/// `MAX_CONCURRENT_INSTALLS` at once: with that many uploads under way (bodies announced
/// large and still coming), one more is refused at once as `unavailable`, before its body
/// is read; once they end, installs go through again.
#[tokio::test]
async fn concurrent_install_uploads_are_capped() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start().await;
    let addr = server.url.trim_start_matches("http://").to_string();
    let mut uploads = Vec::new();
    for i in 0..admin::MAX_CONCURRENT_INSTALLS {
        let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "PUT /v1/components/slow{i} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\
             content-length: 10000000\r\n\r\n"
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        conn.write_all(&[0u8; 1024]).await.unwrap();
        uploads.push(conn);
    }
    let client = server.client();
    // The slow uploads hold every slot once their heads are in.
    let refused = timeout_loop(|| async {
        match client
            .install("one-more", vec![1], &LimitsRequest::default())
            .await
        {
            Err(ClientError::Api(e)) if e.error == ErrorKind::Unavailable => Some(e),
            _ => None,
        }
    })
    .await;
    assert!(
        refused.message.contains("installs are being uploaded"),
        "{}",
        refused.message
    );
    assert!(!server
        .backend
        .components
        .lock()
        .unwrap()
        .contains_key("one-more"));

    drop(uploads);
    timeout_loop(|| async {
        client
            .install("after", vec![1], &LimitsRequest::default())
            .await
            .ok()
    })
    .await;
    server.shutdown().await;
}

/// Tries `check` until it gives a value (at most 10 s).
async fn timeout_loop<T, F, Fut>(mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = std::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "gave up waiting"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
