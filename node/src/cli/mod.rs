//! The `airssys` command line: argument definitions (clap derive) and what each
//! command does. `main.rs` parses, calls [`run`], and turns a [`CliError`] into
//! `error: <kind>: <message>` on stderr and [`CliError::exit_code`].

pub mod backup;
pub mod cert;
pub mod keyed;
pub mod output;

use crate::admin::read_token_file;
use crate::api::{ComponentInfo, Delivery, ErrorKind, LimitsRequest};
use crate::client::{AdminClient, ClientError};
use crate::config::{NodeConfig, DEFAULT_DATA_DIR};
use crate::daemon::DaemonError;
use clap::{Args, Parser, Subcommand};
use std::io::{IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Default `--endpoint`.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7070";

const TOP_AFTER_HELP: &str = "\
Quick start (one node, no configuration):
  airssys node start &                       # data in ./airssys-data, admin API on 127.0.0.1:7070
  airssys component install counter counter.wasm
  airssys request counter inc                # prints 1
  airssys send counter inc                   # fire-and-forget
  airssys component list

Cluster certificates (local, no node needed):
  airssys cert ca --out ./ca                 # ./ca/ca.pem and ./ca/ca.key (0600)
  airssys cert node --ca-dir ./ca --node-id 1 --host 10.0.0.1 --out ./node1

Authentication: client commands send the token from --token-file, $AIRSSYS_TOKEN or --token
(a command line is visible to every user of the machine). Without one, they use
./airssys-data/admin-token, which a node started here with no token writes.

TLS: a node serves its admin API over HTTPS unless it listens on loopback (--admin-tls).
Talk to it with --endpoint https://HOST:PORT --ca ca.pem (the cluster CA certificate, or
$AIRSSYS_CA); without --ca, ./airssys-data/tls/ca.pem is used when it exists.

Exit codes:
  0   success
  1   other error (internal error on the node, I/O error, unexpected answer)
  2   usage: bad arguments, invalid name, bad request, unsupported option
  3   not-found: no such component
  4   timeout: no reply in time
  5   unreachable: no node answers at --endpoint, or TLS with it failed (kind `tls`)
  6   unauthorized: missing or wrong token
  7   already-exists: a component by that name is installed; conflict: an upgrade to the
      code it runs, one another upgrade overtook, a rollback with nothing to go back to
  8   invalid-component: the binary is not a valid airssys component
  9   the component failed: trapped, rejected
  10  over a limit: too-large, quota-exceeded, mailbox-full
  11  try again later: unavailable, not-leader";

/// The `airssys` command.
#[derive(Debug, Parser)]
#[command(
    name = "airssys",
    version,
    about = "airssys: a WASM plugin host where every installed component is an actor",
    long_about = "airssys runs WebAssembly components (WASM Component Model) as actors: each \
                  installed component has its own mailbox, its own sandboxed memory and its own \
                  persistent storage, and talks to others only by messages.\n\n\
                  `airssys node start` runs a node; the other commands talk to a node's admin \
                  API (--endpoint, default http://127.0.0.1:7070).",
    after_help = TOP_AFTER_HELP,
    arg_required_else_help = true,
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (the host that runs components)
    #[command(
        subcommand,
        after_help = "Example:\n  airssys node start --data-dir /var/lib/airssys --admin 0.0.0.0:7070"
    )]
    Node(NodeCommand),
    /// Show the cluster this node belongs to
    #[command(
        after_help = "Examples:\n  airssys cluster status\n  airssys cluster members --json"
    )]
    Cluster(ClusterArgs),
    /// Install, upgrade, list, describe and remove components
    #[command(
        after_help = "Examples:\n  airssys component install counter counter.wasm --memory-mb 32\n  airssys component upgrade counter counter-v2.wasm\n  airssys component rollback counter\n  airssys component list\n  airssys component describe counter --json\n  airssys component remove counter"
    )]
    Component(ComponentArgs),
    /// Send a fire-and-forget message to a component
    #[command(
        after_help = "Examples:\n  airssys send counter inc\n  airssys send logger @event.json --fast\n  echo hello | airssys send echo @-\n\n\
                             DATA is sent as-is: text, or @FILE for a file's bytes, @- for stdin, @@text for text starting with '@'.\n\
                             Durable (the default) is accepted once stored and is processed exactly once; --fast lives in memory only (at most once)."
    )]
    Send(SendArgs),
    /// Send a request to a component and print its reply
    #[command(
        after_help = "Examples:\n  airssys request counter get\n  airssys request echo @input.bin --timeout-ms 10000 > reply.bin\n\n\
                             The reply's bytes go to stdout unchanged (a newline is added only on a terminal).\n\
                             DATA is text, or @FILE, @- for stdin, @@text for text starting with '@'."
    )]
    Request(RequestArgs),
    /// Make the cluster CA and node certificates (local files; no node needed)
    #[command(
        subcommand,
        after_help = "Examples:\n  airssys cert ca --out ./ca --name prod\n  airssys cert node --ca-dir ./ca --node-id 1 --host 10.0.0.1 --out ./node1\n\n\
                             Every node needs node.pem, node.key and ca.pem from `cert node`; keep ca.key off the nodes."
    )]
    Cert(cert::CertCommand),
    /// Back up the whole cluster to a file, check one, or seed a new node from one
    #[command(
        subcommand,
        after_help = "Examples:\n  airssys backup create cluster.airssys\n  airssys backup verify cluster.airssys\n  airssys backup restore cluster.airssys --data-dir ./restored --node-id 1"
    )]
    Backup(backup::BackupCommand),
}

