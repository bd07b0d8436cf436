//! The run shared by the load generators over RDMA verbs (`ferrite-perf iser`,
//! `ferrite-perf srp`): one connection per reactor, each reporting to the main
//! thread through a [`Shared`]; connect and log in everywhere, start all
//! slots, sleep the run time, stop issuing, wait for what is in flight, log
//! out, close, and report IOPS, bandwidth and latency percentiles.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrite_reactor::{Handle, Message};
use hdrhistogram::Histogram;
use serde_json::json;

use crate::bdevperf::{EXIT_IO_FAILED, EXIT_OK, EXIT_USAGE};
use crate::job;
use crate::workload::Workload;

/// How long connecting, logging in and draining may take.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);

pub enum Failure {
    Usage(String),
    Run(String),
}

/// What a run was, for its report.
pub struct Shape<'a> {
    /// `iser`, `srp`.
    pub tool: &'a str,
    pub url: &'a str,
    pub workload: Workload,
    pub io_size: usize,
    pub depth: usize,
    pub connections: usize,
}

pub struct Report {
    pub ios: u64,
    pub bytes: u64,
    pub failed: u64,
    pub seconds: f64,
    pub hist: Histogram<u64>,
    pub busy_pct: Vec<f64>,
    pub capacity: (u32, u64),
    /// A protocol-specific line (or empty).
    pub note: String,
}

/// Prints the report (text or JSON) and turns the outcome into the exit status.
pub fn finish(result: Result<Report, Failure>, shape: &Shape<'_>, json: bool) -> i32 {
    match result {
        Ok(report) => {
            if json {
                crate::out(&format!("{:#}\n", report.json(shape)));
            } else {
                crate::out(&report.text(shape));
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

impl Report {
    fn iops(&self) -> f64 {
        self.ios as f64 / self.seconds
    }

    fn mib_s(&self) -> f64 {
        self.bytes as f64 / self.seconds / (1 << 20) as f64
    }

    pub fn text(&self, o: &Shape<'_>) -> String {
        let us = |ns: u64| ns as f64 / 1000.0;
        format!(
            "ferrite-perf {}: {} {} B QD{} on {} connection(s), {:.1} s, LUN of {} x {} B\n\
             {:>12.0} IOPS {:>10.1} MiB/s  latency us: avg {:.1} p50 {:.1} p99 {:.1} p99.9 {:.1} max {:.1}\n\
             client reactors busy: {}{}{}\n",
            o.tool,
            o.workload.name(),
            o.io_size,
            o.depth,
            o.connections,
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
            if self.note.is_empty() {
                String::new()
            } else {
                format!("\n{}", self.note)
            },
            if self.failed > 0 {
                format!("\n{} I/O FAILED", self.failed)
            } else {
                String::new()
            }
        )
    }

    pub fn json(&self, o: &Shape<'_>) -> serde_json::Value {
        let r2 = |x: f64| (x * 100.0).round() / 100.0;
        let us = |ns: u64| r2(ns as f64 / 1000.0);
        json!({
            "url": o.url,
            "workload": o.workload.name(),
            "io_size": o.io_size,
            "depth": o.depth,
            "connections": o.connections,
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

/// What the main thread sees of one connection.
#[derive(Default)]
pub struct Shared {
    pub state: Phase,
    pub error: Option<String>,
    pub capacity: Option<(u32, u64)>,
    /// I/Os, bytes, failed I/Os, latencies: set once nothing is in flight
    /// after the stop.
    pub report: Option<(u64, u64, u64, Histogram<u64>)>,
    /// A protocol-specific line for the report (connection 0's is shown).
    pub note: String,
}

#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    #[default]
    Connecting,
    LoggingIn,
    Ready,
    Running,
    Stopping,
    LoggedOut,
    Closed,
}

pub type SharedRef = Arc<Mutex<Shared>>;

pub fn lock(s: &SharedRef) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records the first error of a connection (the run fails with it).
pub fn fail(s: &SharedRef, why: String) {
    let mut s = lock(s);
    if s.error.is_none() {
        s.error = Some(why);
    }
}

pub fn wait_all(
    what: &str,
    all: &[SharedRef],
    done: impl Fn(&Shared) -> bool,
) -> Result<(), Failure> {
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

/// The steps of a run, each run on every connection's reactor (they find
/// their connection in a thread-local).
pub struct Steps {
    pub start: fn(),
    pub stop: fn(),
    /// Busy and all reactor ticks over the measured window.
    pub busy: fn() -> Option<(u64, u64)>,
    pub logout: fn(),
    pub close: fn(),
}

/// Runs `connections` connections for `seconds`: `connect(r, shared)` makes
/// the message that connects reactor `r`'s.
pub fn drive(
    handle: &Handle,
    connections: usize,
    seconds: f64,
    connect: impl Fn(usize, SharedRef) -> Message,
    steps: &Steps,
) -> Result<Report, Failure> {
    let all: Vec<SharedRef> = (0..connections).map(|_| SharedRef::default()).collect();
    for (r, shared) in all.iter().enumerate() {
        crate::send_blocking(handle, r, connect(r, shared.clone())).map_err(Failure::Run)?;
    }
    let on_all = |f: fn()| -> Result<(), Failure> {
        for r in 0..all.len() {
            crate::send_blocking(handle, r, Box::new(f)).map_err(Failure::Run)?;
        }
        Ok(())
    };
    wait_all("the logins", &all, |s| s.state == Phase::Ready)?;
    let capacity = lock(&all[0]).capacity.unwrap_or((512, 0));
    on_all(steps.start)?;
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    on_all(steps.stop)?;
    wait_all("the I/O in flight", &all, |s| s.report.is_some())?;
    let seconds = started.elapsed().as_secs_f64();
    let busy_of = steps.busy;
    let busy: Vec<(u64, u64)> = (0..all.len())
        .map(|r| {
            crate::run_on(handle, r, CONTROL_TIMEOUT, move || {
                busy_of().unwrap_or((0, 1))
            })
            .unwrap_or((0, 1))
        })
        .collect();
    on_all(steps.logout)?;
    // A target that does not answer the logout is not our measurement's
    // problem: disconnect anyway after the wait.
    let _ = wait_all("the logouts", &all, |s| {
        matches!(s.state, Phase::LoggedOut | Phase::Closed)
    });
    let _ = on_all(steps.close);
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
    let note = lock(&all[0]).note.clone();
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
        note,
    })
}

/// Busy and idle ticks of this reactor so far.
pub fn reactor_ticks() -> (u64, u64) {
    let s = ferrite_reactor::local_stats();
    (s.busy_ticks, s.idle_ticks)
}
