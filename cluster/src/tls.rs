//! Mutual TLS between cluster nodes: the cluster CA, the node certificates it issues, and
//! the quinn server/client configurations built from them.
//!
//! Every node holds the cluster CA certificate and a node certificate signed by it. A node
//! accepts a QUIC connection only from a peer presenting a certificate of the same CA, and
//! dials a peer only if the peer's certificate chains to that CA; no system roots are ever
//! trusted. Both sides negotiate the ALPN [`ALPN`]. Configs are built with an explicit ring
//! [`CryptoProvider`] and TLS 1.3 only, so nothing depends on a process-wide default provider.

use std::net::IpAddr;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

/// The ALPN protocol id every cluster connection negotiates.
pub const ALPN: &[u8] = b"airssys/1";

/// What can go wrong building certificates or TLS configurations.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Generating, parsing or signing a certificate failed.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A PEM certificate or key could not be read.
    #[error("PEM: {0}")]
    Pem(String),
    /// A host name is neither an IP address nor a valid DNS name.
    #[error("invalid host name {0:?}")]
    InvalidHost(String),
    /// A host that is another node's name (`node-N.airssys`).
    #[error("host {0:?} is another node's name; a node certificate names only its own node")]
    ForeignNodeName(String),
    /// rustls rejected the configuration (bad key, no usable protocol version, ...).
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built (e.g. no trust anchors).
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// quinn refused the rustls configuration (no TLS 1.3 initial cipher suite).
    #[error("QUIC crypto: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
}

/// The cluster certificate authority: a self-signed CA certificate and its private key.
#[derive(Clone)]
pub struct ClusterCa {
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A node's certificate (signed by the cluster CA) and its private key, both PEM.
#[derive(Clone)]
pub struct NodeCert {
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for NodeCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl NodeCert {
    /// Wraps an existing node certificate and key (PEM); checked when a config is built.
    pub fn from_pem(cert_pem: impl Into<String>, key_pem: impl Into<String>) -> Self {
        Self {
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
        }
    }

    /// The node certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The node private key (PKCS#8), PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The node this certificate names (see [`crate::peer_identity::node_id_of_cert`]);
    /// `None` when it names none, or is not a readable certificate.
    pub fn named_node(&self) -> Option<u64> {
        let der = CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).ok()?;
        crate::peer_identity::node_id_of_cert(&der)
    }
}

/// Loopback names every node certificate is valid for: a node's own probes and a CLI on
/// the same machine reach its admin API over TLS by them. They let no node pose as
/// another: any certificate of the CA could already answer on this machine's loopback.
pub const LOOPBACK_HOSTS: &[&str] = &["127.0.0.1", "localhost"];

/// The DNS name every node certificate carries: `node-<id>.airssys`.
pub fn node_dns_name(node_id: u64) -> String {
    format!("node-{node_id}{NODE_NAME_SUFFIX}")
}

/// The domain of every node's name in its certificate (`node-N.airssys`).
pub const NODE_NAME_SUFFIX: &str = ".airssys";

impl ClusterCa {
    /// Generates a new self-signed CA for the cluster `cluster_name`.
    pub fn generate(cluster_name: &str) -> Result<Self, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "airssys");
        dn.push(
            DnType::CommonName,
            format!("airssys cluster CA {cluster_name}"),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Loads a CA from its certificate and private key (PEM), checking that both parse.
    pub fn from_pem(
        cert_pem: impl Into<String>,
        key_pem: impl Into<String>,
    ) -> Result<Self, TlsError> {
        let ca = Self {
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
        };
        ca.issuer()?;
        Ok(ca)
    }

    /// The CA certificate, PEM: what every node trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key (PKCS#8), PEM: needed only to issue node certificates.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, TlsError> {
        let key = KeyPair::from_pem(&self.key_pem)?;
        Ok(Issuer::from_ca_cert_pem(&self.cert_pem, key)?)
    }

