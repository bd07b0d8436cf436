//! `ferrite-perf iscsi`: a closed-loop load generator with its own iSCSI
//! initiator over TCP, on ferrite's reactors, reporting like `ferrite-perf bdev`.
//!
//! * [`url`] parses `iscsi://HOST[:PORT]/IQN/LUN`.
//! * [`pdu`] has the initiator's PDU encoders and the target PDU fields it reads.
//! * [`login`] is the control path on blocking sockets: login (AuthMethod=None
//!   or CHAP MD5, operational negotiation, MC/S), READ CAPACITY(16), logout.
//! * [`conn`] is the I/O path: sessions on reactors, one job per connection.
//!
//! A run: log every session's connections in (from the main thread), learn the
//! LUN's size, hand each session to a reactor (round robin), run the jobs for
//! the given time with a progress line a second, stop, wait for the I/O in
//! flight, take the sessions back, log out, report.

pub mod conn;
pub mod login;
pub mod pdu;
pub mod url;

#[cfg(test)]
mod fake_target_tests;

use std::cell::RefCell;
use std::time::{Duration, Instant};

use ferrite_reactor::{self as reactor, Handle, Poll, PollerId, Runtime, RuntimeConfig};
use serde_json::{json, Value};

use crate::bdevperf::{
    self, ReactorLoad, Report, DRAIN_TIMEOUT, EXIT_IO_FAILED, EXIT_OK, EXIT_USAGE,
};
use crate::rng::mix64;
use crate::size::human;
use crate::workload::Workload;
use crate::{JobShared, TickConv};

use conn::{ConnResult, ConnSpec, IoConn, IoSession};
use login::{LoginConfig, Negotiated, SyncConn, Window};
use pdu::Lun;
pub use url::IscsiUrl;

/// How long a control message to a reactor may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);
/// The initiator name we log in with unless told otherwise.
pub const DEFAULT_INITIATOR_NAME: &str = "iqn.2026-11.io.ferrite:perf";
/// Most connections per session (the ITT has 8 bits for it) and slots per
/// connection (16 bits).
pub const MAX_CONNECTIONS: usize = 16;
pub const MAX_DEPTH: usize = 4096;
pub const MAX_SESSIONS: usize = 1024;

/// What `ferrite-perf iscsi` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub urls: Vec<String>,
    pub sessions: usize,
    pub connections: usize,
    pub workload: Workload,
    /// Slots per connection.
    pub depth: usize,
    pub io_size: usize,
    pub read_pct: u32,
    pub seconds: f64,
    pub mask: String,
    pub cores: Vec<usize>,
    pub json: bool,
    pub chap_user: Option<String>,
    pub chap_secret: Option<String>,
    pub header_digest: bool,
    pub data_digest: bool,
    pub poll_only: bool,
    pub initiator_name: String,
}

/// A LUN's geometry, as READ CAPACITY(16) gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub block_size: u32,
    pub blocks: u64,
}

/// A session logged in, before it goes to a reactor.
struct Prepared {
    url_index: usize,
    number: usize,
    window: Window,
    tsih: u16,
    negotiated: Negotiated,
    /// (socket, cid, ExpStatSN, limits) per connection.
    conns: Vec<SyncConn>,
}

