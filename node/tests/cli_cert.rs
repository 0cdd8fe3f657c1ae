//! `airssys cert ca` / `airssys cert node`: the files they write, their modes, and that the
//! node certificate is usable with the CA (no node needed).
#![allow(clippy::unwrap_used)]

use airssys_cluster::tls::{client_config, server_config, NodeCert};
use std::path::Path;
use std::process::{Command, Output};

fn airssys(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_airssys"))
        .args(args)
        .current_dir(cwd)
        .env_remove("AIRSSYS_TOKEN")
        .env_remove("AIRSSYS_ENDPOINT")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(unix)]
fn assert_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{} has mode {mode:o}", path.display());
}

#[cfg(not(unix))]
fn assert_private(_: &Path) {}

#[test]
fn ca_then_node_cert() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();

    let out = airssys(cwd, &["cert", "ca", "--out", "ca", "--name", "test"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("ca/ca.pem") && stdout.contains("ca/ca.key"),
        "{stdout}"
    );
    let ca_pem = std::fs::read_to_string(cwd.join("ca/ca.pem")).unwrap();
    assert!(ca_pem.contains("BEGIN CERTIFICATE"));
    assert_private(&cwd.join("ca/ca.key"));

    let out = airssys(
        cwd,
        &[
            "cert",
            "node",
            "--ca-dir",
            "ca",
            "--node-id",
            "2",
            "--host",
            "127.0.0.1",
            "--host",
            "node2.example.com",
            "--out",
            "n2",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for f in ["n2/node.pem", "n2/node.key", "n2/ca.pem"] {
        assert!(stdout.contains(f), "{f} not reported: {stdout}");
        assert!(cwd.join(f).is_file(), "{f} missing");
    }
    assert_private(&cwd.join("n2/node.key"));
    assert_eq!(
        std::fs::read_to_string(cwd.join("n2/ca.pem")).unwrap(),
        ca_pem
    );

    let node = NodeCert::from_pem(
        std::fs::read_to_string(cwd.join("n2/node.pem")).unwrap(),
        std::fs::read_to_string(cwd.join("n2/node.key")).unwrap(),
    );
    server_config(&ca_pem, &node).unwrap();
    client_config(&ca_pem, &node).unwrap();

    // A second node cert into the same directory needs --force.
    let again = [
        "cert",
        "node",
        "--ca-dir",
        "ca",
        "--node-id",
        "2",
        "--host",
        "127.0.0.1",
        "--out",
        "n2",
    ];
    let out = airssys(cwd, &again);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--force"),
        "{}",
        text(&out.stderr)
    );
    let out = airssys(cwd, &[&again[..], &["--force"]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_private(&cwd.join("n2/node.key"));
}

#[test]
fn second_ca_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let out = airssys(cwd, &["cert", "ca", "--out", "ca"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let key = std::fs::read_to_string(cwd.join("ca/ca.key")).unwrap();

    let out = airssys(cwd, &["cert", "ca", "--out", "ca"]);
    assert_ne!(out.status.code(), Some(0));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--force") && stderr.contains("ca.key"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(cwd.join("ca/ca.key")).unwrap(), key);

    let out = airssys(cwd, &["cert", "ca", "--out", "ca", "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_ne!(std::fs::read_to_string(cwd.join("ca/ca.key")).unwrap(), key);
    assert_private(&cwd.join("ca/ca.key"));
}

#[test]
fn node_cert_without_ca_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let out = airssys(
        dir.path(),
        &[
            "cert",
            "node",
            "--ca-dir",
            "no-such-ca",
            "--node-id",
            "1",
            "--host",
            "127.0.0.1",
            "--out",
            "n1",
        ],
    );
    assert_ne!(out.status.code(), Some(0));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("no-such-ca/ca.pem"), "{stderr}");
    assert!(!dir.path().join("n1").exists());
}

#[test]
fn bad_host_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    assert!(airssys(cwd, &["cert", "ca", "--out", "ca"])
        .status
        .success());
    let out = airssys(
        cwd,
        &[
            "cert",
            "node",
            "--ca-dir",
            "ca",
            "--node-id",
            "1",
            "--host",
            "not a host!",
            "--out",
            "n1",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not a host!"),
        "{}",
        text(&out.stderr)
    );
}