    /// Issues a certificate for node `node_id`, valid for each of `hosts` (DNS names or IP
    /// addresses), for `node-<id>.airssys` and for the loopback names [`LOOPBACK_HOSTS`],
    /// usable as both TLS server and TLS client.
    pub fn issue_node_cert(&self, node_id: u64, hosts: &[String]) -> Result<NodeCert, TlsError> {
        let issuer = self.issuer()?;
        let node_name = node_dns_name(node_id);
        let loopback = LOOPBACK_HOSTS.iter().map(|h| h.to_string());
        let all: Vec<String> = hosts
            .iter()
            .cloned()
            .chain(std::iter::once(node_name.clone()))
            .chain(loopback)
            .collect();
        // A certificate names one node: another node's name among its hosts would let
        // its holder speak for that node (see `peer_identity`).
        if let Some(other) = hosts
            .iter()
            .find(|h| crate::peer_identity::node_id_of_dns_name(h).is_some_and(|id| id != node_id))
        {
            return Err(TlsError::ForeignNodeName(other.clone()));
        }
        let mut sans = Vec::with_capacity(all.len());
        for host in &all {
            let san = match host.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => {
                    // `*.peers.example` (one leading wildcard label) names every pod of a
                    // headless service with one certificate.
                    let checked = host.strip_prefix("*.").unwrap_or(host);
                    rustls::pki_types::DnsName::try_from(checked)
                        .map_err(|_| TlsError::InvalidHost(host.clone()))?;
                    SanType::DnsName(
                        host.as_str()
                            .try_into()
                            .map_err(|_| TlsError::InvalidHost(host.clone()))?,
                    )
                }
            };
            if !sans.contains(&san) {
                sans.push(san);
            }
        }
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "airssys");
        dn.push(DnType::CommonName, node_name);
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok(NodeCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| TlsError::Pem(format!("CA certificate: {e}")))?;
        roots.add(cert)?;
    }
    if roots.is_empty() {
        return Err(TlsError::Pem("no CA certificate in PEM".into()));
    }
    Ok(roots)
}

fn node_identity(
    node: &NodeCert,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = CertificateDer::pem_slice_iter(node.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(format!("node certificate: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError::Pem("no node certificate in PEM".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(node.key_pem.as_bytes())
        .map_err(|e| TlsError::Pem(format!("node key: {e}")))?;
    Ok((chain, key))
}

/// The QUIC server config of a node: presents `node`, requires a client certificate that
/// chains to the cluster CA `ca_pem` (and nothing else), negotiates [`ALPN`].
pub fn server_config(ca_pem: &str, node: &NodeCert) -> Result<quinn::ServerConfig, TlsError> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca_pem)?), provider.clone())
            .build()?;
    let (chain, key) = node_identity(node)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    Ok(quinn::ServerConfig::with_crypto(Arc::new(quic)))
}

/// The QUIC client config of a node: trusts only the cluster CA `ca_pem`, presents `node` as
/// its client certificate, negotiates [`ALPN`]. Dial peers by `node-<id>.airssys` (or any
/// host in the peer's certificate).
pub fn client_config(ca_pem: &str, node: &NodeCert) -> Result<quinn::ClientConfig, TlsError> {
    let (chain, key) = node_identity(node)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca_pem)?)
        .with_client_auth_cert(chain, key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    Ok(quinn::ClientConfig::new(Arc::new(quic)))
}

/// The ALPN protocol the admin API's HTTPS server offers.
pub const ADMIN_ALPN: &[u8] = b"http/1.1";

/// The admin API's HTTPS server config: presents `node` and asks no client certificate
/// (admin clients authenticate with the bearer token, inside the encrypted channel).
/// TLS 1.2 and 1.3, so ordinary HTTP clients (curl, probes) connect too.
pub fn admin_server_config(node: &NodeCert) -> Result<rustls::ServerConfig, TlsError> {
    let (chain, key) = node_identity(node)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![ADMIN_ALPN.to_vec()];
    Ok(tls)
}

/// A TLS client config that trusts no certificate at all: for an HTTP client that must
/// hold one but only ever speaks plain HTTP.
pub fn admin_client_config_trusting_nothing() -> Result<rustls::ClientConfig, TlsError> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth())
}