/// `airssys node …`
// Parsed once per process; `Start` carries every node option by value.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Start a node and serve the admin API until Ctrl-C / SIGTERM
    #[command(
        after_help = "Examples:\n  airssys node start\n  airssys node start --data-dir /var/lib/airssys --admin 0.0.0.0:7070 --token \"$AIRSSYS_TOKEN\"\n\n\
                             Without --token the node uses <data-dir>/admin-token, creating it (mode 0600) on first start;\n\
                             client commands run from the same directory find it there. Logs go to stderr; set RUST_LOG (default: info)."
    )]
    Start(StartArgs),
    /// Show one node's own status: id, address, version, components it runs, uptime
    #[command(
        after_help = "Example:\n  airssys node status --endpoint http://10.0.0.5:7070 --json"
    )]
    Status {
        #[command(flatten)]
        client: ClientOpts,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 when the node is ready (/readyz: joined, leader known, caught up), 11 if not
    #[command(
        after_help = "Example (a Kubernetes readiness probe, no shell needed):\n  /airssys node ready --endpoint http://127.0.0.1:7070"
    )]
    Ready {
        #[command(flatten)]
        client: ClientOpts,
    },
}

/// Options of `airssys node start`.
#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    /// Directory for the node's data (RocksDB, compiled-code cache, admin token) [default: airssys-data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address the admin HTTP API listens on [default: 127.0.0.1:7070]
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// This node's id in the cluster [default: 1]
    #[arg(long, value_name = "N", env = "AIRSSYS_NODE_ID")]
    pub node_id: Option<u64>,
    /// Take the node id from the host name's trailing ordinal plus one (a StatefulSet pod
    /// `airssys-0` is node 1); for images without a shell
    #[arg(long, conflicts_with = "node_id")]
    pub node_id_from_hostname: bool,
    /// Bearer token the admin API requires (default: the one in <data-dir>/admin-token).
    /// A command line is visible to every user of the machine: prefer --token-file
    #[arg(long, value_name = "T", env = "AIRSSYS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the bearer token the admin API requires (a mounted secret, say)
    #[arg(long, value_name = "FILE", env = "AIRSSYS_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Serve the admin API over HTTPS with the node's certificate (--tls-dir): `auto` does
    /// unless --admin is a loopback address
    #[arg(long, value_name = "MODE", value_enum, env = "AIRSSYS_ADMIN_TLS",
          default_value_t = crate::admin::tls::AdminTlsMode::Auto)]
    pub admin_tls: crate::admin::tls::AdminTlsMode,
    /// Address the cluster (QUIC) endpoint listens on [default: the admin IP, admin port + 1]
    #[arg(long, value_name = "ADDR")]
    pub peer: Option<SocketAddr>,
    /// How other nodes reach this one, HOST:PORT; HOST must be in the node certificate [default: --peer]
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Peer addresses of cluster members to join through, comma-separated. Without it, a
    /// node with no state starts a new cluster (once)
    #[arg(long, value_name = "ADDR,...", value_delimiter = ',')]
    pub join: Vec<String>,
    /// Directory with ca.pem, node.pem, node.key (from `airssys cert node`). Without it, a
    /// new node makes its own CA in <data-dir>/tls (a cluster of one)
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Milliseconds without an answer to the leader's heartbeats after which a node loses
    /// its components to the others (failover). Lower fails over faster; too low moves
    /// components off nodes that are merely slow
    #[arg(long, value_name = "MS", env = "AIRSSYS_FAILURE_TIMEOUT_MS",
          default_value_t = crate::cluster::DEFAULT_FAILURE_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(200..=600_000))]
    pub failure_timeout_ms: u64,
    /// Shortest Raft election timeout in milliseconds (heartbeats go every 100 ms). A
    /// follower campaigns 2.5 to 3 times this long after the leader's last heartbeat, so it
    /// sets how soon a dead leader is replaced. Raise it on slow or distant networks
    #[arg(long, value_name = "MS", env = "AIRSSYS_ELECTION_TIMEOUT_MS",
          default_value_t = crate::cluster::DEFAULT_ELECTION_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(150..=60_000))]
    pub election_timeout_ms: u64,
    /// Raft entries applied between snapshots; the log behind a snapshot is purged, and a
    /// node that is far behind (or new, or wiped) catches up from the snapshot
    #[arg(long, value_name = "N", env = "AIRSSYS_SNAPSHOT_EVERY",
          default_value_t = crate::cluster::DEFAULT_SNAPSHOT_EVERY,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub snapshot_every: u64,
    /// Configuration file (not supported yet: use the flags)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Where a client command finds the node, and how it authenticates.
#[derive(Debug, Clone, Args)]
pub struct ClientOpts {
    /// Admin API of the node to talk to
    #[arg(long, value_name = "URL", env = "AIRSSYS_ENDPOINT", default_value = DEFAULT_ENDPOINT, global = true)]
    pub endpoint: String,
    /// Admin bearer token (default: ./airssys-data/admin-token when it exists). Prefer
    /// --token-file or $AIRSSYS_TOKEN: a command line is visible to every user
    #[arg(
        long,
        value_name = "T",
        env = "AIRSSYS_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
    /// File holding the admin bearer token
    #[arg(long, value_name = "FILE", env = "AIRSSYS_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// CA certificate an https:// endpoint's certificate must chain to (the cluster's
    /// ca.pem) [default: ./airssys-data/tls/ca.pem when it exists]
    #[arg(long, value_name = "FILE", env = "AIRSSYS_CA", global = true)]
    pub ca: Option<PathBuf>,
}

