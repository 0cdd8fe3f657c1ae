//! `/metrics` in the Prometheus text format.

use crate::host::{ComponentFigures, Host};
use std::fmt::Write;
use std::sync::atomic::Ordering;

/// One metric family: its `# HELP`/`# TYPE` header and its samples (labels, value).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

fn single(value: u64) -> Vec<(String, u64)> {
    vec![(String::new(), value)]
}

pub async fn render(host: &Host) -> String {
    let m = &host.router().metrics;
    let commits = host.commit_stats();
    let mut out = String::new();
    let counters = [
        (
            "airssys_messages_delivered_total",
            "Messages handed to a local mailbox.",
            m.delivered.load(Ordering::Relaxed),
        ),
        (
            "airssys_fast_messages_dropped_total",
            "Fast messages dropped (mailbox full or receiver gone).",
            m.fast_dropped.load(Ordering::Relaxed),
        ),
        (
            "airssys_late_replies_total",
            "Replies that arrived after their request timed out.",
            m.late_replies.load(Ordering::Relaxed),
        ),
        (
            "airssys_request_timeouts_total",
            "Requests answered with timeout.",
            m.timeouts.load(Ordering::Relaxed),
        ),
        (
            "airssys_messages_forwarded_total",
            "Envelopes handed to another node.",
            m.forwarded.load(Ordering::Relaxed),
        ),
        (
            "airssys_redelivery_sweeps_total",
            "Sweeps that handed again the durable messages still waiting in an outbox.",
            m.redelivery_sweeps.load(Ordering::Relaxed),
        ),
        (
            "airssys_redelivered_total",
            "Durable messages those sweeps handed again (never more than a mailbox has room for).",
            m.redelivered.load(Ordering::Relaxed),
        ),
        (
            "airssys_commits_total",
            "Transactions committed to storage.",
            commits.batches,
        ),
        (
            "airssys_commit_writes_total",
            "Storage writes that carried them (group commit; Raft log and applies included).",
            commits.groups,
        ),
        (
            "airssys_commit_syncs_total",
            "Those writes that were synced to disk.",
            commits.syncs,
        ),
    ];
    for (name, help, value) in counters {
        family(&mut out, name, "counter", help, &single(value));
    }

    m.handler_latency.render(
        &mut out,
        "airssys_handler_seconds",
        "Time per handler call (instance call; its commit completes behind it).",
    );

    family(
        &mut out,
        "airssys_outbox_pending",
        "gauge",
        "Committed durable messages not yet consumed by their receiver.",
        &single(host.outbox_pending()),
    );

    let figures = host.component_figures().await;
    family(
        &mut out,
        "airssys_components",
        "gauge",
        "Installed components on this node.",
        &single(figures.len() as u64),
    );
    let per_component = |pick: fn(&ComponentFigures) -> u64| -> Vec<(String, u64)> {
        figures
            .iter()
            .map(|f| (format!("{{component=\"{}\"}}", f.name), pick(f)))
            .collect()
    };
    family(
        &mut out,
        "airssys_mailbox_depth",
        "gauge",
        "Messages waiting per component.",
        &per_component(|f| f.mailbox_depth),
    );
    family(
        &mut out,
        "airssys_commits_waiting",
        "gauge",
        "Handler transactions per component waiting for their commit (their effects leave once it is durable).",
        &per_component(|f| f.commits_waiting),
    );
    family(
        &mut out,
        "airssys_component_restarts",
        "gauge",
        "Crashes since the component started on this node.",
        &per_component(|f| u64::from(f.restarts)),
    );
    family(
        &mut out,
        "airssys_component_log_lines_dropped_total",
        "counter",
        "Log lines a component wrote past its allowance (100 a second, bursts of 500), dropped.",
        &per_component(|f| f.log_lines_dropped),
    );
    family(
        &mut out,
        "airssys_storage_bytes",
        "gauge",
        "Storage in use per component.",
        &per_component(|f| f.storage_bytes),
    );
    out
}

/// Raft figures of a cluster node.
pub fn render_raft(out: &mut String, f: &airssys_cluster::RaftFigures) {
    let gauges = [
        ("airssys_raft_term", "Current Raft term.", f.term),
        (
            "airssys_raft_leader",
            "Id of the leader this node knows (0: none).",
            f.leader.unwrap_or(0),
        ),
        (
            "airssys_raft_is_leader",
            "1 when this node leads.",
            u64::from(f.is_leader),
        ),
        (
            "airssys_raft_last_log_index",
            "Index of the last entry in this node's log.",
            f.last_log_index,
        ),
        (
            "airssys_raft_commit_index",
            "Index of the last entry applied here (committed).",
            f.applied_index,
        ),
    ];
    for (name, help, value) in gauges {
        family(out, name, "gauge", help, &single(value));
    }
}

#[cfg(test)]
mod tests {
    use super::family;

    #[test]
    fn a_family_has_its_header_and_one_line_per_sample() {
        let mut out = String::new();
        family(
            &mut out,
            "x_total",
            "counter",
            "Things.",
            &[(String::new(), 3), ("{a=\"b\"}".into(), 4)],
        );
        assert_eq!(
            out,
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total 3\nx_total{a=\"b\"} 4\n"
        );
    }
}
