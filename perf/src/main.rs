//! ferrite-perf: bdev and reactor microbenchmarks.
//!
//! ```text
//! ferrite-perf bdev -q DEPTH -o SIZE -w WORKLOAD [-M READ_PCT] -t SECONDS [-m MASK]
//!                   -c CONFIG.json [-b BDEV]... [--output text|json] [--poll-only] [-s MEM_MB]
//! ferrite-perf reactor [-t SECONDS] [-m MASK] [--gap-ms MS] [--output text|json]
//! ferrite-perf iscsi -u iscsi://HOST[:PORT]/IQN/LUN [-u ...] [-S SESSIONS] [-C CONNS]
//!                    -q DEPTH -o SIZE -w WORKLOAD [-M READ_PCT] -t SECONDS [-m MASK]
//!                    [--output text|json] [--chap-user U --chap-secret S]
//!                    [--header-digest] [--data-digest] [--poll-only]
//! ferrite-perf iser -u iser://HOST[:PORT]/IQN/LUN -q DEPTH -o SIZE -w WORKLOAD
//!                   [-M READ_PCT] -t SECONDS [-m MASK] [--output text|json] [--poll-only]
//! ferrite-perf srp -u srp://IP:PORT/ID_EXT/IOC_GUID/LUN -q DEPTH -o SIZE -w WORKLOAD
//!                  [-M READ_PCT] -t SECONDS [-m MASK] [--output text|json] [--poll-only]
//!                  [--initiator-id HEX32]
//! ```
//!
//! Exit status: 0 when every I/O succeeded, 1 when some failed or miscompared
//! (or, for iscsi, a connection or login failed), 2 on bad arguments or config.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use ferrite_perf::bdevperf::{self, EXIT_USAGE};
use ferrite_perf::{iscsi, iser, size, srp, wakeup, Workload};

