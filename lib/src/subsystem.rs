//! Subsystems: the parts of a target that hold configuration and must be
//! stopped in order (bdev, iscsi, ...), like SPDK's subsystem registry.
//!
//! They are registered in start order; `save_config` asks each for the RPC calls
//! that rebuild its state, and shutdown stops them in reverse order, each after
//! the previous one has finished.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrite_reactor::{Handle, Poll, PollerId};
use serde_json::{json, Value};

use crate::jsonrpc::send_to_reactor;

/// How long [`Subsystems::fini_all`] waits for the subsystems to stop.
pub const FINI_TIMEOUT: Duration = Duration::from_secs(10);

/// Called once a subsystem has stopped, on any thread.
pub type FiniDone = Box<dyn FnOnce() + Send>;

/// A part of the target with configuration and a shutdown step.
pub trait Subsystem: Send + Sync {
    /// The name in config files (`"bdev"`, `"iscsi"`).
    fn name(&self) -> &'static str;

    /// The RPC calls that rebuild this subsystem's current state, each
    /// `{"method": ..., "params": ...}`, in the order to replay them.
    fn write_config(&self) -> Vec<Value> {
        Vec::new()
    }

    /// Stops the subsystem and calls `done` when finished (now or later, on any
    /// thread). Called on the reactor running the shutdown.
    fn fini(&self, done: FiniDone) {
        done();
    }
}

/// The registered subsystems, in start order.
#[derive(Default)]
pub struct Subsystems {
    list: Vec<Arc<dyn Subsystem>>,
}

impl Subsystems {
    pub fn new() -> Subsystems {
        Subsystems::default()
    }

    /// Adds a subsystem after those already registered (it starts after them and
    /// stops before them).
    ///
    /// # Panics
    /// If a subsystem of that name is already registered.
    pub fn register(&mut self, subsystem: Arc<dyn Subsystem>) {
        let name = subsystem.name();
        assert!(
            self.list.iter().all(|s| s.name() != name),
            "subsystem {name} registered twice"
        );
        self.list.push(subsystem);
    }

    /// The names, in start order.
    pub fn names(&self) -> Vec<&'static str> {
        self.list.iter().map(|s| s.name()).collect()
    }

    /// The whole configuration:
    /// `{"subsystems":[{"subsystem":NAME,"config":[{"method":..,"params":..}]}]}`.
    pub fn save_config(&self) -> Value {
        let subsystems: Vec<Value> = self
            .list
            .iter()
            .map(|s| json!({"subsystem": s.name(), "config": s.write_config()}))
            .collect();
        json!({ "subsystems": subsystems })
    }

    /// Stops the subsystems in reverse start order, each after the previous one
    /// called its `done`, then calls `done` on this reactor. Gives up after
    /// [`FINI_TIMEOUT`]: logs which subsystem hangs and calls `done` anyway, so a
    /// stuck subsystem never hangs the shutdown. Runs on a reactor.
    pub fn fini_all(&self, done: impl FnOnce() + Send + 'static) {
        self.fini_all_within(FINI_TIMEOUT, done);
    }

    /// [`fini_all`](Subsystems::fini_all) with another time limit.
    pub fn fini_all_within(&self, timeout: Duration, done: impl FnOnce() + Send + 'static) {
        let origin =
            ferrite_reactor::current_index().expect("Subsystems::fini_all runs on a reactor");
        let run = Arc::new(FiniRun {
            origin,
            handle: ferrite_reactor::handle(),
            timeout,
            deadline: Instant::now() + timeout,
            state: Mutex::new(FiniState {
                remaining: self.list.iter().rev().cloned().collect(),
                step: 0,
                current: None,
                done: Some(Box::new(done)),
                watchdog: None,
            }),
        });
        let watched = run.clone();
        let watchdog = ferrite_reactor::register_timed_poller(
            "subsystem_fini_watchdog",
            timeout.min(Duration::from_millis(100)),
            move || {
                watched.check_deadline();
                Poll::Idle
            },
        );
        run.lock().watchdog = Some(watchdog);
        run.start_next();
    }
}

/// One run of `fini_all`, shared by the steps' `done` callbacks (any thread) and
/// the watchdog timer (the origin reactor).
struct FiniRun {
    origin: usize,
    handle: Handle,
    timeout: Duration,
    deadline: Instant,
    state: Mutex<FiniState>,
}

struct FiniState {
    remaining: VecDeque<Arc<dyn Subsystem>>,
    /// Numbers the steps, so a `done` arriving after the deadline is ignored.
    step: u64,
    current: Option<&'static str>,
    /// `None` once the run is over.
    done: Option<FiniDone>,
    watchdog: Option<PollerId>,
}

