//! QUIC between nodes: one endpoint per node (server and client), one cached
//! connection per peer address, mutual TLS from [`crate::tls`].
//!
//! - A **call** is one bidirectional stream: one request frame, one response frame.
//! - A **lane** is one long-lived unidirectional stream per peer carrying a sequence of
//!   frames in order (actor messages), so FIFO per sender/receiver pair holds.
//!
//! Frames are [`crate::wire`] frames. A malformed frame closes its stream with an error
//! code; the connection and the node carry on.

use crate::placement::NodeId;
use crate::wire::{self, WireError, MAX_FRAME_BYTES};
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use rustls::pki_types::CertificateDer;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Stream error code sent when a received frame is malformed.
pub const MALFORMED_FRAME: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot bind the peer endpoint on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot resolve peer address {0}")]
    Resolve(String),
    #[error("cannot connect to {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("stream to {addr} failed: {message}")]
    Stream { addr: String, message: String },
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("no answer from {0} in time")]
    Timeout(String),
}

/// A peer that stops answering (killed, paused, cut off) is noticed within
/// [`IDLE_TIMEOUT`]: its connection closes, lanes and calls reconnect. Without this, a
/// connection to a killed peer would swallow frames until quinn's 30 s default.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(4);
const KEEP_ALIVE: Duration = Duration::from_millis(800);

fn liveness_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE));
    if let Ok(idle) = quinn::IdleTimeout::try_from(IDLE_TIMEOUT) {
        t.max_idle_timeout(Some(idle));
    }
    t
}

/// Who sent a call or a lane frame: the connection's address, and the node the
/// certificate it was verified with names (`None`: it names no single node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub addr: SocketAddr,
    pub node_id: Option<NodeId>,
}

impl Caller {
    fn of(conn: &Connection) -> Caller {
        let node_id = conn
            .peer_identity()
            .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
            .and_then(|chain| {
                chain
                    .first()
                    .and_then(|leaf| crate::peer_identity::node_id_of_cert(leaf))
            });
        Caller {
            addr: conn.remote_address(),
            node_id,
        }
    }
}

/// What the server side does with incoming traffic.
pub trait PeerService: Send + Sync + 'static {
    type Request: DeserializeOwned + Send + 'static;
    type Response: Serialize + Send + 'static;
    /// Answers one call from `caller`.
    fn call(
        &self,
        caller: Caller,
        request: Self::Request,
    ) -> impl Future<Output = Self::Response> + Send;
    /// Takes one frame from a lane; frames of one lane arrive here in order.
    fn lane_frame(&self, caller: Caller, frame: Vec<u8>) -> impl Future<Output = ()> + Send;
}

#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

/// The cached connection to one peer address. Each address has its own lock, held while
/// connecting: a handshake with a dead peer can last until the idle timeout, and with one
/// lock for every peer it held up the heartbeats and votes to the live ones (elections
/// after a kill took seconds and repeated).
type ConnSlot = Arc<tokio::sync::Mutex<Option<Connection>>>;

struct Inner {
    endpoint: Endpoint,
    conns: Mutex<HashMap<String, ConnSlot>>,
    /// Last time a call to each node succeeded (the leader's liveness view).
    contacts: Mutex<HashMap<NodeId, Instant>>,
    /// Bytes of incoming frames held now, across every peer and stream (see
    /// [`INBOUND_BUDGET_BYTES`]), in [`BUDGET_UNIT`]s.
    inbound: Arc<Semaphore>,
}

/// The most bytes of incoming frames a node holds at once, across every peer and stream.
/// A frame is read only once its whole length fits (its header says how long it is), so a
/// peer that sends faster than the node handles is held back by QUIC's flow control and
/// never grows the node's memory; a frame being handled keeps its share until it is done.
pub const INBOUND_BUDGET_BYTES: usize = 256 << 20;
/// The budget is counted in KiB (a semaphore counts in `u32`).
const BUDGET_UNIT: usize = 1024;

/// The key that signs stateless resets, derived from a node's long-lived secret (its private
/// key): the same across restarts, unknown to anyone else.
fn reset_key(secret: &[u8]) -> ring::hmac::Key {
    let seed = ring::digest::digest(
        &ring::digest::SHA256,
        &[b"airssys quic stateless reset v1\0".as_slice(), secret].concat(),
    );
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, seed.as_ref())
}

/// Random 8-byte connection ids, every one of which the endpoint takes as possibly its own.
/// quinn's default generator recognises only the ids its own process issued, so a restarted
/// node silently dropped packets of its previous life's connections instead of resetting
/// them.
struct AnyLifeConnectionIds;

