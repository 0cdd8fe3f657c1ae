//! `airssys backup …`: take a backup of a running cluster through any node (`create`),
//! check a backup file (`verify`), and seed a new node from one (`restore`, offline: no
//! node runs while it loads).
//!
//! A backup is written to `FILE.partial` and renamed to `FILE` only once its checksum and
//! end were verified; a restore that fails removes what it loaded. Nothing partial is left
//! behind either way.

use super::{connect, note, out, print_json, CliError, ClientOpts};
use crate::client::AdminClient;
use airssys_cluster::backup::{self, BackupError, RestoreSummary};
use airssys_storage::{Storage, StorageOptions};
use clap::Subcommand;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// How often progress is said on stderr.
const PROGRESS_EVERY_BYTES: u64 = 64 << 20;

/// `airssys backup …`
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Take a consistent backup of the whole cluster (registry, binaries, every component's
    /// storage, outboxes, marks) at one Raft index, through any node
    #[command(
        after_help = "Example:\n  airssys backup create cluster-2026-12-05.airssys --endpoint http://10.0.0.5:7070\n\n\
                      The node streams the backup as it reads it (online: components keep running).\n\
                      The file is written as FILE.partial and renamed once its checksum is verified."
    )]
    Create {
        #[command(flatten)]
        client: ClientOpts,
        /// Where to write the backup
        file: PathBuf,
        /// Replace FILE if it exists
        #[arg(long)]
        force: bool,
    },
    /// Check a backup file (its checksum and every record) and say what it holds
    #[command(after_help = "Example:\n  airssys backup verify cluster.airssys --json")]
    Verify {
        file: PathBuf,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Seed a NEW node from a backup: its data dir then holds every component, given to
    /// this node; started, it bootstraps a new cluster that others can join
    #[command(
        after_help = "Example:\n  airssys backup restore cluster.airssys --data-dir /var/lib/airssys-restored --node-id 1\n  airssys node start --data-dir /var/lib/airssys-restored --node-id 1\n\n\
                      The data dir must be new or empty: restoring into an existing node or a running\n\
                      cluster is refused. A file that fails its checksum is refused and nothing is left."
    )]
    Restore {
        file: PathBuf,
        /// Data directory of the new node (must not hold a node's data)
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Id of the new node (start it with the same --node-id)
        #[arg(long, default_value_t = 1)]
        node_id: u64,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CliError {
    let what = what.into();
    move |e| CliError::io(what, e)
}

fn backup_err(file: &Path, e: BackupError) -> CliError {
    CliError::Usage(format!("{}: {e}", file.display()))
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Runs one `airssys backup …` command.
pub async fn run(command: BackupCommand) -> Result<(), CliError> {
    match command {
        BackupCommand::Create {
            client,
            file,
            force,
        } => create(&client, &file, force).await,
        BackupCommand::Verify { file, json } => {
            let summary = verify_file(file.clone()).await?;
            if json {
                print_json(&summary_json(&summary))
            } else {
                out(&summary_line(&file, &summary))
            }
        }
        BackupCommand::Restore {
            file,
            data_dir,
            node_id,
        } => restore(&file, &data_dir, node_id).await,
    }
}

fn summary_json(s: &RestoreSummary) -> serde_json::Value {
    serde_json::json!({
        "format": s.header.format,
        "index": s.header.index,
        "term": s.header.term,
        "node_id": s.header.node_id,
        "taken_at_ms": s.header.taken_at_ms,
        "bytes": s.bytes,
        "components": s.components,
    })
}

fn summary_line(file: &Path, s: &RestoreSummary) -> String {
    format!(
        "{}: a backup of {} component(s) at Raft index {} (term {}), taken by node {} at {}; {} ({} bytes), checksum verified\n",
        file.display(),
        s.components,
        s.header.index,
        s.header.term,
        s.header.node_id,
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(s.header.taken_at_ms)
        ),
        mib(s.bytes),
        s.bytes
    )
}

async fn verify_file(file: PathBuf) -> Result<RestoreSummary, CliError> {
    tokio::task::spawn_blocking(move || {
        let f =
            std::fs::File::open(&file).map_err(io(format!("cannot open {}", file.display())))?;
        backup::verify(BufReader::with_capacity(1 << 20, f)).map_err(|e| backup_err(&file, e))
    })
    .await
    .map_err(|e| CliError::Usage(format!("the check stopped: {e}")))?
}

fn partial_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

async fn create(client: &ClientOpts, file: &Path, force: bool) -> Result<(), CliError> {
    let client = connect(client)?;
    let mut download = Download::begin(file, force, "backup")?;
    let received = client.backup(download.sink()).await;
    let summary = download.finish(received).await?;
    out(&summary_line(file, &summary))
}

/// `component export NAME FILE`.
pub(super) async fn export(
    client: &AdminClient,
    name: &str,
    file: &Path,
    force: bool,
) -> Result<(), CliError> {
    let mut download = Download::begin(file, force, "export")?;
    let received = client.export(name, download.sink()).await;
    let summary = download.finish(received).await?;
    out(&format!(
        "exported {name} at Raft index {} to {} ({} bytes), checksum verified\n",
        summary.header.index,
        file.display(),
        summary.bytes
    ))
}

/// A backup-format file being downloaded to `FILE.partial` (progress on stderr), renamed
/// to `FILE` once verified; nothing is left at either path when any of it fails.
struct Download {
    file: PathBuf,
    partial: PathBuf,
    writer: BufWriter<std::fs::File>,
    received: u64,
    what: &'static str,
}

impl Download {
    fn begin(file: &Path, force: bool, what: &'static str) -> Result<Download, CliError> {
        if file.exists() && !force {
            return Err(CliError::Usage(format!(
                "{} exists; give another file or --force to replace it",
                file.display()
            )));
        }
        let partial = partial_path(file);
        let f = std::fs::File::create(&partial)
            .map_err(io(format!("cannot create {}", partial.display())))?;
        Ok(Download {
            file: file.to_path_buf(),
            partial,
            writer: BufWriter::with_capacity(1 << 20, f),
            received: 0,
            what,
        })
    }

    /// Where the chunks go.
    fn sink(&mut self) -> impl FnMut(&[u8]) -> std::io::Result<()> + '_ {
        move |chunk| {
            self.writer.write_all(chunk)?;
            let total = self.received + chunk.len() as u64;
            if total / PROGRESS_EVERY_BYTES > self.received / PROGRESS_EVERY_BYTES {
                note(&format!("{}: {} received", self.what, mib(total)));
            }
            self.received = total;
            Ok(())
        }
    }

    async fn finish(
        self,
        received: Result<u64, crate::client::ClientError>,
    ) -> Result<RestoreSummary, CliError> {
        let Download {
            file,
            partial,
            writer,
            ..
        } = self;
        let finished = received.map_err(CliError::from).and_then(|_| {
            let f = writer.into_inner().map_err(|e| {
                CliError::io(
                    format!("cannot write {}", partial.display()),
                    e.into_error(),
                )
            })?;
            f.sync_all()
                .map_err(io(format!("cannot sync {}", partial.display())))
        });
        let checked = match finished {
            Ok(()) => verify_file(partial.clone()).await,
            Err(e) => Err(e),
        };
        let summary = match checked {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                return Err(e);
            }
        };
        std::fs::rename(&partial, &file).map_err(io(format!(
            "cannot rename {} to {}",
            partial.display(),
            file.display()
        )))?;
        Ok(summary)
    }
}

