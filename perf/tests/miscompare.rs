//! verify reports corruption: a second job scribbling over the same blocks makes
//! the verify job miscompare, and each miscompare is counted and described.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use ferrite_bdev::modules::malloc;
use ferrite_perf::{run_on, Job, JobConfig, Workload};
use ferrite_reactor::{Runtime, RuntimeConfig};

thread_local! {
    static JOBS: RefCell<Vec<Rc<Job>>> = const { RefCell::new(Vec::new()) };
}

#[test]
fn a_scribbler_makes_verify_miscompare() {
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
    let shared = run_on(&h, 0, t, || {
        malloc::create(malloc::CreateParams {
            name: Some("Malloc0".into()),
            num_blocks: 256,
            block_size: 512,
            uuid: None,
        })
        .expect("malloc bdev");
        let mut shared = Vec::new();
        for (workload, seed) in [(Workload::Verify, 1), (Workload::RandWrite, 2)] {
            let job = Job::create(JobConfig {
                bdev: "Malloc0".into(),
                workload,
                depth: 4,
                io_size: 4096,
                read_pct: 0,
                range: None,
                seed,
                max_ios: None,
            })
            .expect("job");
            shared.push(job.shared());
            JOBS.with(|j| j.borrow_mut().push(job));
        }
        for job in JOBS.with(|j| j.borrow().clone()) {
            job.start();
        }
        shared
    })
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while shared[0].miscompares.load(Relaxed) < 20 {
        assert!(Instant::now() < deadline, "no miscompare found");
        std::thread::sleep(Duration::from_millis(5));
    }
    run_on(&h, 0, t, || {
        for j in JOBS.with(|j| j.borrow().clone()) {
            j.stop();
        }
    })
    .unwrap();
    while !shared.iter().all(|s| s.drained.load(Relaxed)) {
        assert!(Instant::now() < deadline, "the jobs did not drain");
        std::thread::sleep(Duration::from_millis(1));
    }
    let results = run_on(&h, 0, t, || {
        let jobs = JOBS.with(|j| std::mem::take(&mut *j.borrow_mut()));
        jobs.iter().map(|j| j.close()).collect::<Vec<_>>()
    })
    .unwrap();
    h.stop();
    rt.wait();

    let verify = &results[0];
    assert!(verify.miscompares >= 20, "{verify:?}");
    assert_eq!(verify.fails, 0, "a miscompare is not an I/O failure");
    assert!(!verify.reports.is_empty());
    assert!(verify.reports.len() <= ferrite_perf::job::MISCOMPARE_REPORTS);
    for m in &verify.reports {
        assert!(m.lba < 256, "{m:?}");
        assert!(m.byte < 512, "{m:?}");
        assert_ne!(m.expected, m.got, "{m:?}");
    }
    assert_eq!(results[1].miscompares, 0, "randwrite does not compare");
}