impl quinn::ConnectionIdGenerator for AnyLifeConnectionIds {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        quinn::ConnectionId::new(&rand::random::<[u8; 8]>())
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

impl Transport {
    /// Binds the node's QUIC endpoint (stateless resets signed with a random key: a
    /// restart leaves peers waiting for the idle timeout; nodes use
    /// [`Transport::bind_with_reset_secret`]).
    pub fn bind(
        listen: SocketAddr,
        server: quinn::ServerConfig,
        client: quinn::ClientConfig,
    ) -> Result<Transport, TransportError> {
        Self::bind_endpoint(listen, server, client, quinn::EndpointConfig::default())
    }

    /// Binds the node's QUIC endpoint with its stateless-reset key derived from `secret`
    /// (the node's private key). A restarted node then answers packets of its previous
    /// life's connections with a reset its peers accept, and they drop those connections at
    /// once instead of after the idle timeout: without it, a leader kept sending heartbeats
    /// into a dead connection to a node that had come back, for up to 4 s, and lost its
    /// quorum if another node died meanwhile.
    pub fn bind_with_reset_secret(
        listen: SocketAddr,
        server: quinn::ServerConfig,
        client: quinn::ClientConfig,
        secret: &[u8],
    ) -> Result<Transport, TransportError> {
        let mut config = quinn::EndpointConfig::default();
        config.reset_key(Arc::new(reset_key(secret)));
        config.cid_generator(|| Box::new(AnyLifeConnectionIds));
        Self::bind_endpoint(listen, server, client, config)
    }

    fn bind_endpoint(
        listen: SocketAddr,
        mut server: quinn::ServerConfig,
        mut client: quinn::ClientConfig,
        config: quinn::EndpointConfig,
    ) -> Result<Transport, TransportError> {
        let transport = Arc::new(liveness_config());
        server.transport_config(transport.clone());
        client.transport_config(transport);
        let bind_err = |source| TransportError::Bind {
            addr: listen,
            source,
        };
        let socket = std::net::UdpSocket::bind(listen).map_err(bind_err)?;
        let runtime = quinn::default_runtime()
            .ok_or_else(|| bind_err(std::io::Error::other("no async runtime is running")))?;
        let mut endpoint =
            Endpoint::new(config, Some(server), socket, runtime).map_err(bind_err)?;
        endpoint.set_default_client_config(client);
        Ok(Transport {
            inner: Arc::new(Inner {
                endpoint,
                conns: Mutex::new(HashMap::new()),
                contacts: Mutex::new(HashMap::new()),
                inbound: Arc::new(Semaphore::new(INBOUND_BUDGET_BYTES / BUDGET_UNIT)),
            }),
        })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.endpoint.local_addr().ok()
    }

    /// Records that `node` answered just now.
    pub fn record_contact(&self, node: NodeId) {
        if let Ok(mut c) = self.inner.contacts.lock() {
            c.insert(node, Instant::now());
        }
    }

    /// How long ago `node` last answered, if ever.
    pub fn since_contact(&self, node: NodeId) -> Option<Duration> {
        self.inner
            .contacts
            .lock()
            .ok()
            .and_then(|c| c.get(&node).map(|t| t.elapsed()))
    }

    fn slot(&self, addr: &str) -> ConnSlot {
        match self.inner.conns.lock() {
            Ok(mut conns) => conns.entry(addr.to_string()).or_default().clone(),
            // A poisoned map only loses the cache: connect without it.
            Err(_) => ConnSlot::default(),
        }
    }