#[derive(Parser, Debug)]
#[command(
    name = "ferrite-perf",
    version,
    about = "bdev and reactor microbenchmarks for ferrite (in the manner of SPDK's bdevperf)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Drive bdevs with a closed-loop workload and report IOPS and latency.
    Bdev(BdevArgs),
    /// Measure how long a sleeping reactor takes to run a message, against a spinning one.
    Reactor(ReactorArgs),
    /// Drive iSCSI targets over TCP with ferrite's own initiator on the reactors.
    Iscsi(IscsiArgs),
    /// Load an iSER target over RDMA verbs: one connection per reactor.
    Iser(IserArgs),
    /// Load an SRP target over RDMA verbs: one channel per reactor.
    Srp(SrpArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Output {
    Text,
    Json,
}

#[derive(clap::Args, Debug)]
struct BdevArgs {
    /// I/Os kept in flight per job.
    #[arg(short = 'q', long = "queue-depth")]
    depth: usize,
    /// Bytes per I/O: 4096, 4k, 128K, 1M (a multiple of the block size).
    #[arg(short = 'o', long = "io-size", value_parser = size::parse_size)]
    io_size: usize,
    /// randread, randwrite, read, write, randrw, rw, verify, unmap, write_zeroes or flush.
    #[arg(short = 'w', long = "workload", value_parser = Workload::parse)]
    workload: Workload,
    /// Percentage of reads for randrw/rw.
    #[arg(short = 'M', long = "rwmixread", default_value_t = 50)]
    read_pct: u32,
    /// Run time in seconds.
    #[arg(short = 't', long = "time")]
    seconds: f64,
    /// Hex core mask: one reactor per core; each target bdev gets one job per reactor.
    #[arg(short = 'm', long = "cpumask", default_value = "0x1")]
    mask: String,
    /// Config file (SPDK format) creating the bdevs.
    #[arg(short = 'c', long = "json")]
    config: PathBuf,
    /// Run on this bdev (repeatable); default: every unclaimed bdev.
    #[arg(short = 'b', long = "bdev")]
    bdevs: Vec<String>,
    /// Report format; with json, progress lines go to stderr.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Reactors never sleep.
    #[arg(long)]
    poll_only: bool,
    /// Memory arena heap (malloc bdevs) in MiB; default: enough for the config.
    #[arg(short = 's', long = "mem-size")]
    mem_mb: Option<usize>,
    /// Write each target once, sequentially, before the measured run.
    #[arg(long)]
    prefill: bool,
}

#[derive(clap::Args, Debug)]
struct IscsiArgs {
    /// Target LUN: iscsi://HOST[:PORT]/IQN/LUN (repeatable; CHAP may be given
    /// as iscsi://USER%SECRET@HOST/...).
    #[arg(short = 'u', long = "url", required = true)]
    urls: Vec<String>,
    /// Sessions per target.
    #[arg(short = 'S', long = "sessions", default_value_t = 1)]
    sessions: usize,
    /// Connections per session (MC/S).
    #[arg(short = 'C', long = "connections", default_value_t = 1)]
    connections: usize,
    /// I/Os kept in flight per connection.
    #[arg(short = 'q', long = "queue-depth")]
    depth: usize,
    /// Bytes per I/O: 4096, 4k, 128K, 1M (a multiple of the LUN's block size).
    #[arg(short = 'o', long = "io-size", value_parser = size::parse_size)]
    io_size: usize,
    /// randread, randwrite, read, write, randrw, rw or verify.
    #[arg(short = 'w', long = "workload", value_parser = Workload::parse)]
    workload: Workload,
    /// Percentage of reads for randrw/rw.
    #[arg(short = 'M', long = "rwmixread", default_value_t = 50)]
    read_pct: u32,
    /// Run time in seconds.
    #[arg(short = 't', long = "time")]
    seconds: f64,
    /// Hex core mask of the initiator's reactors; sessions go round robin.
    #[arg(short = 'm', long = "cpumask", default_value = "0x1")]
    mask: String,
    /// Report format; with json, progress lines go to stderr.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// CHAP (MD5) user name.
    #[arg(long = "chap-user")]
    chap_user: Option<String>,
    /// CHAP secret.
    #[arg(long = "chap-secret")]
    chap_secret: Option<String>,
    /// Insist on HeaderDigest=CRC32C (otherwise None is offered first).
    #[arg(long)]
    header_digest: bool,
    /// Insist on DataDigest=CRC32C.
    #[arg(long)]
    data_digest: bool,
    /// Reactors never sleep.
    #[arg(long)]
    poll_only: bool,
    /// The initiator's iSCSI name.
    #[arg(long = "initiator-name", default_value = iscsi::DEFAULT_INITIATOR_NAME)]
    initiator_name: String,
}

#[derive(clap::Args, Debug)]
struct IserArgs {
    /// Target LUN: iser://HOST[:PORT]/IQN/LUN (HOST: the IP address of an
    /// RDMA interface).
    #[arg(short = 'u', long = "url")]
    url: String,
    /// I/Os kept in flight per connection.
    #[arg(short = 'q', long = "queue-depth")]
    depth: usize,
    /// Bytes per I/O, up to 128 KiB (a multiple of the LUN's block size).
    #[arg(short = 'o', long = "io-size", value_parser = size::parse_size)]
    io_size: usize,
    /// randread, randwrite, read, write, randrw or rw.
    #[arg(short = 'w', long = "workload", value_parser = Workload::parse)]
    workload: Workload,
    /// Percentage of reads for randrw/rw.
    #[arg(short = 'M', long = "rwmixread", default_value_t = 50)]
    read_pct: u32,
    /// Run time in seconds.
    #[arg(short = 't', long = "time")]
    seconds: f64,
    /// Hex core mask of the initiator's reactors: one connection (session) each.
    #[arg(short = 'm', long = "cpumask", default_value = "0x1")]
    mask: String,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Reactors never sleep.
    #[arg(long)]
    poll_only: bool,
    /// Give each command its slot's ITT again as soon as the previous one's
    /// response is in (RFC 7143 allows it; the target may not yet have seen
    /// its response SEND complete).
    #[arg(long)]
    reuse_itt: bool,
    /// The initiator's iSCSI name.
    #[arg(long = "initiator-name", default_value = iscsi::DEFAULT_INITIATOR_NAME)]
    initiator_name: String,
}

#[derive(clap::Args, Debug)]
struct SrpArgs {
    /// Target LUN: srp://IP:PORT/ID_EXT/IOC_GUID/LUN (IP:PORT: the target's
    /// RDMA CM address; ID_EXT and IOC_GUID: the target port's, in hex, as
    /// ib_srp's add_target takes them).
    #[arg(short = 'u', long = "url")]
    url: String,
    /// I/Os kept in flight per channel (bounded also by the target's request limit).
    #[arg(short = 'q', long = "queue-depth")]
    depth: usize,
    /// Bytes per I/O, up to 1 MiB (a multiple of the LUN's block size); one
    /// direct data descriptor each.
    #[arg(short = 'o', long = "io-size", value_parser = size::parse_size)]
    io_size: usize,
    /// randread, randwrite, read, write, randrw or rw.
    #[arg(short = 'w', long = "workload", value_parser = Workload::parse)]
    workload: Workload,
    /// Percentage of reads for randrw/rw.
    #[arg(short = 'M', long = "rwmixread", default_value_t = 50)]
    read_pct: u32,
    /// Run time in seconds.
    #[arg(short = 't', long = "time")]
    seconds: f64,
    /// Hex core mask of the initiator's reactors: one SRP channel each (one nexus).
    #[arg(short = 'm', long = "cpumask", default_value = "0x1")]
    mask: String,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Reactors never sleep.
    #[arg(long)]
    poll_only: bool,
    /// The initiator port id: 32 hex digits (identifier extension, then GUID).
    #[arg(long = "initiator-id", default_value = srp::DEFAULT_INITIATOR_ID)]
    initiator_id: String,
}

#[derive(clap::Args, Debug)]
struct ReactorArgs {
    /// Measuring time per mode (sleeping, then poll-only), in seconds.
    #[arg(short = 't', long = "time", default_value_t = 2.0)]
    seconds: f64,
    /// Hex core mask; default 0x3 (reactor 0 wakes reactor 1) when two cores are
    /// available, else 0x1 (the main thread wakes reactor 0).
    #[arg(short = 'm', long = "cpumask")]
    mask: Option<String>,
    /// Milliseconds between messages (must exceed the 0.5 ms idle-before-sleep).
    #[arg(long = "gap-ms", default_value_t = 2.0)]
    gap_ms: f64,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

fn usage(msg: impl std::fmt::Display) -> ! {
    eprintln!("ferrite-perf: {msg}");
    std::process::exit(EXIT_USAGE);
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                std::process::exit(0);
            }
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                usage("missing subcommand: bdev, reactor, iscsi, iser or srp (see ferrite-perf --help)");
            }
            // One line: clap's first paragraph, without its "error: " prefix.
            let text = e.to_string();
            let para: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let line = para.join(" ");
            let line = line.strip_prefix("error: ").unwrap_or(&line);
            usage(format!("{line} (see ferrite-perf --help)"));
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // The arena's no-hugepages warning is in the banner instead.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new("warn,ferrite_reactor::mem=error")
                }),
        )
        .init();
    let code = match cli.cmd {
        Cmd::Bdev(a) => {
            let cores = ferrite_reactor::parse_core_mask(&a.mask).unwrap_or_else(|e| usage(e));
            bdevperf::main(bdevperf::Options {
                workload: a.workload,
                depth: a.depth,
                io_size: a.io_size,
                read_pct: a.read_pct,
                seconds: a.seconds,
                mask: a.mask,
                cores,
                config: a.config,
                bdevs: a.bdevs,
                json: a.output == Output::Json,
                poll_only: a.poll_only,
                mem_mb: a.mem_mb,
                prefill: a.prefill,
            })
        }
        Cmd::Iscsi(a) => {
            let cores = ferrite_reactor::parse_core_mask(&a.mask).unwrap_or_else(|e| usage(e));
            iscsi::main(iscsi::Options {
                urls: a.urls,
                sessions: a.sessions,
                connections: a.connections,
                workload: a.workload,
                depth: a.depth,
                io_size: a.io_size,
                read_pct: a.read_pct,
                seconds: a.seconds,
                mask: a.mask,
                cores,
                json: a.output == Output::Json,
                chap_user: a.chap_user,
                chap_secret: a.chap_secret,
                header_digest: a.header_digest,
                data_digest: a.data_digest,
                poll_only: a.poll_only,
                initiator_name: a.initiator_name,
            })
        }
        Cmd::Iser(a) => {
            let cores = ferrite_reactor::parse_core_mask(&a.mask).unwrap_or_else(|e| usage(e));
            iser::main(iser::Options {
                url: a.url,
                workload: a.workload,
                depth: a.depth,
                io_size: a.io_size,
                read_pct: a.read_pct,
                seconds: a.seconds,
                mask: a.mask,
                cores,
                json: a.output == Output::Json,
                poll_only: a.poll_only,
                initiator_name: a.initiator_name,
                reuse_itt: a.reuse_itt,
            })
        }
        Cmd::Srp(a) => {
            let cores = ferrite_reactor::parse_core_mask(&a.mask).unwrap_or_else(|e| usage(e));
            srp::main(srp::Options {
                url: a.url,
                workload: a.workload,
                depth: a.depth,
                io_size: a.io_size,
                read_pct: a.read_pct,
                seconds: a.seconds,
                mask: a.mask,
                cores,
                json: a.output == Output::Json,
                poll_only: a.poll_only,
                initiator_id: a.initiator_id,
            })
        }
        Cmd::Reactor(a) => {
            let mask = a.mask.unwrap_or_else(|| {
                let avail = ferrite_reactor::available_cores();
                if avail.contains(&0) && avail.contains(&1) {
                    "0x3".into()
                } else {
                    format!("{:#x}", 1u128 << avail[0])
                }
            });
            let cores = ferrite_reactor::parse_core_mask(&mask).unwrap_or_else(|e| usage(e));
            if !(a.seconds > 0.0 && a.seconds < 1e6) {
                usage(format!(
                    "run time (-t) {} is not a positive number of seconds",
                    a.seconds
                ));
            }
            if !(a.gap_ms >= 0.6 && a.gap_ms <= 10_000.0) {
                usage(format!(
                    "--gap-ms {} must be between 0.6 (longer than the idle-before-sleep) and 10000",
                    a.gap_ms
                ));
            }
            wakeup::main(wakeup::Options {
                cores,
                mask,
                seconds: a.seconds,
                gap: Duration::from_secs_f64(a.gap_ms / 1e3),
                json: a.output == Output::Json,
            })
        }
    };
    std::process::exit(code);
}
