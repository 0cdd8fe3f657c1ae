//! The node's TLS files: `ca.pem`, `node.pem`, `node.key` from `--tls-dir`, or from
//! `<data-dir>/tls`, made with a new CA on a node's first start when none is given
//! (a single-node cluster; nodes that join need certificates from the same CA).

use super::ClusterSettings;
use crate::cli::cert::{CA_CERT_FILE, CA_KEY_FILE, NODE_CERT_FILE, NODE_KEY_FILE};
use crate::config::NodeConfig;
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
    let cert = NodeCert::from_pem(read(&dir, NODE_CERT_FILE)?, read(&dir, NODE_KEY_FILE)?);
    Ok((ca, cert))
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
