//! The `airssys` binary against an admin API served by a small in-memory fake backend:
//! output formats, raw reply bytes, token lookup and exit codes.
#![allow(clippy::unwrap_used)]

use airssys_node::admin::{self, AdminAuth};
use airssys_node::api::{
    AdminBackend, ApiError, ComponentInfo, ComponentState, Delivery, ErrorKind, InstallRequest,
    Limits, NodeStatus,
};
use airssys_node::config::{DEFAULT_LIMITS, TOKEN_FILE};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "cli-test-token";

#[derive(Default)]
struct Fake {
    components: Mutex<BTreeMap<String, ComponentInfo>>,
    sent: Mutex<Vec<(String, Vec<u8>, Delivery)>>,
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(ErrorKind::NotFound, format!("no component named {name}"))
}

impl AdminBackend for Fake {
    async fn install(&self, req: InstallRequest) -> Result<ComponentInfo, ApiError> {
        let info = ComponentInfo {
            name: req.name.clone(),
            sha256: "ab".repeat(32),
            size_bytes: req.binary.len() as u64,
            limits: Limits::resolve(&req.limits, &DEFAULT_LIMITS),
            node_id: 1,
            generation: 4,
            state: ComponentState::Running,
            mailbox_depth: 0,
            storage_bytes: 2048,
            restarts: 0,
            installed_at_ms: 0,
            log_lines_dropped: 0,
            upgraded_at_ms: None,
            previous: None,
        };
        self.components
            .lock()
            .unwrap()
            .insert(req.name, info.clone());
        Ok(info)
    }
    async fn list(&self) -> Result<Vec<ComponentInfo>, ApiError> {
        Ok(self.components.lock().unwrap().values().cloned().collect())
    }
    async fn describe(&self, name: &str) -> Result<ComponentInfo, ApiError> {
        self.components
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .ok_or_else(|| not_found(name))
    }
    async fn remove(&self, name: &str) -> Result<(), ApiError> {
        self.components
            .lock()
            .unwrap()
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| not_found(name))
    }
    async fn send(
        &self,
        name: &str,
        payload: Vec<u8>,
        delivery: Delivery,
        _key: Option<String>,
    ) -> Result<(), ApiError> {
        self.describe(name).await?;
        self.sent
            .lock()
            .unwrap()
            .push((name.to_string(), payload, delivery));
        Ok(())
    }
    async fn request(
        &self,
        name: &str,
        payload: Vec<u8>,
        _timeout: Duration,
        _delivery: Delivery,
        _key: Option<String>,
    ) -> Result<Vec<u8>, ApiError> {
        if name == "slow" {
            return Err(ApiError::new(ErrorKind::Timeout, "no reply within 10 ms"));
        }
        self.describe(name).await?;
        Ok(payload)
    }
    async fn status(&self) -> Result<NodeStatus, ApiError> {
        Ok(NodeStatus {
            node_id: 9,
            admin_addr: "127.0.0.1:7070".into(),
            version: "0.1.0".into(),
            components: self.components.lock().unwrap().len() as u64,
            uptime_ms: 65_000,
        })
    }
    async fn metrics(&self) -> String {
        String::new()
    }
    async fn cluster_status(&self) -> Result<airssys_cluster::ClusterStatus, ApiError> {
        Ok(airssys_cluster::ClusterStatus {
            reported_by: 9,
            leader: Some(9),
            term: 4,
            commit_index: 17,
            nodes: vec![airssys_cluster::MemberStatus {
                id: 9,
                peer_addr: "127.0.0.1:7071".into(),
                admin_addr: "127.0.0.1:7070".into(),
                voter: true,
                alive: Some(true),
            }],
            components: Vec::new(),
        })
    }
    async fn ready(&self) -> bool {
        true
    }
}

struct Node {
    endpoint: String,
    backend: Arc<Fake>,
    cwd: tempfile::TempDir,
}

async fn node() -> Node {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let backend = Arc::new(Fake::default());
    tokio::spawn(admin::serve(
        listener,
        backend.clone(),
        AdminAuth::new(TOKEN),
        std::future::pending(),
    ));
    Node {
        endpoint,
        backend,
        cwd: tempfile::tempdir().unwrap(),
    }
}

