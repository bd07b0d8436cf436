//! Task management: the SCSI layer's side of ABORT TASK, ABORT TASK SET, CLEAR
//! TASK SET, LOGICAL UNIT RESET, TARGET RESET and I_T nexus loss (SAM-5 7),
//! and of PREEMPT AND ABORT.
//!
//! Every task the SCSI layer holds for a LUN is tracked on its reactor, from
//! [`ScsiPort::execute`] until it is handed back, wherever it is meanwhile (at
//! the bdev, in an EXTENDED COPY, waiting for the APTPL file). A task management
//! function marks the tasks it covers as aborted and completes once every one
//! of them has come back; work already at the bdev is not cancelled, it runs
//! to its end (a copy stops at its next chunk).
//!
//! # Contract for transports
//!
//! * Task management functions are [`ScsiPort`] methods; call them on the
//!   port's reactor. `done` runs later on that reactor (never inside the call),
//!   after every task the function aborted has been handed back through its
//!   [`TaskCallback`].
//! * An aborted task comes back with `task.aborted == true`: send **no**
//!   response for it (the TMF response speaks for it). When it was aborted on
//!   behalf of another I_T nexus and the control mode page's TAS bit is set, it
//!   instead comes back with `aborted == false` and status TASK ABORTED, a
//!   response to send like any other.
//! * Tasks the transport still holds itself (waiting for Data-Out, not yet
//!   passed to [`ScsiPort::execute`]) are the transport's to abort.
//! * ABORT TASK answers [`TmfResponse::TaskNotFound`] when the SCSI layer does
//!   not hold the task (it may already be on its way back).
//! * I_T nexus loss ([`ScsiPort::nexus_loss`]): call when the session ends
//!   (logout, connection loss without reinstatement); dropping the port also
//!   releases its SPC-2 reservations, but only the call aborts its tasks and
//!   forgets its unit attentions and copy results at once.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use slab::Slab;

use super::dev::{Lun, LunView, ScsiPort};
use super::exec::{self, Done};
use super::sense::asc;
use super::task::{status, Task, TaskCallback};

/// `Task::track` of a task the SCSI layer does not track.
pub(crate) const UNTRACKED: u32 = u32::MAX;

/// What a task management function reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TmfResponse {
    /// Done (iSCSI: Function complete).
    Complete,
    /// ABORT TASK: the SCSI layer holds no such task.
    TaskNotFound,
    /// The LUN does not exist.
    LunNotFound,
}

/// A task held by the SCSI layer on this reactor.
struct Tracked {
    nexus: u64,
    lun: usize,
    tag: u64,
    aborted: bool,
    /// Ends with TASK ABORTED status rather than silently.
    tas: bool,
    /// Task management functions waiting for it.
    waiters: Vec<Arc<Waiter>>,
}

/// Counts the tasks one function waits for; fires on its origin reactor.
pub(crate) struct Waiter {
    pending: AtomicUsize,
    found: AtomicUsize,
    origin: usize,
    id: u64,
}

type DoneFn = Box<dyn FnOnce(usize)>;
type ThenFn = Box<dyn FnOnce(Vec<u64>)>;

struct Parked {
    done: Done,
    task: Task,
    waits: u32,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static TRACKED: RefCell<Slab<Tracked>> = RefCell::new(Slab::with_capacity(1024));
    static DONES: RefCell<HashMap<u64, DoneFn>> = RefCell::new(HashMap::new());
    static THENS: RefCell<HashMap<u64, ThenFn>> = RefCell::new(HashMap::new());
    static PARKED: RefCell<Slab<Parked>> = const { RefCell::new(Slab::new()) };
}

fn lun_key(lun: &Arc<Lun>) -> usize {
    Arc::as_ptr(lun) as usize
}

/// Starts tracking `task`, just admitted to LUN `view` (the I/O path).
#[inline]
pub(crate) fn track(task: &mut Task, view: &LunView) {
    task.aborted = false;
    let e = Tracked {
        nexus: view.nx.nexus.id,
        lun: lun_key(&view.lun),
        tag: task.tag,
        aborted: false,
        tas: false,
        waiters: Vec::new(),
    };
    task.track = TRACKED.with(|t| t.borrow_mut().insert(e)) as u32;
}

