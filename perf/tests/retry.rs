//! A submission refused with `NoResources` is retried from a poller, is not a
//! failure, and does not keep a stopped job from draining.
//!
//! Two jobs on one reactor share its channel of one bdev; together they want more
//! I/O in flight than a channel takes (`MAX_OUTSTANDING`), so some submissions
//! are refused.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use ferrite_bdev::modules::malloc;
use ferrite_bdev::MAX_OUTSTANDING;
use ferrite_perf::{run_on, Job, JobConfig, Workload};
use ferrite_reactor::{Runtime, RuntimeConfig};

thread_local! {
    static JOBS: RefCell<Vec<Rc<Job>>> = const { RefCell::new(Vec::new()) };
}

#[test]
fn refused_submissions_are_retried_not_failed() {
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
    let depth = MAX_OUTSTANDING * 3 / 4;

    let shared = run_on(&h, 0, t, move || {
        malloc::create(malloc::CreateParams {
            name: Some("Malloc0".into()),
            num_blocks: 1024,
            block_size: 512,
            uuid: None,
        })
        .expect("malloc bdev");
        let mut shared = Vec::new();
        for seed in 0..2 {
            // Unmap carries no data buffers, so a deep queue costs no memory.
            let job = Job::create(JobConfig {
                bdev: "Malloc0".into(),
                workload: Workload::Unmap,
                depth,
                io_size: 512,
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
        let retrying = ferrite_reactor::local_stats()
            .pollers
            .iter()
            .any(|p| p.name == "perf_retry");
        assert!(
            retrying,
            "some submissions were refused and wait for the retry poller"
        );
        shared
    })
    .expect("jobs started");

    std::thread::sleep(Duration::from_millis(300));
    run_on(&h, 0, t, || {
        for job in JOBS.with(|j| j.borrow().clone()) {
            job.stop();
        }
    })
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !shared.iter().all(|s| s.drained.load(Relaxed)) {
        assert!(Instant::now() < deadline, "stopped jobs did not drain");
        std::thread::sleep(Duration::from_millis(1));
    }
    let (results, retry_left) = run_on(&h, 0, t, || {
        let jobs = JOBS.with(|j| std::mem::take(&mut *j.borrow_mut()));
        let results: Vec<_> = jobs.iter().map(|j| j.close()).collect();
        drop(jobs);
        let left = ferrite_reactor::local_stats()
            .pollers
            .iter()
            .any(|p| p.name == "perf_retry");
        (results, left)
    })
    .unwrap();
    h.stop();
    rt.wait();

    assert!(
        !retry_left,
        "the retry poller is gone once the jobs stopped"
    );
    for r in &results {
        assert_eq!(r.fails, 0, "a refused submission is not a failure");
        assert_eq!(r.outstanding, 0);
    }
    let total: u64 = results.iter().map(|r| r.ios).sum();
    assert!(
        total > depth as u64 * 2,
        "both jobs kept going: {total} I/Os"
    );
}
