//! ferrite-perf: load generators and microbenchmarks for the bdev layer and the
//! reactor runtime, in the manner of SPDK's `bdevperf`.
//!
//! * [`job`]: one closed-loop I/O generator on one reactor and one bdev. It keeps
//!   `depth` I/Os in flight by resubmitting from the completion callback, with
//!   per-slot buffers allocated once, so the steady state allocates nothing.
//! * [`bdevperf`]: `ferrite-perf bdev`: starts reactors, replays a config, runs
//!   one job per (bdev, reactor), reports throughput and latency percentiles.
//! * [`iscsi`]: `ferrite-perf iscsi`: an iSCSI initiator on the reactors driving
//!   targets over TCP with the same jobs, workloads and report.
//! * [`wakeup`]: `ferrite-perf reactor`: how long a sleeping reactor takes to run a
//!   message sent to it, against a spinning (poll-only) one.

pub mod bdevperf;
pub mod iscsi;
pub mod iser;
pub mod job;
pub mod pattern;
pub mod rdma_run;
pub mod replay;
pub mod rng;
pub mod size;
pub mod srp;
pub mod wakeup;
pub mod workload;

pub use job::{Job, JobConfig, JobResult, JobShared, Miscompare};
pub use workload::Workload;

use std::sync::mpsc;
use std::time::Duration;

use ferrite_reactor::{Handle, Message, SendError};

/// Writes `text` to stdout, ignoring a closed pipe (`ferrite-perf ... | head`).
pub fn out(text: &str) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(text.as_bytes()).and_then(|()| o.flush());
}

/// Runs `f` on reactor `target` and waits (up to `timeout`) for what it returns.
/// Call from a thread that is not a reactor.
pub fn run_on<T: Send + 'static>(
    handle: &Handle,
    target: usize,
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    run_on_async(handle, target, timeout, move |tx| {
        let _ = tx.send(f());
    })
}

/// Runs `f` on reactor `target`; `f` answers through the sender, now or later.
/// Waits up to `timeout` for the answer.
pub fn run_on_async<T: Send + 'static>(
    handle: &Handle,
    target: usize,
    timeout: Duration,
    f: impl FnOnce(mpsc::Sender<T>) + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = mpsc::channel();
    send_blocking(handle, target, Box::new(move || f(tx)))?;
    rx.recv_timeout(timeout)
        .map_err(|_| format!("reactor {target} did not answer within {timeout:?}"))
}

/// Queues `msg` for reactor `target` from a non-reactor thread, waiting while its
/// queue is full.
pub fn send_blocking(handle: &Handle, target: usize, msg: Message) -> Result<(), String> {
    let mut msg = msg;
    loop {
        match handle.try_send(target, msg) {
            Ok(()) => return Ok(()),
            Err(SendError::Full(m)) => {
                msg = m;
                std::thread::sleep(Duration::from_micros(50));
            }
            Err(e) => return Err(format!("cannot reach reactor {target}: {e}")),
        }
    }
}

/// Converts ticks to nanoseconds with one multiplication (no division on the
/// I/O path).
#[derive(Debug, Clone, Copy)]
pub struct TickConv {
    /// Nanoseconds per tick, in 32.32 fixed point.
    ns_per_tick_q32: u64,
}

impl TickConv {
    pub fn new() -> TickConv {
        let rate = ferrite_reactor::tick_rate().max(1) as u128;
        TickConv {
            ns_per_tick_q32: ((1_000_000_000u128 << 32) / rate) as u64,
        }
    }

    #[inline]
    pub fn ns(&self, ticks: u64) -> u64 {
        ((ticks as u128 * self.ns_per_tick_q32 as u128) >> 32) as u64
    }
}

impl Default for TickConv {
    fn default() -> Self {
        TickConv::new()
    }
}
