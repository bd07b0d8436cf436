//! What the RDMA tests (`iser_peer`, `rdma_layer`, `srp_wire`) share: reactors
//! of their own to run the test's side of each connection on, closures run on
//! those reactors from the test thread, and waiting for what they saw.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use ferrite_reactor::mem::{self, MemConfig};
use ferrite_reactor::{Handle, Runtime, RuntimeConfig};

/// How long a test waits for anything before it fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// The test's reactors.
pub struct Bed {
    rt: Option<Runtime>,
    handle: Handle,
}

impl Bed {
    /// Maps the buffer arena (the first call in the process sizes it: tests of
    /// one file run in one process) and starts one reactor per entry of `cores`.
    pub fn start(arena: &MemConfig, cores: Vec<usize>, msg_queue_depth: usize) -> Bed {
        mem::init(arena).expect("buffer arena");
        let rt = Runtime::start(
            RuntimeConfig {
                cores,
                poll_only: false,
                idle_sleep: Duration::from_micros(200),
                msg_queue_depth,
            },
            || {},
        )
        .expect("reactors");
        let handle = rt.handle();
        Bed {
            rt: Some(rt),
            handle,
        }
    }

    /// Runs `f` on reactor `reactor` and returns what it returns.
    pub fn run<T: Send + 'static>(
        &self,
        reactor: usize,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let (tx, rx) = mpsc::channel();
        self.handle
            .try_send(
                reactor,
                Box::new(move || {
                    let _ = tx.send(f());
                }),
            )
            .map_err(|e| e.to_string())
            .expect("message to the reactor");
        rx.recv_timeout(WAIT).expect("the reactor answered")
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.handle.stop();
        if let Some(rt) = self.rt.take() {
            rt.wait();
        }
    }
}

/// Waits until `cond` holds, failing the test with `what` after [`WAIT`].
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}