/// `airssys cluster …`
#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub client: ClientOpts,
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show the cluster: nodes (alive, voter or learner), leader, term, where each component runs
    #[command(
        after_help = "Example:\n  airssys cluster status --endpoint http://10.0.0.5:7070 --json\n\n\
                             Any node answers; the view is the leader's (liveness is the leader's heartbeats)."
    )]
    Status {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// List the cluster's nodes
    #[command(after_help = "Example:\n  airssys cluster members --json")]
    Members {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Move a node's components to the others, then take it out of the cluster
    #[command(after_help = "Example:\n  airssys cluster remove-node 3\n\n\
                             Stop the removed node's process afterwards; its data dir cannot rejoin as is.")]
    RemoveNode {
        /// Id of the node to remove
        id: u64,
    },
}

/// `airssys component …`
#[derive(Debug, Args)]
pub struct ComponentArgs {
    #[command(flatten)]
    pub client: ClientOpts,
    #[command(subcommand)]
    pub command: ComponentCommand,
}

#[derive(Debug, Subcommand)]
pub enum ComponentCommand {
    /// Install a component binary under a name (each name is its own actor with its own storage)
    #[command(
        after_help = "Examples:\n  airssys component install counter target/wasm32-wasip2/release/counter.wasm\n  airssys component install alice account.wasm --quota-mb 16 --deadline-ms 500\n\n\
                             NAME: 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit. Binaries up to 64 MiB.\n\
                             Limits not given take the node's defaults (memory 64 MiB, deadline 2000 ms, mailbox 1024, quota 64 MiB, no fuel metering)."
    )]
    Install(InstallArgs),
    /// List installed components
    #[command(after_help = "Example:\n  airssys component list --json")]
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Show one component: state, placement, limits, storage, binary
    #[command(after_help = "Example:\n  airssys component describe counter")]
    Describe {
        /// Component name
        name: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Replace a component's code, keeping its name, storage and messages
    #[command(
        after_help = "Examples:\n  airssys component upgrade counter counter-v2.wasm\n  airssys component upgrade alice account.wasm --deadline-ms 1000\n\n\
                             The component finishes the message it is handling; every message after it is handled by the new code. \
                             If the new code exports `migrate` (airssys:component@0.1.1; the SDK's `Component::migrate`), it runs first, \
                             inside the switch's own transaction: its storage writes apply with the switch, and if it fails nothing \
                             changes and the old code keeps running. Limits not given keep their current values \
                             (a new --mailbox takes effect at the next restart or move). \
                             The previous code is kept for `airssys component rollback`."
    )]
    Upgrade(InstallArgs),
    /// Go back to the code that ran before the latest upgrade (storage as it is now)
    #[command(after_help = "Example:\n  airssys component rollback counter\n\n\
                             An upgrade to the previous code and its limits, by the same rules (its `migrate` runs, if it has one). \
                             The code rolled back from becomes the previous one: a second rollback goes forward again.")]
    Rollback {
        /// Component name
        name: String,
    },
    /// Write a component's code and storage, at one Raft index, to a file
    #[command(
        after_help = "Example:\n  airssys component export counter counter.export\n\n\
                             The file holds the binary, its limits and the component's storage (not its messages in flight). \
                             `component import` takes it into this or another cluster; `backup verify` checks it."
    )]
    Export {
        /// Component name
        name: String,
        /// Where to write the export
        file: PathBuf,
        /// Replace FILE if it exists
        #[arg(long)]
        force: bool,
    },
    /// Take an export under a name: a new component, or written over one with --replace
    #[command(
        after_help = "Examples:\n  airssys component import counter-copy counter.export\n  airssys component import counter counter.export --replace\n\n\
                             The export's code, limits and storage land as one fenced transaction (generation + 1); \
                             with --replace the component's current storage is replaced whole. \
                             At most 32 MiB of data per import."
    )]
    Import {
        /// Component name (the export's own name need not match)
        name: String,
        /// An export file from `airssys component export`
        file: PathBuf,
        /// Write over the existing component of that name (its code, limits and data)
        #[arg(long)]
        replace: bool,
    },
    /// Remove a component and its storage
    #[command(after_help = "Example:\n  airssys component remove counter")]
    Remove {
        /// Component name
        name: String,
    },
    /// Start a component again on its node: a fresh instance, its failure cleared
    #[command(after_help = "Example:\n  airssys component restart counter\n\n\
                             For a component marked failed (it crashed past its restart limit): \
                             its storage and the durable messages waiting for it are kept and handled \
                             by the new instance. Replicated and fenced like a move (generation + 1).")]
    Restart {
        /// Component name
        name: String,
    },
    /// Run a component on another node (its generation goes up by one)
    #[command(after_help = "Example:\n  airssys component move counter --to 2\n\n\
                             The old node stops the actor, the new one starts it; node ids are in `airssys cluster members`.")]
    Move {
        /// Component name
        name: String,
        /// Id of the destination node
        #[arg(long, value_name = "NODE")]
        to: u64,
    },
}

