//! The `airssys` binary: parses the command line and runs it. See `airssys --help`.

use airssys_node::cli::{self, Cli, CliError};
use anyhow::Context;
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Usage errors exit with 2 here, `--help` and `--version` with 0.
    let cli = Cli::parse();
    airssys_node::client::install_crypto_provider();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let (kind, message, code) = match err.downcast_ref::<CliError>() {
                Some(e) => (e.kind_name(), e.message(), e.exit_code()),
                None => ("error", format!("{err:#}"), 1),
            };
            eprintln!("error: {kind}: {message}");
            ExitCode::from(code)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(cli::run(cli))?;
    Ok(())
}
