//! Starting, addressing and stopping the set of reactors.

use std::fmt;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

use crate::reactor::Local;
use crate::sys::EventFd;

/// Work sent to a reactor. Control-path only: the I/O path never crosses reactors.
pub type Message = Box<dyn FnOnce() + Send + 'static>;

/// How the reactors run.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The cores to run on, one reactor each; reactor 0 runs on `cores[0]`.
    pub cores: Vec<usize>,
    /// Never sleep: spin even when idle (lowest latency, a full core each).
    pub poll_only: bool,
    /// How long a reactor stays idle before it sleeps.
    pub idle_sleep: Duration,
    /// Capacity of each reactor's message queue.
    pub msg_queue_depth: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cores: available_cores(),
            poll_only: false,
            idle_sleep: Duration::from_micros(500),
            msg_queue_depth: 4096,
        }
    }
}

/// The cores this process may run on.
pub fn available_cores() -> Vec<usize> {
    let mut ids: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    ids.sort_unstable();
    if ids.is_empty() {
        ids.push(0);
    }
    ids
}

/// Parses a hex core mask (`0x3`, `3`, `[0,1]` is not accepted) into core numbers,
/// checking each core exists.
pub fn parse_core_mask(mask: &str) -> Result<Vec<usize>, String> {
    let digits = mask
        .strip_prefix("0x")
        .or_else(|| mask.strip_prefix("0X"))
        .unwrap_or(mask);
    let value = u128::from_str_radix(digits, 16)
        .map_err(|_| format!("core mask '{mask}' is not a hexadecimal number"))?;
    if value == 0 {
        return Err(format!("core mask '{mask}' selects no core"));
    }
    let available = available_cores();
    let mut cores = Vec::new();
    for bit in 0..128usize {
        if value & (1u128 << bit) != 0 {
            if !available.contains(&bit) {
                return Err(format!(
                    "core mask '{mask}' names core {bit}, but this process may only use cores {available:?}"
                ));
            }
            cores.push(bit);
        }
    }
    Ok(cores)
}

/// Why a message was not delivered.
pub enum SendError {
    /// The target's queue is full: back-pressure, try again later.
    Full(Message),
    /// No such reactor.
    NoReactor(usize),
    /// The reactors are stopping.
    Stopped,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full(_) => write!(f, "message queue full"),
            SendError::NoReactor(i) => write!(f, "no reactor {i}"),
            SendError::Stopped => write!(f, "reactors stopped"),
        }
    }
}

impl fmt::Debug for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What other threads can see of one reactor.
pub(crate) struct Remote {
    pub(crate) core: usize,
    pub(crate) queue: ArrayQueue<Message>,
    pub(crate) sleeping: AtomicBool,
    pub(crate) stop: AtomicBool,
    pub(crate) wake: EventFd,
}

struct Shared {
    config: RuntimeConfig,
    remotes: Vec<Arc<Remote>>,
    stopped: AtomicBool,
}

/// A cheap, cloneable way to reach the reactors from any thread.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    /// Number of reactors.
    pub fn count(&self) -> usize {
        self.shared.remotes.len()
    }

    /// The core reactor `index` runs on.
    pub fn core_of(&self, index: usize) -> Option<usize> {
        self.shared.remotes.get(index).map(|r| r.core)
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.shared.config
    }

    /// Queues `msg` for reactor `target`, waking it if it sleeps. Never blocks.
    pub fn try_send(&self, target: usize, msg: Message) -> Result<(), SendError> {
        if self.shared.stopped.load(Ordering::Acquire) {
            return Err(SendError::Stopped);
        }
        let remote = self
            .shared
            .remotes
            .get(target)
            .ok_or(SendError::NoReactor(target))?;
        remote.queue.push(msg).map_err(SendError::Full)?;
        // Pairs with the fence in the reactor's sleep path.
        fence(Ordering::SeqCst);
        if remote.sleeping.load(Ordering::SeqCst) {
            remote.wake.notify();
        }
        Ok(())
    }

    /// Asks every reactor to leave its loop. Subsystems should be stopped first.
    pub fn stop(&self) {
        self.shared.stopped.store(true, Ordering::Release);
        for r in &self.shared.remotes {
            r.stop.store(true, Ordering::Release);
            r.wake.notify();
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.load(Ordering::Acquire)
    }
}

/// The running reactors; `wait` joins them.
pub struct Runtime {
    handle: Handle,
    threads: Vec<JoinHandle<()>>,
}

impl Runtime {
    /// Starts one pinned reactor per configured core and runs `init` on reactor 0.
    pub fn start(
        config: RuntimeConfig,
        init: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<Runtime> {
        if config.cores.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no cores to run on",
            ));
        }
        // Calibrate the clock before any reactor measures with it.
        crate::ticks::tick_rate();
        let mut remotes = Vec::with_capacity(config.cores.len());
        for &core in &config.cores {
            remotes.push(Arc::new(Remote {
                core,
                queue: ArrayQueue::new(config.msg_queue_depth.max(16)),
                sleeping: AtomicBool::new(false),
                stop: AtomicBool::new(false),
                wake: EventFd::new()?,
            }));
        }
        let handle = Handle {
            shared: Arc::new(Shared {
                config,
                remotes,
                stopped: AtomicBool::new(false),
            }),
        };
        if handle.try_send(0, Box::new(init)).is_err() {
            unreachable!("a fresh queue has room");
        }
        let mut threads = Vec::new();
        for index in 0..handle.count() {
            let h = handle.clone();
            let remote = h.shared.remotes[index].clone();
            let (tx, rx) = std::sync::mpsc::channel();
            let t = std::thread::Builder::new()
                .name(format!("reactor_{index}"))
                .spawn(move || {
                    let pinned =
                        core_affinity::set_for_current(core_affinity::CoreId { id: remote.core });
                    if !pinned {
                        tracing::warn!("reactor {index}: could not pin to core {}", remote.core);
                    }
                    match Local::new(index, h, remote) {
                        Ok(local) => {
                            let _ = tx.send(Ok(()));
                            local.run();
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                })?;
            let started = rx
                .recv()
                .unwrap_or_else(|_| Err(std::io::Error::other("reactor thread died during start")));
            threads.push(t);
            if let Err(e) = started {
                // Leave nothing running behind a failed start.
                handle.stop();
                for t in threads {
                    let _ = t.join();
                }
                return Err(e);
            }
        }
        Ok(Runtime { handle, threads })
    }

    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Blocks until every reactor has stopped.
    pub fn wait(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}
