//! The SCSI core over a real malloc bdev on a real reactor.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use ferrite_bdev::modules::malloc;
use ferrite_lib::scsi::{sense, status, DataDir, Nexus, ScsiDev, ScsiPort, Task, TaskCallback};
use ferrite_reactor::{Runtime, RuntimeConfig};

/// Runs `body` on a one-reactor runtime and returns what it sends.
fn on_reactor<T: Send + 'static>(body: impl FnOnce(mpsc::Sender<T>) + Send + 'static) -> T {
    let config = RuntimeConfig {
        cores: vec![ferrite_reactor::available_cores()[0]],
        ..RuntimeConfig::default()
    };
    let (tx, rx) = mpsc::channel();
    let rt = Runtime::start(config, move || body(tx)).unwrap();
    let out = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    rt.handle().stop();
    rt.wait();
    out
}

/// What a finished task looked like.
#[derive(Debug, Clone)]
struct Outcome {
    status: u8,
    sense_key: u8,
    asc: u16,
    data: Vec<u8>,
    cmd_len: u32,
}

/// Runs tasks one after another; sends the outcomes when all are done.
struct Runner {
    port: RefCell<ScsiPort>,
    queue: RefCell<Vec<Task>>,
    out: RefCell<Vec<Outcome>>,
    me: RefCell<Option<Rc<dyn TaskCallback>>>,
    tx: RefCell<Option<mpsc::Sender<Vec<Outcome>>>>,
}

impl Runner {
    fn next(&self) {
        let t = self.queue.borrow_mut().pop();
        match t {
            Some(t) => {
                let cb = self.me.borrow().clone().unwrap();
                self.port.borrow_mut().execute(t, &cb, 0);
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
            sense_key: if task.sense.is_empty() {
                0
            } else {
                task.sense.key()
            },
            asc: if task.sense.is_empty() {
                0
            } else {
                task.sense.asc_ascq()
            },
            data,
            cmd_len: task.cmd_len,
        });
        self.next();
    }
}

fn task(lun: u64, cdb: &[u8], dir: DataDir, expected: u32, data: Option<&[u8]>) -> Task {
    let mut t = Task::new(1 << 20);
    t.lun = lun;
    t.set_cdb(cdb);
    t.dir = dir;
    t.expected_len = expected;
    if let Some(d) = data {
        assert!(t.data.set(d));
    }
    t
}

fn run(bdev: &'static str, bs: u32, tasks: Vec<Task>) -> Vec<Outcome> {
    on_reactor(move |tx| {
        malloc::create(malloc::CreateParams {
            name: Some(bdev.into()),
            num_blocks: 2048,
            block_size: bs,
            uuid: None,
        })
        .unwrap();
        let dev = ScsiDev::new("iqn.test:dev", &[(0, bdev.to_string())]).unwrap();
        let nexus = Arc::new(Nexus::new(
            "iqn.i,i,0x1".into(),
            "iqn.t,t,0x1".into(),
            1,
            vec![],
        ));
        let mut tasks = tasks;
        tasks.reverse();
        let r = Rc::new(Runner {
            port: RefCell::new({
                // A new nexus starts with a POWER ON, RESET unit attention.
                let mut port = ScsiPort::new(dev, nexus);
                ferrite_lib::scsi::ua::clear_unit_attentions(&mut port);
                port
            }),
            queue: RefCell::new(tasks),
            out: RefCell::new(Vec::new()),
            me: RefCell::new(None),
            tx: RefCell::new(Some(tx)),
        });
        *r.me.borrow_mut() = Some(r.clone());
        r.next();
    })
}

#[test]
fn inquiry_capacity_write_read_and_report_luns() {
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    let out = run(
        "scsi0",
        512,
        vec![
            task(0, &[0x00, 0, 0, 0, 0, 0], DataDir::None, 0, None),
            task(0, &[0x12, 0, 0, 0, 96, 0], DataDir::Read, 96, None),
            task(0, &[0x12, 1, 0x83, 0, 255, 0], DataDir::Read, 255, None),
            task(
                0,
                &[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
                DataDir::Read,
                32,
                None,
            ),
            task(
                0,
                &[0x2a, 0, 0, 0, 0, 10, 0, 0, 8, 0],
                DataDir::Write,
                4096,
                Some(&pattern),
            ),
            task(
                0,
                &[0x28, 0, 0, 0, 0, 10, 0, 0, 8, 0],
                DataDir::Read,
                4096,
                None,
            ),
            task(
                0,
                &[0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
                DataDir::Read,
                256,
                None,
            ),
            task(
                0,
                &[0x28, 0, 0, 0, 0x07, 0xff, 0, 0, 2, 0],
                DataDir::Read,
                1024,
                None,
            ),
            task(0, &[0xee, 0, 0, 0, 0, 0], DataDir::None, 0, None),
            task(3, &[0x00, 0, 0, 0, 0, 0], DataDir::None, 0, None),
            task(3, &[0x12, 0, 0, 0, 36, 0], DataDir::Read, 36, None),
            // Read with a smaller expected length: only that much comes back.
            task(
                0,
                &[0x28, 0, 0, 0, 0, 10, 0, 0, 8, 0],
                DataDir::Read,
                512,
                None,
            ),
        ],
    );
    assert_eq!(out[0].status, status::GOOD);
    assert_eq!(&out[1].data[8..16], b"FERRITE ");
    assert_eq!(out[2].data[1], 0x83);
    assert_eq!(
        u64::from_be_bytes(out[3].data[0..8].try_into().unwrap()),
        2047
    );
    assert_eq!(
        u32::from_be_bytes(out[3].data[8..12].try_into().unwrap()),
        512
    );
    assert_eq!(out[4].status, status::GOOD, "{:?}", out[4]);
    assert_eq!(out[5].data, pattern);
    assert_eq!(&out[6].data[0..4], &[0, 0, 0, 8]);
    assert_eq!(out[7].status, status::CHECK_CONDITION);
    assert_eq!(
        (out[7].sense_key, out[7].asc),
        (sense::key::ILLEGAL_REQUEST, sense::asc::LBA_OUT_OF_RANGE)
    );
    assert_eq!(out[8].asc, sense::asc::INVALID_COMMAND_OPERATION_CODE);
    assert_eq!(out[9].asc, sense::asc::LOGICAL_UNIT_NOT_SUPPORTED);
    assert_eq!(out[10].data[0], 0x7f);
    assert_eq!(out[11].data, pattern[..512]);
    assert_eq!(out[11].cmd_len, 4096);
}

#[test]
fn large_transfers_cross_several_bdev_ios() {
    // 3 MiB at 4 KiB blocks: two bdev I/Os (2 MiB + 1 MiB) each way.
    let len = 3 << 20;
    let pattern: Vec<u8> = (0..len as u32).map(|i| (i / 4096 + i) as u8).collect();
    let blocks = (len / 4096) as u16;
    let [hi, lo] = blocks.to_be_bytes();
    let out = run(
        "scsi1",
        4096,
        vec![
            task(
                0,
                &[0x2a, 0, 0, 0, 0, 1, 0, hi, lo, 0],
                DataDir::Write,
                len as u32,
                Some(&pattern),
            ),
            task(
                0,
                &[0x28, 0, 0, 0, 0, 1, 0, hi, lo, 0],
                DataDir::Read,
                len as u32,
                None,
            ),
        ],
    );
    assert_eq!(out[0].status, status::GOOD, "{:?}", out[0].asc);
    assert!(out[1].data == pattern, "read back differs");
}
