//! `ferrite-perf iser`: a closed-loop load generator with its own iSER
//! initiator over RDMA verbs (transport's `rdma` layer), on ferrite's reactors.
//!
//! One RDMA connection (one session) per reactor of the core mask. Each
//! connection logs in over RDMA SENDs (RDMAExtensions=Yes, ImmediateData=No,
//! InitialR2T=Yes, so every byte of write data is fetched by the target's RDMA
//! READ, and read data arrives by its RDMA WRITE), takes the new nexus's unit
//! attention, reads the LUN's capacity, then keeps `depth` commands in flight:
//! each slot owns one arena buffer, advertised in the iSER header under the
//! arena's remote key (registered once), and one small send buffer for its
//! command. The PDU encoders are `ferrite-perf iscsi`'s.
//!
//! A run: connect and log in everywhere, start all slots, sleep the run time,
//! stop issuing, wait for what is in flight, log out, report IOPS, bandwidth
//! and latency percentiles.

mod initiator;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrite_reactor::mem::{self, MemConfig, LARGE_BUF_SIZE};
use ferrite_reactor::{Runtime, RuntimeConfig};
use ferrite_transport::rdma;
use hdrhistogram::Histogram;
use serde_json::json;

use crate::bdevperf::{EXIT_IO_FAILED, EXIT_OK, EXIT_USAGE};
use crate::iscsi::pdu::Lun;
use crate::iscsi::IscsiUrl;
use crate::job;
use crate::rng::mix64;
use crate::workload::Workload;
use initiator::{with_initiator, Initiator, Setup};

/// How long connecting, logging in and draining may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);
/// Most commands in flight per connection.
pub const MAX_DEPTH: usize = 1024;

/// What `ferrite-perf iser` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub url: String,
    pub workload: Workload,
    pub depth: usize,
    pub io_size: usize,
    pub read_pct: u32,
    pub seconds: f64,
    pub mask: String,
    pub cores: Vec<usize>,
    pub json: bool,
    pub poll_only: bool,
    pub initiator_name: String,
    /// A slot's ITT stays the same from command to command.
    pub reuse_itt: bool,
}

/// `iser://HOST[:PORT]/IQN/LUN` (libiscsi's spelling): the address and LUN.
pub fn parse_url(s: &str) -> Result<(SocketAddr, String, u16), String> {
    let rest = s
        .strip_prefix("iser://")
        .ok_or_else(|| format!("'{s}' is not an iSER URL (expected iser://HOST[:PORT]/IQN/LUN)"))?;
    let url = IscsiUrl::parse(&format!("iscsi://{rest}"))?;
    if url.chap.is_some() {
        return Err("ferrite-perf iser does not do CHAP".into());
    }
    let ip: IpAddr = url.host.parse().map_err(|_| {
        format!(
            "'{}' is not an IP address (RDMA CM needs the address of an RDMA interface)",
            url.host
        )
    })?;
    Ok((SocketAddr::new(ip, url.port), url.target, url.lun))
}

pub fn main(opts: Options) -> i32 {
    match run(&opts) {
        Ok(report) => {
            if opts.json {
                crate::out(&format!("{:#}\n", report.json(&opts)));
            } else {
                crate::out(&report.text(&opts));
            }
            if report.failed > 0 {
                EXIT_IO_FAILED
            } else {
                EXIT_OK
            }
        }
        Err(Failure::Usage(m)) => {
            eprintln!("ferrite-perf: {m}");
            EXIT_USAGE
        }
        Err(Failure::Run(m)) => {
            eprintln!("ferrite-perf: {m}");
            EXIT_IO_FAILED
        }
    }
}

enum Failure {
    Usage(String),
    Run(String),
}

struct Report {
    ios: u64,
    bytes: u64,
    failed: u64,
    seconds: f64,
    hist: Histogram<u64>,
    busy_pct: Vec<f64>,
    capacity: (u32, u64),
}

impl Report {
    fn iops(&self) -> f64 {
        self.ios as f64 / self.seconds
    }

    fn mib_s(&self) -> f64 {
        self.bytes as f64 / self.seconds / (1 << 20) as f64
    }