thread_local! {
    /// The sessions on this reactor and its poller.
    static SESSIONS: RefCell<Vec<IoSession>> = const { RefCell::new(Vec::new()) };
    static POLLER: RefCell<Option<PollerId>> = const { RefCell::new(None) };
    /// Busy ticks and time when the jobs started.
    static WINDOW: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

fn usage(msg: impl Into<String>) -> i32 {
    eprintln!("ferrite-perf: {}", msg.into());
    EXIT_USAGE
}

fn failed(msg: impl Into<String>) -> i32 {
    eprintln!("ferrite-perf: {}", msg.into());
    EXIT_IO_FAILED
}

/// Checks what can be checked before connecting; returns the parsed URLs and
/// the CHAP credentials.
/// CHAP user name and secret.
type Chap = Option<(String, String)>;

fn validate(opts: &Options) -> Result<(Vec<IscsiUrl>, Chap), String> {
    if opts.urls.is_empty() {
        return Err("give at least one target with -u iscsi://HOST[:PORT]/IQN/LUN".into());
    }
    let urls = opts
        .urls
        .iter()
        .map(|u| IscsiUrl::parse(u))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, u) in urls.iter().enumerate() {
        if urls[..i].iter().any(|o| o == u) {
            return Err(format!("{u} is named twice"));
        }
    }
    if opts.depth == 0 || opts.depth > MAX_DEPTH {
        return Err(format!(
            "queue depth (-q) {} is out of range (1 to {MAX_DEPTH} per connection)",
            opts.depth
        ));
    }
    if opts.sessions == 0 || opts.sessions > MAX_SESSIONS {
        return Err(format!(
            "sessions (-S) {} is out of range (1 to {MAX_SESSIONS} per target)",
            opts.sessions
        ));
    }
    if opts.connections == 0 || opts.connections > MAX_CONNECTIONS {
        return Err(format!(
            "connections per session (-C) {} is out of range (1 to {MAX_CONNECTIONS})",
            opts.connections
        ));
    }
    if opts.io_size == 0 || opts.io_size > 1 << 30 || !opts.io_size.is_multiple_of(512) {
        return Err(format!(
            "I/O size (-o) {} must be a multiple of 512 bytes, up to 1 GiB",
            opts.io_size
        ));
    }
    if !matches!(
        opts.workload,
        Workload::Read
            | Workload::RandRead
            | Workload::Write
            | Workload::RandWrite
            | Workload::Rw
            | Workload::RandRw
            | Workload::Verify
    ) {
        return Err(format!(
            "workload {} is not one for iSCSI (randread, randwrite, read, write, randrw, rw, verify)",
            opts.workload
        ));
    }
    if opts.read_pct > 100 {
        return Err(format!(
            "read percentage (-M) {} is above 100",
            opts.read_pct
        ));
    }
    if !(opts.seconds > 0.0 && opts.seconds < 1e7) {
        return Err(format!(
            "run time (-t) {} is not a positive number of seconds",
            opts.seconds
        ));
    }
    if !ferrite_transport::iscsi::text::is_iscsi_name(&opts.initiator_name) {
        return Err(format!(
            "--initiator-name '{}' is not an iSCSI name",
            opts.initiator_name
        ));
    }
    let chap = match (&opts.chap_user, &opts.chap_secret) {
        (Some(u), Some(s)) if !u.is_empty() && !s.is_empty() => Some((u.clone(), s.clone())),
        (None, None) => None,
        _ => return Err("--chap-user and --chap-secret go together (and may not be empty)".into()),
    };
    Ok((urls, chap))
}

/// An ISID of the random format (RFC 7143 §11.12.5): T=10b, B and C random
/// for this run, D the session's number.
fn isid(run: u64, number: usize) -> [u8; 6] {
    let r = mix64(run).to_be_bytes();
    let n = (number as u16).to_be_bytes();
    [0x80, r[0], r[1], r[2], n[0], n[1]]
}

/// Logs in session `number` to `url`: all its connections, checking MC/S.
fn log_in_session(
    opts: &Options,
    url: &IscsiUrl,
    url_index: usize,
    number: usize,
    chap: &Chap,
    run: u64,
) -> Result<Prepared, String> {
    let cfg = LoginConfig {
        initiator_name: opts.initiator_name.clone(),
        target_name: url.target.clone(),
        chap: chap.clone().or_else(|| url.chap.clone()),
        header_digest: opts.header_digest,
        data_digest: opts.data_digest,
        connections: opts.connections as u16,
    };
    let id = isid(run ^ url_index as u64, number);
    let mut window = Window {
        cmd_sn: 1,
        exp_cmd_sn: 1,
        max_cmd_sn: 1,
    };
    let what = |c: usize| format!("{url} session {number} connection {c}");
    let lead = login::login(&url.addr(), &cfg, id, 0, 0, &mut window, what(0))?;
    let negotiated = lead.negotiated;
    if (negotiated.max_connections as usize) < opts.connections {
        return Err(format!(
            "{url}: the target allows {} connection{} per session (MaxConnections), -C asks for {}",
            negotiated.max_connections,
            if negotiated.max_connections == 1 {
                ""
            } else {
                "s"
            },
            opts.connections
        ));
    }
    let tsih = lead.tsih;
    let mut conns = vec![lead.conn];
    for c in 1..opts.connections {
        let more = login::login(&url.addr(), &cfg, id, tsih, c as u16, &mut window, what(c))?;
        conns.push(more.conn);
    }
    Ok(Prepared {
        url_index,
        number,
        window,
        tsih,
        negotiated,
        conns,
    })
}