/// What [`untrack`] leaves to [`release`] once the task is queued back.
pub(crate) struct Released(Option<Vec<Arc<Waiter>>>);

/// Stops tracking `task`, which is being handed back; an aborted task gets its
/// abort status here.
#[inline]
pub(crate) fn untrack(task: &mut Task) -> Released {
    if task.track == UNTRACKED {
        return Released(None);
    }
    let e = TRACKED.with(|t| t.borrow_mut().try_remove(task.track as usize));
    task.track = UNTRACKED;
    match e {
        Some(e) if e.aborted => {
            task.data.clear();
            task.sense.clear();
            task.status = status::TASK_ABORTED;
            task.aborted = !e.tas;
            Released(Some(e.waiters))
        }
        _ => Released(None),
    }
}

/// Tells the functions waiting for an aborted task that it is back.
#[inline]
pub(crate) fn release(r: Released) {
    if let Some(ws) = r.0 {
        for w in ws {
            w.release();
        }
    }
}

/// Whether `task` (still held by the SCSI layer) has been aborted.
pub(crate) fn is_aborted(task: &Task) -> bool {
    task.track != UNTRACKED
        && TRACKED.with(|t| {
            t.borrow()
                .get(task.track as usize)
                .is_some_and(|e| e.aborted)
        })
}

/// Keeps a finished-but-not-yet-done task until `waits` calls of [`park_done`].
pub(crate) fn park(done: Done, task: Task, waits: u32) -> usize {
    PARKED.with(|p| p.borrow_mut().insert(Parked { done, task, waits }))
}

/// One thing a parked task waited for is done; the last hands it back.
pub(crate) fn park_done(key: usize) {
    let ready = PARKED.with(|p| {
        let mut p = p.borrow_mut();
        let e = p.get_mut(key)?;
        e.waits -= 1;
        if e.waits == 0 {
            Some(p.remove(key))
        } else {
            None
        }
    });
    if let Some(e) = ready {
        e.done.finish(e.task);
    }
}

/// Runs `f` from the completion poller, after the tasks handed back before it.
fn deliver(f: impl FnOnce() + 'static) {
    struct Deliver(RefCell<Option<Box<dyn FnOnce()>>>);
    impl TaskCallback for Deliver {
        fn task_done(&self, _tag: u64, _task: Task) {
            if let Some(f) = self.0.borrow_mut().take() {
                f();
            }
        }
    }
    exec::ensure_poller();
    let cb: Rc<dyn TaskCallback> = Rc::new(Deliver(RefCell::new(Some(Box::new(f)))));
    exec::finish(cb, 0, Task::new(0));
}

impl Waiter {
    /// A waiter on this reactor; `done(found)` runs when it fires.
    fn new(done: impl FnOnce(usize) + 'static) -> Arc<Waiter> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        DONES.with(|d| d.borrow_mut().insert(id, Box::new(done)));
        Arc::new(Waiter {
            // The guard, released once every task to wait for is marked.
            pending: AtomicUsize::new(1),
            found: AtomicUsize::new(0),
            origin: ferrite_reactor::current_index().expect("task management runs on a reactor"),
            id,
        })
    }

    fn release(self: &Arc<Self>) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let (id, found) = (self.id, self.found.load(Ordering::Acquire));
        let fire = move || {
            if let Some(f) = DONES.with(|d| d.borrow_mut().remove(&id)) {
                deliver(move || f(found));
            }
        };
        if ferrite_reactor::current_index() == Some(self.origin) {
            fire();
        } else if let Err(e) = ferrite_reactor::send(self.origin, Box::new(fire)) {
            tracing::error!("task management: cannot reach reactor {}: {e}", self.origin);
        }
    }
}