    async fn connection(&self, addr: &str) -> Result<Connection, TransportError> {
        let slot = self.slot(addr);
        let mut cached = slot.lock().await;
        if let Some(c) = cached.as_ref() {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
            *cached = None;
        }
        let (host, _) = addr
            .rsplit_once(':')
            .ok_or_else(|| TransportError::Resolve(addr.to_string()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let sock = tokio::net::lookup_host(addr)
            .await
            .map_err(|_| TransportError::Resolve(addr.to_string()))?
            .next()
            .ok_or_else(|| TransportError::Resolve(addr.to_string()))?;
        let connect_err = |message: String| TransportError::Connect {
            addr: addr.to_string(),
            message,
        };
        let conn = self
            .inner
            .endpoint
            .connect(sock, host)
            .map_err(|e| connect_err(e.to_string()))?
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        *cached = Some(conn.clone());
        Ok(conn)
    }

    /// Drops the cached connection to `addr` after a failure on it. When another task holds
    /// the slot it is connecting anew, and there is nothing to drop.
    fn forget(&self, addr: &str) {
        if let Ok(mut cached) = self.slot(addr).try_lock() {
            *cached = None;
        }
    }

    /// One request, one response, within `limit`.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        request: &Req,
        limit: Duration,
    ) -> Result<Resp, TransportError> {
        let frame = wire::encode_frame(request)?;
        match tokio::time::timeout(limit, self.call_frame(addr, &frame)).await {
            Ok(Ok(bytes)) => Ok(wire::decode_frame(&bytes)?),
            Ok(Err(e)) => {
                self.forget(addr);
                Err(e)
            }
            Err(_) => Err(TransportError::Timeout(addr.to_string())),
        }
    }

    async fn call_frame(&self, addr: &str, frame: &[u8]) -> Result<Vec<u8>, TransportError> {
        let conn = self.connection(addr).await?;
        let stream_err = |e: String| TransportError::Stream {
            addr: addr.to_string(),
            message: e,
        };
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| stream_err(e.to_string()))?;
        send.write_all(frame)
            .await
            .map_err(|e| stream_err(e.to_string()))?;
        send.finish().map_err(|e| stream_err(e.to_string()))?;
        recv.read_to_end(MAX_FRAME_BYTES + wire::HEADER_BYTES)
            .await
            .map_err(|e| stream_err(e.to_string()))
    }

    /// Opens a lane (ordered unidirectional stream) to a peer.
    pub async fn open_lane(&self, addr: &str) -> Result<SendStream, TransportError> {
        let conn = self.connection(addr).await?;
        match conn.open_uni().await {
            Ok(s) => Ok(s),
            Err(e) => {
                self.forget(addr);
                Err(TransportError::Stream {
                    addr: addr.to_string(),
                    message: e.to_string(),
                })
            }
        }
    }

    /// Accepts connections until the endpoint closes, serving calls and lanes.
    pub fn serve<S: PeerService>(&self, service: Arc<S>) {
        let endpoint = self.inner.endpoint.clone();
        let budget = self.inner.inbound.clone();
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let service = service.clone();
                let budget = budget.clone();
                tokio::spawn(async move {
                    match incoming.await {
                        Ok(conn) => serve_connection(conn, service, budget).await,
                        // A peer without a certificate from our CA, or garbage: refused.
                        Err(e) => tracing::warn!("peer connection refused: {e}"),
                    }
                });
            }
        });
    }

    /// Closes the endpoint: every connection and stream ends.
    pub fn close(&self) {
        self.inner
            .endpoint
            .close(VarInt::from_u32(0), b"node stopping");
    }

    /// Closes the endpoint and waits (at most `limit`) until its connections have told
    /// their peers, so the socket is free for a node started again in the same process.
    pub async fn close_and_wait(&self, limit: Duration) {
        self.close();
        let _ = tokio::time::timeout(limit, self.inner.endpoint.wait_idle()).await;
    }
}

async fn serve_connection<S: PeerService>(
    conn: Connection,
    service: Arc<S>,
    budget: Arc<Semaphore>,
) {
    let caller = Caller::of(&conn);
    loop {
        tokio::select! {
            bi = conn.accept_bi() => match bi {
                Ok((send, recv)) => {
                    let (service, budget) = (service.clone(), budget.clone());
                    tokio::spawn(async move { serve_call(send, recv, service, caller, budget).await });
                }
                Err(_) => return,
            },
            uni = conn.accept_uni() => match uni {
                Ok(recv) => {
                    let (service, budget) = (service.clone(), budget.clone());
                    tokio::spawn(async move { serve_lane(recv, service, caller, budget).await });
                }
                Err(_) => return,
            },
        }
    }
}

/// Why an incoming frame could not be read.
#[derive(Debug, thiserror::Error)]
enum FrameReadError {
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("stream: {0}")]
    Stream(String),
}

/// Reads one whole frame (header and body) from `recv`, once the inbound budget has room
/// for all of it; `None` when the stream ended cleanly before a frame began. The permit is
/// the frame's share of the budget: hold it while the frame (or what it decodes to) lives.
async fn read_frame(
    recv: &mut RecvStream,
    budget: &Arc<Semaphore>,
) -> Result<Option<(Vec<u8>, OwnedSemaphorePermit)>, FrameReadError> {
    let mut header = [0u8; wire::HEADER_BYTES];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(FrameReadError::Stream(e.to_string())),
    }
    let len = wire::announced_len(header)?;
    let units = u32::try_from(len.div_ceil(BUDGET_UNIT)).unwrap_or(u32::MAX);
    let permit = budget
        .clone()
        .acquire_many_owned(units)
        .await
        .map_err(|e| FrameReadError::Stream(e.to_string()))?;
    let mut frame = vec![0u8; wire::HEADER_BYTES + len];
    frame[..wire::HEADER_BYTES].copy_from_slice(&header);
    recv.read_exact(&mut frame[wire::HEADER_BYTES..])
        .await
        .map_err(|e| FrameReadError::Stream(e.to_string()))?;
    Ok(Some((frame, permit)))
}

