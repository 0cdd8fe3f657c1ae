//! The node's TLS files: `ca.pem`, `node.pem`, `node.key` (or `node-<id>.pem`,
//! `node-<id>.key`, when one directory holds every node's) from `--tls-dir`, or from
//! `<data-dir>/tls`, made with a new CA on a node's first start when none is given
//! (a single-node cluster; nodes that join need certificates from the same CA). The
//! certificate must name this node: peers know a node by it.

use super::ClusterSettings;
use crate::config::NodeConfig;
use crate::config::{CA_CERT_FILE, CA_KEY_FILE, NODE_CERT_FILE, NODE_KEY_FILE};
use airssys_cluster::tls::{ClusterCa, NodeCert};
use std::path::Path;

fn read(dir: &Path, file: &str) -> Result<String, String> {
    let path = dir.join(file);
    std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read {}: {e} (make it with `airssys cert node --ca-dir CA --node-id N --host HOST --out {}`)",
            path.display(),
            dir.display()
        )
    })
}

/// The CA certificate and this node's certificate and key.
pub fn load_or_create(
    config: &NodeConfig,
    settings: &ClusterSettings,
) -> Result<(String, NodeCert), String> {
    let dir = match &settings.tls_dir {
        Some(d) => d.clone(),
        None => {
            let d = config.data_dir.join("tls");
            if !d.join(NODE_CERT_FILE).exists() {
                if !settings.join.is_empty() {
                    return Err(
                        "a joining node needs --tls-dir with a certificate from the cluster's CA"
                            .to_string(),
                    );
                }
                create(&d, config.node_id, settings)?;
            }
            d
        }
    };
    let ca = read(&dir, CA_CERT_FILE)?;
    let (cert_file, key_file) = cert_files(&dir, config.node_id);
    let cert = NodeCert::from_pem(read(&dir, &cert_file)?, read(&dir, &key_file)?);
    check_names_node(&cert, config.node_id, &dir.join(&cert_file))?;
    Ok((ca, cert))
}

/// `node-<id>.pem` / `node-<id>.key` when the directory has them (one directory, such as a
/// Kubernetes Secret, holding every node's certificate), else `node.pem` / `node.key`.
fn cert_files(dir: &Path, node_id: u64) -> (String, String) {
    let own = (format!("node-{node_id}.pem"), format!("node-{node_id}.key"));
    if dir.join(&own.0).exists() && dir.join(&own.1).exists() {
        own
    } else {
        (NODE_CERT_FILE.to_string(), NODE_KEY_FILE.to_string())
    }
}

/// Peers take a node for the node its certificate names; a node started with another
/// node's certificate would have every vote and append refused, so it does not start.
fn check_names_node(cert: &NodeCert, node_id: u64, path: &Path) -> Result<(), String> {
    match cert.named_node() {
        Some(named) if named == node_id => Ok(()),
        named => Err(format!(
            "{} is {}, but this is node {node_id}: every node needs its own certificate \
             (`airssys cert node --ca-dir CA --node-id {node_id} ...`; several nodes may share \
             a directory as node-<id>.pem and node-<id>.key)",
            path.display(),
            match named {
                Some(n) => format!("node {n}'s certificate"),
                None => "a certificate that names no node".to_string(),
            }
        )),
    }
}

fn create(dir: &Path, node_id: u64, settings: &ClusterSettings) -> Result<(), String> {
    let ca = ClusterCa::generate("airssys-local").map_err(|e| e.to_string())?;
    // Loopback names are in every node certificate already (`LOOPBACK_HOSTS`).
    let mut hosts = Vec::new();
    if let Some((host, _)) = settings.peer_advertise.rsplit_once(':') {
        hosts.push(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        );
    }
    let node = ca
        .issue_node_cert(node_id, &hosts)
        .map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    write(dir, CA_CERT_FILE, ca.cert_pem(), false)?;
    write(dir, CA_KEY_FILE, ca.key_pem(), true)?;
    write(dir, NODE_CERT_FILE, node.cert_pem(), false)?;
    write(dir, NODE_KEY_FILE, node.key_pem(), true)?;
    tracing::info!(dir = %dir.display(), "made a new cluster CA and node certificate");
    Ok(())
}

fn write(dir: &Path, file: &str, text: &str, private: bool) -> Result<(), String> {
    use std::io::Write;
    let path = dir.join(file);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    opts.open(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_node_starts_only_with_a_certificate_that_names_it() {
        let ca = ClusterCa::generate("t").unwrap();
        let two = ca.issue_node_cert(2, &[]).unwrap();
        assert_eq!(check_names_node(&two, 2, Path::new("node.pem")), Ok(()));
        let refused = check_names_node(&two, 3, Path::new("node.pem")).unwrap_err();
        assert!(
            refused.contains("node 2's certificate") && refused.contains("this is node 3"),
            "{refused}"
        );
    }

    #[test]
    fn a_shared_directory_gives_each_node_its_own_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(cert_files(dir.path(), 2).0, NODE_CERT_FILE);
        std::fs::write(dir.path().join("node-2.pem"), "x").unwrap();
        std::fs::write(dir.path().join("node-2.key"), "x").unwrap();
        assert_eq!(
            cert_files(dir.path(), 2),
            ("node-2.pem".to_string(), "node-2.key".to_string())
        );
        assert_eq!(cert_files(dir.path(), 3).0, NODE_CERT_FILE);
    }
}