/// Which tracked tasks a function covers.
#[derive(Default, Clone)]
struct Filter {
    /// LUNs (by [`lun_key`]); `None` for all.
    luns: Option<Vec<usize>>,
    /// Nexuses; `None` for all.
    nexuses: Option<Vec<u64>>,
    tag: Option<u64>,
    /// The nexus the function came from: the others' tasks end with TASK
    /// ABORTED when `tas`.
    by: u64,
    tas: bool,
}

/// Marks the matching tasks of this reactor aborted and makes `w` wait for
/// them. Returns the nexus of each task marked.
fn mark(f: &Filter, w: &Arc<Waiter>) -> Vec<u64> {
    let mut hit = Vec::new();
    TRACKED.with(|t| {
        for (_, e) in t.borrow_mut().iter_mut() {
            let matches = f.luns.as_ref().is_none_or(|l| l.contains(&e.lun))
                && f.nexuses.as_ref().is_none_or(|n| n.contains(&e.nexus))
                && f.tag.is_none_or(|tag| tag == e.tag);
            if !matches {
                continue;
            }
            if !e.aborted {
                e.aborted = true;
                e.tas = f.tas && e.nexus != f.by;
            }
            w.pending.fetch_add(1, Ordering::AcqRel);
            e.waiters.push(w.clone());
            hit.push(e.nexus);
        }
    });
    w.found.fetch_add(hit.len(), Ordering::AcqRel);
    hit
}

/// Marks on every reactor (even a nexus's own tasks may be on several: the
/// channels of one SRP nexus, the connections of one iSCSI session, are spread
/// over the reactors); `then(nexuses hit)` runs on this reactor once all are
/// marked, `done` once every marked task is back.
fn mark_everywhere(
    f: Filter,
    then: impl FnOnce(Vec<u64>) + 'static,
    done: impl FnOnce(usize) + 'static,
) {
    let w = Waiter::new(done);
    let then_id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    THENS.with(|t| t.borrow_mut().insert(then_id, Box::new(then)));
    let f = Arc::new(f);
    let wm = w.clone();
    ferrite_reactor::for_each_reactor(
        move || mark(&f, &wm),
        move |hits: Vec<Vec<u64>>| {
            if let Some(then) = THENS.with(|t| t.borrow_mut().remove(&then_id)) {
                then(hits.concat());
            }
            w.release();
        },
    );
}

/// PREEMPT AND ABORT: aborts the tasks of `nexuses` on LUN `view`; `then` runs
/// once they are all back.
pub(crate) fn abort_preempted(view: &LunView, nexuses: Vec<u64>, then: impl FnOnce() + 'static) {
    let f = Filter {
        luns: Some(vec![lun_key(&view.lun)]),
        nexuses: Some(nexuses),
        tag: None,
        by: view.nx.nexus.id,
        tas: view.lun.state.tas(),
    };
    mark_everywhere(f, |_| {}, move |_| then());
}

impl ScsiPort {
    /// ABORT TASK: aborts this nexus's task `task_tag` (the initiator's tag, as
    /// in [`Task::tag`]) on LUN `lun`.
    pub fn abort_task(
        &mut self,
        lun: u64,
        task_tag: u64,
        done: impl FnOnce(TmfResponse) + 'static,
    ) {
        let Some(view) = self.lun(lun) else {
            return deliver(move || done(TmfResponse::LunNotFound));
        };
        let f = Filter {
            luns: Some(vec![lun_key(&view.lun)]),
            nexuses: Some(vec![self.nexus().id]),
            tag: Some(task_tag),
            ..Filter::default()
        };
        mark_everywhere(
            f,
            |_| {},
            move |found| {
                done(if found > 0 {
                    TmfResponse::Complete
                } else {
                    TmfResponse::TaskNotFound
                })
            },
        );
    }

    /// ABORT TASK SET: aborts every task of this nexus on LUN `lun`.
    pub fn abort_task_set(&mut self, lun: u64, done: impl FnOnce(TmfResponse) + 'static) {
        let Some(view) = self.lun(lun) else {
            return deliver(move || done(TmfResponse::LunNotFound));
        };
        let f = Filter {
            luns: Some(vec![lun_key(&view.lun)]),
            nexuses: Some(vec![self.nexus().id]),
            ..Filter::default()
        };
        mark_everywhere(f, |_| {}, move |_| done(TmfResponse::Complete));
    }

