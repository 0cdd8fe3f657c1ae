//! The `airssys` binary end to end: a real node process, the real example components,
//! driven only through the CLI as a user would, including a node restart.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "e2e-secret-token";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_airssys")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Node {
    child: Child,
    endpoint: String,
}

impl Node {
    fn start(data: &Path, port: u16) -> Node {
        let child = Command::new(bin())
            .args(["node", "start", "--data-dir"])
            .arg(data)
            .args(["--admin", &format!("127.0.0.1:{port}"), "--token", TOKEN])
            .args(["--peer", &format!("127.0.0.1:{}", free_udp_port())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let node = Node {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let start = Instant::now();
        while !node.cli(&["cluster", "status"]).status.success() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "node did not come up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        node
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .args(args)
            .env("AIRSSYS_ENDPOINT", &self.endpoint)
            .env("AIRSSYS_TOKEN", TOKEN)
            .output()
            .unwrap()
    }

    /// Runs a command that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "airssys {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Stops the node with SIGTERM (a graceful stop) and waits for it.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "node exited with {status}");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

#[test]
fn a_user_installs_talks_to_and_removes_components_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let node = Node::start(dir.path(), port);
    let wasm = common::examples_dir();
    let counter = wasm.join("counter.wasm");
    let ping = wasm.join("ping.wasm");

    node.ok(&[
        "component",
        "install",
        "counter",
        counter.to_str().unwrap(),
        "--deadline-ms",
        "1000",
    ]);
    node.ok(&["component", "install", "ping", ping.to_str().unwrap()]);
    assert_eq!(node.ok(&["request", "counter", "inc"]).trim(), "1");
    node.ok(&["send", "counter", "inc"]);
    assert_eq!(node.ok(&["request", "counter", "get"]).trim(), "2");

    // Component to component through the CLI: ping asks counter, the callback stores it.
    assert!(node
        .ok(&["request", "ping", "ping counter"])
        .starts_with("sent "));
    let start = Instant::now();
    loop {
        let last = node.ok(&["request", "ping", "last"]);
        if last.trim() != "none" {
            assert_eq!(last.trim(), "2");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no callback arrived"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let list: serde_json::Value =
        serde_json::from_str(&node.ok(&["component", "list", "--json"])).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["counter", "ping"]);
    let described: serde_json::Value =
        serde_json::from_str(&node.ok(&["component", "describe", "counter", "--json"])).unwrap();
    assert_eq!(described["limits"]["deadline_ms"], 1000);
    assert_eq!(described["state"]["state"], "running");

    // Prometheus metrics from the running node.
    let metrics = http_get(port, "/metrics");
    assert!(metrics.contains("airssys_components 2"), "{metrics}");
    assert!(
        metrics.contains("airssys_mailbox_depth{component=\"counter\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("airssys_commits_total"), "{metrics}");
    // Nothing is in flight between requests: every commit has been answered.
    assert!(
        metrics.contains("airssys_commits_waiting{component=\"counter\"} 0"),
        "{metrics}"
    );

    // Errors: a named kind on stderr and a non-zero exit.
    let out = node.cli(&["request", "nobody", "hi"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not-found"));
    let out = node.cli(&["request", "counter", "bogus"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rejected"));
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not wasm at all").unwrap();
    let out = node.cli(&["component", "install", "bad", garbage.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(8));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid-component"));
    let out = Command::new(bin())
        .args(["component", "list"])
        .env("AIRSSYS_ENDPOINT", &node.endpoint)
        .env("AIRSSYS_TOKEN", "wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6));

    // A restarted node keeps its components and their storage.
    node.stop();
    let node = Node::start(dir.path(), port);
    assert_eq!(node.ok(&["request", "counter", "get"]).trim(), "2");
    // A restart is a fresh instance on the same node, storage kept.
    let restarted = node.ok(&["component", "restart", "counter"]);
    assert!(
        restarted.starts_with("restarted counter on node"),
        "{restarted}"
    );
    assert_eq!(node.ok(&["request", "counter", "get"]).trim(), "2");
    assert_eq!(
        node.cli(&["component", "restart", "nobody"]).status.code(),
        Some(3)
    );
    node.ok(&["component", "remove", "counter"]);
    let out = node.cli(&["component", "describe", "counter"]);
    assert_eq!(out.status.code(), Some(3));
    node.stop();
}

/// A plain HTTP/1.1 GET with the bearer token; the response body.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}