/// Whether `dir` holds anything a node wrote (its database, its pinned id).
fn holds_node_data(dir: &Path) -> bool {
    dir.join("db").exists() || dir.join(crate::daemon::NODE_ID_FILE).exists()
}

async fn restore(file: &Path, data_dir: &Path, node_id: u64) -> Result<(), CliError> {
    if node_id == 0 {
        return Err(CliError::Usage("--node-id must be at least 1".into()));
    }
    if holds_node_data(data_dir) {
        return Err(CliError::Usage(format!(
            "{} holds a node's data already: a restore seeds a NEW node and never writes over \
             one (restoring into an existing node or a running cluster is refused); give a new \
             or empty --data-dir",
            data_dir.display()
        )));
    }
    let f = std::fs::File::open(file).map_err(io(format!("cannot open {}", file.display())))?;
    let created_dir = !data_dir.exists();
    std::fs::create_dir_all(data_dir)
        .map_err(io(format!("cannot create {}", data_dir.display())))?;
    let db = data_dir.join("db");
    let (file_owned, db_owned) = (file.to_path_buf(), db.clone());
    let loaded = tokio::task::spawn_blocking(move || -> Result<RestoreSummary, CliError> {
        let storage = Storage::open(&db_owned, StorageOptions::default())
            .map_err(|e| CliError::Usage(format!("cannot open {}: {e}", db_owned.display())))?;
        let mut said = 0u64;
        backup::restore(
            BufReader::with_capacity(1 << 20, f),
            &storage,
            node_id,
            &mut |read| {
                if read / PROGRESS_EVERY_BYTES > said / PROGRESS_EVERY_BYTES {
                    note(&format!("restore: {} read", mib(read)));
                }
                said = read;
            },
        )
        .map_err(|e| backup_err(&file_owned, e))
    })
    .await
    .map_err(|e| CliError::Usage(format!("the restore stopped: {e}")))
    .and_then(|r| r);
    let summary = match loaded {
        Ok(s) => s,
        Err(e) => {
            // Nothing partial stays: the database goes, and the directory if it was ours.
            let _ = std::fs::remove_dir_all(&db);
            if created_dir {
                let _ = std::fs::remove_dir(data_dir);
            }
            return Err(e);
        }
    };
    crate::daemon::pin_node_id(data_dir, node_id)?;
    out(&format!(
        "restored {} component(s) from {} (Raft index {} of the backed-up cluster) into {} for node {node_id}\n\
         start it:  airssys node start --data-dir {} --node-id {node_id}\n\
         it starts a new cluster of its own; other nodes join it with --join\n",
        summary.components,
        file.display(),
        summary.header.index,
        data_dir.display(),
        data_dir.display(),
    ))
}