    /// CLEAR TASK SET: aborts every task on LUN `lun`, of every nexus. Other
    /// nexuses' tasks end with TASK ABORTED when TAS is set; otherwise those
    /// nexuses get COMMANDS CLEARED BY ANOTHER INITIATOR.
    pub fn clear_task_set(&mut self, lun: u64, done: impl FnOnce(TmfResponse) + 'static) {
        let Some(view) = self.lun(lun) else {
            return deliver(move || done(TmfResponse::LunNotFound));
        };
        let me = self.nexus().id;
        let tas = view.lun.state.tas();
        let f = Filter {
            luns: Some(vec![lun_key(&view.lun)]),
            by: me,
            tas,
            ..Filter::default()
        };
        let state = view.lun.state.clone();
        mark_everywhere(
            f,
            move |hit| {
                if tas {
                    return;
                }
                for n in state.nexuses() {
                    if n.nexus.id != me && hit.contains(&n.nexus.id) {
                        n.push_ua(asc::COMMANDS_CLEARED_BY_ANOTHER_INITIATOR);
                    }
                }
            },
            move |_| done(TmfResponse::Complete),
        );
    }

    /// LOGICAL UNIT RESET: aborts every task on LUN `lun`, releases its SPC-2
    /// reservation (persistent reservations stay) and gives every nexus a BUS
    /// DEVICE RESET FUNCTION OCCURRED unit attention.
    pub fn lun_reset(&mut self, lun: u64, done: impl FnOnce(TmfResponse) + 'static) {
        let Some(view) = self.lun(lun) else {
            return deliver(move || done(TmfResponse::LunNotFound));
        };
        reset_luns(
            std::slice::from_ref(&view.lun),
            self.nexus().id,
            asc::BUS_DEVICE_RESET,
            done,
        );
    }

    /// TARGET WARM/COLD RESET: a reset of every LUN of the device, with a
    /// POWER ON, RESET OR BUS DEVICE RESET OCCURRED unit attention. (A cold reset
    /// also ends the sessions: that is the transport's part.)
    pub fn target_reset(&mut self, done: impl FnOnce(TmfResponse) + 'static) {
        let luns = self.dev().luns();
        reset_luns(&luns, self.nexus().id, asc::POWER_ON_RESET, done);
    }

    /// I_T nexus loss: aborts this nexus's tasks on every LUN, releases its
    /// SPC-2 reservations and forgets its unit attentions and held copy
    /// results. Its persistent reservation registrations stay.
    pub fn nexus_loss(&mut self, done: impl FnOnce(TmfResponse) + 'static) {
        let me = self.nexus().id;
        for id in self.lun_ids() {
            if let Some(view) = self.lun(id) {
                let state = &view.lun.state;
                state.spc2_release(me);
                let mut g = state.lock();
                g.detach(me);
                g.copies.forget(&view.nx.port, view.nx.rtp());
                drop(g);
                view.nx.clear_ua(None);
            }
        }
        let f = Filter {
            nexuses: Some(vec![me]),
            ..Filter::default()
        };
        mark_everywhere(f, |_| {}, move |_| done(TmfResponse::Complete));
    }
}

/// Sets the TAS bit of `lun`'s control mode page as the task management code
/// sees it (the mode page's owner calls this when TAS changes).
pub fn set_tas(lun: &Lun, tas: bool) {
    lun.state.set_tas(tas);
}

fn reset_luns(luns: &[Arc<Lun>], by: u64, ua: u16, done: impl FnOnce(TmfResponse) + 'static) {
    let mut keys = Vec::with_capacity(luns.len());
    let mut tas = false;
    for l in luns {
        l.state.spc2_clear();
        l.state.ua_all(ua, None);
        tas |= l.state.tas();
        keys.push(lun_key(l));
    }
    let f = Filter {
        luns: Some(keys),
        by,
        tas,
        ..Filter::default()
    };
    mark_everywhere(f, |_| {}, move |_| done(TmfResponse::Complete));
}
