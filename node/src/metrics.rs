//! `/metrics` in the Prometheus text format: [`snapshot`] reads the live figures,
//! [`render_snapshot`] turns them into text without touching anything else.

use crate::host::{ComponentFigures, Host};
use airssys_storage::CommitStats;
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

/// Name and help of the handler latency histogram.
const HANDLER_SECONDS: (&str, &str) = (
    "airssys_handler_seconds",
    "Time per handler call (instance call; its commit completes behind it).",
);

/// Everything `/metrics` shows of a node (Raft figures aside), read at one moment.
#[derive(Default)]
pub struct Snapshot {
    pub delivered: u64,
    pub fast_dropped: u64,
    pub late_replies: u64,
    pub timeouts: u64,
    pub forwarded: u64,
    pub redelivery_sweeps: u64,
    pub redelivered: u64,
    pub commits: CommitStats,
    /// The `airssys_handler_seconds` family, already in the text format: the histogram's
    /// buckets are private to it, so it renders itself when the snapshot is taken.
    pub handler_latency: String,
    pub outbox_pending: u64,
    /// One entry per installed component, in the order they are rendered (by name).
    pub components: Vec<ComponentFigures>,
}

/// Reads the live figures of `host` (router counters, committer, outbox, components).
pub async fn snapshot(host: &Host) -> Snapshot {
    let m = &host.router().metrics;
    let commits = host.commit_stats();
    let mut handler_latency = String::new();
    m.handler_latency
        .render(&mut handler_latency, HANDLER_SECONDS.0, HANDLER_SECONDS.1);
    Snapshot {
        delivered: m.delivered.load(Ordering::Relaxed),
        fast_dropped: m.fast_dropped.load(Ordering::Relaxed),
        late_replies: m.late_replies.load(Ordering::Relaxed),
        timeouts: m.timeouts.load(Ordering::Relaxed),
        forwarded: m.forwarded.load(Ordering::Relaxed),
        redelivery_sweeps: m.redelivery_sweeps.load(Ordering::Relaxed),
        redelivered: m.redelivered.load(Ordering::Relaxed),
        commits,
        handler_latency,
        outbox_pending: host.outbox_pending(),
        components: host.component_figures().await,
    }
}

/// `/metrics` of `host` (without Raft figures; see [`render_raft`]).
pub async fn render(host: &Host) -> String {
    render_snapshot(&snapshot(host).await)
}

