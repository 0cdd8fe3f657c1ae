//! Node processes for multi-node tests: certificates from `airssys cert`, nodes started
//! with `--join`, the CLI against any node, raw HTTP for headers and status codes.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "cluster-test-token";
/// Upper bound for conditions that must become true (never a timing assertion).
pub const PATIENCE: Duration = Duration::from_secs(90);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_airssys")
}

pub fn free_tcp() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn free_udp() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn run(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

pub fn must(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < PATIENCE, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub struct Node {
    pub id: u64,
    child: Option<Child>,
    pub endpoint: String,
    pub peer: String,
    pub log: PathBuf,
    /// How it was started, to start it again on the same addresses and data.
    data: PathBuf,
    tls: PathBuf,
    join: Option<String>,
    env: Vec<(String, String)>,
    admin: u16,
    starts: u32,
}

impl Node {
    pub fn start(dir: &Path, id: u64, tls: &Path, join: Option<&str>) -> Node {
        Node::start_with_env(dir, id, tls, join, &[])
    }

    pub fn start_with_env(
        dir: &Path,
        id: u64,
        tls: &Path,
        join: Option<&str>,
        env: &[(&str, &str)],
    ) -> Node {
        let admin = free_tcp();
        let peer = format!("127.0.0.1:{}", free_udp());
        let mut node = Node {
            id,
            child: None,
            endpoint: format!("http://127.0.0.1:{admin}"),
            peer,
            log: dir.join(format!("node{id}.log")),
            data: dir.join(format!("data{id}")),
            tls: tls.to_path_buf(),
            join: join.map(str::to_string),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            admin,
            starts: 0,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        // Each start logs to its own file (node<id>.log, node<id>.2.log, ...).
        self.starts += 1;
        if self.starts > 1 {
            let name = format!("node{}.{}.log", self.id, self.starts);
            self.log = self.log.with_file_name(name);
        }
        let mut cmd = Command::new(bin());
        cmd.args(["node", "start", "--data-dir"])
            .arg(&self.data)
            .args(["--node-id", &self.id.to_string()])
            .args(["--admin", &format!("127.0.0.1:{}", self.admin)])
            .args(["--peer", &self.peer, "--token", TOKEN, "--tls-dir"])
            .arg(&self.tls)
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&self.log).unwrap());
        if let Some(seed) = &self.join {
            cmd.args(["--join", seed]);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().unwrap());
    }

    /// Starts the node again (after `kill`) on the same addresses and data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Kills the node, deletes its data directory, and starts it again: a replacement
    /// with the same identity and addresses but nothing stored.
    pub fn wipe_and_restart(&mut self) {
        self.kill();
        std::fs::remove_dir_all(&self.data).unwrap();
        self.spawn();
    }

    /// Freezes the process (SIGSTOP): it keeps its sockets but answers nothing.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{sig} {pid}");
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .args(args)
            .env("AIRSSYS_ENDPOINT", &self.endpoint)
            .env("AIRSSYS_TOKEN", TOKEN)
            .output()
            .unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        must(
            self.cli(args),
            &format!("airssys {args:?} on node {}", self.id),
        )
    }

    pub fn status(&self) -> Option<serde_json::Value> {
        let out = self.cli(&["cluster", "status", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() || std::env::var("AIRSSYS_TEST_COPY_LOGS").is_ok() {
            let _ = std::fs::copy(
                &self.log,
                format!("/tmp/airssys-node{}-{}.log", self.id, self.starts),
            );
            // A failing test shows what each node said last.
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let head = lines[..lines.len().min(30)].join("\n");
            let tail = lines[lines.len().saturating_sub(30).max(30.min(lines.len()))..].join("\n");
            eprintln!(
                "---- node {} log ({}):\n{head}\n[...]\n{tail}",
                self.id,
                self.log.display()
            );
        }
    }
}

/// A plain HTTP/1.1 GET: (status code, body).
pub fn http_get(endpoint: &str, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// A plain HTTP/1.1 POST: (status code, response head, body).
pub fn http_post(endpoint: &str, path: &str, token: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    use std::io::{Read, Write};
    let addr = endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let code = head[9..12].parse().unwrap();
    (code, head, raw[split + 4..].to_vec())
}

pub fn make_certs(dir: &Path, ca_name: &str, ids: &[u64]) -> Vec<PathBuf> {
    let ca = dir.join(ca_name);
    must(
        run(&[
            "cert",
            "ca",
            "--out",
            ca.to_str().unwrap(),
            "--name",
            ca_name,
        ]),
        "cert ca",
    );
    ids.iter()
        .map(|id| {
            let out = dir.join(format!("{ca_name}-node{id}"));
            must(
                run(&[
                    "cert",
                    "node",
                    "--ca-dir",
                    ca.to_str().unwrap(),
                    "--node-id",
                    &id.to_string(),
                    "--host",
                    "127.0.0.1",
                    "--out",
                    out.to_str().unwrap(),
                ]),
                "cert node",
            );
            out
        })
        .collect()
}

/// Three nodes on `dir` with certificates from one CA (`prod`): node 1 starts the
/// cluster, 2 and 3 join it; returns once every node sees three live voters. Also the
/// certificate directories, to start more nodes of the same cluster.
pub fn three_nodes(dir: &Path) -> (Vec<Node>, Vec<PathBuf>) {
    let tls = make_certs(dir, "prod", &[1, 2, 3]);
    let n1 = Node::start(dir, 1, &tls[0], None);
    wait_for("node 1 to lead", || alive_voters(&n1).filter(|v| v == &[1]));
    let n2 = Node::start(dir, 2, &tls[1], Some(&n1.peer));
    let n3 = Node::start(dir, 3, &tls[2], Some(&n1.peer));
    let nodes = vec![n1, n2, n3];
    for n in &nodes {
        wait_for("three live voters seen from every node", || {
            alive_voters(n).filter(|v| v == &[1, 2, 3])
        });
    }
    (nodes, tls)
}

/// Voter ids that the leader reports alive, once there is a leader.
pub fn alive_voters(node: &Node) -> Option<Vec<u64>> {
    let s = node.status()?;
    s["leader"].as_u64()?;
    let mut ids: Vec<u64> = s["nodes"]
        .as_array()?
        .iter()
        .filter(|n| n["voter"] == true && n["alive"] == true)
        .filter_map(|n| n["id"].as_u64())
        .collect();
    ids.sort();
    Some(ids)
}

pub fn owner_of(node: &Node, name: &str) -> u64 {
    let info: serde_json::Value =
        serde_json::from_str(&node.ok(&["component", "describe", name, "--json"])).unwrap();
    info["node_id"].as_u64().unwrap()
}

/// A request through the admin API that never panics: `Ok(reply)` on 200, `Err(why)`
/// otherwise (refused connection, error status, dead node). `delivery` is `durable` or
/// `fast`.
pub fn admin_request(
    endpoint: &str,
    name: &str,
    text: &str,
    delivery: &str,
    timeout_ms: u64,
) -> Result<String, String> {
    admin_request_keyed(endpoint, name, text, delivery, timeout_ms, None)
}

/// [`admin_request`] with an `Idempotency-Key` header when `key` is given.
pub fn admin_request_keyed(
    endpoint: &str,
    name: &str,
    text: &str,
    delivery: &str,
    timeout_ms: u64,
    key: Option<&str>,
) -> Result<String, String> {
    use std::io::{Read, Write};
    let key_header = key
        .map(|k| format!("Idempotency-Key: {k}\r\n"))
        .unwrap_or_default();
    let addr = endpoint.trim_start_matches("http://").to_string();
    let path =
        format!("/v1/components/{name}/requests?delivery={delivery}&timeout_ms={timeout_ms}");
    let mut s = std::net::TcpStream::connect(&addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_millis(timeout_ms + 20_000)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n{key_header}\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP head")?;
    if head.get(9..12) == Some("200") {
        Ok(body.to_string())
    } else {
        Err(format!("{}: {body}", head.lines().next().unwrap_or("")))
    }
}
