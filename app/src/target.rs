//! Starting and stopping a target.
//!
//! Start-up on reactor 0: replay the configuration, then start the RPC server,
//! then log `ferrite-tgt ready: RPC on PATH`, which tests and scripts wait for.
//! A failure on the way stops what had started and makes [`run`] return the
//! error, leaving no socket or lock file behind.
//!
//! Shutdown (on SIGINT, SIGTERM or `framework_shutdown`): stop the RPC server,
//! stop the subsystems in reverse start order, stop the reactors. Another
//! SIGINT/SIGTERM once shutdown has begun exits at once with status 130.

use std::cell::{Cell, RefCell};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ferrite_lib::jsonrpc::{register_framework_methods, Framework, Methods, RpcServer};
use ferrite_lib::rpc::bdev::{register_bdev_methods, BdevSubsystem};
use ferrite_lib::srp::{register_srp_methods, SrpSubsystem};
use ferrite_lib::subsystem::Subsystems;
use ferrite_lib::target::{register_iscsi_methods, IscsiSubsystem};
use ferrite_reactor::mem::MemConfig;
use ferrite_reactor::{Poll, Runtime, RuntimeConfig};
use serde_json::Value;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::SigId;

/// The reactor that runs the start-up, the RPC server and the shutdown.
const CONTROL_REACTOR: usize = 0;

/// Exit status when a second signal cuts the shutdown short (128 + SIGINT, as
/// shells report an interrupted command).
pub const INTERRUPTED_EXIT_STATUS: i32 = 130;

/// How to run a target.
#[derive(Debug, Clone)]
pub struct TargetOptions {
    pub runtime: RuntimeConfig,
    pub mem: MemConfig,
    pub rpc_socket: PathBuf,
    /// Replayed before the RPC server starts; `None` starts with nothing configured.
    pub config: Option<Value>,
}

/// Runs a target until it is shut down, blocking the calling thread. Returns
/// the error that stopped the start-up, if one did.
pub fn run(options: TargetOptions) -> Result<(), String> {
    let arena = ferrite_reactor::mem::init(&options.mem).map_err(|e| {
        format!(
            "cannot map the buffer arena ({} MiB heap): {e}",
            options.mem.heap_mb
        )
    })?;
    tracing::info!(
        "ferrite-tgt starting: {} reactor(s) on cores {:?}{}, {} MiB heap on {}",
        options.runtime.cores.len(),
        options.runtime.cores,
        if options.runtime.poll_only {
            " (poll only)"
        } else {
            ""
        },
        arena.heap_size() >> 20,
        if arena.is_hugepage() {
            "hugepages"
        } else {
            "normal pages"
        }
    );

    let stopping = Arc::new(AtomicBool::new(false));
    let signals = Signals::install(stopping.clone())
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let failure = Arc::new(Mutex::new(None));
    let (methods, subsystems) = registries();

    let startup = Startup {
        methods,
        subsystems,
        rpc_socket: options.rpc_socket,
        config: options.config,
        stopping,
        failure: failure.clone(),
        signal_pipe: signals.read_end.try_clone().map_err(|e| e.to_string())?,
    };
    let runtime = Runtime::start(options.runtime, move || startup.begin())
        .map_err(|e| format!("cannot start the reactors: {e}"))?;
    runtime.wait();
    signals.uninstall();

    let failure = failure.lock().unwrap_or_else(|e| e.into_inner()).take();
    match failure {
        Some(message) => Err(message),
        None => Ok(()),
    }
}

