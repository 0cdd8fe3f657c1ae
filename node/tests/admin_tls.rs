//! The admin API over HTTPS, through the real binary: a node started with
//! `--admin-tls on` answers only TLS clients that trust the cluster CA; every wrong
//! client gets its own error, and a silent connection holds up nobody.
#![allow(clippy::unwrap_used)]

mod common;

use common::procs::{bin, free_tcp, free_udp, wait_for};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

/// A node whose data dir is `<dir>/airssys-data` and whose working directory is `dir`,
/// as `airssys node start` run there with no token and no certificates given.
struct LocalNode {
    child: Child,
    admin: u16,
}

impl LocalNode {
    fn start(dir: &Path, tls: &str) -> LocalNode {
        let admin = free_tcp();
        let peer = format!("127.0.0.1:{}", free_udp());
        let log = std::fs::File::create(dir.join(format!("node-{admin}.log"))).unwrap();
        let child = Command::new(bin())
            .current_dir(dir)
            .args(["node", "start", "--admin", &format!("127.0.0.1:{admin}")])
            .args(["--peer", &peer, "--admin-tls", tls])
            .env_remove("AIRSSYS_TOKEN")
            .env_remove("AIRSSYS_TOKEN_FILE")
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        LocalNode { child, admin }
    }
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The CLI run in `dir` with nothing from the environment but `args`.
fn cli(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .current_dir(dir)
        .args(args)
        .env_remove("AIRSSYS_TOKEN")
        .env_remove("AIRSSYS_TOKEN_FILE")
        .env_remove("AIRSSYS_CA")
        .env_remove("AIRSSYS_ENDPOINT")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_admin_api_over_tls_answers_only_clients_that_trust_the_cluster_ca() {
    let dir = tempfile::tempdir().unwrap();
    let node = LocalNode::start(dir.path(), "on");
    let https = format!("https://127.0.0.1:{}", node.admin);

    // From the node's own directory the CLI finds the token and the CA the node made.
    let status = wait_for("the node to answer over https", || {
        let out = cli(
            dir.path(),
            &["node", "status", "--json", "--endpoint", &https],
        );
        out.status.success().then_some(out)
    });
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["node_id"], 1);

    // Elsewhere, with --ca and --token-file pointing at the node's files.
    let elsewhere = tempfile::tempdir().unwrap();
    let data = dir.path().join("airssys-data");
    let ca = data.join("tls").join("ca.pem");
    let token_file = data.join("admin-token");
    let (ca, token_file) = (ca.to_str().unwrap(), token_file.to_str().unwrap());
    let ok = cli(
        elsewhere.path(),
        &[
            "component",
            "list",
            "--endpoint",
            &https,
            "--ca",
            ca,
            "--token-file",
            token_file,
        ],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));

    // No CA: refused before anything is sent (a usage error, exit 2).
    let no_ca = cli(
        elsewhere.path(),
        &[
            "component",
            "list",
            "--endpoint",
            &https,
            "--token-file",
            token_file,
        ],
    );
    assert_eq!(no_ca.status.code(), Some(2), "{}", stderr(&no_ca));
    assert!(stderr(&no_ca).contains("--ca"), "{}", stderr(&no_ca));

    // Another cluster's CA: the handshake fails and says why (exit 5, kind tls).
    let stranger = elsewhere.path().join("stranger");
    let made = cli(
        elsewhere.path(),
        &["cert", "ca", "--out", stranger.to_str().unwrap()],
    );
    assert!(made.status.success(), "{}", stderr(&made));
    let stranger_ca = stranger.join("ca.pem");
    let wrong_ca = cli(
        elsewhere.path(),
        &[
            "component",
            "list",
            "--endpoint",
            &https,
            "--ca",
            stranger_ca.to_str().unwrap(),
            "--token-file",
            token_file,
        ],
    );
    assert_eq!(wrong_ca.status.code(), Some(5), "{}", stderr(&wrong_ca));
    assert!(
        stderr(&wrong_ca).contains("error: tls:") && stderr(&wrong_ca).contains("not from the CA"),
        "{}",
        stderr(&wrong_ca)
    );

    // Plain HTTP on the TLS port: told to use https, not reset.
    let plain = cli(
        elsewhere.path(),
        &[
            "component",
            "list",
            "--endpoint",
            &format!("http://127.0.0.1:{}", node.admin),
            "--token-file",
            token_file,
        ],
    );
    assert!(!plain.status.success());
    assert!(
        stderr(&plain).contains("serves its admin API over TLS"),
        "{}",
        stderr(&plain)
    );

    // A connection that never sends a byte holds up no one: the handshake runs apart
    // from the accept loop.
    let silent = std::net::TcpStream::connect(("127.0.0.1", node.admin)).unwrap();
    let still = cli(dir.path(), &["node", "status", "--endpoint", &https]);
    assert!(still.status.success(), "{}", stderr(&still));
    drop(silent);

    // The token is still required inside TLS.
    let wrong_token = cli(
        elsewhere.path(),
        &[
            "component",
            "list",
            "--endpoint",
            &https,
            "--ca",
            ca,
            "--token",
            "not-the-token",
        ],
    );
    assert_eq!(
        wrong_token.status.code(),
        Some(6),
        "{}",
        stderr(&wrong_token)
    );
}

#[test]
fn a_plain_node_on_loopback_tells_an_https_client_it_does_not_speak_tls() {
    let dir = tempfile::tempdir().unwrap();
    // `auto` on a loopback address: plain HTTP.
    let node = LocalNode::start(dir.path(), "auto");
    let http = format!("http://127.0.0.1:{}", node.admin);
    wait_for("the node to answer over http", || {
        cli(dir.path(), &["node", "status", "--endpoint", &http])
            .status
            .success()
            .then_some(())
    });
    let https = format!("https://127.0.0.1:{}", node.admin);
    let out = cli(dir.path(), &["node", "status", "--endpoint", &https]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("does not speak TLS"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn token_and_token_file_together_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t");
    std::fs::write(&file, "x\n").unwrap();
    let out = cli(
        dir.path(),
        &[
            "component",
            "list",
            "--token",
            "y",
            "--token-file",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not both"), "{}", stderr(&out));
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "  \n").unwrap();
    let out = cli(
        dir.path(),
        &["component", "list", "--token-file", empty.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is empty"), "{}", stderr(&out));
}
