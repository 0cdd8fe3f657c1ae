//! HTTPS for the admin API: when it is on ([`tls_wanted`]), and a listener that hands axum
//! only connections whose TLS handshake finished.
//!
//! Handshakes run in their own tasks, at most [`MAX_HANDSHAKES`] at once and each within
//! [`HANDSHAKE_TIMEOUT`], so a slow or silent client never holds up the accept loop. A
//! client that speaks plain HTTP to the TLS port gets a plain `400` saying to use
//! `https://`, instead of a reset it cannot explain.

use axum::serve::Listener;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

pub use crate::config::AdminTlsMode;

/// Whether the admin API at `addr` serves HTTPS under `mode`.
pub fn tls_wanted(mode: AdminTlsMode, addr: SocketAddr) -> bool {
    match mode {
        AdminTlsMode::On => true,
        AdminTlsMode::Off => false,
        AdminTlsMode::Auto => !addr.ip().is_loopback(),
    }
}

/// Handshakes in flight at once; connections beyond it are closed at once.
pub const MAX_HANDSHAKES: usize = 256;
/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections whose handshake finished, waiting for axum to take them.
const READY_QUEUE: usize = 64;

/// The first byte of every TLS connection: a handshake record (RFC 8446 §5.1).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Whether a connection's first byte can begin a TLS handshake.
pub fn looks_like_tls(first_byte: u8) -> bool {
    first_byte == TLS_HANDSHAKE_RECORD
}

/// A [`Listener`] of TLS connections on a TCP listener.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Accepts on `tcp` and runs handshakes with `config` in the background.
    pub fn new(tcp: TcpListener, config: rustls::ServerConfig) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let accepting = tokio::spawn(accept_loop(tcp, acceptor, tx));
        Ok(TlsListener {
            ready,
            local,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop ended (its listener failed for good): serve nothing more,
            // but let graceful shutdown finish the connections already open.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!("admin API accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = ready.closed() => return,
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "admin API: {MAX_HANDSHAKES} TLS handshakes in flight; closing a new connection");
            continue;
        };
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(stream, &acceptor)).await {
                Ok(Ok(Some(tls))) => {
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Ok(None)) => tracing::debug!(%peer, "admin API: plain HTTP on the TLS port"),
                Ok(Err(e)) => tracing::debug!(%peer, "admin API: TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "admin API: TLS handshake timed out"),
            }
        });
    }
}

/// The TLS stream, or `None` when the client spoke plain HTTP (and was told so).
async fn handshake(
    stream: TcpStream,
    acceptor: &TlsAcceptor,
) -> std::io::Result<Option<TlsStream<TcpStream>>> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 1 && !looks_like_tls(first[0]) {
        refuse_plain_http(stream).await;
        return Ok(None);
    }
    acceptor.accept(stream).await.map(Some)
}

/// What a plain-HTTP client on the TLS port is told.
pub const PLAIN_HTTP_ANSWER: &str = "this airssys node serves its admin API over TLS: use an \
https:// endpoint, with --ca FILE (the cluster CA certificate, ca.pem)\n";

async fn refuse_plain_http(mut stream: TcpStream) {
    // Read (some of) the request first: closing with unread bytes resets the connection
    // and the client would see the reset, not this answer.
    let mut buf = [0u8; 4096];
    let _ = stream.read(&mut buf).await;
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{PLAIN_HTTP_ANSWER}",
        PLAIN_HTTP_ANSWER.len()
    );
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn auto_is_tls_off_loopback_only() {
        assert!(!tls_wanted(AdminTlsMode::Auto, addr("127.0.0.1:7070")));
        assert!(!tls_wanted(AdminTlsMode::Auto, addr("[::1]:7070")));
        assert!(tls_wanted(AdminTlsMode::Auto, addr("0.0.0.0:7070")));
        assert!(tls_wanted(AdminTlsMode::Auto, addr("10.0.0.5:7070")));
        assert!(tls_wanted(AdminTlsMode::On, addr("127.0.0.1:7070")));
        assert!(!tls_wanted(AdminTlsMode::Off, addr("0.0.0.0:7070")));
    }

    #[test]
    fn only_a_handshake_record_is_taken_for_tls() {
        assert!(looks_like_tls(0x16));
        for plain in [b'G', b'P', b'D', b'H', 0x15, 0x17, 0] {
            assert!(!looks_like_tls(plain), "{plain:#x}");
        }
    }
}
