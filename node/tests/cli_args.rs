//! The `airssys` binary's argument handling, help and error reporting (no node needed).
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

fn airssys(args: &[&str]) -> Output {
    let cwd = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_airssys"))
        .args(args)
        .current_dir(cwd.path())
        .env_remove("AIRSSYS_TOKEN")
        .env_remove("AIRSSYS_ENDPOINT")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_teaches_commands_and_exit_codes() {
    let out = airssys(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for want in [
        "node",
        "cluster",
        "component",
        "send",
        "request",
        "Exit codes:",
        "not-found",
        "airssys component install counter counter.wasm",
    ] {
        assert!(help.contains(want), "{want} missing from --help:\n{help}");
    }
    let out = airssys(&["component", "install", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for want in [
        "--memory-mb",
        "--deadline-ms",
        "--mailbox",
        "--quota-mb",
        "--fuel",
        "--endpoint",
        "--token",
        "Examples:",
    ] {
        assert!(help.contains(want), "{want} missing:\n{help}");
    }
    let out = airssys(&["node", "start", "--help"]);
    let help = text(&out.stdout);
    for want in [
        "--data-dir",
        "--admin",
        "--node-id",
        "--peer",
        "--join",
        "--config",
        "admin-token",
    ] {
        assert!(help.contains(want), "{want} missing:\n{help}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let out = airssys(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("frobnicate"),
        "{}",
        text(&out.stderr)
    );

    let out = airssys(&["component", "install", "x", "x.wasm", "--memory-mb", "many"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--memory-mb"),
        "{}",
        text(&out.stderr)
    );

    let out = airssys(&["request", "echo"]);
    assert_eq!(out.status.code(), Some(2));

    let out = airssys(&["node", "start", "--config", "node.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not supported yet"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn unreachable_node_is_a_clear_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let endpoint = format!("http://{addr}");
    let out = airssys(&["component", "list", "--endpoint", &endpoint]);
    assert_eq!(out.status.code(), Some(5));
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "error: unreachable: cannot reach airssys node at {endpoint}: connection refused"
        )),
        "{err}"
    );
    assert!(err.contains("airssys node start"), "{err}");
}

#[test]
fn missing_payload_file_is_an_io_error() {
    let out = airssys(&[
        "send",
        "echo",
        "@does-not-exist.bin",
        "--endpoint",
        "http://127.0.0.1:9",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("error: io: cannot read does-not-exist.bin"),
        "{err}"
    );
}

#[test]
fn invalid_endpoint_is_a_usage_error() {
    let out = airssys(&["cluster", "status", "--endpoint", "ftp://example.com:7070"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("unsupported scheme `ftp`"),
        "{}",
        text(&out.stderr)
    );
}