/// Options of `airssys component install`.
#[derive(Debug, Clone, Args)]
pub struct InstallArgs {
    /// Name to install the component under
    pub name: String,
    /// The component binary (.wasm, a WASM component for the airssys world)
    #[arg(value_name = "FILE.wasm")]
    pub file: PathBuf,
    /// Memory cap of the component's instance, in MiB
    #[arg(long, value_name = "N")]
    pub memory_mb: Option<u32>,
    /// Longest a handler may run, in milliseconds
    #[arg(long, value_name = "N")]
    pub deadline_ms: Option<u64>,
    /// Mailbox capacity, in messages
    #[arg(long, value_name = "N")]
    pub mailbox: Option<u32>,
    /// Storage quota, in MiB
    #[arg(long, value_name = "N")]
    pub quota_mb: Option<u64>,
    /// Fuel per handler call (turns on fuel metering)
    #[arg(long, value_name = "N")]
    pub fuel: Option<u64>,
}

impl InstallArgs {
    pub fn limits(&self) -> LimitsRequest {
        LimitsRequest {
            memory_mb: self.memory_mb,
            deadline_ms: self.deadline_ms,
            mailbox: self.mailbox,
            quota_mb: self.quota_mb,
            fuel: self.fuel,
        }
    }
}

/// Options of `airssys send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub client: ClientOpts,
    /// Target component
    pub name: String,
    /// Payload: text, @FILE, @- (stdin) or @@text
    pub data: String,
    /// Fast delivery: in memory only, at most once, lowest latency
    #[arg(long)]
    pub fast: bool,
    /// Accept the message once per KEY (durable delivery only): a retry with the same
    /// key is answered accepted and queues nothing; the same key with another payload
    /// is refused (`key-reused`, exit 12). With a key, the command itself tries again on
    /// `unavailable`, `not-leader`, a timeout or a lost connection for up to
    /// --timeout-ms, so the message is queued exactly once across failovers.
    /// Keys: 1-128 of A-Z a-z 0-9 . _ : -
    #[arg(long, value_name = "KEY", conflicts_with = "fast")]
    pub idempotency_key: Option<String>,
    /// With --idempotency-key: how long to keep trying, in milliseconds
    #[arg(
        long,
        value_name = "N",
        default_value_t = 30_000,
        requires = "idempotency_key"
    )]
    pub timeout_ms: u64,
}

/// Options of `airssys request`.
#[derive(Debug, Args)]
pub struct RequestArgs {
    #[command(flatten)]
    pub client: ClientOpts,
    /// Target component
    pub name: String,
    /// Payload: text, @FILE, @- (stdin) or @@text
    pub data: String,
    /// How long to wait for the reply, in milliseconds
    #[arg(long, value_name = "N", default_value_t = crate::admin::DEFAULT_REQUEST_TIMEOUT_MS)]
    pub timeout_ms: u64,
    /// Fast delivery: in memory only, at most once, lowest latency
    #[arg(long)]
    pub fast: bool,
    /// Run the request once per KEY: the node keeps the first attempt's outcome (a day)
    /// and answers every retry with it; the same key with another payload is refused
    /// (`key-reused`, exit 12). With a key, the command itself tries again on
    /// `unavailable`, `not-leader`, a timeout or a lost connection until --timeout-ms
    /// is spent, so the request is applied exactly once across failovers.
    /// Keys: 1-128 of A-Z a-z 0-9 . _ : -
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

fn delivery(fast: bool) -> Delivery {
    if fast {
        Delivery::Fast
    } else {
        Delivery::Durable
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The command cannot be carried out as given.
    #[error("{0}")]
    Usage(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Daemon(#[from] DaemonError),
}

impl CliError {
    fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        CliError::Io {
            what: what.into(),
            source,
        }
    }

    /// The name shown after `error:`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            CliError::Client(e) => e.kind_name(),
            CliError::Usage(_) => "usage",
            CliError::Io { .. } => "io",
            CliError::Daemon(_) => "node",
        }
    }

    /// The message shown after the kind.
    pub fn message(&self) -> String {
        match self {
            CliError::Client(e) => e.message(),
            other => other.to_string(),
        }
    }

    /// The process exit code (see `airssys --help`).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Io { .. } | CliError::Daemon(_) => 1,
            CliError::Client(ClientError::Connect { .. } | ClientError::Tls { .. }) => 5,
            CliError::Client(ClientError::Timeout { .. }) => 4,
            CliError::Client(ClientError::InvalidEndpoint { .. }) => 2,
            CliError::Client(ClientError::Api(e)) => exit_code_for(e.error),
            CliError::Client(_) => 1,
        }
    }
}

/// The exit code of an API error kind.
pub fn exit_code_for(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Internal => 1,
        ErrorKind::InvalidName | ErrorKind::BadRequest => 2,
        ErrorKind::NotFound => 3,
        ErrorKind::Timeout => 4,
        ErrorKind::Unauthorized => 6,
        ErrorKind::AlreadyExists | ErrorKind::Conflict => 7,
        ErrorKind::InvalidComponent => 8,
        ErrorKind::Trapped | ErrorKind::Rejected => 9,
        ErrorKind::TooLarge | ErrorKind::QuotaExceeded | ErrorKind::MailboxFull => 10,
        ErrorKind::Unavailable | ErrorKind::NotLeader => 11,
        ErrorKind::KeyReused => 12,
    }
}

