//! `/metrics` in the Prometheus text format.

use crate::host::Host;
use std::fmt::Write;
use std::sync::atomic::Ordering;

pub async fn render(host: &Host) -> String {
    let m = &host.router().metrics;
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
    ];
    for (name, help, value) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    let commits = host.commit_stats();
    let _ = writeln!(out, "# HELP airssys_commits_total Transactions committed to storage.\n# TYPE airssys_commits_total counter\nairssys_commits_total {}", commits.batches);
    let _ = writeln!(out, "# HELP airssys_commit_syncs_total Synced storage writes that carried them (group commit).\n# TYPE airssys_commit_syncs_total counter\nairssys_commit_syncs_total {}", commits.groups);
    let figures = host.component_figures().await;
    let _ = writeln!(out, "# HELP airssys_components Installed components on this node.\n# TYPE airssys_components gauge\nairssys_components {}", figures.len());
    let _ = writeln!(out, "# HELP airssys_mailbox_depth Messages waiting per component.\n# TYPE airssys_mailbox_depth gauge");
    for (name, depth, _, _) in &figures {
        let _ = writeln!(out, "airssys_mailbox_depth{{component=\"{name}\"}} {depth}");
    }
    let _ = writeln!(out, "# HELP airssys_component_restarts Crashes since the component started on this node.\n# TYPE airssys_component_restarts gauge");
    for (name, _, restarts, _) in &figures {
        let _ = writeln!(
            out,
            "airssys_component_restarts{{component=\"{name}\"}} {restarts}"
        );
    }
    let _ = writeln!(out, "# HELP airssys_storage_bytes Storage in use per component.\n# TYPE airssys_storage_bytes gauge");
    for (name, _, _, bytes) in &figures {
        let _ = writeln!(out, "airssys_storage_bytes{{component=\"{name}\"}} {bytes}");
    }
    out
}