/// Logs every connection of a session out (the last one closes the session).
/// Returns the warnings.
fn log_out(mut window: Window, conns: Vec<(SyncConn, Option<String>)>) -> Vec<String> {
    let mut warnings = Vec::new();
    let alive: Vec<_> = conns
        .into_iter()
        .filter(|(_, dead)| dead.is_none())
        .collect();
    let n = alive.len();
    for (i, (mut c, _)) in alive.into_iter().enumerate() {
        if let Err(e) = login::logout(&mut c, &mut window, i + 1 == n) {
            warnings.push(format!("logout of connection {}: {e}", c.cid));
        }
    }
    warnings
}

/// Runs `ferrite-perf iscsi` and prints its report; returns the exit status.
pub fn main(opts: Options) -> i32 {
    let (urls, chap) = match validate(&opts) {
        Ok(v) => v,
        Err(e) => return usage(e),
    };

    // Log in every session (the control path, from this thread).
    let run = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
    let mut prepared: Vec<Prepared> = Vec::new();
    let mut caps: Vec<Capacity> = Vec::new();
    for (ui, url) in urls.iter().enumerate() {
        for s in 0..opts.sessions {
            let mut p = match log_in_session(&opts, url, ui, s, &chap, run) {
                Ok(p) => p,
                Err(e) => return failed(format!("login failed: {e}")),
            };
            let lun = Lun::from_index(url.lun);
            let (bs, blocks) = match login::read_capacity(&mut p.conns[0], &mut p.window, lun) {
                Ok(c) => c,
                Err(e) => return failed(e),
            };
            let cap = Capacity {
                block_size: bs,
                blocks,
            };
            if s == 0 {
                caps.push(cap);
            } else if caps[ui] != cap {
                return failed(format!(
                    "{url}: session {s} sees {blocks} blocks of {bs} bytes, session 0 {} of {}",
                    caps[ui].blocks, caps[ui].block_size
                ));
            }
            prepared.push(p);
        }
    }

    // Geometry: whole blocks, room for every job (and for verify, disjoint ranges).
    let jobs_per_url = (opts.sessions * opts.connections) as u64;
    for (url, cap) in urls.iter().zip(&caps) {
        let bs = cap.block_size as usize;
        if !opts.io_size.is_multiple_of(bs) {
            return usage(format!(
                "I/O size {} is not a multiple of {url}'s block size {bs}",
                opts.io_size
            ));
        }
        let io_blocks = (opts.io_size / bs) as u64;
        if u32::try_from(io_blocks).is_err() {
            return usage(format!("I/O size {} is too many blocks", opts.io_size));
        }
        let units = cap.blocks / io_blocks;
        let per_job = if opts.workload == Workload::Verify {
            units / jobs_per_url
        } else {
            units
        };
        if per_job == 0 {
            return usage(format!(
                "{url} ({} blocks of {bs} bytes) is too small for {}{}-byte I/O",
                cap.blocks,
                if opts.workload == Workload::Verify {
                    format!("{jobs_per_url} jobs of ")
                } else {
                    String::new()
                },
                opts.io_size
            ));
        }
        if opts.workload == Workload::Verify && per_job < opts.depth as u64 {
            return usage(format!(
                "verify needs at least queue depth x I/O size = {} x {} bytes of {url} per \
                 connection (so no two I/Os in flight overlap), but each of its {jobs_per_url} \
                 connections has {} bytes",
                opts.depth,
                opts.io_size,
                per_job * io_blocks * bs as u64
            ));
        }
    }

    // Build the sessions' jobs (allocating every buffer now).
    let multi = urls.len() > 1;
    let mut sessions = Vec::new();
    let mut negotiated = Vec::new();
    for p in prepared {
        let url = &urls[p.url_index];
        let cap = caps[p.url_index];
        let bs = cap.block_size as u64;
        let io_blocks = opts.io_size as u64 / bs;
        let units = cap.blocks / io_blocks;
        let short = url.target.rsplit(':').next().unwrap_or(&url.target);
        negotiated.push((p.url_index, p.negotiated, p.conns[0].limits));
        let mut conns = Vec::new();
        for (ci, c) in p.conns.into_iter().enumerate() {
            let j = (p.number * opts.connections + ci) as u64;
            let range = if opts.workload == Workload::Verify {
                let first = units * j / jobs_per_url;
                let last = units * (j + 1) / jobs_per_url;
                (first * io_blocks, (last - first) * io_blocks)
            } else {
                (0, units * io_blocks)
            };
            let label = format!(
                "{}{short}/{} s{}c{ci}",
                if multi {
                    format!("{}:", url.port)
                } else {
                    String::new()
                },
                url.lun,
                p.number
            );
            let spec = ConnSpec {
                label,
                workload: opts.workload,
                depth: opts.depth,
                io_size: opts.io_size,
                read_pct: opts.read_pct,
                seed: mix64(0x6665_7272_6974_6569 ^ ((p.url_index as u64) << 40 | j)),
                block_size: bs as usize,
                range,
                lun: Lun::from_index(url.lun),
            };
            let (stream, cid, exp, limits) = (c.stream, c.cid, c.exp_stat_sn, c.limits);
            match IoConn::new(spec, stream, cid, ci as u8, limits, &p.negotiated, exp) {
                Ok(io) => conns.push(io),
                Err(e) => return failed(format!("{url}: {e}")),
            }
        }
        sessions.push(IoSession::new(
            p.window,
            conns,
            p.tsih,
            p.url_index,
            p.number,
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
        Err(e) => return usage(format!("cannot start reactors: {e}")),
    };
    let h = rt.handle();
    let outcome = run_sessions(&opts, &h, sessions, &urls, &caps);
    h.stop();
    rt.wait();
    let Ran {
        results,
        reactors,
        back,
    } = match outcome {
        Ok(v) => v,
        Err(e) => return failed(e),
    };

    // Log out (from this thread again).
    let mut warnings = Vec::new();
    for (window, conns) in back {
        warnings.extend(log_out(window, conns));
    }
    for w in &warnings {
        eprintln!("ferrite-perf: warning: {w}");
    }

    let notes: Vec<ConnNotes> = results
        .iter()
        .map(|r| ConnNotes {
            label: r.job.bdev.clone(),
            errors: r.errors.clone(),
            dead: r.dead.clone(),
            ended: r.ended.clone(),
            pings: r.pings,
        })
        .collect();
    let report = bdevperf::report(results.into_iter().map(|r| r.job).collect(), reactors);
    if opts.json {
        let v = report_json(&opts, &urls, &caps, &negotiated, &report, &notes);
        crate::out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&v).expect("report is JSON")
        ));
    } else {
        let mut text = bdevperf::report_table(&report);
        for n in &notes {
            if let Some(d) = &n.dead {
                text.push_str(&format!("connection {} failed: {d}\n", n.label));
            }
            if let Some(e) = &n.ended {
                text.push_str(&format!("connection {} ended early: {e}\n", n.label));
            }
            for e in &n.errors {
                text.push_str(&format!("error on {}: {e}\n", n.label));
            }
        }
        crate::out(&text);
    }
    let mut code = report.exit_code();
    let ended = notes.iter().find(|n| n.ended.is_some());
    if code == EXIT_OK && ended.is_some() {
        code = EXIT_IO_FAILED;
    }
    if code != EXIT_OK {
        let mut why = bdevperf::failure_summary(&report);
        if let Some(n) = notes.iter().find(|n| n.dead.is_some()) {
            let d = n.dead.as_deref().unwrap_or_default();
            why.push_str(&format!("; connection {}: {d}", n.label));
        } else if let Some(n) = ended {
            let e = n.ended.as_deref().unwrap_or_default();
            let what = format!("connection {} ended early: {e}", n.label);
            why = if why.is_empty() {
                what
            } else {
                format!("{why}; {what}")
            };
        } else if let Some(n) = notes.iter().find(|n| !n.errors.is_empty()) {
            why.push_str(&format!("; first error on {}: {}", n.label, n.errors[0]));
        }
        eprintln!("ferrite-perf: {why}");
    }
    code
}

