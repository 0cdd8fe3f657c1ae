//! `airssys node start`: opens the host on the data dir and serves the admin API until
//! Ctrl-C or SIGTERM, then stops every actor gracefully.

use crate::admin::AdminAuth;
use crate::cluster::{ClusterHost, ClusterHostError, ClusterSettings};
use crate::config::{NodeConfig, TOKEN_FILE};
use crate::host::HostError;
use std::path::Path;
use std::sync::Arc;

/// Why a node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Host(#[from] HostError),
    #[error("{0}")]
    Cluster(#[from] ClusterHostError),
    #[error("node id: {0}")]
    NodeId(String),
    #[error("cannot listen on {addr}: {source} (is another node running there? pick another with --admin)")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("admin token file {path}: {source}")]
    Token {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("admin server: {0}")]
    Serve(std::io::Error),
    #[error("admin API TLS: {0}")]
    Tls(String),
    /// Raft stopped on a fatal error (the disk refused a write, say); the process ends so
    /// that the node is started again.
    #[error("Raft stopped on a fatal error: {0}; start the node again once the cause is fixed")]
    RaftStopped(String),
}

/// The token the admin API requires: the configured one, or the one stored in the
/// data dir, or a new random one written there (mode 0600) for local CLIs to find.
pub fn admin_token(config: &NodeConfig) -> Result<String, DaemonError> {
    if let Some(token) = &config.token {
        return Ok(token.clone());
    }
    let path = config.data_dir.join(TOKEN_FILE);
    let token_err = |source| DaemonError::Token {
        path: path.clone(),
        source,
    };
    // Only a token file that is absent (or empty) is written: one that cannot be read
    // (permissions, an IO error) is an error, never replaced, or every client holding the
    // old token would be locked out.
    if let Some(existing) = crate::admin::read_token_file(&config.data_dir).map_err(token_err)? {
        return Ok(existing);
    }
    std::fs::create_dir_all(&config.data_dir).map_err(token_err)?;
    let token = hex::encode(rand::random::<[u8; 24]>());
    write_private(&path, &token).map_err(token_err)?;
    Ok(token)
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(contents.as_bytes())
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, contents)
    }
}

/// File under the data dir that pins the node's id.
pub const NODE_ID_FILE: &str = "node-id";

/// The id stays the node's for the life of its data: a different `--node-id` on an
/// existing data dir is refused.
pub fn pin_node_id(data_dir: &std::path::Path, node_id: u64) -> Result<(), DaemonError> {
    let path = data_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let stored: u64 = text
                .trim()
                .parse()
                .map_err(|_| DaemonError::NodeId(format!("{} is not a number", path.display())))?;
            if stored != node_id {
                return Err(DaemonError::NodeId(format!(
                    "this data dir belongs to node {stored}, not {} (see {})",
                    node_id,
                    path.display()
                )));
            }
            Ok(())
        }
        Err(_) => std::fs::create_dir_all(data_dir)
            .and_then(|_| std::fs::write(&path, node_id.to_string()))
            .map_err(|e| DaemonError::NodeId(format!("{}: {e}", path.display()))),
    }
}

/// Runs a node until Ctrl-C / SIGTERM.
pub async fn run(config: NodeConfig, settings: ClusterSettings) -> Result<(), DaemonError> {
    pin_node_id(&config.data_dir, config.node_id)?;
    let token = admin_token(&config)?;
    let listener = tokio::net::TcpListener::bind(config.admin_addr)
        .await
        .map_err(|source| DaemonError::Bind {
            addr: config.admin_addr,
            source,
        })?;
    let tls = crate::admin::tls::tls_wanted(config.admin_tls, config.admin_addr);
    // Loaded (or made, on a first start) before the cluster starts, which reads the same files.
    let server_tls = if tls {
        let (_, cert) = crate::cluster::tls_files::load_or_create(&config, &settings)
            .map_err(DaemonError::Tls)?;
        Some(
            airssys_cluster::tls::admin_server_config(&cert)
                .map_err(|e| DaemonError::Tls(e.to_string()))?,
        )
    } else {
        None
    };
    let host = ClusterHost::start(config.clone(), settings.clone()).await?;
    tracing::info!(
        node_id = config.node_id,
        admin = %config.admin_addr,
        peer = %settings.peer_advertise,
        data_dir = %config.data_dir.display(),
        admin_tls = tls,
        "airssys node serving (token in {})",
        if config.token.is_some() { "--token/AIRSSYS_TOKEN".to_string() } else { config.data_dir.join(TOKEN_FILE).display().to_string() }
    );
    let backend = Arc::new(host.clone());
    let auth = AdminAuth { token };
    // Raft stopped on a fatal error (a full disk refused its log) does not start again
    // in this process: the node stops, with an error, so that its supervisor (Kubernetes,
    // docker's restart policy, systemd) starts it again once the cause is gone.
    let fatal: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let stop = {
        let (cluster, fatal) = (host.cluster().clone(), fatal.clone());
        async move {
            tokio::select! {
                () = shutdown_signal() => {}
                why = cluster.raft_stopped() => {
                    tracing::error!("Raft stopped on a fatal error: {why}; the node stops so that it can be started again");
                    if let Ok(mut f) = fatal.lock() {
                        *f = Some(why);
                    }
                }
            }
        }
    };
    let served = match server_tls {
        Some(server_tls) => {
            let listener = crate::admin::tls::TlsListener::new(listener, server_tls)
                .map_err(DaemonError::Serve)?;
            crate::admin::serve(listener, backend, auth, stop).await
        }
        None => crate::admin::serve(listener, backend, auth, stop).await,
    };
    tracing::info!("shutting down: stopping components");
    host.shutdown().await;
    if let Some(why) = fatal.lock().ok().and_then(|mut f| f.take()) {
        return Err(DaemonError::RaftStopped(why));
    }
    served.map_err(DaemonError::Serve)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("cannot watch SIGTERM: {e}");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> NodeConfig {
        NodeConfig {
            data_dir: dir.to_path_buf(),
            ..NodeConfig::default()
        }
    }

    #[test]
    fn a_token_file_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = admin_token(&config(dir.path())).unwrap();
        assert_eq!(admin_token(&config(dir.path())).unwrap(), first);
    }

    #[test]
    fn a_token_file_that_cannot_be_read_is_an_error_and_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: reading it fails.
        std::fs::create_dir(dir.path().join(TOKEN_FILE)).unwrap();
        std::fs::write(dir.path().join(TOKEN_FILE).join("keep"), "x").unwrap();
        assert!(matches!(
            admin_token(&config(dir.path())),
            Err(DaemonError::Token { .. })
        ));
        assert!(dir.path().join(TOKEN_FILE).join("keep").exists());
    }
}