    fn text(&self, o: &Options) -> String {
        let us = |ns: u64| ns as f64 / 1000.0;
        format!(
            "ferrite-perf iser: {} {} B QD{} on {} connection(s), {:.1} s, LUN of {} x {} B\n\
             {:>12.0} IOPS {:>10.1} MiB/s  latency us: avg {:.1} p50 {:.1} p99 {:.1} p99.9 {:.1} max {:.1}\n\
             client reactors busy: {}{}\n",
            o.workload.name(),
            o.io_size,
            o.depth,
            o.cores.len(),
            self.seconds,
            self.capacity.1,
            self.capacity.0,
            self.iops(),
            self.mib_s(),
            self.hist.mean() / 1000.0,
            us(self.hist.value_at_quantile(0.5)),
            us(self.hist.value_at_quantile(0.99)),
            us(self.hist.value_at_quantile(0.999)),
            us(self.hist.max()),
            self.busy_pct
                .iter()
                .map(|p| format!("{p:.0}%"))
                .collect::<Vec<_>>()
                .join(" "),
            if self.failed > 0 {
                format!("\n{} I/O FAILED", self.failed)
            } else {
                String::new()
            }
        )
    }

    fn json(&self, o: &Options) -> serde_json::Value {
        let r2 = |x: f64| (x * 100.0).round() / 100.0;
        let us = |ns: u64| r2(ns as f64 / 1000.0);
        json!({
            "url": o.url,
            "workload": o.workload.name(),
            "io_size": o.io_size,
            "depth": o.depth,
            "connections": o.cores.len(),
            "seconds": r2(self.seconds),
            "ios": self.ios,
            "failed": self.failed,
            "iops": r2(self.iops()),
            "mib_s": r2(self.mib_s()),
            "latency_us": {
                "avg": r2(self.hist.mean() / 1000.0),
                "p50": us(self.hist.value_at_quantile(0.5)),
                "p99": us(self.hist.value_at_quantile(0.99)),
                "p99_9": us(self.hist.value_at_quantile(0.999)),
                "max": us(self.hist.max()),
            },
            "client_busy_pct": self.busy_pct.iter().map(|p| r2(*p)).collect::<Vec<_>>(),
        })
    }
}

fn run(o: &Options) -> Result<Report, Failure> {
    let (addr, target, lun) = parse_url(&o.url).map_err(Failure::Usage)?;
    if o.depth == 0 || o.depth > MAX_DEPTH {
        return Err(Failure::Usage(format!(
            "queue depth (-q) must be 1 to {MAX_DEPTH}"
        )));
    }
    if o.io_size == 0 || o.io_size > LARGE_BUF_SIZE || !o.io_size.is_multiple_of(512) {
        return Err(Failure::Usage(format!(
            "I/O size (-o) must be a multiple of 512 up to {LARGE_BUF_SIZE} bytes"
        )));
    }
    if !matches!(
        o.workload,
        Workload::Read
            | Workload::RandRead
            | Workload::Write
            | Workload::RandWrite
            | Workload::Rw
            | Workload::RandRw
    ) {
        return Err(Failure::Usage(format!(
            "workload {} is not supported over iSER (read, randread, write, randwrite, rw, randrw)",
            o.workload.name()
        )));
    }
    if !(o.seconds > 0.0 && o.seconds < 1e6) {
        return Err(Failure::Usage("run time (-t) must be positive".into()));
    }
    let slots = o.depth * o.cores.len();
    mem::init(&MemConfig {
        heap_mb: 4,
        small_count: 2048 + slots,
        large_count: slots + 16,
        hugepages: true,
    })
    .map_err(|e| Failure::Run(format!("buffer arena: {e}")))?;
    rdma::configure(rdma::RdmaConfig {
        srq_depth: (slots as u32 * 2 + 64).min(16384),
        ..rdma::RdmaConfig::default()
    });
    let rt = Runtime::start(
        RuntimeConfig {
            cores: o.cores.clone(),
            poll_only: o.poll_only,
            idle_sleep: Duration::from_micros(200),
            msg_queue_depth: 256,
        },
        || {},
    )
    .map_err(|e| Failure::Run(format!("reactors: {e}")))?;
    let handle = rt.handle();
    let result = drive(o, &handle, addr, &target, lun);
    handle.stop();
    rt.wait();
    result
}

/// What the main thread sees of one connection.
#[derive(Default)]
struct Shared {
    state: Phase,
    error: Option<String>,
    capacity: Option<(u32, u64)>,
    report: Option<(u64, u64, u64, Histogram<u64>)>,
}

#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    #[default]
    Connecting,
    LoggingIn,
    Ready,
    Running,
    Stopping,
    LoggedOut,
    Closed,
}

type SharedRef = Arc<Mutex<Shared>>;