type SessionBack = (Window, Vec<(SyncConn, Option<String>)>);

/// What the reactors hand back after a run.
struct Ran {
    results: Vec<ConnResult>,
    reactors: Vec<ReactorLoad>,
    /// Each session's window and connections, to log out.
    back: Vec<SessionBack>,
}

/// What a report says about a connection besides its figures.
struct ConnNotes {
    label: String,
    errors: Vec<String>,
    dead: Option<String>,
    ended: Option<String>,
    pings: u64,
}

/// Hands the sessions to the reactors, runs them, takes them back.
fn run_sessions(
    opts: &Options,
    h: &Handle,
    sessions: Vec<IoSession>,
    urls: &[IscsiUrl],
    caps: &[Capacity],
) -> Result<Ran, String> {
    use std::io::Write;
    let nr = h.count();
    let mut shared: Vec<std::sync::Arc<JobShared>> = Vec::new();
    let total_sessions = sessions.len();
    for (i, mut s) in sessions.into_iter().enumerate() {
        shared.extend(s.conns.iter().map(|c| c.shared()));
        crate::run_on(h, i % nr, CONTROL_TIMEOUT, move || {
            s.install();
            SESSIONS.with(|l| l.borrow_mut().push(s));
            POLLER.with(|p| {
                let mut p = p.borrow_mut();
                if p.is_none() {
                    *p = Some(reactor::register_poller("iscsi_initiator", poll_sessions));
                }
            });
        })?;
    }

    let mut progress: Box<dyn std::io::Write> = if opts.json {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    let _ = writeln!(progress, "{}", banner(opts, urls, caps, total_sessions, nr));

    for r in 0..nr {
        crate::run_on(h, r, CONTROL_TIMEOUT, || {
            WINDOW.with(|w| {
                w.set((
                    ferrite_reactor::local_stats().busy_ticks,
                    ferrite_reactor::ticks(),
                ))
            });
            SESSIONS.with(|l| {
                for s in l.borrow_mut().iter_mut() {
                    s.start();
                }
            });
        })?;
    }
    bdevperf::progress_lines(&mut *progress, &shared, opts.seconds, opts.io_size);

    let mut reactors = Vec::new();
    for r in 0..nr {
        let load = crate::run_on(h, r, CONTROL_TIMEOUT, move || {
            let now = ferrite_reactor::ticks();
            let stats = ferrite_reactor::local_stats();
            SESSIONS.with(|l| {
                for s in l.borrow_mut().iter_mut() {
                    s.stop();
                }
            });
            let (busy0, t0) = WINDOW.with(|w| w.get());
            let conv = TickConv::new();
            ReactorLoad {
                index: r,
                core: stats.core,
                busy_ns: conv.ns(stats.busy_ticks.saturating_sub(busy0)),
                window_ns: conv.ns(now.wrapping_sub(t0)),
                ios: 0,
            }
        })?;
        reactors.push(load);
    }
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while !shared
        .iter()
        .all(|s| s.drained.load(std::sync::atomic::Ordering::Relaxed))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(1));
    }

    let mut results = Vec::new();
    let mut back = Vec::new();
    for r in 0..nr {
        let sessions = crate::run_on(h, r, CONTROL_TIMEOUT, || {
            if let Some(id) = POLLER.with(|p| p.borrow_mut().take()) {
                reactor::unregister_poller(id);
            }
            let mut list = SESSIONS.with(|l| std::mem::take(&mut *l.borrow_mut()));
            for s in &mut list {
                s.uninstall();
            }
            list
        })?;
        for s in sessions {
            let mut conns = Vec::new();
            for c in s.conns {
                let (cid, exp, limits) = (c.cid, c.exp_stat_sn, c.limits);
                let (res, stream) = c.finish();
                let dead = res.dead.clone();
                conns.push((SyncConn::resume(stream, cid, exp, limits), dead));
                results.push(res);
            }
            back.push((s.window, conns));
        }
    }
    for l in reactors.iter_mut() {
        l.ios = results
            .iter()
            .filter(|j| j.job.reactor == l.index)
            .map(|j| j.job.ios_at_stop)
            .sum();
    }
    Ok(Ran {
        results,
        reactors,
        back,
    })
}

