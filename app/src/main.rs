//! `ferrite-tgt`: the target daemon.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ferrite_app::target::{self, TargetOptions};
use ferrite_reactor::mem::MemConfig;
use ferrite_reactor::RuntimeConfig;
use tracing_subscriber::EnvFilter;

/// A user-space, polled-mode SCSI target (iSCSI, iSER, SRP), controlled over
/// JSON-RPC. Logs go to stderr; set their level with RUST_LOG (default: info).
#[derive(Debug, Parser)]
#[command(name = "ferrite-tgt", version)]
struct Args {
    /// Cores to run reactors on, as a hex mask (0x3: cores 0 and 1)
    /// [default: every core this process may use]
    #[arg(short = 'm', long = "cpumask", value_name = "MASK")]
    cpumask: Option<String>,

    /// Path of the JSON-RPC socket
    #[arg(
        short = 'r',
        long = "rpc-socket",
        value_name = "PATH",
        default_value = "/var/tmp/ferrite.sock"
    )]
    rpc_socket: PathBuf,

    /// Replay this JSON config (as written by save_config) at start
    #[arg(
        short = 'c',
        long = "json",
        visible_alias = "config",
        value_name = "FILE"
    )]
    json: Option<PathBuf>,

    /// Never sleep when idle: lowest latency, one full core per reactor
    #[arg(long)]
    poll_only: bool,

    /// Memory heap for malloc bdevs, in MiB
    #[arg(
        short = 's',
        long = "mem-size",
        value_name = "MB",
        default_value_t = 2048
    )]
    mem_size: usize,

    /// Use normal pages, not hugepages, for the buffer arena
    #[arg(long)]
    no_huge: bool,

    /// Start with nothing configured (no default Malloc0 bdev)
    #[arg(long, conflicts_with = "json")]
    no_default: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match options(args).and_then(target::run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("ferrite-tgt: {message}");
            ExitCode::FAILURE
        }
    }
}

fn options(args: Args) -> Result<TargetOptions, String> {
    let cores = match &args.cpumask {
        Some(mask) => ferrite_reactor::parse_core_mask(mask)?,
        None => ferrite_reactor::available_cores(),
    };
    // With neither --json nor --no-default, the default config is replayed
    // exactly as a --json file would be.
    let config = if args.no_default {
        None
    } else if let Some(path) = &args.json {
        Some(ferrite_conf::load(path)?)
    } else {
        Some(ferrite_conf::default_config())
    };
    Ok(TargetOptions {
        runtime: RuntimeConfig {
            cores,
            poll_only: args.poll_only,
            ..RuntimeConfig::default()
        },
        mem: MemConfig {
            heap_mb: args.mem_size,
            hugepages: !args.no_huge,
            ..MemConfig::default()
        },
        rpc_socket: args.rpc_socket,
        config,
    })
}