/// The methods and subsystems of a target, in start order.
fn registries() -> (Arc<Methods>, Arc<Subsystems>) {
    let mut subsystems = Subsystems::new();
    // Start order; shutdown stops them in reverse.
    subsystems.register(Arc::new(BdevSubsystem));
    subsystems.register(Arc::new(IscsiSubsystem::new()));
    subsystems.register(Arc::new(ferrite_transport::iscsi::service::IscsiTransport));
    subsystems.register(Arc::new(SrpSubsystem::new()));
    let subsystems = Arc::new(subsystems);

    let mut methods = Methods::new();
    register_framework_methods(
        &mut methods,
        Framework {
            subsystems: subsystems.clone(),
            shutdown: Arc::new(|| request_shutdown("framework_shutdown")),
        },
    );
    register_bdev_methods(&mut methods);
    register_iscsi_methods(&mut methods);
    register_srp_methods(&mut methods);
    crate::rdma_rpc::register_rdma_methods(&mut methods);
    (Arc::new(methods), subsystems)
}

/// Says what the target serves: each iSCSI target node with its LUNs and portals.
fn log_exports() {
    let snap = ferrite_lib::target::snapshot();
    for node in &snap.target_nodes {
        let luns: Vec<String> = node
            .luns
            .iter()
            .map(|l| format!("LUN {} = {}", l.id, l.bdev_name))
            .collect();
        let portals: Vec<String> = node
            .pg_maps
            .iter()
            .filter_map(|m| snap.portal_group(m.pg_tag))
            .flat_map(|pg| pg.portals.iter().map(|p| format!("{}:{}", p.host, p.port)))
            .collect();
        tracing::info!(
            "iSCSI target {} ({}) on {}",
            node.name,
            luns.join(", "),
            portals.join(" ")
        );
    }
}

/// Starts the shutdown sequence from any reactor.
fn request_shutdown(reason: &'static str) {
    let msg = Box::new(move || with_target(|t| t.request_shutdown(reason)));
    if let Err(e) = ferrite_reactor::send(CONTROL_REACTOR, msg) {
        tracing::error!("cannot start the shutdown ({reason}): {e}");
    }
}

thread_local! {
    /// The target, on the control reactor.
    static TARGET: RefCell<Option<Rc<Target>>> = const { RefCell::new(None) };
}

/// Runs `f` with the target; on the control reactor only.
fn with_target(f: impl FnOnce(&Target)) {
    let target = TARGET.with(|t| t.borrow().clone());
    match target {
        Some(target) => f(&target),
        None => tracing::error!("no target on this thread"),
    }
}

/// What the control reactor needs to start the target.
struct Startup {
    methods: Arc<Methods>,
    subsystems: Arc<Subsystems>,
    rpc_socket: PathBuf,
    config: Option<Value>,
    stopping: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<String>>>,
    signal_pipe: UnixStream,
}