struct Out {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

impl Node {
    /// Runs the binary in this node's scratch directory, with `--endpoint` set.
    async fn run(&self, args: &[&str], token: Option<&str>) -> Out {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_airssys"));
        cmd.args(args)
            .current_dir(self.cwd.path())
            .env("AIRSSYS_ENDPOINT", &self.endpoint)
            .env_remove("AIRSSYS_TOKEN");
        if let Some(t) = token {
            cmd.env("AIRSSYS_TOKEN", t);
        }
        let out = cmd.output().await.unwrap();
        Out {
            code: out.status.code(),
            stdout: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.cwd.path().join(rel)
    }
}

fn stdout(o: &Out) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn component_commands_and_outputs() {
    let n = node().await;
    std::fs::write(n.path("c.wasm"), [0u8, 97, 115, 109]).unwrap();

    let o = n
        .run(
            &[
                "component",
                "install",
                "counter",
                "c.wasm",
                "--memory-mb",
                "16",
            ],
            Some(TOKEN),
        )
        .await;
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(
        stdout(&o).starts_with("installed counter (sha256 abababababab"),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        n.backend.components.lock().unwrap()["counter"]
            .limits
            .memory_mb,
        16
    );

    let o = n.run(&["component", "list"], Some(TOKEN)).await;
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let table = stdout(&o);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{table}");
    assert!(lines[1].starts_with("counter"), "{table}");
    assert!(
        lines[1].contains("running") && lines[1].contains("2.0 KiB"),
        "{table}"
    );

    let o = n.run(&["component", "list", "--json"], Some(TOKEN)).await;
    let list: Vec<ComponentInfo> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name, "counter");

    let o = n
        .run(&["component", "describe", "counter", "--json"], Some(TOKEN))
        .await;
    let info: ComponentInfo = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info.generation, 4);

    let o = n.run(&["component", "describe", "nope"], Some(TOKEN)).await;
    assert_eq!(o.code, Some(3));
    assert_eq!(
        o.stderr.trim_end(),
        "error: not-found: no component named nope"
    );
    assert!(o.stdout.is_empty());

    let o = n
        .run(&["component", "remove", "counter"], Some(TOKEN))
        .await;
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(n.backend.components.lock().unwrap().is_empty());

    let o = n.run(&["cluster", "members", "--json"], Some(TOKEN)).await;
    let members: Vec<airssys_cluster::MemberStatus> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].id, 9);
    let o = n.run(&["cluster", "status"], Some(TOKEN)).await;
    assert!(stdout(&o).contains("term"), "{}", stdout(&o));
    assert!(stdout(&o).contains("leader"), "{}", stdout(&o));
    let o = n.run(&["node", "status"], Some(TOKEN)).await;
    assert!(stdout(&o).contains("1m 5s"), "{}", stdout(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_writes_reply_bytes_raw_and_send_reads_files() {
    let n = node().await;
    n.backend
        .install(InstallRequest {
            name: "echo".into(),
            binary: vec![1],
            limits: Default::default(),
        })
        .await
        .unwrap();
    let payload = [0xffu8, 0x00, 0x80, b'x'];
    std::fs::write(n.path("p.bin"), payload).unwrap();
    let o = n.run(&["request", "echo", "@p.bin"], Some(TOKEN)).await;
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    // Not a terminal: exactly the reply, no newline added.
    assert_eq!(o.stdout, payload);

    let o = n
        .run(&["send", "echo", "@@hi", "--fast"], Some(TOKEN))
        .await;
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let o = n.run(&["send", "echo", "@p.bin"], Some(TOKEN)).await;
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert_eq!(
        *n.backend.sent.lock().unwrap(),
        vec![
            ("echo".to_string(), b"@hi".to_vec(), Delivery::Fast),
            ("echo".to_string(), payload.to_vec(), Delivery::Durable),
        ]
    );

    let o = n
        .run(&["request", "slow", "x", "--timeout-ms", "10"], Some(TOKEN))
        .await;
    assert_eq!(o.code, Some(4));
    assert!(o.stderr.starts_with("error: timeout: "), "{}", o.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_comes_from_flag_env_or_local_token_file() {
    let n = node().await;
    let o = n.run(&["component", "list"], None).await;
    assert_eq!(o.code, Some(6));
    assert!(
        o.stderr
            .starts_with("error: unauthorized: missing bearer token"),
        "{}",
        o.stderr
    );
    let o = n.run(&["component", "list"], Some("wrong")).await;
    assert_eq!(o.code, Some(6));
    assert!(o.stderr.contains("wrong bearer token"), "{}", o.stderr);

    let o = n.run(&["component", "list", "--token", TOKEN], None).await;
    assert_eq!(o.code, Some(0), "{}", o.stderr);

    // ./airssys-data/admin-token, as a local node writes it.
    let data = n.path("airssys-data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(Path::new(&data).join(TOKEN_FILE), format!("{TOKEN}\n")).unwrap();
    let o = n.run(&["component", "list"], None).await;
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert_eq!(stdout(&o), "no components installed\n");
}
