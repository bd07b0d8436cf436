//! Steady-state I/O through the bdev layer allocates nothing on the heap.
//!
//! A counting global allocator counts allocations made on a thread while that
//! thread's flag is set. One reactor runs a bdev (malloc; uring on a tmpfs file,
//! through the reactor's io_uring) and a randrw job at queue depth 32 (reads and
//! writes, so both data paths and both completion paths run);
//! after a warm-up the flag is set on the reactor thread for 100k I/Os and the
//! count must stay 0. The first counted allocation's backtrace is kept so a
//! failure says where it came from.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferrite_bdev::modules::{malloc, nvme, uring};
use ferrite_perf::{run_on, Job, JobConfig, Workload};
use ferrite_reactor::mem::{self, MemConfig};
use ferrite_reactor::{Runtime, RuntimeConfig};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static FIRST: Mutex<Option<String>> = Mutex::new(None);

thread_local! {
    static COUNT_HERE: Cell<bool> = const { Cell::new(false) };
}

fn note_allocation(size: usize) {
    let counting = COUNT_HERE.try_with(|c| c.get()).unwrap_or(false);
    if !counting {
        return;
    }
    if ALLOCS.fetch_add(1, Relaxed) == 0 {
        // Capturing allocates: stop counting meanwhile.
        COUNT_HERE.with(|c| c.set(false));
        let bt = std::backtrace::Backtrace::force_capture();
        let text = format!("allocation of {size} bytes at:\n{bt}");
        *FIRST.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
        COUNT_HERE.with(|c| c.set(true));
    }
}

// SAFETY: forwards to the system allocator; the counting touches no heap memory
// (except the one backtrace, taken with counting switched off).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const WARM_UP: u64 = 5_000;
const MEASURED: u64 = 100_000;

/// The tests share the counters: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn steady_state_io_on_malloc_allocates_nothing() {
    steady_state_io_allocates_nothing(|| {
        malloc::create(malloc::CreateParams {
            name: Some("Malloc0".into()),
            num_blocks: 16384,
            block_size: 512,
            uuid: None,
        })
        .expect("malloc bdev")
    });
}

#[test]
fn steady_state_io_on_uring_allocates_nothing() {
    let path = format!("/dev/shm/ferrite-no-alloc-{}", std::process::id());
    std::fs::File::create(&path)
        .and_then(|f| f.set_len(8 << 20))
        .expect("tmpfs file");
    let p = path.clone();
    steady_state_io_allocates_nothing(move || {
        uring::create(uring::CreateParams {
            name: "Uring0".into(),
            filename: p,
            block_size: Some(512),
            uuid: None,
            sqpoll: false,
        })
        .expect("uring bdev")
    });
    let _ = std::fs::remove_file(path);
}

/// The nvme bdev (io_uring NVMe passthrough). It needs an NVMe namespace, so it runs
/// in the VM test bed: test/vm/nvme.sh runs it with FERRITE_NVME_DEV=/dev/ng0n1.
#[test]
#[ignore = "needs an NVMe namespace: FERRITE_NVME_DEV=/dev/ngXnY (test/vm/nvme.sh)"]
fn nvme_io_path_allocates_nothing() {
    let dev = std::env::var("FERRITE_NVME_DEV").expect("FERRITE_NVME_DEV=/dev/ngXnY");
    steady_state_io_allocates_nothing(move || {
        nvme::create(nvme::CreateParams {
            name: "Nvme0".into(),
            filename: dev,
            block_size: None,
            uuid: None,
        })
        .expect("nvme bdev")
    });
}

fn steady_state_io_allocates_nothing(make_bdev: impl FnOnce() -> String + Send + 'static) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    ALLOCS.store(0, Relaxed);
    mem::init(&MemConfig {
        heap_mb: 64,
        small_count: 1024,
        large_count: 16,
        hugepages: false,
    })
    .expect("arena");
    let cores = ferrite_reactor::available_cores();
    let rt = Runtime::start(
        RuntimeConfig {
            cores: vec![cores[0]],
            ..RuntimeConfig::default()
        },
        || {},
    )
    .expect("runtime");
    let h = rt.handle();
    let t = Duration::from_secs(30);

    let shared = run_on(&h, 0, t, move || {
        let bdev = make_bdev();
        let job = Job::create(JobConfig {
            bdev,
            workload: Workload::RandRw,
            depth: 32,
            io_size: 4096,
            read_pct: 50,
            range: None,
            seed: 1,
            max_ios: None,
        })
        .expect("job");
        job.start();
        let shared = job.shared();
        JOB.with(|j| *j.borrow_mut() = Some(job));
        shared
    })
    .expect("job started");

    let wait_for = |n: u64| {
        let deadline = Instant::now() + t;
        while shared.ios.load(Relaxed) < n {
            assert!(
                Instant::now() < deadline,
                "the job stalled at {} I/Os",
                shared.ios.load(Relaxed)
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    wait_for(WARM_UP);
    // The answer is sent before counting starts (the channel allocates).
    let from = run_on(&h, 0, t, || {
        let ios = JOB.with(|j| j.borrow().as_ref().unwrap().shared().ios.load(Relaxed));
        ios
    })
    .unwrap();
    ferrite_perf::send_blocking(&h, 0, Box::new(|| COUNT_HERE.with(|c| c.set(true)))).unwrap();
    wait_for(from + MEASURED);
    let (to, counted) = run_on(&h, 0, t, || {
        COUNT_HERE.with(|c| c.set(false));
        let ios = JOB.with(|j| j.borrow().as_ref().unwrap().shared().ios.load(Relaxed));
        (ios, ALLOCS.load(Relaxed))
    })
    .unwrap();

    let result = run_on(&h, 0, t, || {
        let job = JOB.with(|j| j.borrow_mut().take()).unwrap();
        job.stop();
        job.shared()
            .drained
            .load(Relaxed)
            .then_some(())
            .map(|_| job.close())
            .or_else(|| {
                // Let the I/O in flight finish first.
                JOB.with(|j| *j.borrow_mut() = Some(job));
                None
            })
    })
    .unwrap();
    let result = match result {
        Some(r) => r,
        None => {
            std::thread::sleep(Duration::from_millis(100));
            run_on(&h, 0, t, || {
                JOB.with(|j| j.borrow_mut().take()).unwrap().close()
            })
            .unwrap()
        }
    };
    // Control: the counter does see an allocation made on the reactor.
    let control = run_on(&h, 0, t, || {
        let before = ALLOCS.load(Relaxed);
        COUNT_HERE.with(|c| c.set(true));
        let v: Vec<u64> = std::hint::black_box(Vec::with_capacity(8));
        COUNT_HERE.with(|c| c.set(false));
        drop(v);
        ALLOCS.load(Relaxed) - before
    })
    .unwrap();
    h.stop();
    rt.wait();
    assert_eq!(
        control, 1,
        "the counting allocator counts reactor allocations"
    );

    assert!(to - from >= MEASURED, "measured {} I/Os", to - from);
    assert_eq!(result.fails, 0);
    assert!(result.reads > 0 && result.writes > 0);
    let first = FIRST.lock().unwrap().take();
    assert_eq!(
        counted,
        0,
        "{counted} heap allocations on the reactor over {} I/Os; the first: {}",
        to - from,
        first.unwrap_or_default()
    );
}

thread_local! {
    static JOB: std::cell::RefCell<Option<std::rc::Rc<Job>>> = const { std::cell::RefCell::new(None) };
}