impl Startup {
    /// Runs on the control reactor.
    fn begin(self) {
        let target = Rc::new(Target {
            methods: self.methods,
            subsystems: self.subsystems,
            rpc_socket: self.rpc_socket,
            phase: Cell::new(Phase::Starting),
            requested_during_startup: Cell::new(None),
            rpc: RefCell::new(None),
            stopping: self.stopping,
            failure: self.failure,
        });
        TARGET.with(|t| *t.borrow_mut() = Some(target.clone()));
        // iSER and SRP connections share each reactor's receive queue.
        ferrite_transport::rdma::configure(ferrite_transport::rdma_config());
        // The iSCSI transport listens on the portals the config creates.
        if let Err(e) = ferrite_transport::iscsi::service::start() {
            return target.fail(format!("cannot start the iSCSI transport: {e}"));
        }
        // SRP targets the config creates ask the SRP service to listen.
        ferrite_transport::srp::service::start();
        // Watch for signals first: one may come while the config replays.
        if let Err(e) = watch_signals(self.signal_pipe) {
            return target.fail(format!("cannot watch for signals: {e}"));
        }
        match self.config {
            Some(config) => ferrite_conf::replay(config, target.methods.clone(), |result| {
                with_target(|t| t.config_replayed(result))
            }),
            None => target.config_replayed(Ok(())),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Starting,
    Running,
    Stopping,
}

/// A target's state, on the control reactor.
struct Target {
    methods: Arc<Methods>,
    subsystems: Arc<Subsystems>,
    rpc_socket: PathBuf,
    phase: Cell<Phase>,
    /// A shutdown asked for while starting, done once start-up has finished.
    requested_during_startup: Cell<Option<&'static str>>,
    rpc: RefCell<Option<RpcServer>>,
    /// Set once shutdown is asked for: a signal then exits at once.
    stopping: Arc<AtomicBool>,
    /// The first start-up error, for `run` to return.
    failure: Arc<Mutex<Option<String>>>,
}

impl Target {
    fn config_replayed(&self, result: Result<(), String>) {
        if let Err(message) = result {
            return self.fail(message);
        }
        if let Some(reason) = self.requested_during_startup.take() {
            return self.shut_down(reason);
        }
        match RpcServer::start(&self.rpc_socket, self.methods.clone()) {
            Ok(server) => {
                *self.rpc.borrow_mut() = Some(server);
                self.phase.set(Phase::Running);
                log_exports();
                tracing::info!("ferrite-tgt ready: RPC on {}", self.rpc_socket.display());
            }
            Err(e) => self.fail(e.to_string()),
        }
    }

    fn request_shutdown(&self, reason: &'static str) {
        self.stopping.store(true, Ordering::SeqCst);
        match self.phase.get() {
            Phase::Starting => {
                tracing::info!("{reason}: shutting down once start-up has finished");
                self.requested_during_startup.set(Some(reason));
            }
            Phase::Running => self.shut_down(reason),
            Phase::Stopping => {}
        }
    }

    /// Records a start-up error and stops what has started.
    fn fail(&self, message: String) {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        failure.get_or_insert(message);
        drop(failure);
        self.shut_down("start-up failed");
    }

    fn shut_down(&self, reason: &str) {
        if self.phase.replace(Phase::Stopping) == Phase::Stopping {
            return;
        }
        self.stopping.store(true, Ordering::SeqCst);
        tracing::info!("shutting down: {reason}");
        let server = self.rpc.borrow_mut().take();
        if let Some(server) = server {
            server.stop();
        }
        let reactors = ferrite_reactor::handle();
        self.subsystems.fini_all(move || {
            tracing::info!("ferrite-tgt stopped");
            reactors.stop();
        });
    }
}

/// SIGINT and SIGTERM, turned into bytes on a socket pair that the control
/// reactor watches; with `stopping` set, they exit the process at once.
struct Signals {
    read_end: UnixStream,
    ids: Vec<SigId>,
}

impl Signals {
    fn install(stopping: Arc<AtomicBool>) -> io::Result<Signals> {
        let (read_end, write_end) = UnixStream::pair()?;
        read_end.set_nonblocking(true)?;
        // The handler must never block on a full pipe.
        write_end.set_nonblocking(true)?;
        let mut ids = Vec::new();
        for signal in [SIGINT, SIGTERM] {
            // Checked before the pipe handler runs, so the first signal only
            // starts the shutdown and a later one cuts it short.
            ids.push(signal_hook::flag::register_conditional_shutdown(
                signal,
                INTERRUPTED_EXIT_STATUS,
                stopping.clone(),
            )?);
            ids.push(signal_hook::low_level::pipe::register(
                signal,
                write_end.try_clone()?,
            )?);
        }
        Ok(Signals { read_end, ids })
    }

    fn uninstall(self) {
        for id in self.ids {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// Starts the shutdown when a signal's byte arrives. On the control reactor.
fn watch_signals(mut pipe: UnixStream) -> io::Result<()> {
    ferrite_reactor::register_interrupt(pipe.as_raw_fd())?;
    ferrite_reactor::register_poller("signals", move || {
        let mut bytes = [0u8; 16];
        let mut signalled = false;
        // Drain it: the reactor cannot sleep while the pipe stays readable.
        while let Ok(n) = pipe.read(&mut bytes) {
            if n == 0 {
                break;
            }
            signalled = true;
        }
        if signalled {
            with_target(|t| t.request_shutdown("signal received"));
        }
        Poll::from_work(signalled)
    });
    Ok(())
}