/// The reactor's poller: every session on it, once.
fn poll_sessions() -> Poll {
    SESSIONS.with(|l| {
        let mut did = false;
        for s in l.borrow_mut().iter_mut() {
            did |= s.poll();
        }
        Poll::from_work(did)
    })
}

fn banner(
    opts: &Options,
    urls: &[IscsiUrl],
    caps: &[Capacity],
    sessions: usize,
    reactors: usize,
) -> String {
    let mix = if opts.workload.is_mixed() {
        format!(" ({}% reads)", opts.read_pct)
    } else {
        String::new()
    };
    let targets: Vec<String> = urls
        .iter()
        .zip(caps)
        .map(|(u, c)| format!("{u} ({} x {}-byte blocks)", c.blocks, c.block_size))
        .collect();
    format!(
        "Running {}{mix}, queue depth {} per connection, {} I/O, {} s, core mask {} ({} reactor{}{}), \
         {sessions} session{} x {} connection{} on {}{}{}",
        opts.workload,
        opts.depth,
        human(opts.io_size),
        opts.seconds,
        opts.mask,
        reactors,
        if reactors == 1 { "" } else { "s" },
        if opts.poll_only { ", poll-only" } else { "" },
        if sessions == 1 { "" } else { "s" },
        opts.connections,
        if opts.connections == 1 { "" } else { "s" },
        targets.join(", "),
        if opts.header_digest { ", HeaderDigest" } else { "" },
        if opts.data_digest { ", DataDigest" } else { "" },
    )
}

