//! One reactor: a thread pinned to a core that runs its pollers, its timed pollers
//! and the messages other reactors send it, and sleeps when there is nothing to do.
//!
//! Everything a reactor owns is thread-local (`Rc`/`RefCell`); other threads reach
//! it only through its bounded message queue. Work is registered with
//! [`register_poller`] and [`register_timed_poller`]; both report [`Poll::Busy`] or
//! [`Poll::Idle`], which drives busy/idle accounting and the decision to sleep.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use crate::runtime::{Handle, Message, Remote, SendError};
use crate::sys::Epoll;
use crate::ticks::{ticks, ticks_to_ns};

/// What a poller reports after one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// It did work; the reactor stays awake.
    Busy,
    /// It found nothing to do.
    Idle,
}

impl Poll {
    pub fn from_work(did_work: bool) -> Poll {
        if did_work {
            Poll::Busy
        } else {
            Poll::Idle
        }
    }
}

/// Names a registered poller so it can be removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PollerId(u64);

struct Poller {
    id: u64,
    name: String,
    /// 0 for an active poller, otherwise the period in ticks.
    period: u64,
    next_run: Cell<u64>,
    runs: Cell<u64>,
    busy: Cell<u64>,
    removed: Cell<bool>,
    run: RefCell<Box<dyn FnMut() -> Poll>>,
}

impl Poller {
    fn run(&self) -> bool {
        self.runs.set(self.runs.get() + 1);
        let busy = (self.run.borrow_mut())() == Poll::Busy;
        if busy {
            self.busy.set(self.busy.get() + 1);
        }
        busy
    }
}

/// A snapshot of one poller's counters.
#[derive(Debug, Clone)]
pub struct PollerStats {
    pub name: String,
    pub timed: bool,
    pub period_us: u64,
    pub run_count: u64,
    pub busy_count: u64,
}

/// A snapshot of one reactor's counters.
#[derive(Debug, Clone)]
pub struct ReactorStats {
    pub index: usize,
    pub core: usize,
    pub busy_ticks: u64,
    pub idle_ticks: u64,
    pub sleeps: u64,
    pub messages: u64,
    pub poll_only: bool,
    pub pollers: Vec<PollerStats>,
}

/// Most messages run per loop iteration, so pollers are not starved.
const MSG_BATCH: usize = 64;
/// Most messages a reactor holds back for a full peer before `send` fails.
const OUTBOX_LIMIT: usize = 1 << 16;
/// A reactor does not sleep when its next timer is closer than this (epoll's
/// resolution is a millisecond; spinning is cheaper than oversleeping).
const MIN_SLEEP_NS: u64 = 1_000_000;

pub(crate) struct Local {
    pub(crate) index: usize,
    pub(crate) handle: Handle,
    remote: Arc<Remote>,
    epoll: Epoll,
    poll_only: bool,
    idle_sleep_ticks: u64,
    next_id: Cell<u64>,
    active: RefCell<Vec<Rc<Poller>>>,
    timed: RefCell<Vec<Rc<Poller>>>,
    /// Set when a poller was removed; the lists are compacted after the iteration.
    removals: Cell<bool>,
    outbox: RefCell<VecDeque<(usize, Message)>>,
    busy_ticks: Cell<u64>,
    idle_ticks: Cell<u64>,
    sleeps: Cell<u64>,
    messages: Cell<u64>,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Local>>> = const { RefCell::new(None) };
}

fn with_local<R>(f: impl FnOnce(&Rc<Local>) -> R) -> R {
    CURRENT.with(|c| {
        let c = c.borrow();
        let local = c.as_ref().expect("this call must run on a reactor thread");
        f(local)
    })
}

fn local() -> Rc<Local> {
    with_local(Rc::clone)
}

/// Whether the calling thread is a reactor.
pub fn on_reactor() -> bool {
    CURRENT.with(|c| c.borrow().is_some())
}

/// The index (0..count) of the reactor running the caller, if any.
pub fn current_index() -> Option<usize> {
    CURRENT
        .try_with(|c| c.borrow().as_ref().map(|l| l.index))
        .ok()
        .flatten()
}

