//! The process's rustls crypto provider (a leaf: the admin client, the OTLP exporter and
//! the binary's start all call it).

/// Makes ring the process's rustls crypto provider, once. The HTTP clients (the admin
/// client, and the OTLP trace exporter's) use rustls, which otherwise finds no provider and
/// panics when a client is built. Later calls, and a provider installed by someone else,
/// are kept.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
