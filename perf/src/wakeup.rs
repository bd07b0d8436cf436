//! `ferrite-perf reactor`: how long a message takes to run on a reactor that was
//! asleep (idle long enough to block in epoll), against one that spins
//! (`poll_only`).
//!
//! With two or more reactors, reactor 0 sends to reactor 1 from a timed poller;
//! with one, the main thread sends to reactor 0. Each message runs after a gap
//! long enough for the target to fall asleep; the sender stamps `ticks()` just
//! before queueing it and the target records `ticks()` minus that stamp as the
//! first thing it does. The target also checks its sleep counter rose since the
//! previous message, so the sleeping figures only count wake-ups from sleep.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrite_reactor::{self as reactor, ticks, Message, Poll, Runtime, RuntimeConfig};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::TickConv;

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    pub cores: Vec<usize>,
    pub mask: String,
    /// Measuring time per mode.
    pub seconds: f64,
    /// Time between messages; longer than the reactors' idle-before-sleep.
    pub gap: Duration,
    pub json: bool,
}

/// The figures of one mode.
#[derive(Debug, Clone)]
pub struct ModeResult {
    pub poll_only: bool,
    /// Messages that ran (the first one only primes the sleep counter).
    pub messages: u64,
    /// Messages that found the reactor had slept since the previous one.
    pub slept: u64,
    /// Latencies recorded: of the slept messages (sleeping mode), of all
    /// messages (poll-only).
    pub latency_ns: Histogram<u64>,
}

impl ModeResult {
    pub fn name(&self) -> &'static str {
        if self.poll_only {
            "poll-only"
        } else {
            "sleeping"
        }
    }

    fn q_us(&self, q: f64) -> f64 {
        if self.latency_ns.is_empty() {
            0.0
        } else {
            self.latency_ns.value_at_quantile(q) as f64 / 1000.0
        }
    }

    pub fn p50_us(&self) -> f64 {
        self.q_us(0.5)
    }
    pub fn p99_us(&self) -> f64 {
        self.q_us(0.99)
    }
    pub fn max_us(&self) -> f64 {
        if self.latency_ns.is_empty() {
            0.0
        } else {
            self.latency_ns.max() as f64 / 1000.0
        }
    }
    pub fn avg_us(&self) -> f64 {
        if self.latency_ns.is_empty() {
            0.0
        } else {
            self.latency_ns.mean() / 1000.0
        }
    }
}

struct Acc {
    poll_only: bool,
    messages: u64,
    slept: u64,
    hist: Histogram<u64>,
}

