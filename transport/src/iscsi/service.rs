//! The iSCSI target service: listening portals, the acceptor that hands new
//! connections to the least-loaded reactor, and what the target model and the
//! target's shutdown ask of the transport.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ferrite_lib::target::{
    self as model, ConnectionsHook, Hooks, ModelSnapshot, PortalHooks, TargetChange, TargetHooks,
};
use ferrite_reactor::{self as reactor, Poll};
use serde_json::Value;

use super::conn::{PortalInfo, Transport};
use super::{driver, group, session};
use crate::iser::driver::IserListener;
use crate::tcp::{Listener, Socket};

/// How often the acceptor looks for new connections.
const ACCEPT_PERIOD: Duration = Duration::from_millis(1);
/// How long shutdown waits for initiators to log out when asked to.
const LOGOUT_GRACE: Duration = Duration::from_secs(2);

struct Listening {
    pg_tag: u32,
    portal: model::Portal,
    listener: Listener,
    accepting: AtomicBool,
}

static LISTENERS: Mutex<Vec<Arc<Listening>>> = Mutex::new(Vec::new());

/// An iSER portal's RDMA CM listener. The portal hooks and the acceptor both
/// run on the control reactor, where these live.
struct IserListening {
    pg_tag: u32,
    portal: model::Portal,
    listener: IserListener,
    accepting: bool,
}

thread_local! {
    static ISER_LISTENERS: std::cell::RefCell<Vec<IserListening>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

fn listeners() -> MutexGuard<'static, Vec<Arc<Listening>>> {
    LISTENERS.lock().unwrap_or_else(|e| e.into_inner())
}

struct Portals;

impl PortalHooks for Portals {
    fn listen(&self, pg_tag: u32, portal: &model::Portal) -> std::io::Result<()> {
        if portal.iser {
            // RDMA CM needs an address of an RDMA-capable interface (or the
            // wildcard); without an RDMA device the portal fails its RPC.
            let listener = IserListener::bind(portal.socket_addr()).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("iSER portal {}:{}: {e}", portal.host, portal.port),
                )
            })?;
            if reactor::on_reactor() {
                let _ = reactor::register_interrupt(listener.fd());
            }
            tracing::info!(
                "iSCSI portal group {pg_tag} listening for iSER on {}",
                listener.local_addr()
            );
            ISER_LISTENERS.with(|l| {
                l.borrow_mut().push(IserListening {
                    pg_tag,
                    portal: portal.clone(),
                    listener,
                    accepting: false,
                })
            });
            return Ok(());
        }
        let listener = Listener::bind(&portal.addr.to_string(), portal.port)?;
        if reactor::on_reactor() {
            // A sleeping control reactor wakes when someone connects.
            let _ = reactor::register_interrupt(listener.as_raw_fd());
        }
        tracing::info!(
            "iSCSI portal group {pg_tag} listening on {}",
            listener.local_addr()
        );
        listeners().push(Arc::new(Listening {
            pg_tag,
            portal: portal.clone(),
            listener,
            accepting: AtomicBool::new(false),
        }));
        Ok(())
    }

    fn start(&self, pg_tag: u32, portal: &model::Portal) {
        ISER_LISTENERS.with(|l| {
            for l in l.borrow_mut().iter_mut() {
                if l.pg_tag == pg_tag && l.portal == *portal {
                    l.accepting = true;
                }
            }
        });
        for l in listeners().iter() {
            if l.pg_tag == pg_tag && l.portal == *portal {
                l.accepting.store(true, Ordering::Release);
            }
        }
    }

    fn unlisten(&self, pg_tag: u32, portal: &model::Portal) {
        ISER_LISTENERS.with(|l| {
            l.borrow_mut().retain(|l| {
                let keep = !(l.pg_tag == pg_tag && l.portal == *portal);
                if !keep && reactor::on_reactor() {
                    let _ = reactor::unregister_interrupt(l.listener.fd());
                }
                keep
            })
        });
        listeners().retain(|l| {
            let keep = !(l.pg_tag == pg_tag && l.portal == *portal);
            if !keep && reactor::on_reactor() {
                let _ = reactor::unregister_interrupt(l.listener.as_raw_fd());
            }
            keep
        });
    }
}

/// Connections as `iscsi_get_connections` lists them, kept current by the
/// reactors (login and close).
static CONNECTIONS: Mutex<Vec<(u64, Value)>> = Mutex::new(Vec::new());

pub(crate) fn connection_up(id: u64, info: Value) {
    CONNECTIONS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((id, info));
}

pub(crate) fn connection_down(id: u64) {
    CONNECTIONS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(i, _)| *i != id);
}

struct Connections;

impl ConnectionsHook for Connections {
    fn list(&self) -> Vec<Value> {
        CONNECTIONS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(_, v)| v.clone())
            .collect()
    }
}

struct Targets;

impl TargetHooks for Targets {
    fn target_changed(&self, snapshot: &Arc<ModelSnapshot>, name: &str, change: &TargetChange) {
        if let TargetChange::LunAdded { lun_id } = change {
            driver::device_lun_added(snapshot, name, *lun_id);
        }
    }

    fn target_deleted(&self, name: &str) {
        for s in session::entries() {
            if s.target
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case(name))
            {
                driver::close_session(&s, "target node deleted");
            }
        }
        driver::device_deleted(name);
    }
}