/// Runs a parsed command.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Node(NodeCommand::Start(args)) => start_node(args).await,
        Command::Node(NodeCommand::Ready { client }) => {
            if connect(&client)?.ready().await? {
                out("ready\n")
            } else {
                Err(CliError::Client(ClientError::Api(
                    crate::api::ApiError::new(
                        ErrorKind::Unavailable,
                        "not ready: not joined yet, no leader known, or catching up",
                    ),
                )))
            }
        }
        Command::Node(NodeCommand::Status { client, json }) => {
            let status = connect(&client)?.status().await?;
            if json {
                print_json(&status)
            } else {
                out(&output::format_status(&status))
            }
        }
        Command::Cluster(ClusterArgs { client, command }) => {
            let client = connect(&client)?;
            match command {
                ClusterCommand::Status { json } => {
                    let status = client.cluster_status().await?;
                    if json {
                        print_json(&status)
                    } else {
                        out(&output::format_cluster(&status))
                    }
                }
                ClusterCommand::Members { json } => {
                    let status = client.cluster_status().await?;
                    if json {
                        print_json(&status.nodes)
                    } else {
                        out(&output::format_members(&status))
                    }
                }
                ClusterCommand::RemoveNode { id } => {
                    client.remove_node(id).await?;
                    out(&format!("removed node {id} from the cluster\n"))
                }
            }
        }
        Command::Component(ComponentArgs { client, command }) => {
            let client = connect(&client)?;
            component(&client, command).await
        }
        Command::Send(args) => {
            let client = connect(&args.client)?;
            let payload = read_data(&args.data)?;
            let d = delivery(args.fast);
            match &args.idempotency_key {
                None => client.send(&args.name, payload, d).await?,
                Some(key) => {
                    crate::messaging::idempotency::validate_client_key(key)
                        .map_err(CliError::Usage)?;
                    let timeout = std::time::Duration::from_millis(args.timeout_ms);
                    keyed::send(&client, &args.name, payload, timeout, key, true).await?
                }
            }
            note(&format!(
                "accepted by {} ({} delivery)",
                args.name,
                crate::admin::params::delivery_str(d)
            ));
            Ok(())
        }
        Command::Request(args) => {
            let client = connect(&args.client)?;
            let payload = read_data(&args.data)?;
            let reply = match &args.idempotency_key {
                None => {
                    client
                        .request(&args.name, payload, args.timeout_ms, delivery(args.fast))
                        .await?
                }
                Some(key) => {
                    crate::messaging::idempotency::validate_client_key(key)
                        .map_err(CliError::Usage)?;
                    keyed::request(
                        &client,
                        &args.name,
                        payload,
                        std::time::Duration::from_millis(args.timeout_ms),
                        delivery(args.fast),
                        key,
                        true,
                    )
                    .await?
                }
            };
            write_reply(&reply)
        }
        Command::Cert(command) => cert::run(command),
        Command::Backup(command) => backup::run(command).await,
    }
}

async fn component(client: &AdminClient, command: ComponentCommand) -> Result<(), CliError> {
    match command {
        ComponentCommand::Install(args) => {
            let binary = std::fs::read(&args.file)
                .map_err(|e| CliError::io(format!("cannot read {}", args.file.display()), e))?;
            let info = client.install(&args.name, binary, &args.limits()).await?;
            out(&installed_line(&info))
        }
        ComponentCommand::Upgrade(args) => {
            let binary = std::fs::read(&args.file)
                .map_err(|e| CliError::io(format!("cannot read {}", args.file.display()), e))?;
            let info = client.upgrade(&args.name, binary, &args.limits()).await?;
            out(&upgraded_line("upgraded", &info))
        }
        ComponentCommand::Rollback { name } => {
            let info = client.rollback(&name).await?;
            out(&upgraded_line("rolled back", &info))
        }
        ComponentCommand::Export { name, file, force } => {
            backup::export(client, &name, &file, force).await
        }
        ComponentCommand::Import {
            name,
            file,
            replace,
        } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| CliError::io(format!("cannot read {}", file.display()), e))?;
            let info = client.import(&name, bytes, replace).await?;
            out(&upgraded_line("imported into", &info))
        }
        ComponentCommand::List { json } => {
            let list = client.list().await?;
            if json {
                print_json(&list)
            } else {
                out(&output::format_components_table(&list))
            }
        }
        ComponentCommand::Describe { name, json } => {
            let info = client.describe(&name).await?;
            if json {
                print_json(&info)
            } else {
                out(&output::format_component(&info))
            }
        }
        ComponentCommand::Remove { name } => {
            client.remove(&name).await?;
            out(&format!("removed {name}\n"))
        }
        ComponentCommand::Restart { name } => {
            let info = client.restart(&name).await?;
            out(&format!(
                "restarted {name} on node {} (generation {}, {})\n",
                info.node_id,
                info.generation,
                output::state_short(&info.state)
            ))
        }
        ComponentCommand::Move { name, to } => {
            let info = client.move_component(&name, to).await?;
            out(&format!(
                "moved {name} to node {} (generation {}, {})\n",
                info.node_id,
                info.generation,
                output::state_short(&info.state)
            ))
        }
    }
}