/// The runtime handle of the calling reactor.
pub fn handle() -> Handle {
    with_local(|l| l.handle.clone())
}

/// Registers a poller that runs on every loop iteration of this reactor.
pub fn register_poller(name: &str, run: impl FnMut() -> Poll + 'static) -> PollerId {
    add_poller(name, 0, run)
}

/// Registers a poller that runs every `period` on this reactor.
pub fn register_timed_poller(
    name: &str,
    period: std::time::Duration,
    run: impl FnMut() -> Poll + 'static,
) -> PollerId {
    let p = crate::ticks::duration_to_ticks(period).max(1);
    add_poller(name, p, run)
}

fn add_poller(name: &str, period: u64, run: impl FnMut() -> Poll + 'static) -> PollerId {
    with_local(|l| {
        let id = l.next_id.get();
        l.next_id.set(id + 1);
        let p = Rc::new(Poller {
            id,
            name: name.to_string(),
            period,
            next_run: Cell::new(ticks() + period),
            runs: Cell::new(0),
            busy: Cell::new(0),
            removed: Cell::new(false),
            run: RefCell::new(Box::new(run)),
        });
        if period == 0 {
            l.active.borrow_mut().push(p);
        } else {
            l.timed.borrow_mut().push(p);
        }
        PollerId(id)
    })
}

/// Removes a poller of this reactor. It does not run again, even later in the
/// current loop iteration.
pub fn unregister_poller(id: PollerId) {
    with_local(|l| {
        for list in [&l.active, &l.timed] {
            for p in list.borrow().iter() {
                if p.id == id.0 {
                    p.removed.set(true);
                    l.removals.set(true);
                }
            }
        }
    });
}

/// Makes `fd` wake this reactor from sleep when it becomes readable. The poller
/// that owns the fd must drain it, or the reactor will not sleep.
pub fn register_interrupt(fd: RawFd) -> std::io::Result<()> {
    with_local(|l| l.epoll.add(fd, fd as u64))
}

/// What wakes a sleeping reactor about an fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    Readable,
    Writable,
    Both,
}

impl Interest {
    pub(crate) fn events(self) -> u32 {
        match self {
            Interest::Readable => libc::EPOLLIN as u32,
            Interest::Writable => libc::EPOLLOUT as u32,
            Interest::Both => (libc::EPOLLIN | libc::EPOLLOUT) as u32,
        }
    }
}

/// Makes `fd` wake this reactor when it becomes ready for `interest`.
pub fn register_interrupt_for(fd: RawFd, interest: Interest) -> std::io::Result<()> {
    with_local(|l| l.epoll.add_events(fd, fd as u64, interest.events()))
}

/// Changes what about `fd` wakes this reactor (e.g. add `Writable` while output
/// is queued, drop it when drained, so an idle socket does not keep it awake).
pub fn modify_interrupt(fd: RawFd, interest: Interest) -> std::io::Result<()> {
    with_local(|l| l.epoll.modify(fd, fd as u64, interest.events()))
}

/// Undoes [`register_interrupt`].
pub fn unregister_interrupt(fd: RawFd) -> std::io::Result<()> {
    with_local(|l| l.epoll.remove(fd))
}

/// Sends `msg` to reactor `target` from a reactor thread. When the target's
/// queue is full the message waits in this reactor's bounded outbox and is
/// retried every loop; only when that too is full does this fail.
pub fn send(target: usize, msg: Message) -> Result<(), SendError> {
    let l = local();
    if !l.outbox.borrow().is_empty() {
        // Keep order behind messages already waiting.
        return l.hold(target, msg);
    }
    match l.handle.try_send(target, msg) {
        Ok(()) => Ok(()),
        Err(SendError::Full(msg)) => l.hold(target, msg),
        Err(e) => Err(e),
    }
}

