//! The reactor runtime on real threads: messages, pollers, timers, sleep and wake,
//! back-pressure and shutdown.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrite_reactor::{self as reactor, Poll, Runtime, RuntimeConfig, SendError};

fn config(n: usize, poll_only: bool) -> RuntimeConfig {
    let cores = reactor::available_cores();
    RuntimeConfig {
        cores: (0..n).map(|i| cores[i % cores.len()]).collect(),
        poll_only,
        idle_sleep: Duration::from_micros(200),
        msg_queue_depth: 64,
    }
}

#[test]
fn init_runs_on_reactor_zero_and_messages_reach_each_reactor() {
    let (tx, rx) = mpsc::channel();
    let rt = Runtime::start(config(2, false), move || {
        assert_eq!(reactor::current_index(), Some(0));
        reactor::for_each_reactor(
            || reactor::current_index().unwrap(),
            move |seen| {
                assert_eq!(reactor::current_index(), Some(0));
                tx.send(seen).unwrap();
            },
        );
    })
    .unwrap();
    let seen = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(seen, vec![0, 1]);
    rt.handle().stop();
    rt.wait();
}

#[test]
fn pollers_run_and_are_counted_and_removed() {
    let runs = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    let r2 = runs.clone();
    let rt = Runtime::start(config(1, true), move || {
        let id = reactor::register_poller("counter", move || {
            r2.fetch_add(1, Ordering::Relaxed);
            Poll::Idle
        });
        reactor::register_timed_poller("ticker", Duration::from_millis(5), move || {
            let stats = reactor::local_stats();
            let ticker = stats.pollers.iter().find(|p| p.name == "ticker").unwrap();
            if ticker.run_count >= 3 {
                reactor::unregister_poller(id);
                let _ = tx.send(stats);
            }
            Poll::Busy
        });
    })
    .unwrap();
    let stats = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let counter = stats.pollers.iter().find(|p| p.name == "counter").unwrap();
    assert!(
        counter.run_count > 3,
        "active poller ran {}",
        counter.run_count
    );
    assert_eq!(counter.busy_count, 0);
    assert!(stats.busy_ticks > 0 && stats.idle_ticks > 0);
    std::thread::sleep(Duration::from_millis(20));
    let after = runs.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        runs.load(Ordering::Relaxed),
        after,
        "removed poller still runs"
    );
    rt.handle().stop();
    rt.wait();
}

#[test]
fn idle_reactor_sleeps_and_wakes_on_a_message() {
    let rt = Runtime::start(config(1, false), || {}).unwrap();
    let h = rt.handle();
    // Let it go idle and fall asleep.
    std::thread::sleep(Duration::from_millis(50));
    let sleeps = Arc::new(AtomicU64::new(0));
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(5));
        let (tx, rx) = mpsc::channel();
        let s = sleeps.clone();
        let t0 = Instant::now();
        h.try_send(
            0,
            Box::new(move || {
                s.store(reactor::local_stats().sleeps, Ordering::Relaxed);
                tx.send(Instant::now()).unwrap();
            }),
        )
        .unwrap();
        let t1 = rx.recv_timeout(Duration::from_secs(5)).expect("woken");
        worst = worst.max(t1 - t0);
    }
    assert!(
        sleeps.load(Ordering::Relaxed) >= 10,
        "reactor did not sleep"
    );
    // Functional bound only (a lost wake-up would take seconds); latency is measured
    // by ferrite-perf, not here.
    assert!(worst < Duration::from_secs(2));
    h.stop();
    rt.wait();
}

#[test]
fn full_queue_is_back_pressure_not_a_panic() {
    let (tx, rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let rt = Runtime::start(config(1, true), move || {
        // Block reactor 0 until the test has filled its queue.
        started_tx.send(()).unwrap();
        rx.recv().unwrap();
    })
    .unwrap();
    started_rx.recv().unwrap();
    let h = rt.handle();
    let mut full = 0;
    for _ in 0..200 {
        if let Err(SendError::Full(_)) = h.try_send(0, Box::new(|| {})) {
            full += 1;
        }
    }
    assert_eq!(full, 200 - 64);
    tx.send(()).unwrap();
    assert!(matches!(
        h.try_send(7, Box::new(|| {})),
        Err(SendError::NoReactor(7))
    ));
    h.stop();
    rt.wait();
    assert!(matches!(
        h.try_send(0, Box::new(|| {})),
        Err(SendError::Stopped)
    ));
}

#[test]
fn core_masks_are_checked() {
    assert_eq!(reactor::parse_core_mask("0x1").unwrap(), vec![0]);
    assert!(reactor::parse_core_mask("0x0").is_err());
    assert!(reactor::parse_core_mask("zz").is_err());
    assert!(reactor::parse_core_mask("0x8000000000").is_err());
}
