//! One request that crosses nodes is one trace: two node processes export spans over
//! OTLP/HTTP (the standard `OTEL_*` variables) to a collector run by this test; the
//! trace id the admin API returns in `traceparent` shows up in both nodes' exports.
#![allow(clippy::unwrap_used)]

mod common;

use common::procs::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};

/// A minimal OTLP/HTTP collector: keeps every POSTed body, answers 200.
fn collector() -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let keep = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let keep = keep.clone();
            std::thread::spawn(move || loop {
                let mut reader = BufReader::new(&mut stream);
                let mut len = 0usize;
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let l = line.trim_end();
                    if l.is_empty() {
                        break;
                    }
                    if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                keep.lock().unwrap().push(body);
                let reply = "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n";
                if stream.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            });
        }
    });
    (addr, bodies)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn trace_id_of(head: &str) -> Vec<u8> {
    let line = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("traceparent:"))
        .unwrap_or_else(|| panic!("no traceparent header in:\n{head}"));
    let value = line.split_once(':').unwrap().1.trim();
    hex_bytes(value.split('-').nth(1).unwrap())
}

/// Waits until some export from `service` carries the trace.
fn exported(bodies: &Arc<Mutex<Vec<Vec<u8>>>>, trace: &[u8], service: &str) {
    wait_for(&format!("{service} to export a span of the trace"), || {
        bodies
            .lock()
            .unwrap()
            .iter()
            .any(|b| contains(b, trace) && contains(b, service.as_bytes()))
            .then_some(())
    });
}

#[test]
fn a_request_across_nodes_is_one_trace() {
    let (endpoint, bodies) = collector();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let tls = make_certs(dir.path(), "trace", &[1, 2]);
    let n1 = Node::start_with_env(dir.path(), 1, &tls[0], None, &env);
    wait_for("node 1 to lead", || alive_voters(&n1).filter(|v| v == &[1]));
    let n2 = Node::start_with_env(dir.path(), 2, &tls[1], Some(&n1.peer), &env);
    wait_for("two voters", || alive_voters(&n1).filter(|v| v == &[1, 2]));

    let examples = common::examples_dir();
    let wasm = |name: &str| examples.join(format!("{name}.wasm"));
    n1.ok(&[
        "component",
        "install",
        "ping",
        wasm("ping").to_str().unwrap(),
    ]);
    n1.ok(&[
        "component",
        "install",
        "counter",
        wasm("counter").to_str().unwrap(),
    ]);
    assert_eq!(owner_of(&n1, "ping"), 1);
    assert_eq!(owner_of(&n1, "counter"), 2);

    // Admin request on node 1 for the counter on node 2: forwarded, handled there.
    let (code, head, body) = http_post(
        &n1.endpoint,
        "/v1/components/counter/requests",
        TOKEN,
        b"inc",
    );
    assert_eq!(code, 200, "{head}");
    assert_eq!(body, b"1");
    let trace = trace_id_of(&head);
    exported(&bodies, &trace, "airssys-node-1");
    exported(&bodies, &trace, "airssys-node-2");

    // A component on node 1 requests the counter on node 2: the hop to node 2 and the
    // callback on node 1 belong to the trace of the admin request to ping.
    let (code, head, body) = http_post(
        &n2.endpoint,
        "/v1/components/ping/requests",
        TOKEN,
        b"ping counter 5000",
    );
    assert_eq!(code, 200, "{head}");
    assert!(
        body.starts_with(b"sent "),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let trace = trace_id_of(&head);
    wait_for("ping's callback", || {
        (n1.ok(&["request", "ping", "last"]).trim() == "1").then_some(())
    });
    exported(&bodies, &trace, "airssys-node-1");
    exported(&bodies, &trace, "airssys-node-2");
    // The counter's handler span is exported by node 2 inside that trace.
    wait_for("the counter's handler span in the trace", || {
        bodies
            .lock()
            .unwrap()
            .iter()
            .any(|b| {
                contains(b, &trace)
                    && contains(b, b"airssys-node-2")
                    && contains(b, b"airssys.handle")
            })
            .then_some(())
    });
    drop(n2);
}