/// Sends `f` to every reactor in turn (0, 1, ...), collects what each returns and
/// hands the results to `done` on the calling reactor. Control path only.
pub fn for_each_reactor<T: Send + 'static>(
    f: impl Fn() -> T + Send + Sync + 'static,
    done: impl FnOnce(Vec<T>) + Send + 'static,
) {
    let origin = current_index().expect("for_each_reactor runs on a reactor");
    let n = handle().count();
    let f: Arc<dyn Fn() -> T + Send + Sync> = Arc::new(f);
    visit(0, n, origin, f, Vec::with_capacity(n), Box::new(done));
}

type Done<T> = Box<dyn FnOnce(Vec<T>) + Send>;

fn visit<T: Send + 'static>(
    i: usize,
    n: usize,
    origin: usize,
    f: Arc<dyn Fn() -> T + Send + Sync>,
    mut acc: Vec<T>,
    done: Done<T>,
) {
    let msg: Message = if i == n {
        Box::new(move || done(acc))
    } else {
        Box::new(move || {
            acc.push(f());
            visit(i + 1, n, origin, f, acc, done);
        })
    };
    let target = if i == n { origin } else { i };
    if let Err(e) = send(target, msg) {
        tracing::error!("for_each_reactor: cannot reach reactor {target}: {e}");
    }
}

/// Counters of the calling reactor.
pub fn local_stats() -> ReactorStats {
    with_local(|l| l.stats())
}

impl Local {
    pub(crate) fn new(
        index: usize,
        handle: Handle,
        remote: Arc<Remote>,
    ) -> std::io::Result<Rc<Local>> {
        let epoll = Epoll::new()?;
        use std::os::fd::AsRawFd;
        epoll.add(remote.wake.as_raw_fd(), u64::MAX)?;
        let cfg = handle.config();
        Ok(Rc::new(Local {
            index,
            poll_only: cfg.poll_only,
            idle_sleep_ticks: crate::ticks::duration_to_ticks(cfg.idle_sleep),
            handle,
            remote,
            epoll,
            next_id: Cell::new(1),
            active: RefCell::new(Vec::with_capacity(32)),
            timed: RefCell::new(Vec::with_capacity(32)),
            removals: Cell::new(false),
            outbox: RefCell::new(VecDeque::new()),
            busy_ticks: Cell::new(0),
            idle_ticks: Cell::new(0),
            sleeps: Cell::new(0),
            messages: Cell::new(0),
        }))
    }

    fn hold(&self, target: usize, msg: Message) -> Result<(), SendError> {
        let mut out = self.outbox.borrow_mut();
        if out.len() >= OUTBOX_LIMIT {
            return Err(SendError::Full(msg));
        }
        out.push_back((target, msg));
        Ok(())
    }

    fn stats(&self) -> ReactorStats {
        let mut pollers = Vec::new();
        for p in self
            .active
            .borrow()
            .iter()
            .chain(self.timed.borrow().iter())
        {
            if p.removed.get() {
                continue;
            }
            pollers.push(PollerStats {
                name: p.name.clone(),
                timed: p.period != 0,
                period_us: ticks_to_ns(p.period) / 1000,
                run_count: p.runs.get(),
                busy_count: p.busy.get(),
            });
        }
        ReactorStats {
            index: self.index,
            core: self.remote.core,
            busy_ticks: self.busy_ticks.get(),
            idle_ticks: self.idle_ticks.get(),
            sleeps: self.sleeps.get(),
            messages: self.messages.get(),
            poll_only: self.poll_only,
            pollers,
        }
    }

    /// Runs the reactor until it is told to stop.
    pub(crate) fn run(self: &Rc<Local>) {
        CURRENT.with(|c| *c.borrow_mut() = Some(self.clone()));
        let mut idle_since: Option<u64> = None;
        let mut last = ticks();
        while !self.remote.stop.load(Ordering::Acquire) {
            let busy = self.iterate();
            let now = ticks();
            let spent = now.wrapping_sub(last);
            last = now;
            if busy {
                self.busy_ticks.set(self.busy_ticks.get() + spent);
                idle_since = None;
                continue;
            }
            self.idle_ticks.set(self.idle_ticks.get() + spent);
            if self.poll_only {
                continue;
            }
            let since = *idle_since.get_or_insert(now);
            if now.wrapping_sub(since) >= self.idle_sleep_ticks {
                self.sleep(now);
                let woke = ticks();
                self.idle_ticks
                    .set(self.idle_ticks.get() + woke.wrapping_sub(last));
                last = woke;
                idle_since = None;
            }
        }
        // Drop pollers (and what they hold) while the thread-local is still set,
        // so their destructors may still use reactor calls.
        let active = self.active.take();
        let timed = self.timed.take();
        drop(active);
        drop(timed);
        while let Some(m) = self.remote.queue.pop() {
            drop(m);
        }
        CURRENT.with(|c| *c.borrow_mut() = None);
    }