fn upgraded_line(what: &str, info: &ComponentInfo) -> String {
    let from = info
        .previous
        .as_ref()
        .map(|p| format!(" from {}", output::sha_prefix(&p.sha256)))
        .unwrap_or_default();
    format!(
        "{what} {}{from} to sha256 {} ({}) on node {}, generation {}\n",
        info.name,
        output::sha_prefix(&info.sha256),
        output::human_bytes(info.size_bytes),
        info.node_id,
        info.generation
    )
}

fn installed_line(info: &ComponentInfo) -> String {
    format!(
        "installed {} (sha256 {}, {}) on node {}, generation {}\n",
        info.name,
        output::sha_prefix(&info.sha256),
        output::human_bytes(info.size_bytes),
        info.node_id,
        info.generation
    )
}

/// The client for a command's `--endpoint`, `--token`/`--token-file` and `--ca`.
pub fn connect(opts: &ClientOpts) -> Result<AdminClient, CliError> {
    let data_dir = Path::new(DEFAULT_DATA_DIR);
    let given = given_token(opts.token.as_deref(), opts.token_file.as_deref())?;
    let token = client_token(given, data_dir);
    let ca = client_ca(opts.ca.as_deref(), &opts.endpoint, data_dir)?;
    Ok(AdminClient::with_ca(&opts.endpoint, token, ca)?)
}

/// The token given as `--token` (or `$AIRSSYS_TOKEN`) or read from `--token-file`; both
/// at once is refused rather than one silently winning.
pub fn given_token(token: Option<&str>, file: Option<&Path>) -> Result<Option<String>, CliError> {
    match (token, file) {
        (Some(_), Some(_)) => Err(CliError::Usage(
            "give --token or --token-file, not both ($AIRSSYS_TOKEN counts as --token, \
             $AIRSSYS_TOKEN_FILE as --token-file)"
                .into(),
        )),
        (Some(t), None) => Ok(Some(t.to_string())),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                CliError::io(format!("cannot read the token file {}", path.display()), e)
            })?;
            let token = text.trim();
            if token.is_empty() {
                return Err(CliError::Usage(format!(
                    "the token file {} is empty",
                    path.display()
                )));
            }
            Ok(Some(token.to_string()))
        }
        (None, None) => Ok(None),
    }
}

/// The CA certificate (PEM) an https endpoint is checked against: `--ca`, else the one a
/// local node made under `data_dir`, else none (then an https endpoint is refused).
pub fn client_ca(
    given: Option<&Path>,
    endpoint: &str,
    data_dir: &Path,
) -> Result<Option<String>, CliError> {
    if let Some(path) = given {
        return std::fs::read_to_string(path)
            .map(Some)
            .map_err(|e| CliError::io(format!("cannot read the CA file {}", path.display()), e));
    }
    if !endpoint.trim().starts_with("https://") {
        return Ok(None);
    }
    let local = data_dir.join("tls").join(cert::CA_CERT_FILE);
    Ok(std::fs::read_to_string(local).ok())
}

/// `--token` / `$AIRSSYS_TOKEN` when given, else the token file a local node wrote
/// under `data_dir`, else none.
pub fn client_token(given: Option<String>, data_dir: &Path) -> Option<String> {
    match given.map(|t| t.trim().to_string()) {
        Some(t) if !t.is_empty() => Some(t),
        _ => read_token_file(data_dir).ok().flatten(),
    }
}

/// A payload argument: `@FILE` is the file's bytes, `@-` is stdin, `@@text` is the text
/// `@text`, anything else is the text itself.
pub fn read_data(data: &str) -> Result<Vec<u8>, CliError> {
    match data_source(data) {
        DataSource::Text(t) => Ok(t.as_bytes().to_vec()),
        DataSource::Stdin => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| CliError::io("cannot read stdin", e))?;
            Ok(buf)
        }
        DataSource::File(path) => {
            std::fs::read(path).map_err(|e| CliError::io(format!("cannot read {path}"), e))
        }
    }
}

/// Where a payload argument's bytes come from.
#[derive(Debug, PartialEq, Eq)]
pub enum DataSource<'a> {
    Text(&'a str),
    File(&'a str),
    Stdin,
}

pub fn data_source(data: &str) -> DataSource<'_> {
    if data.starts_with("@@") {
        DataSource::Text(&data[1..])
    } else if data == "@-" {
        DataSource::Stdin
    } else if let Some(path) = data.strip_prefix('@').filter(|p| !p.is_empty()) {
        DataSource::File(path)
    } else {
        DataSource::Text(data)
    }
}

