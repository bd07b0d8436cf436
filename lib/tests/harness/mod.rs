//! A harness for reservation, copy and task management tests: devices over
//! malloc (and delay) bdevs on one real reactor, several ports (I_T nexuses),
//! and a script of steps that may leave tasks in flight and run task
//! management functions.

#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use ferrite_bdev::modules::{delay, malloc};
use ferrite_lib::scsi::{
    status, DataDir, Nexus, ScsiDev, ScsiPort, Sense, Task, TaskCallback, TmfResponse,
};
use ferrite_reactor::{Runtime, RuntimeConfig};

/// What the script runs on.
pub struct Env {
    pub devs: Vec<Arc<ScsiDev>>,
    /// `None` once dropped by the script.
    pub ports: Vec<Option<ScsiPort>>,
    /// Bdev names, in creation order.
    pub bdevs: Vec<String>,
}

impl Env {
    pub fn port(&mut self, i: usize) -> &mut ScsiPort {
        self.ports[i].as_mut().expect("port dropped")
    }
}

/// A task management function.
#[derive(Debug, Clone, Copy)]
pub enum Tmf {
    AbortTask { lun: u64, tag: u64 },
    AbortTaskSet { lun: u64 },
    ClearTaskSet { lun: u64 },
    LunReset { lun: u64 },
    TargetReset,
    NexusLoss,
}

/// One step of a script.
pub enum Step {
    /// Runs a task on a port and waits for it.
    Exec(usize, Task),
    /// Starts a task on a port; its outcome comes whenever it ends.
    Start(usize, Task),
    /// Runs a task management function and waits for it.
    Tmf(usize, Tmf),
    /// Does something to the environment.
    Do(Box<dyn FnOnce(&mut Env)>),
}

/// What the script saw, in the order it happened.
#[derive(Debug, Clone)]
pub enum Event {
    Task { step: usize, out: Outcome },
    Tmf { step: usize, resp: TmfResponse },
}

/// A finished task.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: u8,
    pub sense: Sense,
    pub data: Vec<u8>,
    pub aborted: bool,
}

impl Outcome {
    pub fn key(&self) -> u8 {
        if self.sense.is_empty() {
            0
        } else {
            self.sense.key()
        }
    }

    pub fn asc(&self) -> u16 {
        if self.sense.is_empty() {
            0
        } else {
            self.sense.asc_ascq()
        }
    }

    #[track_caller]
    pub fn good(&self) -> &Self {
        assert_eq!(self.status, status::GOOD, "expected GOOD: {self:?}");
        assert!(!self.aborted);
        self
    }

    #[track_caller]
    pub fn check(&self, key: u8, asc: u16) -> &Self {
        assert_eq!(
            (self.status, self.key(), self.asc()),
            (status::CHECK_CONDITION, key, asc),
            "{self:?}"
        );
        self
    }

    #[track_caller]
    pub fn conflict(&self) -> &Self {
        assert_eq!(
            self.status,
            status::RESERVATION_CONFLICT,
            "expected RESERVATION CONFLICT: {self:?}"
        );
        self
    }

    #[track_caller]
    pub fn ua(&self, asc: u16) -> &Self {
        self.check(0x06, asc)
    }
}

/// The outcomes of the script's tasks, by step index.
pub struct Results {
    pub events: Vec<Event>,
}