    /// One pass over pollers, due timers and messages. Returns whether anything
    /// did work.
    fn iterate(&self) -> bool {
        let mut busy = false;

        // Index loops, holding no borrow while a poller runs: pollers may register
        // or remove pollers, and stats may be read from inside one.
        let mut i = 0;
        while let Some(p) = self.nth(&self.active, i) {
            if !p.removed.get() {
                busy |= p.run();
            }
            i += 1;
        }

        let now = ticks();
        let mut i = 0;
        while let Some(p) = self.nth(&self.timed, i) {
            if !p.removed.get() && now >= p.next_run.get() {
                p.next_run.set(now + p.period);
                busy |= p.run();
            }
            i += 1;
        }

        let mut handled = 0;
        while handled < MSG_BATCH {
            match self.remote.queue.pop() {
                Some(m) => {
                    m();
                    handled += 1;
                }
                None => break,
            }
        }
        if handled > 0 {
            self.messages.set(self.messages.get() + handled as u64);
            busy = true;
        }

        busy |= self.flush_outbox();
        if self.removals.replace(false) {
            self.compact();
        }
        busy
    }

    #[inline]
    fn nth(&self, list: &RefCell<Vec<Rc<Poller>>>, i: usize) -> Option<Rc<Poller>> {
        list.borrow().get(i).cloned()
    }

    fn compact(&self) {
        let mut dropped = Vec::new();
        for list in [&self.active, &self.timed] {
            let mut l = list.borrow_mut();
            let mut i = 0;
            while i < l.len() {
                if l[i].removed.get() {
                    dropped.push(l.swap_remove(i));
                } else {
                    i += 1;
                }
            }
        }
        // Pollers' destructors may register or remove pollers; no borrow is held.
        drop(dropped);
    }

    fn flush_outbox(&self) -> bool {
        let mut out = self.outbox.borrow_mut();
        if out.is_empty() {
            return false;
        }
        while let Some((target, msg)) = out.pop_front() {
            match self.handle.try_send(target, msg) {
                Ok(()) => {}
                Err(SendError::Full(msg)) => {
                    out.push_front((target, msg));
                    break;
                }
                Err(e) => tracing::error!("dropping message for reactor {target}: {e}"),
            }
        }
        true
    }

    /// Sleeps until a message, an interrupt source or the next timer.
    fn sleep(&self, now: u64) {
        let mut timeout_ms: i32 = -1;
        if let Some(next) = self.timed.borrow().iter().map(|p| p.next_run.get()).min() {
            let ns = ticks_to_ns(next.saturating_sub(now));
            if ns < MIN_SLEEP_NS {
                return;
            }
            timeout_ms = (ns / 1_000_000).min(i32::MAX as u64) as i32;
        }
        self.remote.sleeping.store(true, Ordering::SeqCst);
        // Pairs with the fence in `Handle::try_send`: either the sender sees
        // `sleeping` and rings the eventfd, or we see its message here.
        fence(Ordering::SeqCst);
        if !self.remote.queue.is_empty() || self.remote.stop.load(Ordering::SeqCst) {
            self.remote.sleeping.store(false, Ordering::SeqCst);
            return;
        }
        self.sleeps.set(self.sleeps.get() + 1);
        self.epoll.wait(timeout_ms);
        self.remote.wake.drain();
        self.remote.sleeping.store(false, Ordering::SeqCst);
    }
}