fn report_json(
    opts: &Options,
    urls: &[IscsiUrl],
    caps: &[Capacity],
    negotiated: &[(usize, Negotiated, login::ConnLimits)],
    r: &Report,
    notes: &[ConnNotes],
) -> Value {
    let mut jobs = bdevperf::jobs_json(r, "job");
    for j in jobs.iter_mut() {
        let name = j["job"].as_str().unwrap_or_default().to_string();
        if let Some(n) = notes.iter().find(|n| n.label == name) {
            let o = j.as_object_mut().expect("object");
            o.insert("errors".into(), json!(n.errors));
            o.insert("connection_error".into(), json!(n.dead));
            o.insert("ended_early".into(), json!(n.ended));
            o.insert("nop_in_pings".into(), json!(n.pings));
        }
    }
    let targets: Vec<Value> = urls
        .iter()
        .zip(caps)
        .enumerate()
        .map(|(i, (u, c))| {
            let neg = negotiated.iter().find(|n| n.0 == i);
            json!({
                "url": u.to_string(),
                "block_size": c.block_size,
                "num_blocks": c.blocks,
                "negotiated": neg.map(|(_, n, l)| json!({
                    "header_digest": l.header_digest,
                    "data_digest": l.data_digest,
                    "target_max_recv_data_segment_length": l.target_mrdsl,
                    "immediate_data": n.immediate_data,
                    "initial_r2t": n.initial_r2t,
                    "first_burst_length": n.first_burst_length,
                    "max_burst_length": n.max_burst_length,
                    "max_connections": n.max_connections,
                    "max_outstanding_r2t": n.max_outstanding_r2t,
                })),
            })
        })
        .collect();
    json!({
        "workload": opts.workload.name(),
        "queue_depth": opts.depth,
        "io_size": opts.io_size,
        "read_pct": if opts.workload.is_mixed() { json!(opts.read_pct) } else { Value::Null },
        "time_s": opts.seconds,
        "core_mask": opts.mask,
        "poll_only": opts.poll_only,
        "sessions": opts.sessions,
        "connections_per_session": opts.connections,
        "targets": targets,
        "jobs": jobs,
        "total": r.total.json(),
        "reactors": bdevperf::reactors_json(r),
        "ns_per_io": (r.ns_per_io() * 10.0).round() / 10.0,
        "outstanding": r.outstanding,
        "success": r.exit_code() == EXIT_OK && notes.iter().all(|n| n.ended.is_none()),
    })
}
