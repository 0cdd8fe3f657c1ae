//! Human-readable output of the CLI: tables and key/value blocks. Plain functions.

use crate::api::{ComponentInfo, ComponentState, NodeStatus};

/// How many hex digits of a sha256 a table shows.
pub const SHA_PREFIX: usize = 12;

/// Columns padded to their widest cell, two spaces apart, no trailing spaces.
pub fn format_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            l.push_str(cell);
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(cell.chars().count());
            l.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// `component list`.
pub fn format_components_table(components: &[ComponentInfo]) -> String {
    if components.is_empty() {
        return "no components installed\n".to_string();
    }
    let rows: Vec<Vec<String>> = components
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                state_short(&c.state).to_string(),
                c.node_id.to_string(),
                c.generation.to_string(),
                c.mailbox_depth.to_string(),
                human_bytes(c.storage_bytes),
                sha_prefix(&c.sha256).to_string(),
            ]
        })
        .collect();
    format_table(
        &[
            "NAME", "STATE", "NODE", "GEN", "MAILBOX", "STORAGE", "SHA256",
        ],
        &rows,
    )
}

/// `component describe`.
pub fn format_component(c: &ComponentInfo) -> String {
    let fuel = match c.limits.fuel {
        Some(f) => f.to_string(),
        None => "unmetered".to_string(),
    };
    let mut fields = vec![
        ("name", c.name.clone()),
        ("state", state_label(&c.state)),
        ("node", c.node_id.to_string()),
        ("generation", c.generation.to_string()),
        (
            "mailbox depth",
            format!("{} / {}", c.mailbox_depth, c.limits.mailbox),
        ),
        (
            "storage",
            format!(
                "{} ({} bytes) of {} MiB quota",
                human_bytes(c.storage_bytes),
                c.storage_bytes,
                c.limits.quota_mb
            ),
        ),
        ("restarts", c.restarts.to_string()),
        ("log lines dropped", c.log_lines_dropped.to_string()),
        ("memory limit", format!("{} MiB", c.limits.memory_mb)),
        ("deadline", format!("{} ms", c.limits.deadline_ms)),
        ("fuel", fuel),
        (
            "binary",
            format!("{} ({} bytes)", human_bytes(c.size_bytes), c.size_bytes),
        ),
        ("sha256", c.sha256.clone()),
        ("installed at", format_time_ms(c.installed_at_ms)),
    ];
    if let Some(at) = c.upgraded_at_ms {
        fields.push(("upgraded at", format_time_ms(at)));
    }
    if let Some(p) = &c.previous {
        fields.push((
            "previous",
            format!(
                "sha256 {} ({}), ran since {}; `airssys component rollback {}` returns to it",
                p.sha256,
                human_bytes(p.size_bytes),
                format_time_ms(p.since_ms),
                c.name
            ),
        ));
    }
    key_values(&fields)
}

/// `cluster status`.
pub fn format_status(s: &NodeStatus) -> String {
    key_values(&[
        ("node id", s.node_id.to_string()),
        ("admin address", s.admin_addr.clone()),
        ("version", s.version.clone()),
        ("components here", s.components.to_string()),
        ("uptime", human_duration_ms(s.uptime_ms)),
    ])
}

/// `cluster status`.
pub fn format_cluster(s: &airssys_cluster::ClusterStatus) -> String {
    let mut text = key_values(&[
        (
            "leader",
            s.leader
                .map(|l| format!("node {l}"))
                .unwrap_or_else(|| "none known".into()),
        ),
        ("term", s.term.to_string()),
        ("commit index", s.commit_index.to_string()),
        ("reported by", format!("node {}", s.reported_by)),
    ]);
    text.push('\n');
    text.push_str(&format_members(s));
    text.push('\n');
    let rows: Vec<Vec<String>> = s
        .components
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                c.owner.to_string(),
                c.generation.to_string(),
            ]
        })
        .collect();
    text.push_str(&format_table(&["COMPONENT", "NODE", "GENERATION"], &rows));
    text
}

/// `cluster members`.
pub fn format_members(s: &airssys_cluster::ClusterStatus) -> String {
    let rows: Vec<Vec<String>> = s
        .nodes
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                if m.voter { "voter" } else { "learner" }.to_string(),
                match m.alive {
                    Some(true) => "alive",
                    Some(false) => "down",
                    None => "unknown",
                }
                .to_string(),
                if s.leader == Some(m.id) { "leader" } else { "" }.to_string(),
                m.peer_addr.clone(),
                m.admin_addr.clone(),
            ]
        })
        .collect();
    format_table(&["NODE", "ROLE", "STATE", "", "PEER", "ADMIN"], &rows)
}

