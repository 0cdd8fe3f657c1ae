//! `airssys cert …`: make the cluster CA and node certificates (local files, no node needed).

use super::{out, CliError};
use airssys_cluster::tls::{ClusterCa, TlsError};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

pub use crate::config::{CA_CERT_FILE, CA_KEY_FILE, NODE_CERT_FILE, NODE_KEY_FILE};

/// `airssys cert …`
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Create a cluster CA: writes DIR/ca.pem (certificate) and DIR/ca.key (private key, mode 0600)
    #[command(after_help = "Example:\n  airssys cert ca --out ./ca --name prod\n\n\
                             Keep ca.key private: it is needed only to issue node certificates.\n\
                             An existing ca.key is never overwritten unless --force is given.")]
    Ca(CaArgs),
    /// Issue a node certificate signed by the cluster CA: writes DIR/node.pem, DIR/node.key (0600) and DIR/ca.pem
    #[command(
        after_help = "Example:\n  airssys cert node --ca-dir ./ca --node-id 2 --host 10.0.0.2 --host node2.example.com --out ./node2\n\n\
                             --host takes IP addresses or DNS names; the certificate is always valid for node-<N>.airssys too.\n\
                             An existing node.key is never overwritten unless --force is given."
    )]
    Node(NodeCertArgs),
}

/// Options of `airssys cert ca`.
#[derive(Debug, Clone, Args)]
pub struct CaArgs {
    /// Directory to write ca.pem and ca.key into (created if missing)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Cluster name, recorded in the CA certificate's common name
    #[arg(long, value_name = "CLUSTER", default_value = "airssys")]
    pub name: String,
    /// Overwrite an existing ca.pem / ca.key
    #[arg(long)]
    pub force: bool,
}

/// Options of `airssys cert node`.
#[derive(Debug, Clone, Args)]
pub struct NodeCertArgs {
    /// Directory holding the CA's ca.pem and ca.key
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    /// The node's id in the cluster
    #[arg(long, value_name = "N")]
    pub node_id: u64,
    /// IP address or DNS name the node is reached at (repeatable)
    #[arg(long = "host", value_name = "H", required = true)]
    pub hosts: Vec<String>,
    /// Directory to write node.pem, node.key and ca.pem into (created if missing)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Overwrite an existing node.pem / node.key
    #[arg(long)]
    pub force: bool,
}

/// Runs `airssys cert …`.
pub fn run(command: CertCommand) -> Result<(), CliError> {
    match command {
        CertCommand::Ca(args) => make_ca(&args),
        CertCommand::Node(args) => make_node_cert(&args),
    }
}

fn make_ca(args: &CaArgs) -> Result<(), CliError> {
    let cert_path = args.out.join(CA_CERT_FILE);
    let key_path = args.out.join(CA_KEY_FILE);
    refuse_overwrite(&key_path, args.force)?;
    let ca = ClusterCa::generate(&args.name).map_err(|e| tls_error("cannot create the CA", e))?;
    create_dir(&args.out)?;
    write_file(&key_path, ca.key_pem(), true)?;
    write_file(&cert_path, ca.cert_pem(), false)?;
    out(&format!(
        "wrote {}\nwrote {}\n",
        cert_path.display(),
        key_path.display()
    ))
}

fn make_node_cert(args: &NodeCertArgs) -> Result<(), CliError> {
    let ca_cert_path = args.ca_dir.join(CA_CERT_FILE);
    let ca_key_path = args.ca_dir.join(CA_KEY_FILE);
    let ca_cert = read_ca_file(&ca_cert_path)?;
    let ca_key = read_ca_file(&ca_key_path)?;
    let ca = ClusterCa::from_pem(ca_cert, ca_key).map_err(|e| {
        CliError::Usage(format!(
            "{} and {} are not a valid CA certificate and key: {e}",
            ca_cert_path.display(),
            ca_key_path.display()
        ))
    })?;
    let cert_path = args.out.join(NODE_CERT_FILE);
    let key_path = args.out.join(NODE_KEY_FILE);
    let ca_copy_path = args.out.join(CA_CERT_FILE);
    refuse_overwrite(&key_path, args.force)?;
    let node = ca
        .issue_node_cert(args.node_id, &args.hosts)
        .map_err(|e| tls_error("cannot issue the node certificate", e))?;
    create_dir(&args.out)?;
    write_file(&key_path, node.key_pem(), true)?;
    write_file(&cert_path, node.cert_pem(), false)?;
    write_file(&ca_copy_path, ca.cert_pem(), false)?;
    out(&format!(
        "wrote {}\nwrote {}\nwrote {}\n",
        cert_path.display(),
        key_path.display(),
        ca_copy_path.display()
    ))
}

fn tls_error(what: &str, e: TlsError) -> CliError {
    match e {
        TlsError::InvalidHost(host) => CliError::Usage(format!(
            "--host {host:?} is neither an IP address nor a valid DNS name"
        )),
        TlsError::ForeignNodeName(host) => CliError::Usage(format!(
            "--host {host:?} is another node's name; each node's certificate names only its own node"
        )),
        other => CliError::io(what, std::io::Error::other(other)),
    }
}

fn refuse_overwrite(key_path: &Path, force: bool) -> Result<(), CliError> {
    if !force && key_path.exists() {
        return Err(CliError::Usage(format!(
            "{} already exists; refusing to overwrite it (pass --force to replace it)",
            key_path.display()
        )));
    }
    Ok(())
}

fn read_ca_file(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            CliError::Usage(format!(
                "{} not found (create a CA with `airssys cert ca --out DIR`)",
                path.display()
            ))
        } else {
            CliError::io(format!("cannot read {}", path.display()), e)
        }
    })
}

fn create_dir(dir: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::io(format!("cannot create {}", dir.display()), e))
}

/// Writes `text` to `path`; a `private` file gets mode 0600 (on Unix).
fn write_file(path: &Path, text: &str, private: bool) -> Result<(), CliError> {
    use std::io::Write;
    let err = |e| CliError::io(format!("cannot write {}", path.display()), e);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        opts.mode(0o600);
        // An existing file keeps its mode on open: tighten it before writing the key.
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        }
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = opts.open(path).map_err(err)?;
    file.write_all(text.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn overwrite_is_refused_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join(CA_KEY_FILE);
        assert!(refuse_overwrite(&key, false).is_ok());
        std::fs::write(&key, "x").unwrap();
        let err = refuse_overwrite(&key, false).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--force"), "{err}");
        assert!(refuse_overwrite(&key, true).is_ok());
    }
}