fn lock(s: &SharedRef) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn wait_all(what: &str, all: &[SharedRef], done: impl Fn(&Shared) -> bool) -> Result<(), Failure> {
    let start = Instant::now();
    loop {
        let mut ready = true;
        for s in all {
            let s = lock(s);
            if let Some(e) = &s.error {
                return Err(Failure::Run(e.clone()));
            }
            ready &= done(&s);
        }
        if ready {
            return Ok(());
        }
        if start.elapsed() > CONTROL_TIMEOUT {
            return Err(Failure::Run(format!("timed out waiting for {what}")));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn drive(
    o: &Options,
    handle: &ferrite_reactor::Handle,
    addr: SocketAddr,
    target: &str,
    lun: u16,
) -> Result<Report, Failure> {
    let mut all = Vec::new();
    for r in 0..o.cores.len() {
        let shared = SharedRef::default();
        all.push(shared.clone());
        let setup = Setup {
            shared,
            target: target.to_string(),
            initiator: o.initiator_name.clone(),
            lun: Lun::from_index(lun),
            isid: [0x80, 0x3f, 0, 0, (r >> 8) as u8, r as u8],
            workload: o.workload,
            read_pct: o.read_pct,
            depth: o.depth,
            io_size: o.io_size,
            seed: mix64(0x15e7 + r as u64),
            reuse_itt: o.reuse_itt,
        };
        crate::send_blocking(
            handle,
            r,
            Box::new(move || {
                if let Err(e) = Initiator::connect(addr, setup.clone()) {
                    lock(&setup.shared).error = Some(format!("connect to {addr}: {e}"));
                }
            }),
        )
        .map_err(Failure::Run)?;
    }
    wait_all("the logins", &all, |s| s.state == Phase::Ready)?;
    let capacity = lock(&all[0]).capacity.unwrap_or((512, 0));
    for r in 0..all.len() {
        crate::send_blocking(
            handle,
            r,
            Box::new(|| {
                with_initiator(|i| i.start());
            }),
        )
        .map_err(Failure::Run)?;
    }
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(o.seconds));
    for r in 0..all.len() {
        crate::send_blocking(
            handle,
            r,
            Box::new(|| {
                with_initiator(|i| i.stop());
            }),
        )
        .map_err(Failure::Run)?;
    }
    wait_all("the I/O in flight", &all, |s| s.report.is_some())?;
    let seconds = started.elapsed().as_secs_f64();
    let busy: Vec<(u64, u64)> = (0..all.len())
        .map(|r| {
            crate::run_on(handle, r, CONTROL_TIMEOUT, || {
                with_initiator(|i| i.busy()).unwrap_or((0, 1))
            })
            .unwrap_or((0, 1))
        })
        .collect();
    for r in 0..all.len() {
        crate::send_blocking(
            handle,
            r,
            Box::new(|| {
                with_initiator(|i| i.logout());
            }),
        )
        .map_err(Failure::Run)?;
    }
    // A target that does not answer the logout is not our measurement's
    // problem: disconnect anyway after the wait.
    let _ = wait_all("the logouts", &all, |s| {
        matches!(s.state, Phase::LoggedOut | Phase::Closed)
    });
    for r in 0..all.len() {
        let _ = crate::send_blocking(
            handle,
            r,
            Box::new(|| {
                with_initiator(|i| i.close());
            }),
        );
    }
    let _ = wait_all("the connections to close", &all, |s| {
        s.state == Phase::Closed
    });

    let mut hist = job::new_histogram();
    let (mut ios, mut bytes, mut failed) = (0, 0, 0);
    for s in &all {
        let mut s = lock(s);
        let (i, b, f, h) = s.report.take().expect("every connection reported");
        ios += i;
        bytes += b;
        failed += f;
        let _ = hist.add(&h);
    }
    Ok(Report {
        ios,
        bytes,
        failed,
        seconds,
        hist,
        busy_pct: busy
            .iter()
            .map(|&(b, all)| 100.0 * b as f64 / all.max(1) as f64)
            .collect(),
        capacity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iser_urls_parse_to_an_address_target_and_lun() {
        let (addr, iqn, lun) =
            parse_url("iser://169.254.77.1:3262/iqn.2026-11.io.ferrite:x/3").expect("a valid URL");
        assert_eq!(addr, "169.254.77.1:3262".parse().unwrap());
        assert_eq!((iqn.as_str(), lun), ("iqn.2026-11.io.ferrite:x", 3));
        let (addr, _, _) = parse_url("iser://10.0.0.1/iqn.x/0").expect("default port");
        assert_eq!(addr.port(), 3260);
        for bad in [
            "iscsi://10.0.0.1/iqn.x/0",
            "iser://target.example/iqn.x/0",
            "iser://u%s@10.0.0.1/iqn.x/0",
            "iser://10.0.0.1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad} is refused");
        }
    }
}