/// The node id a StatefulSet pod gets: its ordinal (the host name's last `-N`) plus one.
pub fn node_id_from_hostname(host: &str) -> Option<u64> {
    let short = host.split('.').next()?;
    let (_, ordinal) = short.rsplit_once('-')?;
    ordinal.parse::<u64>().ok()?.checked_add(1)
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The [`NodeConfig`] and cluster settings for `node start`.
pub fn node_config(
    args: &StartArgs,
) -> Result<(NodeConfig, crate::cluster::ClusterSettings), CliError> {
    if let Some(file) = &args.config {
        return Err(CliError::Usage(format!(
            "--config {} is not supported yet in this version: use the flags \
             (--data-dir, --admin, --node-id, --token, --peer, --join, --tls-dir)",
            file.display()
        )));
    }
    let mut cfg = NodeConfig::default();
    if let Some(dir) = &args.data_dir {
        cfg.data_dir = dir.clone();
    }
    if let Some(addr) = args.admin {
        cfg.admin_addr = addr;
    }
    let from_host = if args.node_id_from_hostname {
        let host = hostname();
        Some(node_id_from_hostname(&host).ok_or_else(|| {
            CliError::Usage(format!(
                "--node-id-from-hostname: host name {host:?} does not end in -<ordinal>"
            ))
        })?)
    } else {
        None
    };
    if let Some(id) = args.node_id.or(from_host) {
        if id == 0 {
            return Err(CliError::Usage("--node-id must be at least 1".into()));
        }
        cfg.node_id = id;
    }
    cfg.token = given_token(args.token.as_deref(), args.token_file.as_deref())?
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    cfg.admin_tls = args.admin_tls;
    let peer = match args.peer {
        Some(p) => p,
        None => SocketAddr::new(
            cfg.admin_addr.ip(),
            cfg.admin_addr.port().checked_add(1).ok_or_else(|| {
                CliError::Usage("--admin port is the last one: give --peer".into())
            })?,
        ),
    };
    let advertise = match &args.advertise {
        Some(a) => a.clone(),
        None if peer.ip().is_unspecified() => {
            return Err(CliError::Usage(format!(
                "--peer {peer} listens on every interface: say how other nodes reach this one \
                 with --advertise HOST:PORT"
            )))
        }
        None => peer.to_string(),
    };
    let admin_advertise = if cfg.admin_addr.ip().is_unspecified() {
        let host = advertise
            .rsplit_once(':')
            .map(|(h, _)| h.to_string())
            .unwrap_or_default();
        format!("{host}:{}", cfg.admin_addr.port())
    } else {
        cfg.admin_addr.to_string()
    };
    let mut settings = crate::cluster::ClusterSettings::local(cfg.admin_addr, peer.port());
    settings.peer_listen = peer;
    settings.peer_advertise = advertise;
    settings.admin_advertise = admin_advertise;
    settings.join = args.join.clone();
    settings.tls_dir = args.tls_dir.clone();
    settings.failure_timeout_ms = args.failure_timeout_ms;
    settings.election_timeout_ms = args.election_timeout_ms;
    settings.snapshot_every = args.snapshot_every;
    Ok((cfg, settings))
}

async fn start_node(args: StartArgs) -> Result<(), CliError> {
    let (cfg, settings) = node_config(&args)?;
    // Logs to stderr (RUST_LOG, default info); spans over OTLP when OTEL_* asks for it.
    let _telemetry = crate::telemetry::init(
        "info,openraft=warn",
        &format!("airssys-node-{}", cfg.node_id),
    );
    crate::daemon::run(cfg, settings).await?;
    Ok(())
}

/// Writes to stdout; a closed pipe (`| head`) ends output quietly.
fn out(text: &str) -> Result<(), CliError> {
    write_stdout(text.as_bytes())
}

fn write_stdout(bytes: &[u8]) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::io("cannot write to stdout", e)),
    }
}

/// The reply, byte for byte; a newline after it only when stdout is a terminal.
fn write_reply(reply: &[u8]) -> Result<(), CliError> {
    write_stdout(reply)?;
    if std::io::stdout().is_terminal() && !reply.ends_with(b"\n") {
        write_stdout(b"\n")?;
    }
    Ok(())
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), CliError> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::io("cannot encode JSON", std::io::Error::other(e)))?;
    text.push('\n');
    out(&text)
}