/// The Prometheus text for `s`.
pub fn render_snapshot(s: &Snapshot) -> String {
    let mut out = String::new();
    let counters = [
        (
            "airssys_messages_delivered_total",
            "Messages handed to a local mailbox.",
            s.delivered,
        ),
        (
            "airssys_fast_messages_dropped_total",
            "Fast messages dropped (mailbox full or receiver gone).",
            s.fast_dropped,
        ),
        (
            "airssys_late_replies_total",
            "Replies that arrived after their request timed out.",
            s.late_replies,
        ),
        (
            "airssys_request_timeouts_total",
            "Requests answered with timeout.",
            s.timeouts,
        ),
        (
            "airssys_messages_forwarded_total",
            "Envelopes handed to another node.",
            s.forwarded,
        ),
        (
            "airssys_redelivery_sweeps_total",
            "Sweeps that handed again the durable messages still waiting in an outbox.",
            s.redelivery_sweeps,
        ),
        (
            "airssys_redelivered_total",
            "Durable messages those sweeps handed again (never more than a mailbox has room for).",
            s.redelivered,
        ),
        (
            "airssys_commits_total",
            "Transactions committed to storage.",
            s.commits.batches,
        ),
        (
            "airssys_commit_writes_total",
            "Storage writes that carried them (group commit; Raft log and applies included).",
            s.commits.groups,
        ),
        (
            "airssys_commit_syncs_total",
            "Those writes that were synced to disk.",
            s.commits.syncs,
        ),
    ];
    for (name, help, value) in counters {
        family(&mut out, name, "counter", help, &single(value));
    }

    out.push_str(&s.handler_latency);

    family(
        &mut out,
        "airssys_outbox_pending",
        "gauge",
        "Committed durable messages not yet consumed by their receiver.",
        &single(s.outbox_pending),
    );

    let figures = &s.components;
    family(
        &mut out,
        "airssys_components",
        "gauge",
        "Installed components on this node.",
        &single(figures.len() as u64),
    );
    // No label escaping: component names are `[a-z0-9][a-z0-9-]{0,62}` (checked on install).
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
    use super::{family, render_snapshot, Snapshot};
    use crate::host::ComponentFigures;
    use airssys_storage::CommitStats;

    fn component(name: &str, n: u64) -> ComponentFigures {
        ComponentFigures {
            name: name.into(),
            mailbox_depth: n,
            restarts: u32::try_from(n).unwrap_or(u32::MAX),
            storage_bytes: n * 100,
            commits_waiting: n + 1,
            log_lines_dropped: n + 2,
        }
    }

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

    #[test]
    fn node_figures_render_as_unlabelled_samples() {
        let out = render_snapshot(&Snapshot {
            forwarded: 12,
            redelivered: 3,
            commits: CommitStats {
                groups: 5,
                syncs: 4,
                batches: 9,
            },
            outbox_pending: 2,
            ..Snapshot::default()
        });
        for block in [
            "# HELP airssys_messages_forwarded_total Envelopes handed to another node.\n\
             # TYPE airssys_messages_forwarded_total counter\n\
             airssys_messages_forwarded_total 12\n",
            "\nairssys_redelivered_total 3\n",
            "# HELP airssys_commits_total Transactions committed to storage.\n\
             # TYPE airssys_commits_total counter\n\
             airssys_commits_total 9\n",
            "\nairssys_commit_writes_total 5\n",
            "\nairssys_commit_syncs_total 4\n",
            "# TYPE airssys_outbox_pending gauge\nairssys_outbox_pending 2\n",
            "# TYPE airssys_components gauge\nairssys_components 0\n",
            "\nairssys_messages_delivered_total 0\n",
        ] {
            assert!(out.contains(block), "{block:?} not in:\n{out}");
        }
    }

    #[test]
    fn components_are_labelled_by_name_in_snapshot_order() {
        let out = render_snapshot(&Snapshot {
            components: vec![component("acct-1", 4), component("counter", 7)],
            ..Snapshot::default()
        });
        assert!(out.contains("\nairssys_components 2\n"), "{out}");
        assert!(
            out.contains(
                "# HELP airssys_mailbox_depth Messages waiting per component.\n\
                 # TYPE airssys_mailbox_depth gauge\n\
                 airssys_mailbox_depth{component=\"acct-1\"} 4\n\
                 airssys_mailbox_depth{component=\"counter\"} 7\n"
            ),
            "{out}"
        );
        assert!(out.contains("\nairssys_storage_bytes{component=\"counter\"} 700\n"));
        assert!(out.contains("\nairssys_component_restarts{component=\"acct-1\"} 4\n"));
    }

    #[test]
    fn a_component_with_zero_figures_still_has_every_line() {
        let idle = ComponentFigures {
            name: "idle".into(),
            mailbox_depth: 0,
            restarts: 0,
            storage_bytes: 0,
            commits_waiting: 0,
            log_lines_dropped: 0,
        };
        let out = render_snapshot(&Snapshot {
            components: vec![idle],
            ..Snapshot::default()
        });
        for family in [
            "airssys_mailbox_depth",
            "airssys_commits_waiting",
            "airssys_component_restarts",
            "airssys_component_log_lines_dropped_total",
            "airssys_storage_bytes",
        ] {
            let line = format!("\n{family}{{component=\"idle\"}} 0\n");
            assert!(out.contains(&line), "{line:?} not in:\n{out}");
        }
    }

    #[test]
    fn families_come_in_a_fixed_order_with_the_histogram_verbatim() {
        let histogram =
            "# HELP airssys_handler_seconds H.\n# TYPE airssys_handler_seconds histogram\n";
        let out = render_snapshot(&Snapshot {
            handler_latency: histogram.into(),
            ..Snapshot::default()
        });
        let types: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .collect();
        assert_eq!(
            types,
            [
                "airssys_messages_delivered_total counter",
                "airssys_fast_messages_dropped_total counter",
                "airssys_late_replies_total counter",
                "airssys_request_timeouts_total counter",
                "airssys_messages_forwarded_total counter",
                "airssys_redelivery_sweeps_total counter",
                "airssys_redelivered_total counter",
                "airssys_commits_total counter",
                "airssys_commit_writes_total counter",
                "airssys_commit_syncs_total counter",
                "airssys_handler_seconds histogram",
                "airssys_outbox_pending gauge",
                "airssys_components gauge",
                "airssys_mailbox_depth gauge",
                "airssys_commits_waiting gauge",
                "airssys_component_restarts gauge",
                "airssys_component_log_lines_dropped_total counter",
                "airssys_storage_bytes gauge",
            ]
        );
        assert!(out.contains(&format!(
            "airssys_commit_syncs_total 0\n{histogram}# HELP airssys_outbox_pending "
        )));
        // No components: the per-component families keep their headers and have no samples.
        assert!(
            out.ends_with("# TYPE airssys_storage_bytes gauge\n"),
            "{out}"
        );
    }
}