impl Results {
    /// The outcome of step `step` (a task).
    #[track_caller]
    pub fn at(&self, step: usize) -> &Outcome {
        self.events
            .iter()
            .find_map(|e| match e {
                Event::Task { step: s, out } if *s == step => Some(out),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no outcome for step {step}"))
    }

    /// The response of task management step `step`.
    #[track_caller]
    pub fn tmf(&self, step: usize) -> TmfResponse {
        self.events
            .iter()
            .find_map(|e| match e {
                Event::Tmf { step: s, resp } if *s == step => Some(*resp),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no TMF response for step {step}"))
    }

    /// Where in the event order step `step` ended.
    #[track_caller]
    pub fn position(&self, step: usize) -> usize {
        self.events
            .iter()
            .position(|e| match e {
                Event::Task { step: s, .. } | Event::Tmf { step: s, .. } => *s == step,
            })
            .unwrap_or_else(|| panic!("step {step} never ended"))
    }
}

/// Runs `body` on a one-reactor runtime and returns what it sends.
pub fn on_reactor<T: Send + 'static>(body: impl FnOnce(mpsc::Sender<T>) + Send + 'static) -> T {
    let config = RuntimeConfig {
        cores: vec![ferrite_reactor::available_cores()[0]],
        ..RuntimeConfig::default()
    };
    let (tx, rx) = mpsc::channel();
    let rt = Runtime::start(config, move || body(tx)).unwrap();
    let out = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    rt.handle().stop();
    rt.wait();
    out
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A new malloc bdev; returns its name. Call on the reactor.
pub fn malloc_bdev(blocks: u64, bs: u32) -> String {
    let name = unique("prt");
    malloc::create(malloc::CreateParams {
        name: Some(name.clone()),
        num_blocks: blocks,
        block_size: bs,
        uuid: None,
    })
    .unwrap();
    name
}

/// A delay bdev over `base` holding every I/O `us` microseconds.
pub fn delay_bdev(base: &str, us: u64) -> String {
    delay::create(delay::CreateParams {
        base_bdev_name: base.into(),
        name: unique("prd"),
        avg_read_latency: us,
        p99_read_latency: us,
        avg_write_latency: us,
        p99_write_latency: us,
        uuid: None,
    })
    .unwrap()
}

/// An iSCSI TransportID, format 01b.
pub fn iscsi_tid(port: &str) -> Vec<u8> {
    let mut body = port.as_bytes().to_vec();
    body.push(0);
    body.resize(body.len().max(16).next_multiple_of(4), 0);
    let mut t = vec![0x45, 0];
    t.extend_from_slice(&(body.len() as u16).to_be_bytes());
    t.extend_from_slice(&body);
    t
}

/// The initiator port name of test initiator `i`.
pub fn initiator(i: usize) -> String {
    format!("iqn.2026-01.test:init{i},i,0x{:012x}", 0x230000 + i)
}

/// The I_T nexus of test initiator `i` with `dev`'s target port 1.
pub fn nexus(dev: &Arc<ScsiDev>, i: usize) -> Arc<Nexus> {
    let name = initiator(i);
    Arc::new(Nexus::new(
        name.clone(),
        format!("{},t,0x1", dev.name()),
        1,
        iscsi_tid(&name),
    ))
}

/// A port of `dev` for test initiator `i` (target port 1).
pub fn port(dev: &Arc<ScsiDev>, i: usize) -> ScsiPort {
    ScsiPort::new(dev.clone(), nexus(dev, i))
}

/// One device exporting `luns` with `ports` ports on it.
pub fn env_one(luns: &[(u64, String)], ports: usize) -> Env {
    let dev = ScsiDev::new(&unique("iqn.2026-01.test:dev"), luns).unwrap();
    let ports = (0..ports).map(|i| Some(port(&dev, i))).collect();
    Env {
        devs: vec![dev],
        ports,
        bdevs: luns.iter().map(|(_, n)| n.clone()).collect(),
    }
}

struct Runner {
    env: RefCell<Option<Env>>,
    steps: RefCell<VecDeque<(usize, Step)>>,
    events: RefCell<Vec<Event>>,
    outstanding: Cell<usize>,
    waiting: Cell<Option<usize>>,
    me: RefCell<Option<Rc<Runner>>>,
    tx: RefCell<Option<mpsc::Sender<Vec<Event>>>>,
}

impl Runner {
    fn cb(&self) -> Rc<dyn TaskCallback> {
        self.me.borrow().clone().unwrap()
    }

    fn advance(&self) {
        loop {
            let next = self.steps.borrow_mut().pop_front();
            let Some((i, step)) = next else {
                if self.outstanding.get() == 0 && self.waiting.get().is_none() {
                    self.finish();
                }
                return;
            };
            match step {
                Step::Exec(p, t) => {
                    self.waiting.set(Some(i));
                    let cb = self.cb();
                    self.env
                        .borrow_mut()
                        .as_mut()
                        .unwrap()
                        .port(p)
                        .execute(t, &cb, i as u64);
                    return;
                }
                Step::Start(p, t) => {
                    self.outstanding.set(self.outstanding.get() + 1);
                    let cb = self.cb();
                    self.env
                        .borrow_mut()
                        .as_mut()
                        .unwrap()
                        .port(p)
                        .execute(t, &cb, i as u64);
                }
                Step::Tmf(p, f) => {
                    self.waiting.set(Some(i));
                    let me = self.me.borrow().clone().unwrap();
                    let done = move |resp| me.tmf_done(i, resp);
                    let mut env = self.env.borrow_mut();
                    let port = env.as_mut().unwrap().port(p);
                    match f {
                        Tmf::AbortTask { lun, tag } => port.abort_task(lun, tag, done),
                        Tmf::AbortTaskSet { lun } => port.abort_task_set(lun, done),
                        Tmf::ClearTaskSet { lun } => port.clear_task_set(lun, done),
                        Tmf::LunReset { lun } => port.lun_reset(lun, done),
                        Tmf::TargetReset => port.target_reset(done),
                        Tmf::NexusLoss => port.nexus_loss(done),
                    }
                    return;
                }
                Step::Do(f) => f(self.env.borrow_mut().as_mut().unwrap()),
            }
        }
    }

    fn tmf_done(&self, i: usize, resp: TmfResponse) {
        self.events.borrow_mut().push(Event::Tmf { step: i, resp });
        assert_eq!(self.waiting.get(), Some(i));
        self.waiting.set(None);
        self.advance();
    }

    fn finish(&self) {
        drop(self.env.borrow_mut().take());
        self.me.borrow_mut().take();
        let events = self.events.take();
        if let Some(tx) = self.tx.borrow_mut().take() {
            let _ = tx.send(events);
        }
    }
}

impl TaskCallback for Runner {
    fn task_done(&self, tag: u64, task: Task) {
        let mut data = vec![0; task.data.len()];
        task.data.copy_to_slice(0, &mut data);
        let i = tag as usize;
        self.events.borrow_mut().push(Event::Task {
            step: i,
            out: Outcome {
                status: task.status,
                sense: task.sense,
                data,
                aborted: task.aborted,
            },
        });
        if self.waiting.get() == Some(i) {
            self.waiting.set(None);
            self.advance();
        } else {
            self.outstanding.set(self.outstanding.get() - 1);
            if self.waiting.get().is_none() && self.steps.borrow().is_empty() {
                self.advance();
            }
        }
    }
}

/// Sets up with `setup` on a reactor, runs the steps `script` makes, and
/// returns everything that happened.
pub fn run(
    setup: impl FnOnce() -> Env + Send + 'static,
    script: impl FnOnce(&Env) -> Vec<Step> + Send + 'static,
) -> Results {
    let events = on_reactor(move |tx| {
        let env = setup();
        let steps = script(&env).into_iter().enumerate().collect();
        let r = Rc::new(Runner {
            env: RefCell::new(Some(env)),
            steps: RefCell::new(steps),
            events: RefCell::new(Vec::new()),
            outstanding: Cell::new(0),
            waiting: Cell::new(None),
            me: RefCell::new(None),
            tx: RefCell::new(Some(tx)),
        });
        *r.me.borrow_mut() = Some(r.clone());
        r.advance();
    });
    Results { events }
}

// ---- tasks ----

pub fn task(lun: u64, cdb: &[u8], dir: DataDir, expected: u32, data: Option<&[u8]>) -> Task {
    let mut t = Task::new(4 << 20);
    t.lun = lun;
    t.set_cdb(cdb);
    t.dir = dir;
    t.expected_len = expected;
    if let Some(d) = data {
        assert!(t.data.set(d));
    }
    t
}

pub fn tur(lun: u64) -> Task {
    task(lun, &[0; 6], DataDir::None, 0, None)
}

pub fn inquiry(lun: u64) -> Task {
    task(lun, &[0x12, 0, 0, 0, 96, 0], DataDir::Read, 96, None)
}

pub fn request_sense(lun: u64) -> Task {
    task(lun, &[0x03, 0, 0, 0, 252, 0], DataDir::Read, 252, None)
}

pub fn report_luns(lun: u64) -> Task {
    task(
        lun,
        &[0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
        DataDir::Read,
        256,
        None,
    )
}

pub fn read10(lun: u64, lba: u32, blocks: u16, bs: u32) -> Task {
    let l = lba.to_be_bytes();
    let n = blocks.to_be_bytes();
    task(
        lun,
        &[0x28, 0, l[0], l[1], l[2], l[3], 0, n[0], n[1], 0],
        DataDir::Read,
        blocks as u32 * bs,
        None,
    )
}

pub fn write10(lun: u64, lba: u32, data: &[u8], bs: u32) -> Task {
    let l = lba.to_be_bytes();
    let n = ((data.len() as u32 / bs) as u16).to_be_bytes();
    task(
        lun,
        &[0x2a, 0, l[0], l[1], l[2], l[3], 0, n[0], n[1], 0],
        DataDir::Write,
        data.len() as u32,
        Some(data),
    )
}

/// A task with the initiator task tag `tag` (what ABORT TASK names).
pub fn tagged(mut t: Task, tag: u64) -> Task {
    t.tag = tag;
    t
}

pub fn reserve6(lun: u64) -> Task {
    task(lun, &[0x16, 0, 0, 0, 0, 0], DataDir::None, 0, None)
}

pub fn release6(lun: u64) -> Task {
    task(lun, &[0x17, 0, 0, 0, 0, 0], DataDir::None, 0, None)
}

/// PERSISTENT RESERVE IN, service action `sa`.
pub fn prin(lun: u64, sa: u8, alloc: u16) -> Task {
    let a = alloc.to_be_bytes();
    task(
        lun,
        &[0x5e, sa, 0, 0, 0, 0, 0, a[0], a[1], 0],
        DataDir::Read,
        alloc as u32,
        None,
    )
}

/// PERSISTENT RESERVE OUT with the basic 24-byte parameter list; `flags` is
/// byte 20 (SPEC_I_PT 08h, ALL_TG_PT 04h, APTPL 01h).
pub fn prout(lun: u64, sa: u8, rtype: u8, key: u64, sark: u64, flags: u8) -> Task {
    let mut p = [0u8; 24];
    p[0..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sark.to_be_bytes());
    p[20] = flags;
    prout_raw(lun, sa, rtype, &p)
}

/// PERSISTENT RESERVE OUT with parameter list `p`.
pub fn prout_raw(lun: u64, sa: u8, rtype: u8, p: &[u8]) -> Task {
    let n = (p.len() as u32).to_be_bytes();
    task(
        lun,
        &[0x5f, sa, rtype, 0, 0, n[0], n[1], n[2], n[3], 0],
        DataDir::Write,
        p.len() as u32,
        Some(p),
    )
}

/// The keys of a READ KEYS answer, and its generation.
pub fn keys(out: &Outcome) -> (u32, Vec<u64>) {
    let d = &out.data;
    let gen = u32::from_be_bytes(d[0..4].try_into().unwrap());
    let n = u32::from_be_bytes(d[4..8].try_into().unwrap()) as usize;
    let keys = (0..n / 8)
        .map(|i| u64::from_be_bytes(d[8 + 8 * i..16 + 8 * i].try_into().unwrap()))
        .collect();
    (gen, keys)
}

/// The (key, type) of a READ RESERVATION answer, if reserved.
pub fn reservation(out: &Outcome) -> Option<(u64, u8)> {
    let d = &out.data;
    if u32::from_be_bytes(d[4..8].try_into().unwrap()) == 0 {
        return None;
    }
    Some((
        u64::from_be_bytes(d[8..16].try_into().unwrap()),
        d[21] & 0x0f,
    ))
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}
