//! A cheap monotonic clock for the I/O path.
//!
//! On x86_64 this is the time-stamp counter (constant and invariant on every CPU this
//! project targets), read in a handful of cycles; elsewhere it falls back to
//! `Instant`. `tick_rate()` is calibrated once per process against the OS clock.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The current tick count.
#[inline]
pub fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC has no preconditions and touches no memory.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        epoch().elapsed().as_nanos() as u64
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Ticks per second.
pub fn tick_rate() -> u64 {
    static RATE: OnceLock<u64> = OnceLock::new();
    *RATE.get_or_init(calibrate)
}

fn calibrate() -> u64 {
    #[cfg(not(target_arch = "x86_64"))]
    {
        1_000_000_000
    }
    #[cfg(target_arch = "x86_64")]
    {
        // Two short windows; keep the larger-window estimate so a preempted sample
        // does not skew the rate much.
        let mut best = 0u64;
        for _ in 0..2 {
            let t0 = Instant::now();
            let c0 = ticks();
            std::thread::sleep(Duration::from_millis(10));
            let c1 = ticks();
            let ns = t0.elapsed().as_nanos() as u64;
            let rate = (c1.wrapping_sub(c0) as u128 * 1_000_000_000 / ns.max(1) as u128) as u64;
            if best == 0 || rate < best {
                best = rate;
            }
        }
        best.max(1)
    }
}

/// Converts a duration to ticks.
pub fn duration_to_ticks(d: Duration) -> u64 {
    (d.as_nanos() * tick_rate() as u128 / 1_000_000_000) as u64
}

/// Converts ticks to nanoseconds.
#[inline]
pub fn ticks_to_ns(t: u64) -> u64 {
    (t as u128 * 1_000_000_000 / tick_rate() as u128) as u64
}