/// Plugs the iSCSI transport into the target model and starts the acceptor.
/// Call once, on the control reactor, before any portal group is created.
pub fn start() -> Result<(), String> {
    model::set_hooks(Hooks {
        portals: Some(Arc::new(Portals)),
        connections: Some(Arc::new(Connections)),
        targets: Some(Arc::new(Targets)),
    })?;
    // An active poller that looks at most once per period: while the reactor
    // is busy it accepts within a period; an idle reactor sleeps (no timer keeps
    // it up) and the listeners' readiness wakes it.
    let period = ferrite_reactor::ticks::duration_to_ticks(ACCEPT_PERIOD);
    let mut next = 0u64;
    reactor::register_poller("iscsi_accept", move || {
        let now = reactor::ticks();
        if now < next {
            return Poll::Idle;
        }
        next = now + period;
        accept()
    });
    Ok(())
}

fn accept() -> Poll {
    let mut accepted: arrayvec::ArrayVec<(Socket, SocketAddr, u32), 16> = arrayvec::ArrayVec::new();
    for l in listeners()
        .iter()
        .filter(|l| l.accepting.load(Ordering::Acquire))
    {
        while !accepted.is_full() {
            match l.listener.accept() {
                Ok(Some((sock, peer))) => accepted.push((sock, peer, l.pg_tag)),
                Ok(None) => break,
                Err(e) => {
                    // EMFILE and the like: try again next period.
                    tracing::warn!("accept on {}: {e}", l.listener.local_addr());
                    break;
                }
            }
        }
    }
    // iSER connect requests are checked and handed off by the listener.
    let iser = ISER_LISTENERS.with(|l| {
        l.borrow()
            .iter()
            .filter(|l| l.accepting)
            .map(|l| l.listener.accept(l.pg_tag as u16))
            .sum::<usize>()
    });
    // Handed off outside the listeners' lock.
    let busy = !accepted.is_empty() || iser > 0;
    for (sock, peer, pg_tag) in accepted {
        hand_off(sock, peer, pg_tag);
    }
    Poll::from_work(busy)
}

/// Gives a new connection to the least-loaded reactor.
fn hand_off(sock: Socket, peer: SocketAddr, pg_tag: u32) {
    let portal = PortalInfo {
        portal_group_tag: pg_tag as u16,
        local: sock.local_addr(),
        peer,
        transport: Transport::Tcp,
    };
    let target = group::least_loaded(reactor::handle().count());
    let (stream, local, peer) = sock.into_parts();
    let msg = Box::new(move || group::add(Socket::from_parts(stream, local, peer), portal));
    if let Err(e) = reactor::send(target, msg) {
        tracing::error!("cannot hand a connection to reactor {target}: {e}");
    }
}

/// Stops the service for shutdown: stops accepting, asks every initiator to
/// log out, and closes what is left after a grace period; then `done`.
pub fn stop(done: Box<dyn FnOnce() + Send>) {
    for l in listeners().drain(..) {
        if reactor::on_reactor() {
            let _ = reactor::unregister_interrupt(l.listener.as_raw_fd());
        }
    }
    ISER_LISTENERS.with(|l| {
        for l in l.borrow_mut().drain(..) {
            if reactor::on_reactor() {
                let _ = reactor::unregister_interrupt(l.listener.fd());
            }
        }
    });
    let secs = LOGOUT_GRACE.as_secs() as u16;
    reactor::for_each_reactor(
        move || {
            let conns = group::local_conns();
            for c in &conns {
                c.request_logout(secs);
            }
            conns.len()
        },
        move |counts| {
            if counts.iter().sum::<usize>() == 0 {
                return done();
            }
            // Give initiators the grace period, then close what remains.
            let deadline = reactor::ticks()
                + LOGOUT_GRACE.as_nanos() as u64 * reactor::tick_rate() / 1_000_000_000;
            let done = std::cell::RefCell::new(Some(done));
            let id = std::rc::Rc::new(std::cell::Cell::new(None));
            let me = id.clone();
            let poller = reactor::register_timed_poller(
                "iscsi_stop",
                Duration::from_millis(50),
                move || {
                    let left = CONNECTIONS.lock().unwrap_or_else(|e| e.into_inner()).len();
                    if left > 0 && reactor::ticks() < deadline {
                        return Poll::Idle;
                    }
                    if let Some(done) = done.borrow_mut().take() {
                        reactor::for_each_reactor(
                            || {
                                for c in group::local_conns() {
                                    c.close("target shutting down");
                                }
                            },
                            move |_| done(),
                        );
                    }
                    if let Some(id) = me.get() {
                        reactor::unregister_poller(id);
                    }
                    Poll::Busy
                },
            );
            id.set(Some(poller));
        },
    );
}

/// The transport's place in the target's start/stop order: registered after
/// the iSCSI model so that shutdown closes connections before portals and
/// bdevs go. It has no configuration of its own.
pub struct IscsiTransport;

impl ferrite_lib::subsystem::Subsystem for IscsiTransport {
    fn name(&self) -> &'static str {
        "iscsi_transport"
    }

    fn fini(&self, done: ferrite_lib::subsystem::FiniDone) {
        stop(Box::new(move || {
            driver::forget_devices();
            done()
        }));
    }
}