async fn serve_call<S: PeerService>(
    mut send: SendStream,
    mut recv: RecvStream,
    service: Arc<S>,
    caller: Caller,
    budget: Arc<Semaphore>,
) {
    let (frame, _permit) = match read_frame(&mut recv, &budget).await {
        Ok(Some(read)) => read,
        Ok(None) => return,
        Err(e) => {
            match e {
                FrameReadError::Wire(e) => {
                    tracing::warn!(peer = %caller.addr, "malformed call frame from a peer: {e}")
                }
                FrameReadError::Stream(e) => tracing::debug!("call stream ended early: {e}"),
            }
            let _ = send.reset(VarInt::from_u32(MALFORMED_FRAME));
            return;
        }
    };
    let request: S::Request = match wire::decode_frame(&frame) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(peer = %caller.addr, "malformed call frame from a peer: {e}");
            let _ = send.reset(VarInt::from_u32(MALFORMED_FRAME));
            return;
        }
    };
    drop(frame);
    let response = service.call(caller, request).await;
    match wire::encode_frame(&response) {
        Ok(frame) => {
            if send.write_all(&frame).await.is_ok() {
                let _ = send.finish();
            }
        }
        Err(e) => {
            tracing::error!("cannot encode a call response: {e}");
            let _ = send.reset(VarInt::from_u32(MALFORMED_FRAME));
        }
    }
}

async fn serve_lane<S: PeerService>(
    mut recv: RecvStream,
    service: Arc<S>,
    caller: Caller,
    budget: Arc<Semaphore>,
) {
    loop {
        let (frame, _permit) = match read_frame(&mut recv, &budget).await {
            Ok(Some(read)) => read,
            Ok(None) => return,
            Err(FrameReadError::Stream(_)) => return,
            Err(FrameReadError::Wire(e)) => {
                tracing::warn!(peer = %caller.addr, "malformed lane frame, closing the lane: {e}");
                let _ = recv.stop(VarInt::from_u32(MALFORMED_FRAME));
                return;
            }
        };
        match wire::decode_frame::<Vec<u8>>(&frame) {
            // Held until the service took it: a slow service slows this lane's reading.
            Ok(body) => service.lane_frame(caller, body).await,
            Err(e) => {
                tracing::warn!(peer = %caller.addr, "malformed lane frame, closing the lane: {e}");
                let _ = recv.stop(VarInt::from_u32(MALFORMED_FRAME));
                return;
            }
        }
    }
}

/// Sends frames to peers, one lane per peer, in the order they were queued.
#[derive(Clone)]
pub struct Lanes {
    transport: Transport,
    queues: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Vec<u8>>>>>,
}

impl Lanes {
    pub fn new(transport: Transport) -> Lanes {
        Lanes {
            transport,
            queues: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Queues one frame body for the peer at `addr`. Delivery is best effort: a frame
    /// lost with a broken stream is not resent here (durable senders resend).
    pub fn send(&self, addr: &str, body: Vec<u8>) {
        let Ok(mut queues) = self.queues.lock() else {
            return;
        };
        if let Some(q) = queues.get(addr) {
            if q.send(body.clone()).is_ok() {
                return;
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(body);
        queues.insert(addr.to_string(), tx);
        tokio::spawn(run_lane(self.transport.clone(), addr.to_string(), rx));
    }
}

async fn run_lane(transport: Transport, addr: String, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    let mut stream: Option<SendStream> = None;
    while let Some(body) = rx.recv().await {
        let frame = match wire::encode_frame(&body) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(peer = %addr, "frame not sent: {e}");
                continue;
            }
        };
        // Two tries: the cached stream may belong to a connection that just died.
        for _ in 0..2 {
            if stream.is_none() {
                match transport.open_lane(&addr).await {
                    Ok(s) => stream = Some(s),
                    Err(e) => {
                        tracing::debug!(peer = %addr, "lane not open: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
            }
            if let Some(s) = stream.as_mut() {
                if s.write_all(&frame).await.is_ok() {
                    break;
                }
            }
            stream = None;
        }
    }
}
