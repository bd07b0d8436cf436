//! `ferrite-perf bdev`: SPDK bdevperf's job, on ferrite's reactors.
//!
//! Starts one reactor per core of the mask, maps the buffer arena, replays the
//! config to create bdevs, and runs one [`Job`] per (target bdev, reactor) for the
//! given time, printing a progress line a second and per-job and total results
//! at the end.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrite_bdev as bdev;
use ferrite_reactor::mem::{self, MemConfig, LARGE_BUF_SIZE, SMALL_BUF_SIZE};
use ferrite_reactor::{Handle, Runtime, RuntimeConfig};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::job::{self, Job, JobConfig, JobResult, JobShared, Miscompare};
use crate::rng::mix64;
use crate::size::human;
use crate::workload::Workload;
use crate::TickConv;

/// How long the I/O in flight at the end of a run may take to come back.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a control message to a reactor may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);

/// Exit statuses.
pub const EXIT_OK: i32 = 0;
pub const EXIT_IO_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

/// What `ferrite-perf bdev` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub workload: Workload,
    pub depth: usize,
    pub io_size: usize,
    pub read_pct: u32,
    pub seconds: f64,
    /// The mask as given, for the report.
    pub mask: String,
    pub cores: Vec<usize>,
    pub config: PathBuf,
    /// Target bdevs; empty: every unclaimed bdev.
    pub bdevs: Vec<String>,
    pub json: bool,
    pub poll_only: bool,
    /// Arena heap in MiB; `None`: enough for the config's malloc bdevs.
    pub mem_mb: Option<usize>,
    /// Write every target once, sequentially, before the measured run (so a
    /// malloc bdev's reads hit real memory rather than never-touched pages).
    pub prefill: bool,
}

/// How a run ended.
#[derive(Debug)]
pub enum Outcome {
    /// The run happened; the report says how it went.
    Ran(Report),
    /// Bad arguments or config: nothing ran.
    Usage(String),
}

/// Latency and throughput of one job or of the total.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub ios: u64,
    pub fails: u64,
    pub miscompares: u64,
    pub iops: f64,
    pub mib_s: f64,
    pub avg_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Stats {
    fn of(
        ios: u64,
        fails: u64,
        miscompares: u64,
        iops: f64,
        io_size: usize,
        h: &Histogram<u64>,
    ) -> Stats {
        let us = |ns: u64| ns as f64 / 1000.0;
        let q = |x: f64| {
            if h.is_empty() {
                0.0
            } else {
                us(h.value_at_quantile(x))
            }
        };
        Stats {
            ios,
            fails,
            miscompares,
            iops,
            mib_s: iops * io_size as f64 / (1024.0 * 1024.0),
            avg_us: if h.is_empty() { 0.0 } else { h.mean() / 1000.0 },
            p50_us: q(0.5),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if h.is_empty() { 0.0 } else { us(h.max()) },
        }
    }

    /// The statistics as a JSON object (figures rounded to 0.01).
    pub fn json(&self) -> Value {
        let r2 = |x: f64| (x * 100.0).round() / 100.0;
        json!({
            "ios": self.ios,
            "iops": r2(self.iops),
            "mib_s": r2(self.mib_s),
            "avg_us": r2(self.avg_us),
            "p50_us": r2(self.p50_us),
            "p99_us": r2(self.p99_us),
            "p999_us": r2(self.p999_us),
            "max_us": r2(self.max_us),
            "fails": self.fails,
            "miscompares": self.miscompares,
        })
    }
}

/// One reactor's busy time over the measured window.
#[derive(Debug, Clone, Default)]
pub struct ReactorLoad {
    pub index: usize,
    pub core: usize,
    pub busy_ns: u64,
    pub window_ns: u64,
    /// I/Os its jobs completed in the window.
    pub ios: u64,
}

impl ReactorLoad {
    pub fn ns_per_io(&self) -> f64 {
        if self.ios == 0 {
            0.0
        } else {
            self.busy_ns as f64 / self.ios as f64
        }
    }
}