impl FiniRun {
    fn lock(&self) -> std::sync::MutexGuard<'_, FiniState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the next subsystem, or ends the run. On the origin reactor.
    fn start_next(self: &Arc<Self>) {
        let mut state = self.lock();
        if state.done.is_none() {
            return;
        }
        let Some(subsystem) = state.remaining.pop_front() else {
            state.current = None;
            let done = self.end(&mut state);
            drop(state);
            done();
            return;
        };
        state.step += 1;
        let step = state.step;
        state.current = Some(subsystem.name());
        drop(state);
        tracing::debug!("stopping subsystem {}", subsystem.name());
        let run = self.clone();
        subsystem.fini(Box::new(move || {
            // Continue on the origin reactor, never inside `fini` itself.
            let handle = run.handle.clone();
            let origin = run.origin;
            send_to_reactor(
                &handle,
                origin,
                Box::new(move || {
                    if run.lock().step == step {
                        run.start_next();
                    }
                }),
            );
        }));
    }

    /// Ends the run after the deadline. On the origin reactor, from the watchdog.
    fn check_deadline(&self) {
        if Instant::now() < self.deadline {
            return;
        }
        let mut state = self.lock();
        if state.done.is_none() {
            return;
        }
        let skipped: Vec<&str> = state.remaining.iter().map(|s| s.name()).collect();
        tracing::error!(
            "subsystem {} did not stop within {:?}; shutting down without it{}",
            state.current.unwrap_or("?"),
            self.timeout,
            if skipped.is_empty() {
                String::new()
            } else {
                format!(" and without stopping {}", skipped.join(", "))
            }
        );
        // Late `done`s find a step number that no longer matches.
        state.step += 1;
        let done = self.end(&mut state);
        drop(state);
        done();
    }

    fn end(&self, state: &mut FiniState) -> FiniDone {
        if let Some(watchdog) = state.watchdog.take() {
            ferrite_reactor::unregister_poller(watchdog);
        }
        state.remaining.clear();
        state.done.take().expect("a fini run ends once")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrite_reactor::{Runtime, RuntimeConfig};
    use std::sync::mpsc;

    /// Records its fini in `log`; answers from another thread, or never.
    struct Recorder {
        name: &'static str,
        log: Arc<Mutex<Vec<&'static str>>>,
        hang: bool,
    }

    impl Subsystem for Recorder {
        fn name(&self) -> &'static str {
            self.name
        }

        fn write_config(&self) -> Vec<Value> {
            vec![json!({"method": format!("{}_create", self.name), "params": {"x": 1}})]
        }

        fn fini(&self, done: FiniDone) {
            self.log.lock().unwrap().push(self.name);
            if !self.hang {
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(10));
                    done();
                });
            }
        }
    }

    fn subsystems(hanging: Option<&str>) -> (Subsystems, Arc<Mutex<Vec<&'static str>>>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut s = Subsystems::new();
        for name in ["a", "b", "c"] {
            s.register(Arc::new(Recorder {
                name,
                log: log.clone(),
                hang: Some(name) == hanging,
            }));
        }
        (s, log)
    }

    fn fini_on_a_reactor(s: Subsystems, timeout: Duration) -> Duration {
        let config = RuntimeConfig {
            cores: vec![ferrite_reactor::available_cores()[0]],
            ..RuntimeConfig::default()
        };
        let (tx, rx) = mpsc::channel();
        let start = Instant::now();
        let rt = Runtime::start(config, move || {
            s.fini_all_within(timeout, move || {
                assert_eq!(ferrite_reactor::current_index(), Some(0));
                tx.send(start.elapsed()).unwrap();
            });
        })
        .unwrap();
        let took = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        rt.handle().stop();
        rt.wait();
        took
    }

    #[test]
    fn save_config_lists_subsystems_in_start_order() {
        let (s, _) = subsystems(None);
        assert_eq!(s.names(), ["a", "b", "c"]);
        let config = s.save_config();
        assert_eq!(config["subsystems"][0]["subsystem"], "a");
        assert_eq!(config["subsystems"][2]["config"][0]["method"], "c_create");
    }

    #[test]
    fn fini_runs_in_reverse_order_one_after_another() {
        let (s, log) = subsystems(None);
        fini_on_a_reactor(s, Duration::from_secs(5));
        assert_eq!(*log.lock().unwrap(), ["c", "b", "a"]);
    }

    #[test]
    fn a_hanging_subsystem_does_not_hang_the_shutdown() {
        let (s, log) = subsystems(Some("b"));
        let took = fini_on_a_reactor(s, Duration::from_millis(300));
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert_eq!(*log.lock().unwrap(), ["c", "b"]);
    }
}
