//! READ and WRITE through the SCSI layer allocate nothing on the heap once
//! warm: a counting allocator watches the reactor thread while one task is
//! executed again and again.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use ferrite_bdev::modules::malloc;
use ferrite_lib::scsi::{status, DataDir, Nexus, ScsiDev, ScsiPort, Task, TaskCallback};
use ferrite_reactor::{Runtime, RuntimeConfig};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn counting() -> bool {
    COUNTING.try_with(|c| c.get()).unwrap_or(false)
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const WARM: u32 = 200;
const MEASURED: u32 = 2000;

/// Sends the same task again and again: WRITE(10), then READ(10), of 8 blocks
/// at LBAs that move.
struct Loop {
    port: RefCell<ScsiPort>,
    me: RefCell<Option<Rc<dyn TaskCallback>>>,
    round: Cell<u32>,
    tx: RefCell<Option<mpsc::Sender<Result<u64, String>>>>,
}

impl Loop {
    fn send(&self, mut task: Task) {
        let i = self.round.get();
        let write = i.is_multiple_of(2);
        let lba = ((i / 2) % 200) * 8;
        let mut cdb = [0u8; 10];
        cdb[0] = if write { 0x2a } else { 0x28 };
        cdb[2..6].copy_from_slice(&lba.to_be_bytes());
        cdb[8] = 8;
        task.set_cdb(&cdb);
        task.dir = if write { DataDir::Write } else { DataDir::Read };
        task.expected_len = 4096;
        if write {
            // The transport fills the data buffers it receives into.
            if !task.data.alloc(4096) {
                self.end(Err("out of buffers".into()));
                return;
            }
        }
        let cb = self.me.borrow().clone().unwrap();
        self.port.borrow_mut().execute(task, &cb, i as u64);
    }

    fn end(&self, r: Result<u64, String>) {
        COUNTING.with(|c| c.set(false));
        self.me.borrow_mut().take();
        if let Some(tx) = self.tx.borrow_mut().take() {
            let _ = tx.send(r);
        }
    }
}

impl TaskCallback for Loop {
    fn task_done(&self, _tag: u64, mut task: Task) {
        if task.status != status::GOOD {
            self.end(Err(format!("round {}: {:?}", self.round.get(), task.sense)));
            return;
        }
        let i = self.round.get() + 1;
        self.round.set(i);
        if i == WARM {
            ALLOCS.store(0, Ordering::Relaxed);
            COUNTING.with(|c| c.set(true));
        }
        if i == WARM + MEASURED {
            let n = ALLOCS.load(Ordering::Relaxed);
            self.end(Ok(n));
            return;
        }
        task.status = status::GOOD;
        task.data.clear();
        self.send(task);
    }
}

#[test]
fn read_and_write_allocate_nothing_once_warm() {
    let config = RuntimeConfig {
        cores: vec![ferrite_reactor::available_cores()[0]],
        ..RuntimeConfig::default()
    };
    let (tx, rx) = mpsc::channel();
    let rt = Runtime::start(config, move || {
        malloc::create(malloc::CreateParams {
            name: Some("noalloc0".into()),
            num_blocks: 4096,
            block_size: 512,
            uuid: None,
        })
        .unwrap();
        let dev = ScsiDev::new("iqn.2026-01.test:noalloc", &[(0, "noalloc0".into())]).unwrap();
        let nexus = Arc::new(Nexus::new(
            "iqn.2026-01.test:init,i,0x1".into(),
            "iqn.2026-01.test:noalloc,t,0x1".into(),
            1,
            vec![0x05],
        ));
        let l = Rc::new(Loop {
            port: RefCell::new(ScsiPort::new(dev, nexus)),
            me: RefCell::new(None),
            round: Cell::new(0),
            tx: RefCell::new(Some(tx)),
        });
        *l.me.borrow_mut() = Some(l.clone());
        // Take the unit attention a new nexus may have first.
        let mut t = Task::new(1 << 20);
        t.set_cdb(&[0, 0, 0, 0, 0, 0]);
        struct First(Rc<Loop>);
        impl TaskCallback for First {
            fn task_done(&self, _tag: u64, mut task: Task) {
                task.status = status::GOOD;
                task.sense.clear();
                self.0.send(task);
            }
        }
        let first: Rc<dyn TaskCallback> = Rc::new(First(l.clone()));
        l.port.borrow_mut().execute(t, &first, 0);
    })
    .unwrap();
    let out = rx.recv_timeout(std::time::Duration::from_secs(60)).unwrap();
    rt.handle().stop();
    rt.wait();
    assert_eq!(
        out,
        Ok(0),
        "heap allocations in {MEASURED} READ/WRITE tasks"
    );
}