/// Everything a run measured.
#[derive(Debug)]
pub struct Report {
    pub jobs: Vec<(JobResult, Stats)>,
    pub total: Stats,
    pub reactors: Vec<ReactorLoad>,
    /// I/Os that had not come back when the drain gave up.
    pub outstanding: usize,
}

impl Report {
    /// 0 when every I/O succeeded and verified, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.total.fails > 0
            || self.total.miscompares > 0
            || self.outstanding > 0
            || self.total.ios == 0
        {
            EXIT_IO_FAILED
        } else {
            EXIT_OK
        }
    }

    pub fn ns_per_io(&self) -> f64 {
        let busy: u64 = self.reactors.iter().map(|r| r.busy_ns).sum();
        let ios: u64 = self.reactors.iter().map(|r| r.ios).sum();
        if ios == 0 {
            0.0
        } else {
            busy as f64 / ios as f64
        }
    }
}

thread_local! {
    /// The jobs of this reactor.
    static JOBS: RefCell<Vec<Rc<Job>>> = const { RefCell::new(Vec::new()) };
    /// Busy ticks and time at start.
    static WINDOW: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// Runs `ferrite-perf bdev` and prints its report; returns the exit status.
pub fn main(opts: Options) -> i32 {
    match run(&opts) {
        Outcome::Usage(msg) => {
            eprintln!("ferrite-perf: {msg}");
            EXIT_USAGE
        }
        Outcome::Ran(report) => {
            if opts.json {
                let json = serde_json::to_string_pretty(&report_json(&opts, &report))
                    .expect("report is JSON");
                crate::out(&format!("{json}\n"));
            } else {
                crate::out(&report_text(&opts, &report));
            }
            let code = report.exit_code();
            if code != EXIT_OK {
                eprintln!("ferrite-perf: {}", failure_summary(&report));
            }
            code
        }
    }
}

/// Why a run's exit status is not 0, in one line.
pub fn failure_summary(r: &Report) -> String {
    let mut parts = Vec::new();
    if r.total.fails > 0 {
        parts.push(format!("{} I/O failed", r.total.fails));
    }
    if r.total.miscompares > 0 {
        parts.push(format!("{} miscompared", r.total.miscompares));
    }
    if r.outstanding > 0 {
        parts.push(format!(
            "{} I/O still outstanding after {:?}",
            r.outstanding, DRAIN_TIMEOUT
        ));
    }
    if r.total.ios == 0 {
        parts.push("no I/O completed".into());
    }
    parts.join(", ")
}

/// Sizes the arena: enough buffers for every slot of every job (with room for
/// the per-reactor caches) and a heap for the config's malloc bdevs.
fn mem_config(opts: &Options, config: &Value) -> MemConfig {
    let fp = crate::replay::footprint(config);
    let bdevs = fp.bdev_calls.max(opts.bdevs.len()).max(1);
    let jobs = bdevs * opts.cores.len();
    let mut per_slot = opts.workload.buffers_per_slot();
    if opts.prefill {
        per_slot = per_slot.max(1);
    }
    let slots = jobs * opts.depth * per_slot;
    let (small, large) = if per_slot == 0 {
        (0, 0)
    } else if opts.io_size <= SMALL_BUF_SIZE {
        (slots, 0)
    } else {
        (0, slots * opts.io_size.div_ceil(LARGE_BUF_SIZE))
    };
    // Each thread's cache may hold up to 64 buffers of a class, fetched 32 at a time.
    let slack = 128 * (opts.cores.len() + 2);
    let d = MemConfig::default();
    let heap_mb = opts.mem_mb.unwrap_or_else(|| {
        let need = (fp.malloc_bytes >> 20) as usize + 64;
        need.max(d.heap_mb)
    });
    MemConfig {
        heap_mb,
        small_count: (small + slack).max(d.small_count),
        large_count: (large + slack).max(d.large_count),
        hugepages: true,
    }
}

/// Runs the benchmark. Progress lines go to stdout, or to stderr with JSON output.
pub fn run(opts: &Options) -> Outcome {
    if opts.depth == 0 {
        return Outcome::Usage("queue depth (-q) must be at least 1".into());
    }
    if opts.depth > bdev::MAX_OUTSTANDING {
        return Outcome::Usage(format!(
            "queue depth (-q) {} is above the most a channel takes, {}",
            opts.depth,
            bdev::MAX_OUTSTANDING
        ));
    }
    if opts.io_size == 0 || opts.io_size > bdev::MAX_IO_BYTES {
        return Outcome::Usage(format!(
            "I/O size (-o) {} is out of range (1 to {} bytes)",
            opts.io_size,
            bdev::MAX_IO_BYTES
        ));
    }
    if opts.read_pct > 100 {
        return Outcome::Usage(format!(
            "read percentage (-M) {} is above 100",
            opts.read_pct
        ));
    }
    if !(opts.seconds > 0.0 && opts.seconds < 1e7) {
        return Outcome::Usage(format!(
            "run time (-t) {} is not a positive number of seconds",
            opts.seconds
        ));
    }
    let config = match ferrite_conf::load(&opts.config) {
        Ok(c) => c,
        Err(e) => return Outcome::Usage(e),
    };
    let mc = mem_config(opts, &config);
    if let Err(e) = mem::init(&mc) {
        return Outcome::Usage(format!(
            "cannot map a {} MiB buffer arena: {e} (try a smaller -s)",
            mc.heap_mb
        ));
    }
    let rt = match Runtime::start(
        RuntimeConfig {
            cores: opts.cores.clone(),
            poll_only: opts.poll_only,
            ..RuntimeConfig::default()
        },
        || {},
    ) {
        Ok(rt) => rt,
        Err(e) => return Outcome::Usage(format!("cannot start reactors: {e}")),
    };
    let h = rt.handle();
    let outcome = run_on_runtime(opts, &h, config);
    // Nothing of ours is left on the reactors: stop them.
    h.stop();
    rt.wait();
    outcome
}

fn run_on_runtime(opts: &Options, h: &Handle, config: Value) -> Outcome {
    if let Err(e) = crate::replay::replay(h, config) {
        return Outcome::Usage(e);
    }
    let targets = match targets(opts) {
        Ok(t) => t,
        Err(e) => return Outcome::Usage(e),
    };
    let nr = h.count();
    let mut per_reactor: Vec<Vec<JobConfig>> = vec![Vec::new(); nr];
    for (bi, b) in targets.iter().enumerate() {
        for (r, cfgs) in per_reactor.iter_mut().enumerate() {
            let range = if opts.workload == Workload::Verify {
                // Disjoint ranges: reactor r gets the r-th 1/nr of the bdev, whole I/Os.
                let io_blocks = (opts.io_size as u64 / b.block_size() as u64).max(1);
                let units = b.num_blocks() / io_blocks;
                let first = units * r as u64 / nr as u64;
                let last = units * (r as u64 + 1) / nr as u64;
                Some((first * io_blocks, (last - first) * io_blocks))
            } else {
                None
            };
            let cfg = JobConfig {
                bdev: b.name().to_string(),
                workload: opts.workload,
                depth: opts.depth,
                io_size: opts.io_size,
                read_pct: opts.read_pct,
                range,
                seed: mix64(0x6665_7272_6974_6521 ^ ((bi as u64) << 32 | r as u64)),
                max_ios: None,
            };
            if let Err(e) = job::geometry(&cfg, b.block_size(), b.num_blocks()) {
                return Outcome::Usage(e);
            }
            cfgs.push(cfg);
        }
    }

    let mut progress: Box<dyn Write> = if opts.json {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    if opts.prefill {
        match prefill(h, opts, &targets) {
            Ok(msg) => {
                let _ = writeln!(progress, "{msg}");
            }
            Err(e) => return Outcome::Usage(e),
        }
    }

    // Create every job on its reactor.
    let mut shared: Vec<Arc<JobShared>> = Vec::new();
    let mut error = None;
    for (r, cfgs) in per_reactor.into_iter().enumerate() {
        let made = crate::run_on(h, r, CONTROL_TIMEOUT, move || {
            let mut out = Vec::new();
            for cfg in cfgs {
                match Job::create(cfg) {
                    Ok(job) => {
                        out.push(Ok(job.shared()));
                        JOBS.with(|j| j.borrow_mut().push(job));
                    }
                    Err(e) => {
                        out.push(Err(e));
                        break;
                    }
                }
            }
            out
        });
        match made {
            Ok(list) => {
                for m in list {
                    match m {
                        Ok(s) => shared.push(s),
                        Err(e) => error = error.or(Some(e)),
                    }
                }
            }
            Err(e) => error = error.or(Some(e)),
        }
        if error.is_some() {
            break;
        }
    }
    if let Some(e) = error {
        close_all(h);
        return Outcome::Usage(e);
    }

    let _ = writeln!(progress, "{}", banner(opts, &targets));

    // Start: every reactor notes its busy time and starts its jobs.
    for r in 0..nr {
        let started = crate::run_on(h, r, CONTROL_TIMEOUT, || {
            let now = ferrite_reactor::ticks();
            WINDOW.with(|w| w.set((ferrite_reactor::local_stats().busy_ticks, now)));
            let jobs = JOBS.with(|j| j.borrow().clone());
            for job in jobs {
                job.start();
            }
        });
        if let Err(e) = started {
            close_all(h);
            return Outcome::Usage(e);
        }
    }
    progress_lines(&mut *progress, &shared, opts.seconds, opts.io_size);

    // Stop submitting; note each reactor's busy time over the window.
    let mut reactors = Vec::new();
    for r in 0..nr {
        let load = crate::run_on(h, r, CONTROL_TIMEOUT, move || {
            let now = ferrite_reactor::ticks();
            let stats = ferrite_reactor::local_stats();
            let jobs = JOBS.with(|j| j.borrow().clone());
            for job in &jobs {
                job.stop();
            }
            let (busy0, t0) = WINDOW.with(|w| w.get());
            let conv = TickConv::new();
            ReactorLoad {
                index: r,
                core: stats.core,
                busy_ns: conv.ns(stats.busy_ticks.saturating_sub(busy0)),
                window_ns: conv.ns(now.wrapping_sub(t0)),
                ios: 0,
            }
        });
        match load {
            Ok(l) => reactors.push(l),
            Err(e) => tracing::error!("{e}"),
        }
    }
    // Wait for the I/O in flight.
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while !shared.iter().all(|s| s.drained.load(Relaxed)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let results = close_all(h);
    for l in reactors.iter_mut() {
        l.ios = results
            .iter()
            .filter(|j| j.reactor == l.index)
            .map(|j| j.ios_at_stop)
            .sum();
    }
    Outcome::Ran(report(results, reactors))
}

/// Prints a progress line a second (IOPS, MiB/s, failures so far) for
/// `seconds`, watching the jobs' shared counters; returns early when every job
/// has drained by itself (a job stopped by a failure, or out of I/Os).
pub fn progress_lines(
    progress: &mut dyn Write,
    shared: &[Arc<JobShared>],
    seconds: f64,
    io_size: usize,
) {
    let t0 = Instant::now();
    let total = Duration::from_secs_f64(seconds);
    let ios_now = |s: &[Arc<JobShared>]| s.iter().map(|j| j.ios.load(Relaxed)).sum::<u64>();
    let fails_now = |s: &[Arc<JobShared>]| {
        s.iter()
            .map(|j| j.fails.load(Relaxed) + j.miscompares.load(Relaxed))
            .sum::<u64>()
    };
    let drained = |s: &[Arc<JobShared>]| s.iter().all(|j| j.drained.load(Relaxed));
    let mut last_ios = 0u64;
    let mut last_t = t0;
    let mut tick = 1u64;
    loop {
        let next = t0 + Duration::from_secs(tick).min(total);
        // Sleep in short steps so that jobs that all drained end the wait.
        loop {
            let now = Instant::now();
            if next <= now || drained(shared) {
                break;
            }
            std::thread::sleep((next - now).min(Duration::from_millis(50)));
        }
        let now = Instant::now();
        let ios = ios_now(shared);
        let secs = now.duration_since(last_t).as_secs_f64().max(1e-9);
        let iops = ios.saturating_sub(last_ios) as f64 / secs;
        let bad = fails_now(shared);
        let _ = writeln!(
            progress,
            "[{:>6.1} s] {:>12.0} IOPS {:>10.2} MiB/s{}",
            now.duration_since(t0).as_secs_f64(),
            iops,
            iops * io_size as f64 / 1048576.0,
            if bad > 0 {
                format!("  ({bad} failed or miscompared so far)")
            } else {
                String::new()
            }
        );
        let _ = progress.flush();
        last_ios = ios;
        last_t = now;
        if now.duration_since(t0) >= total || drained(shared) {
            break;
        }
        tick += 1;
    }
}

/// Writes every target once, sequentially, from reactor 0.
fn prefill(h: &Handle, opts: &Options, targets: &[Arc<bdev::Bdev>]) -> Result<String, String> {
    let t0 = Instant::now();
    let mut shared = Vec::new();
    for b in targets {
        let io_blocks = (opts.io_size as u64 / b.block_size() as u64).max(1);
        let units = b.num_blocks() / io_blocks;
        let cfg = JobConfig {
            bdev: b.name().to_string(),
            workload: Workload::Write,
            depth: opts.depth.min(256),
            io_size: opts.io_size,
            read_pct: 0,
            range: None,
            seed: 0,
            max_ios: Some(units),
        };
        if !b.supports(bdev::IoType::Write) {
            return Err(format!(
                "--prefill: bdev {} does not support write",
                b.name()
            ));
        }
        shared.push(crate::run_on(h, 0, CONTROL_TIMEOUT, move || {
            Job::create(cfg).map(|job| {
                job.start();
                let s = job.shared();
                JOBS.with(|j| j.borrow_mut().push(job));
                s
            })
        })??);
    }
    while !shared.iter().all(|s| s.drained.load(Relaxed)) {
        if t0.elapsed() > Duration::from_secs(600) {
            close_all(h);
            return Err("--prefill did not finish within 10 minutes".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let results = close_all(h);
    let fails: u64 = results.iter().map(|r| r.fails).sum();
    if fails > 0 {
        tracing::warn!("--prefill: {fails} writes failed");
    }
    let bytes: u64 = targets
        .iter()
        .map(|b| {
            let io_blocks = (opts.io_size as u64 / b.block_size() as u64).max(1);
            b.num_blocks() / io_blocks * io_blocks * b.block_size() as u64
        })
        .sum();
    Ok(format!(
        "Prefilled {} MiB of {} bdev{} in {:.2} s",
        bytes >> 20,
        targets.len(),
        if targets.len() == 1 { "" } else { "s" },
        t0.elapsed().as_secs_f64()
    ))
}

/// Closes every job on every reactor and returns their results.
fn close_all(h: &Handle) -> Vec<JobResult> {
    let mut out = Vec::new();
    for r in 0..h.count() {
        let got = crate::run_on(h, r, CONTROL_TIMEOUT, || {
            let jobs = JOBS.with(|j| std::mem::take(&mut *j.borrow_mut()));
            jobs.iter().map(|j| j.close()).collect::<Vec<_>>()
        });
        match got {
            Ok(v) => out.extend(v),
            Err(e) => tracing::error!("{e}"),
        }
    }
    out
}

/// The bdevs to run on: those named, or every unclaimed one.
fn targets(opts: &Options) -> Result<Vec<Arc<bdev::Bdev>>, String> {
    if opts.bdevs.is_empty() {
        let all: Vec<_> = bdev::list()
            .into_iter()
            .filter(|b| b.claimed_by().is_none())
            .collect();
        if all.is_empty() {
            return Err(format!(
                "{} creates no unclaimed bdev to run on",
                opts.config.display()
            ));
        }
        return Ok(all);
    }
    let mut out: Vec<Arc<bdev::Bdev>> = Vec::new();
    for name in &opts.bdevs {
        let b = bdev::get(name).ok_or_else(|| {
            let names: Vec<String> = bdev::list().iter().map(|b| b.name().to_string()).collect();
            format!(
                "bdev {name} does not exist (the config creates: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )
        })?;
        if opts.workload.writes() {
            if let Some(m) = b.claimed_by() {
                return Err(format!(
                    "bdev {name} is claimed by {m}; run on the bdev stacked on it instead"
                ));
            }
        }
        if out.iter().any(|o| Arc::ptr_eq(o, &b)) {
            return Err(format!("bdev {name} is named twice"));
        }
        out.push(b);
    }
    Ok(out)
}

/// Per-job and total statistics of the jobs' results (jobs sorted by reactor
/// and name; the total's IOPS and MiB/s are the sums of the jobs').
pub fn report(mut results: Vec<JobResult>, reactors: Vec<ReactorLoad>) -> Report {
    results.sort_by_key(|j| (j.reactor, j.bdev.clone()));
    let mut all = job::new_histogram();
    let mut total = Stats::default();
    let mut iops_sum = 0.0;
    let mut mib_sum = 0.0;
    let mut outstanding = 0;
    let mut jobs = Vec::new();
    for j in results {
        let secs = j.elapsed_ns as f64 / 1e9;
        let iops = if secs > 0.0 { j.ios as f64 / secs } else { 0.0 };
        let s = Stats::of(
            j.ios,
            j.fails,
            j.miscompares,
            iops,
            j.io_size,
            &j.latency_ns,
        );
        let _ = all.add(&j.latency_ns);
        total.ios += j.ios;
        total.fails += j.fails;
        total.miscompares += j.miscompares;
        iops_sum += s.iops;
        mib_sum += s.mib_s;
        outstanding += j.outstanding;
        jobs.push((j, s));
    }
    let io_size = jobs.first().map(|(j, _)| j.io_size).unwrap_or(0);
    let mut t = Stats::of(
        total.ios,
        total.fails,
        total.miscompares,
        iops_sum,
        io_size,
        &all,
    );
    t.mib_s = mib_sum;
    Report {
        jobs,
        total: t,
        reactors,
        outstanding,
    }
}

fn banner(opts: &Options, targets: &[Arc<bdev::Bdev>]) -> String {
    let names: Vec<&str> = targets.iter().map(|b| b.name()).collect();
    let mix = if opts.workload.is_mixed() {
        format!(" ({}% reads)", opts.read_pct)
    } else {
        String::new()
    };
    let pages = if mem::arena().is_hugepage() {
        "hugepages"
    } else {
        "normal pages: no hugepages reserved"
    };
    format!(
        "Running {}{mix}, queue depth {}, {} I/O, {} s, core mask {} ({} reactor{}{}), {} job{} on {} (arena: {pages})",
        opts.workload,
        opts.depth,
        human(opts.io_size),
        opts.seconds,
        opts.mask,
        opts.cores.len(),
        if opts.cores.len() == 1 { "" } else { "s" },
        if opts.poll_only { ", poll-only" } else { "" },
        targets.len() * opts.cores.len(),
        if targets.len() * opts.cores.len() == 1 { "" } else { "s" },
        names.join(", ")
    )
}

fn describe(m: &Miscompare) -> String {
    format!(
        "lba {} byte {}: expected {:#04x}, got {:#04x} (the block read back is stamped lba {})",
        m.lba, m.byte, m.expected, m.got, m.stamped_lba
    )
}

/// The text report: a table of jobs and the total, reactor load, miscompares.
pub fn report_text(opts: &Options, r: &Report) -> String {
    let _ = opts;
    report_table(r)
}

/// The table of jobs (named `JobResult::bdev @ core N`) and the total, the
/// reactors' load and the miscompares: the text report of every subcommand.
pub fn report_table(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let name = |j: &JobResult| format!("{} @ core {}", j.bdev, j.core);
    let w = r
        .jobs
        .iter()
        .map(|(j, _)| name(j).len())
        .max()
        .unwrap_or(0)
        .max(12);
    let _ = writeln!(
        out,
        "\n{:<w$} {:>12} {:>10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>8} {:>11}",
        "Job",
        "IOPS",
        "MiB/s",
        "avg_us",
        "p50_us",
        "p99_us",
        "p99.9_us",
        "max_us",
        "fails",
        "miscompares"
    );
    let line = |out: &mut String, label: &str, s: &Stats| {
        let _ = writeln!(
            out,
            "{:<w$} {:>12.2} {:>10.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>10.2} {:>8} {:>11}",
            label,
            s.iops,
            s.mib_s,
            s.avg_us,
            s.p50_us,
            s.p99_us,
            s.p999_us,
            s.max_us,
            s.fails,
            s.miscompares
        );
    };
    for (j, s) in &r.jobs {
        line(&mut out, &name(j), s);
    }
    let _ = writeln!(out, "{}", "-".repeat(w + 105));
    line(&mut out, "Total", &r.total);
    for l in &r.reactors {
        let pct = if l.window_ns > 0 {
            100.0 * l.busy_ns as f64 / l.window_ns as f64
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "reactor {} (core {}): busy {:.1}% of {:.2} s, {} I/O, {:.1} ns of busy time per I/O",
            l.index,
            l.core,
            pct,
            l.window_ns as f64 / 1e9,
            l.ios,
            l.ns_per_io()
        );
    }
    for (j, _) in &r.jobs {
        for m in &j.reports {
            let _ = writeln!(
                out,
                "miscompare on {} (core {}): {}",
                j.bdev,
                j.core,
                describe(m)
            );
        }
        if j.miscompares > j.reports.len() as u64 {
            let _ = writeln!(
                out,
                "... and {} more miscompares on {} (core {})",
                j.miscompares - j.reports.len() as u64,
                j.bdev,
                j.core
            );
        }
    }
    if r.outstanding > 0 {
        let _ = writeln!(
            out,
            "{} I/O did not come back within {:?} of the end of the run",
            r.outstanding, DRAIN_TIMEOUT
        );
    }
    out
}

/// The JSON report: the run's parameters, each job, the total, reactor load.
pub fn report_json(opts: &Options, r: &Report) -> Value {
    json!({
        "workload": opts.workload.name(),
        "queue_depth": opts.depth,
        "io_size": opts.io_size,
        "read_pct": if opts.workload.is_mixed() { json!(opts.read_pct) } else { Value::Null },
        "time_s": opts.seconds,
        "core_mask": opts.mask,
        "poll_only": opts.poll_only,
        "jobs": jobs_json(r, "bdev"),
        "total": r.total.json(),
        "reactors": reactors_json(r),
        "ns_per_io": (r.ns_per_io() * 10.0).round() / 10.0,
        "outstanding": r.outstanding,
        "success": r.exit_code() == EXIT_OK,
    })
}

/// The jobs of a report as JSON objects; `name_key` names the field that holds
/// `JobResult::bdev` ("bdev", or "job" for jobs that are not on a bdev).
pub fn jobs_json(r: &Report, name_key: &str) -> Vec<Value> {
    r.jobs
        .iter()
        .map(|(j, s)| {
            let mut v = s.json();
            let o = v.as_object_mut().expect("object");
            o.insert(name_key.into(), json!(j.bdev));
            o.insert("reactor".into(), json!(j.reactor));
            o.insert("core".into(), json!(j.core));
            o.insert("reads".into(), json!(j.reads));
            o.insert("writes".into(), json!(j.writes));
            o.insert("runtime_s".into(), json!(j.elapsed_ns as f64 / 1e9));
            o.insert(
                "miscompare_reports".into(),
                json!(j
                    .reports
                    .iter()
                    .map(|m| json!({
                        "lba": m.lba,
                        "byte": m.byte,
                        "expected": m.expected,
                        "got": m.got,
                        "stamped_lba": m.stamped_lba,
                    }))
                    .collect::<Vec<_>>()),
            );
            v
        })
        .collect()
}

/// The reactors' load of a report as JSON objects.
pub fn reactors_json(r: &Report) -> Vec<Value> {
    r.reactors
        .iter()
        .map(|l| {
            json!({
                "index": l.index,
                "core": l.core,
                "busy_s": l.busy_ns as f64 / 1e9,
                "window_s": l.window_ns as f64 / 1e9,
                "ios": l.ios,
                "ns_per_io": (l.ns_per_io() * 10.0).round() / 10.0,
            })
        })
        .collect()
}
