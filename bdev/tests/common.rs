//! Runs test bodies on a real reactor runtime.

#![allow(dead_code)]

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use ferrite_bdev::{IoCallback, IoChannel, IoData, IoError, IoRequest, IoStatus};
use ferrite_reactor::{Runtime, RuntimeConfig};

/// Starts `n` reactors, runs `body` on reactor 0 and waits for what it sends.
pub fn on_reactors<T: Send + 'static>(
    n: usize,
    body: impl FnOnce(mpsc::Sender<T>) + Send + 'static,
) -> T {
    let cores = ferrite_reactor::available_cores();
    let config = RuntimeConfig {
        cores: (0..n).map(|i| cores[i % cores.len()]).collect(),
        ..RuntimeConfig::default()
    };
    let (tx, rx) = mpsc::channel();
    let rt = Runtime::start(config, move || body(tx)).expect("runtime");
    let out = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("test body answered");
    rt.handle().stop();
    rt.wait();
    out
}

/// Remembers completions for a test to look at.
#[derive(Default)]
pub struct Recorder {
    pub done: RefCell<Vec<(u64, IoStatus, IoRequest)>>,
    pub then: RefCell<Option<Box<dyn FnOnce()>>>,
    pub expect: RefCell<usize>,
}

impl IoCallback for Recorder {
    fn io_done(&self, tag: u64, status: IoStatus, req: IoRequest) {
        self.done.borrow_mut().push((tag, status, req));
        if self.done.borrow().len() == *self.expect.borrow() {
            if let Some(f) = self.then.borrow_mut().take() {
                f();
            }
        }
    }
}

/// Submits `reqs` and calls `then` with their results, in submission order.
pub fn run_all(
    ch: &IoChannel,
    reqs: Vec<IoRequest>,
    then: impl FnOnce(Vec<(IoStatus, IoRequest)>) + 'static,
) {
    let rec = Rc::new(Recorder::default());
    *rec.expect.borrow_mut() = reqs.len();
    let r2 = rec.clone();
    *rec.then.borrow_mut() = Some(Box::new(move || {
        let mut v = r2.done.take();
        v.sort_by_key(|(t, _, _)| *t);
        then(v.into_iter().map(|(_, s, r)| (s, r)).collect());
    }));
    let cb: Rc<dyn IoCallback> = rec;
    for (i, r) in reqs.into_iter().enumerate() {
        if let Err((e, req)) = ch.submit(r, &cb, i as u64) {
            cb.io_done(i as u64, Err(e), req);
        }
    }
}

/// A buffer of `len` bytes filled with `byte`.
pub fn filled(len: usize, byte: u8) -> IoData {
    let mut d = IoData::alloc(len).expect("buffers");
    d.fill(byte);
    d
}

pub fn bytes(d: &IoData) -> Vec<u8> {
    let mut v = vec![0; d.len()];
    d.copy_to_slice(0, &mut v);
    v
}

pub fn is_err(s: &IoStatus, e: IoError) -> bool {
    *s == Err(e)
}

/// What [`run_timed`] hands back: status, request and ticks taken, per I/O.
type TimedDone = Box<dyn FnOnce(Vec<(IoStatus, IoRequest, u64)>)>;

/// Remembers completions with the ticks each I/O took from submission.
struct Timed {
    start: RefCell<Vec<u64>>,
    done: RefCell<Vec<(u64, IoStatus, IoRequest, u64)>>,
    then: RefCell<Option<TimedDone>>,
}

impl IoCallback for Timed {
    fn io_done(&self, tag: u64, status: IoStatus, req: IoRequest) {
        let took = ferrite_reactor::ticks().wrapping_sub(self.start.borrow()[tag as usize]);
        self.done.borrow_mut().push((tag, status, req, took));
        if self.done.borrow().len() == self.start.borrow().len() {
            let mut v = self.done.take();
            v.sort_by_key(|(t, ..)| *t);
            if let Some(f) = self.then.borrow_mut().take() {
                f(v.into_iter().map(|(_, s, r, t)| (s, r, t)).collect());
            }
        }
    }
}

/// Like [`run_all`], and also gives the ticks each I/O took, submission to completion.
pub fn run_timed(
    ch: &IoChannel,
    reqs: Vec<IoRequest>,
    then: impl FnOnce(Vec<(IoStatus, IoRequest, u64)>) + 'static,
) {
    let timed = Rc::new(Timed {
        start: RefCell::new(vec![0; reqs.len()]),
        done: RefCell::new(Vec::new()),
        then: RefCell::new(Some(Box::new(then))),
    });
    let cb: Rc<dyn IoCallback> = timed.clone();
    for (i, r) in reqs.into_iter().enumerate() {
        timed.start.borrow_mut()[i] = ferrite_reactor::ticks();
        if let Err((e, req)) = ch.submit(r, &cb, i as u64) {
            cb.io_done(i as u64, Err(e), req);
        }
    }
}

/// Nanoseconds in `ticks`.
pub fn ns(ticks: u64) -> u64 {
    ferrite_reactor::ticks_to_ns(ticks)
}