/// An admin client's TLS config: trusts only the cluster CA `ca_pem` (never the system
/// roots), presents no certificate.
pub fn admin_client_config(ca_pem: &str) -> Result<rustls::ClientConfig, TlsError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_pem)?)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ADMIN_ALPN.to_vec()];
    Ok(tls)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::ServerName;

    /// Whether `cert_pem` chains to `ca_pem` and is valid for `name` (full webpki check).
    fn valid_for(ca_pem: &str, cert_pem: &str, name: &str) -> bool {
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots(ca_pem).unwrap()),
            provider(),
        )
        .build()
        .unwrap();
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let name = ServerName::try_from(name.to_owned()).unwrap();
        verifier
            .verify_server_cert(&der, &[], &name, &[], rustls::pki_types::UnixTime::now())
            .is_ok()
    }

    #[test]
    fn ca_and_node_pems_parse() {
        let ca = ClusterCa::generate("test").unwrap();
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).is_ok());
        assert!(PrivateKeyDer::from_pem_slice(ca.key_pem().as_bytes()).is_ok());
        let node = ca.issue_node_cert(7, &["example.internal".into()]).unwrap();
        assert!(CertificateDer::from_pem_slice(node.cert_pem().as_bytes()).is_ok());
        assert!(PrivateKeyDer::from_pem_slice(node.key_pem().as_bytes()).is_ok());
        for name in ["node-7.airssys", "example.internal"] {
            assert!(valid_for(ca.cert_pem(), node.cert_pem(), name), "{name}");
        }
        assert!(!valid_for(ca.cert_pem(), node.cert_pem(), "node-8.airssys"));
        let stranger = ClusterCa::generate("other").unwrap();
        assert!(!valid_for(
            stranger.cert_pem(),
            node.cert_pem(),
            "node-7.airssys"
        ));
        // The node cert chains to the CA it came from.
        assert!(server_config(ca.cert_pem(), &node).is_ok());
        assert!(client_config(ca.cert_pem(), &node).is_ok());
    }

    #[test]
    fn node_cert_for_ip_has_ip_san() {
        let ca = ClusterCa::generate("test").unwrap();
        let node = ca.issue_node_cert(1, &["127.0.0.1".into()]).unwrap();
        assert!(matches!(
            ServerName::try_from("127.0.0.1").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(valid_for(ca.cert_pem(), node.cert_pem(), "127.0.0.1"));
        assert!(!valid_for(ca.cert_pem(), node.cert_pem(), "127.0.0.2"));
    }

    #[test]
    fn from_pem_roundtrip() {
        let ca = ClusterCa::generate("test").unwrap();
        let again = ClusterCa::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        assert_eq!(again.cert_pem(), ca.cert_pem());
        assert_eq!(again.key_pem(), ca.key_pem());
        // The reloaded CA still issues certs that chain to the original CA certificate.
        let node = again.issue_node_cert(2, &[]).unwrap();
        assert!(valid_for(ca.cert_pem(), node.cert_pem(), "node-2.airssys"));
        assert!(ClusterCa::from_pem("garbage", ca.key_pem()).is_err());
        assert!(ClusterCa::from_pem(ca.cert_pem(), "garbage").is_err());
    }

    #[test]
    fn every_node_cert_is_valid_on_loopback() {
        let ca = ClusterCa::generate("test").unwrap();
        let node = ca.issue_node_cert(3, &["node3".into()]).unwrap();
        for name in ["127.0.0.1", "localhost", "node3", "node-3.airssys"] {
            assert!(valid_for(ca.cert_pem(), node.cert_pem(), name), "{name}");
        }
        assert!(!valid_for(ca.cert_pem(), node.cert_pem(), "node4"));
    }

    #[test]
    fn admin_configs_build_from_the_cluster_files() {
        let ca = ClusterCa::generate("test").unwrap();
        let node = ca.issue_node_cert(1, &[]).unwrap();
        let server = admin_server_config(&node).unwrap();
        assert_eq!(server.alpn_protocols, vec![ADMIN_ALPN.to_vec()]);
        assert!(admin_client_config(ca.cert_pem()).is_ok());
        assert!(admin_client_config_trusting_nothing().is_ok());
        assert!(matches!(
            admin_client_config("not a certificate"),
            Err(TlsError::Pem(_))
        ));
        let broken = NodeCert::from_pem(node.cert_pem(), "garbage");
        assert!(matches!(
            admin_server_config(&broken),
            Err(TlsError::Pem(_))
        ));
    }

    #[test]
    fn bad_host_is_rejected() {
        let ca = ClusterCa::generate("test").unwrap();
        assert!(matches!(
            ca.issue_node_cert(1, &["bad host name".into()]),
            Err(TlsError::InvalidHost(_))
        ));
    }
}