fn key_values(fields: &[(&str, String)]) -> String {
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    fields
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

/// One word for a table cell.
pub fn state_short(state: &ComponentState) -> &'static str {
    match state {
        ComponentState::Starting => "starting",
        ComponentState::Running => "running",
        ComponentState::Restarting { .. } => "restarting",
        ComponentState::Failed { .. } => "failed",
        ComponentState::Stopped => "stopped",
        ComponentState::Compiling { .. } => "compiling",
    }
}

/// The state with its reason, for `describe`.
pub fn state_label(state: &ComponentState) -> String {
    match state {
        ComponentState::Restarting {
            restarts,
            last_error,
        } => format!("restarting (after {restarts} restarts; last error: {last_error})"),
        ComponentState::Failed { reason, .. } => format!("failed: {reason}"),
        ComponentState::Compiling { since_ms } => {
            let secs = crate::clock::now_ms().saturating_sub(*since_ms) / 1000;
            format!("compiling its code (for {secs} s); messages get `unavailable` until it runs")
        }
        other => state_short(other).to_string(),
    }
}

/// The first [`SHA_PREFIX`] characters of a hex digest.
pub fn sha_prefix(sha: &str) -> &str {
    sha.get(..SHA_PREFIX).unwrap_or(sha)
}

/// `0 B`, `512 B`, `1.5 KiB`, `64.0 MiB`, …
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A Unix time in milliseconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// `850ms`, `12s`, `3m 4s`, `2h 3m`, `1d 2h`.
pub fn human_duration_ms(ms: u64) -> String {
    let s = ms / 1000;
    let (d, h, m, sec) = (s / 86_400, (s / 3600) % 24, (s / 60) % 60, s % 60);
    if s == 0 {
        format!("{ms}ms")
    } else if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {sec}s")
    } else {
        format!("{sec}s")
    }
}

/// A wall-clock time in ms since the Unix epoch as RFC 3339 (UTC, seconds).
fn format_time_ms(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Limits;

    fn info(name: &str, state: ComponentState) -> ComponentInfo {
        ComponentInfo {
            name: name.into(),
            sha256: "0123456789abcdef0123".into(),
            size_bytes: 2048,
            limits: Limits {
                memory_mb: 64,
                deadline_ms: 2000,
                mailbox: 1024,
                quota_mb: 64,
                fuel: None,
            },
            node_id: 1,
            generation: 7,
            state,
            mailbox_depth: 3,
            storage_bytes: 1536,
            restarts: 0,
            installed_at_ms: 1,
            log_lines_dropped: 0,
            upgraded_at_ms: None,
            previous: None,
        }
    }

    #[test]
    fn table_aligns_columns() {
        let t = format_table(
            &["A", "BB"],
            &[
                vec!["long-cell".into(), "x".into()],
                vec!["y".into(), "z".into()],
            ],
        );
        assert_eq!(t, "A          BB\nlong-cell  x\ny          z\n");
    }

    #[test]
    fn component_table_shows_the_columns() {
        let t = format_components_table(&[
            info("counter", ComponentState::Running),
            info(
                "bad",
                ComponentState::Failed {
                    reason: "trap".into(),
                    error: None,
                },
            ),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("NAME"), "{t}");
        for want in ["counter", "running", "7", "3", "1.5 KiB", "0123456789ab"] {
            assert!(lines[1].contains(want), "{want} missing in {t}");
        }
        assert!(!lines[1].contains("0123456789abc"), "{t}");
        assert!(lines[2].contains("failed"), "{t}");
        assert_eq!(format_components_table(&[]), "no components installed\n");
    }

    #[test]
    fn describe_names_the_reason() {
        let d = format_component(&info(
            "bad",
            ComponentState::Failed {
                reason: "crashed 5 times".into(),
                error: None,
            },
        ));
        assert!(d.contains("failed: crashed 5 times"), "{d}");
        assert!(d.contains("0123456789abcdef0123"), "{d}");
        assert!(d.contains("unmetered"), "{d}");
    }

    #[test]
    fn humans() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(64 * 1024 * 1024), "64.0 MiB");
        assert_eq!(human_duration_ms(850), "850ms");
        assert_eq!(human_duration_ms(12_000), "12s");
        assert_eq!(human_duration_ms(184_000), "3m 4s");
        assert_eq!(human_duration_ms(7_380_000), "2h 3m");
        assert_eq!(human_duration_ms(93_600_000), "1d 2h");
        assert_eq!(sha_prefix("abc"), "abc");
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_time(1_795_515_151_402), "2026-11-24 10:12:31 UTC");
    }
}
