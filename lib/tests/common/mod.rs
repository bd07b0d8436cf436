//! A harness for SCSI tests: a malloc bdev exported as LUN 0 of one device,
//! two ports (I_T nexuses) on one reactor, tasks run one after another.

#![allow(dead_code)]

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use ferrite_bdev::modules::malloc;
use ferrite_lib::scsi::{status, DataDir, Nexus, ScsiDev, ScsiPort, Sense, Task, TaskCallback};
use ferrite_reactor::{Runtime, RuntimeConfig};

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

/// What a finished task looked like.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: u8,
    pub sense: Sense,
    pub data: Vec<u8>,
    pub cmd_len: u32,
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
}

/// One task for one port.
pub struct Step {
    pub port: usize,
    pub task: Task,
}

impl From<Task> for Step {
    fn from(task: Task) -> Step {
        Step { port: 0, task }
    }
}

/// Sends the task to the second port.
pub fn on_port1(task: Task) -> Step {
    Step { port: 1, task }
}

struct Runner {
    ports: RefCell<Vec<ScsiPort>>,
    queue: RefCell<Vec<Step>>,
    out: RefCell<Vec<Outcome>>,
    me: RefCell<Option<Rc<dyn TaskCallback>>>,
    tx: RefCell<Option<mpsc::Sender<Vec<Outcome>>>>,
}

impl Runner {
    fn next(&self) {
        let s = self.queue.borrow_mut().pop();
        match s {
            Some(s) => {
                let cb = self.me.borrow().clone().unwrap();
                self.ports.borrow_mut()[s.port].execute(s.task, &cb, 0);
            }
            None => {
                self.me.borrow_mut().take();
                let out = self.out.take();
                self.tx.borrow_mut().take().unwrap().send(out).unwrap();
            }
        }
    }
}

impl TaskCallback for Runner {
    fn task_done(&self, _tag: u64, task: Task) {
        let mut data = vec![0; task.data.len()];
        task.data.copy_to_slice(0, &mut data);
        self.out.borrow_mut().push(Outcome {
            status: task.status,
            sense: task.sense,
            data,
            cmd_len: task.cmd_len,
        });
        self.next();
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs `steps` against LUN 0, a fresh malloc bdev of `blocks` blocks of `bs`
/// bytes; port 0 and port 1 are two I_T nexuses (iSCSI TransportIDs). Each
/// port first sends a TEST UNIT READY (not in the outcomes) to take the unit
/// attention a new nexus may have.
pub fn run_on(blocks: u64, bs: u32, steps: Vec<Step>) -> Vec<Outcome> {
    let mut all = vec![
        Step::from(none(&[0, 0, 0, 0, 0, 0])),
        on_port1(none(&[0, 0, 0, 0, 0, 0])),
    ];
    all.extend(steps);
    let mut out = run_raw(blocks, bs, all);
    out.drain(..2);
    out
}

/// [`run_on`] without the opening TEST UNIT READYs.
pub fn run_raw(blocks: u64, bs: u32, steps: Vec<Step>) -> Vec<Outcome> {
    let name = format!("scsit{}", NEXT.fetch_add(1, Ordering::Relaxed));
    on_reactor(move |tx| {
        malloc::create(malloc::CreateParams {
            name: Some(name.clone()),
            num_blocks: blocks,
            block_size: bs,
            uuid: None,
        })
        .unwrap();
        let dev = ScsiDev::new("iqn.2026-01.test:dev", &[(0, name)]).unwrap();
        let ports = (0..2u16)
            .map(|i| {
                let nexus = Arc::new(Nexus::new(
                    format!("iqn.2026-01.test:init{i},i,0x1"),
                    "iqn.2026-01.test:dev,t,0x1".into(),
                    1,
                    vec![0x05],
                ));
                ScsiPort::new(dev.clone(), nexus)
            })
            .collect();
        let mut steps = steps;
        steps.reverse();
        let r = Rc::new(Runner {
            ports: RefCell::new(ports),
            queue: RefCell::new(steps),
            out: RefCell::new(Vec::new()),
            me: RefCell::new(None),
            tx: RefCell::new(Some(tx)),
        });
        *r.me.borrow_mut() = Some(r.clone());
        r.next();
    })
}

/// 2048 blocks of 512 bytes.
pub fn run(steps: Vec<Step>) -> Vec<Outcome> {
    run_on(2048, 512, steps)
}

pub fn tasks(tasks: Vec<Task>) -> Vec<Step> {
    tasks.into_iter().map(Step::from).collect()
}

fn task(cdb: &[u8], dir: DataDir, expected: u32, data: Option<&[u8]>) -> Task {
    let mut t = Task::new(16 << 20);
    t.lun = 0;
    t.set_cdb(cdb);
    t.dir = dir;
    t.expected_len = expected;
    if let Some(d) = data {
        assert!(t.data.set(d));
    }
    t
}

/// A command without data.
pub fn none(cdb: &[u8]) -> Task {
    task(cdb, DataDir::None, 0, None)
}

/// A command reading up to `expected` bytes.
pub fn din(cdb: &[u8], expected: u32) -> Task {
    task(cdb, DataDir::Read, expected, None)
}

/// A command writing `data`.
pub fn dout(cdb: &[u8], data: &[u8]) -> Task {
    task(cdb, DataDir::Write, data.len() as u32, Some(data))
}

/// A command to LUN `lun`.
pub fn at_lun(mut t: Task, lun: u64) -> Task {
    t.lun = lun;
    t
}

pub fn read10(lba: u32, n: u16) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = 0x28;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&n.to_be_bytes());
    c
}

pub fn write10(lba: u32, n: u16) -> [u8; 10] {
    let mut c = read10(lba, n);
    c[0] = 0x2a;
    c
}

pub fn cdb16(op: u8, lba: u64, n: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = op;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&n.to_be_bytes());
    c
}

pub fn read16(lba: u64, n: u32) -> [u8; 16] {
    cdb16(0x88, lba, n)
}

pub fn write16(lba: u64, n: u32) -> [u8; 16] {
    cdb16(0x8a, lba, n)
}

/// Reads `n` blocks from `lba` (512-byte blocks unless the LUN says otherwise).
pub fn read_blocks(lba: u64, n: u32, bs: u32) -> Task {
    din(&read16(lba, n), n * bs)
}

/// Writes `data` at `lba`.
pub fn write_blocks(lba: u64, data: &[u8], bs: u32) -> Task {
    dout(&write16(lba, (data.len() / bs as usize) as u32), data)
}

pub fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

pub fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

pub fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().unwrap())
}