thread_local! {
    static LAST_SLEEPS: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Runs on the target: the latency, then whether the reactor slept.
fn on_wake(sent_at: &AtomicU64, acc: &Mutex<Acc>, conv: TickConv) {
    let now = ticks();
    let t0 = sent_at.load(Ordering::Acquire);
    let ns = conv.ns(now.wrapping_sub(t0));
    let sleeps = reactor::local_stats().sleeps;
    let prev = LAST_SLEEPS.with(|c| c.replace(Some(sleeps)));
    let mut a = acc.lock().unwrap_or_else(|e| e.into_inner());
    a.messages += 1;
    let Some(prev) = prev else { return };
    let slept = sleeps > prev;
    if slept {
        a.slept += 1;
    }
    if slept || a.poll_only {
        a.hist.saturating_record(ns.max(1));
    }
}

/// Measures one mode on a fresh runtime.
pub fn measure(opts: &Options, poll_only: bool) -> std::io::Result<ModeResult> {
    let rt = Runtime::start(
        RuntimeConfig {
            cores: opts.cores.clone(),
            poll_only,
            ..RuntimeConfig::default()
        },
        || {},
    )?;
    let h = rt.handle();
    let conv = TickConv::new();
    let acc = Arc::new(Mutex::new(Acc {
        poll_only,
        messages: 0,
        slept: 0,
        hist: crate::job::new_histogram(),
    }));
    let sent_at = Arc::new(AtomicU64::new(0));
    let make = {
        let (acc, sent_at) = (acc.clone(), sent_at.clone());
        move || -> Message {
            let (acc, sent_at) = (acc.clone(), sent_at.clone());
            Box::new(move || on_wake(&sent_at, &acc, conv))
        }
    };
    let run_for = Duration::from_secs_f64(opts.seconds);
    let gap = opts.gap;
    if h.count() >= 2 {
        // Reactor 0 sends to reactor 1 from a timed poller.
        let end = ticks() + (run_for.as_secs_f64() * ferrite_reactor::tick_rate() as f64) as u64;
        let started = crate::run_on(&h, 0, Duration::from_secs(10), move || {
            let id: std::rc::Rc<Cell<Option<reactor::PollerId>>> = Default::default();
            let id2 = id.clone();
            let p = reactor::register_timed_poller("wakeup_sender", gap, move || {
                if ticks() >= end {
                    if let Some(me) = id2.take() {
                        reactor::unregister_poller(me);
                    }
                    return Poll::Idle;
                }
                let msg = make();
                sent_at.store(ticks(), Ordering::Release);
                if let Err(e) = reactor::send(1, msg) {
                    tracing::error!("wake-up message lost: {e}");
                }
                Poll::Busy
            });
            id.set(Some(p));
        });
        if let Err(e) = started {
            h.stop();
            rt.wait();
            return Err(std::io::Error::other(e));
        }
        std::thread::sleep(run_for + gap * 2 + Duration::from_millis(20));
    } else {
        // The main thread wakes reactor 0.
        let end = std::time::Instant::now() + run_for;
        while std::time::Instant::now() < end {
            std::thread::sleep(gap);
            let msg = make();
            sent_at.store(ticks(), Ordering::Release);
            if let Err(e) = crate::send_blocking(&h, 0, msg) {
                tracing::error!("{e}");
                break;
            }
        }
        std::thread::sleep(gap + Duration::from_millis(20));
    }
    h.stop();
    rt.wait();
    let a = acc.lock().unwrap_or_else(|e| e.into_inner());
    Ok(ModeResult {
        poll_only,
        messages: a.messages,
        slept: a.slept,
        latency_ns: a.hist.clone(),
    })
}

/// Runs both modes and prints the comparison; returns the exit status.
pub fn main(opts: Options) -> i32 {
    let mut results = Vec::new();
    for poll_only in [false, true] {
        match measure(&opts, poll_only) {
            Ok(r) => results.push(r),
            Err(e) => {
                eprintln!("ferrite-perf: cannot run reactors: {e}");
                return crate::bdevperf::EXIT_USAGE;
            }
        }
    }
    let route = if opts.cores.len() >= 2 {
        format!(
            "reactor 0 (core {}) -> reactor 1 (core {})",
            opts.cores[0], opts.cores[1]
        )
    } else {
        format!("main thread -> reactor 0 (core {})", opts.cores[0])
    };
    use std::fmt::Write as _;
    let mut text = String::new();
    if opts.json {
        let json = serde_json::to_string_pretty(&report_json(&opts, &route, &results));
        let _ = writeln!(text, "{}", json.expect("JSON"));
    } else {
        let _ = writeln!(
            text,
            "Reactor wake-up latency, {route}, one message every {:.1} ms, {} s per mode (core mask {})",
            opts.gap.as_secs_f64() * 1e3,
            opts.seconds,
            opts.mask
        );
        let _ = writeln!(
            text,
            "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "mode", "messages", "slept", "avg_us", "p50_us", "p99_us", "max_us"
        );
        for r in &results {
            let _ = writeln!(
                text,
                "{:<10} {:>9} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                r.name(),
                r.messages,
                r.slept,
                r.avg_us(),
                r.p50_us(),
                r.p99_us(),
                r.max_us()
            );
        }
        if let Some(s) = results.iter().find(|r| !r.poll_only) {
            let missed = s.messages.saturating_sub(1).saturating_sub(s.slept);
            if missed > 0 {
                let _ = writeln!(
                    text,
                    "({missed} messages of the sleeping run found the reactor awake and are left out; try a longer --gap-ms)"
                );
            }
        }
    }
    crate::out(&text);
    let bad = results.iter().any(|r| r.latency_ns.is_empty());
    if bad {
        eprintln!("ferrite-perf: no wake-up was measured");
        return crate::bdevperf::EXIT_IO_FAILED;
    }
    crate::bdevperf::EXIT_OK
}

fn report_json(opts: &Options, route: &str, results: &[ModeResult]) -> Value {
    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    json!({
        "route": route,
        "core_mask": opts.mask,
        "gap_ms": opts.gap.as_secs_f64() * 1e3,
        "time_s": opts.seconds,
        "modes": results.iter().map(|r| json!({
            "mode": r.name(),
            "messages": r.messages,
            "slept": r.slept,
            "samples": r.latency_ns.len(),
            "avg_us": r2(r.avg_us()),
            "p50_us": r2(r.p50_us()),
            "p99_us": r2(r.p99_us()),
            "max_us": r2(r.max_us()),
        })).collect::<Vec<_>>(),
    })
}