/// A confirmation on stderr, so stdout stays clean for scripts.
fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_ADMIN_ADDR;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("airssys").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn client_options_work_before_and_after_the_subcommand() {
        let cli = parse(&["component", "--endpoint", "http://h:1", "list", "--json"]);
        let Command::Component(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.client.endpoint, "http://h:1");
        assert!(matches!(a.command, ComponentCommand::List { json: true }));
        let cli = parse(&[
            "component",
            "list",
            "--endpoint",
            "http://h:2",
            "--token",
            "t",
        ]);
        let Command::Component(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.client.endpoint, "http://h:2");
        assert_eq!(a.client.token.as_deref(), Some("t"));
    }

    #[test]
    fn install_limits() {
        let cli = parse(&[
            "component",
            "install",
            "c",
            "c.wasm",
            "--memory-mb",
            "32",
            "--fuel",
            "9",
        ]);
        let Command::Component(ComponentArgs {
            command: ComponentCommand::Install(a),
            ..
        }) = cli.command
        else {
            panic!()
        };
        assert_eq!(a.file, PathBuf::from("c.wasm"));
        assert_eq!(
            a.limits(),
            LimitsRequest {
                memory_mb: Some(32),
                fuel: Some(9),
                ..LimitsRequest::default()
            }
        );
        assert!(Cli::try_parse_from([
            "airssys",
            "component",
            "install",
            "c",
            "c.wasm",
            "--memory-mb",
            "x"
        ])
        .is_err());
    }

    #[test]
    fn request_defaults() {
        let cli = parse(&["request", "echo", "hi", "--fast"]);
        let Command::Request(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.timeout_ms, crate::admin::DEFAULT_REQUEST_TIMEOUT_MS);
        assert!(a.fast);
        assert_eq!(a.data, "hi");
    }

    #[test]
    fn node_start_config() {
        let cli = parse(&[
            "node",
            "start",
            "--data-dir",
            "/tmp/x",
            "--admin",
            "0.0.0.0:8080",
            "--node-id",
            "3",
            "--token",
            "tok",
            "--join",
            "a:1,b:2",
        ]);
        let Command::Node(NodeCommand::Start(mut a)) = cli.command else {
            panic!()
        };
        assert_eq!(a.join, vec!["a:1", "b:2"]);
        let err = node_config(&a).unwrap_err();
        assert!(err.to_string().contains("--advertise"), "{err}");
        a.advertise = Some("node3.example:8081".into());
        let (cfg, settings) = node_config(&a).unwrap();
        assert_eq!(
            settings.peer_listen,
            "0.0.0.0:8081".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(settings.peer_advertise, "node3.example:8081");
        assert_eq!(settings.admin_advertise, "node3.example:8080");
        assert_eq!(settings.join, vec!["a:1", "b:2"]);
        assert_eq!(cfg.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(
            cfg.admin_addr,
            "0.0.0.0:8080".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(cfg.node_id, 3);
        assert_eq!(cfg.token.as_deref(), Some("tok"));

        let cli = parse(&["node", "start"]);
        let Command::Node(NodeCommand::Start(mut a)) = cli.command else {
            panic!()
        };
        a.token = None; // the test environment may set AIRSSYS_TOKEN
        let (cfg, settings) = node_config(&a).unwrap();
        assert_eq!(cfg.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(settings.peer_advertise, "127.0.0.1:7071");
        assert!(settings.join.is_empty());
        assert_eq!(
            cfg.admin_addr,
            DEFAULT_ADMIN_ADDR.parse::<SocketAddr>().unwrap()
        );
        assert_eq!(cfg.token, None);

        a.config = Some(PathBuf::from("node.toml"));
        let err = node_config(&a).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("not supported yet"), "{err}");
    }

    #[test]
    fn failover_timings_reach_the_cluster_settings_and_bad_ones_are_refused() {
        let cli = parse(&[
            "node",
            "start",
            "--election-timeout-ms",
            "400",
            "--failure-timeout-ms",
            "1500",
        ]);
        let Command::Node(NodeCommand::Start(a)) = cli.command else {
            panic!()
        };
        let (_, settings) = node_config(&a).unwrap();
        assert_eq!(settings.election_timeout_ms, 400);
        assert_eq!(settings.failure_timeout_ms, 1500);
        // An election timeout at or below the 100 ms heartbeat would depose healthy leaders.
        let low = ["airssys", "node", "start", "--election-timeout-ms", "100"];
        assert!(Cli::try_parse_from(low).is_err());
    }

    #[test]
    fn node_id_from_a_pod_name() {
        assert_eq!(node_id_from_hostname("airssys-0"), Some(1));
        assert_eq!(
            node_id_from_hostname("airssys-4.airssys-peers.ns.svc"),
            Some(5)
        );
        assert_eq!(node_id_from_hostname("my-db-12"), Some(13));
        assert_eq!(node_id_from_hostname("airssys"), None);
        assert_eq!(node_id_from_hostname("airssys-x"), None);
        assert_eq!(node_id_from_hostname(""), None);
    }

    #[test]
    fn data_sources() {
        assert_eq!(data_source("inc"), DataSource::Text("inc"));
        assert_eq!(data_source("@f.bin"), DataSource::File("f.bin"));
        assert_eq!(data_source("@-"), DataSource::Stdin);
        assert_eq!(data_source("@@at"), DataSource::Text("@at"));
        assert_eq!(data_source("@"), DataSource::Text("@"));
        assert_eq!(data_source(""), DataSource::Text(""));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.bin");
        std::fs::write(&f, [0u8, 255, 1]).unwrap();
        assert_eq!(
            read_data(&format!("@{}", f.display())).unwrap(),
            vec![0, 255, 1]
        );
        let err = read_data("@/nonexistent/airssys-x").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/airssys-x"), "{err}");
    }

    #[test]
    fn token_lookup() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(client_token(None, dir.path()), None);
        std::fs::write(dir.path().join(crate::config::TOKEN_FILE), "filetok\n").unwrap();
        assert_eq!(client_token(None, dir.path()).as_deref(), Some("filetok"));
        assert_eq!(
            client_token(Some("given".into()), dir.path()).as_deref(),
            Some("given")
        );
        assert_eq!(
            client_token(Some(" ".into()), dir.path()).as_deref(),
            Some("filetok")
        );
    }

    #[test]
    fn exit_codes_are_distinct_per_class() {
        assert_eq!(exit_code_for(ErrorKind::NotFound), 3);
        assert_eq!(exit_code_for(ErrorKind::Timeout), 4);
        assert_eq!(exit_code_for(ErrorKind::Unauthorized), 6);
        assert_eq!(exit_code_for(ErrorKind::BadRequest), 2);
        let usage = CliError::Usage("x".into());
        assert_eq!((usage.exit_code(), usage.kind_name()), (2, "usage"));
        let api = CliError::Client(ClientError::Api(crate::api::ApiError::new(
            ErrorKind::NotFound,
            "no component named x",
        )));
        assert_eq!(api.exit_code(), 3);
        assert_eq!(api.kind_name(), "not-found");
        assert_eq!(api.message(), "no component named x");
        let help = Cli::command().render_long_help().to_string();
        for code in 0..=11 {
            assert!(
                help.contains(&format!("\n  {code:<2}  ")),
                "exit code {code} undocumented"
            );
        }
    }
}
