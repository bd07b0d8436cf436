//! A reactor's iSCSI connections: one poll set for all their sockets, asked
//! once per loop which are ready, and a timer for NOP-In pings.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ferrite_reactor::{self as reactor, Interest, Poll, PollSet};
use slab::Slab;

use super::conn::{Conn, PortalInfo};
use super::driver::LoginDriver;
use super::link::Link;
use crate::tcp::Socket;

/// Connections per reactor, for spreading new ones by load.
const MAX_REACTORS: usize = 128;
static LOAD: [AtomicUsize; MAX_REACTORS] = [const { AtomicUsize::new(0) }; MAX_REACTORS];

/// The reactor with the fewest connections.
pub(crate) fn least_loaded(count: usize) -> usize {
    (0..count.min(MAX_REACTORS))
        .min_by_key(|&r| LOAD[r].load(Ordering::Relaxed))
        .unwrap_or(0)
}

struct Entry {
    conn: Rc<Conn>,
    /// Also watching for writability (output is waiting).
    watching_out: bool,
}

struct Group {
    reactor: usize,
    pollset: PollSet,
    conns: RefCell<Slab<Entry>>,
    /// Connections with output queued since the last poll (task completions):
    /// flushed together, one write each, however many tasks finished.
    to_flush: RefCell<Vec<Rc<Conn>>>,
    /// The connections being ticked (kept to reuse its allocation).
    ticking: RefCell<Vec<Rc<Conn>>>,
}

thread_local! {
    static GROUP: RefCell<Option<Rc<Group>>> = const { RefCell::new(None) };
}

fn group() -> Rc<Group> {
    if let Some(g) = GROUP.with(|g| g.borrow().clone()) {
        return g;
    }
    use std::os::fd::AsRawFd;
    let reactor = reactor::current_index().expect("iSCSI connections live on reactors");
    let pollset = PollSet::new().expect("epoll for the iSCSI poll group");
    if let Err(e) = reactor::register_interrupt(pollset.as_raw_fd()) {
        tracing::error!("iSCSI poll group: cannot wake on sockets: {e}");
    }
    let g = Rc::new(Group {
        reactor,
        pollset,
        conns: RefCell::new(Slab::with_capacity(64)),
        to_flush: RefCell::new(Vec::with_capacity(64)),
        ticking: RefCell::new(Vec::with_capacity(64)),
    });
    GROUP.with(|s| *s.borrow_mut() = Some(g.clone()));
    reactor::register_poller("iscsi_conns", poll);
    reactor::register_timed_poller("iscsi_nop", Duration::from_millis(250), tick);
    g
}

/// Takes a new connection on this reactor.
pub(crate) fn add(sock: Socket, portal: PortalInfo) {
    add_joined(sock, portal, |_| true);
}

/// Takes a connection on this reactor; `setup` prepares it first (a
/// connection moving here to join its session) and may refuse it.
pub(crate) fn add_joined(sock: Socket, portal: PortalInfo, setup: impl FnOnce(&Rc<Conn>) -> bool) {
    use std::os::fd::AsRawFd;
    let g = group();
    let fd = sock.as_raw_fd();
    let iser = portal.transport == super::conn::Transport::Iser;
    let conn = Conn::new(Link::tcp(sock), portal, LoginDriver::new(portal, iser));
    if !setup(&conn) {
        conn.close("its session is gone");
        return;
    }
    let token = g.conns.borrow_mut().insert(Entry {
        conn: conn.clone(),
        watching_out: false,
    });
    conn.token.set(token);
    if let Err(e) = g.pollset.watch(fd, token as u64, Interest::Readable) {
        tracing::error!("iSCSI: cannot poll a new connection: {e}");
        g.conns.borrow_mut().remove(token);
        return;
    }
    LOAD[g.reactor.min(MAX_REACTORS - 1)].fetch_add(1, Ordering::Relaxed);
    tracing::debug!(
        "conn {} from {} on reactor {}",
        conn.id,
        portal.peer,
        g.reactor
    );
}

/// Takes a connection that is not a socket (iSER: its RDMA connection's
/// handler feeds it) into this reactor's group, for NOP-In pings, flushes
/// and shutdown.
pub(crate) fn add_link(link: Link, portal: PortalInfo) -> Rc<Conn> {
    let g = group();
    let iser = portal.transport == super::conn::Transport::Iser;
    let conn = Conn::new(link, portal, LoginDriver::new(portal, iser));
    let token = g.conns.borrow_mut().insert(Entry {
        conn: conn.clone(),
        watching_out: false,
    });
    conn.token.set(token);
    LOAD[g.reactor.min(MAX_REACTORS - 1)].fetch_add(1, Ordering::Relaxed);
    conn
}

/// Writes `conn`'s queued output at this reactor's next poll.
pub(crate) fn flush_soon(conn: &Conn) {
    if conn.flush_queued.replace(true) {
        return;
    }
    let Some(g) = GROUP.with(|g| g.borrow().clone()) else {
        return conn.flush();
    };
    let token = conn.token.get();
    let entry = g.conns.borrow().get(token).map(|e| e.conn.clone());
    match entry {
        Some(c) if std::ptr::eq(&*c, conn) => g.to_flush.borrow_mut().push(c),
        _ => {
            conn.flush_queued.set(false);
            conn.flush();
        }
    }
}

/// Forgets a closed connection.
pub(crate) fn remove(conn: &Conn) {
    let Some(g) = GROUP.with(|g| g.borrow().clone()) else {
        return;
    };
    let token = conn.token.get();
    let removed = {
        let mut conns = g.conns.borrow_mut();
        match conns.get(token) {
            Some(e) if std::ptr::eq(&*e.conn, conn) => Some(conns.remove(token)),
            _ => None,
        }
    };
    if let Some(e) = removed {
        if let Some(fd) = e.conn.fd() {
            let _ = g.pollset.remove(fd);
        }
        LOAD[g.reactor.min(MAX_REACTORS - 1)].fetch_sub(1, Ordering::Relaxed);
        // Dropped after the borrow ends: its destructor may close more.
        drop(e);
    }
}

/// Every connection on this reactor.
pub(crate) fn local_conns() -> Vec<Rc<Conn>> {
    GROUP.with(|g| {
        g.borrow()
            .as_ref()
            .map(|g| {
                g.conns
                    .borrow()
                    .iter()
                    .map(|(_, e)| e.conn.clone())
                    .collect()
            })
            .unwrap_or_default()
    })
}

fn poll() -> Poll {
    let Some(g) = GROUP.with(|g| g.borrow().clone()) else {
        return Poll::Idle;
    };
    if g.conns.borrow().is_empty() {
        return Poll::Idle;
    }
    let mut flushed = false;
    loop {
        let next = g.to_flush.borrow_mut().pop();
        let Some(c) = next else {
            break;
        };
        c.flush_queued.set(false);
        c.flush();
        flushed = true;
    }
    let mut tokens = [0u64; 64];
    let n = g.pollset.ready(&mut tokens);
    let mut busy = n > 0 || flushed;
    for &t in &tokens[..n] {
        service(&g, t as usize);
    }
    // Connections that stopped with input still buffered go again; those whose
    // output got stuck (or unstuck) since change what they wait for.
    let mut again = [0usize; 64];
    let mut k = 0;
    for (t, e) in g.conns.borrow().iter() {
        if k < again.len()
            && (e.conn.has_buffered_input() || e.conn.write_blocked() != e.watching_out)
        {
            again[k] = t;
            k += 1;
        }
    }
    for &t in &again[..k] {
        busy = true;
        service(&g, t);
    }
    Poll::from_work(busy)
}

fn service(g: &Group, token: usize) {
    let Some(conn) = g.conns.borrow().get(token).map(|e| e.conn.clone()) else {
        return;
    };
    if !conn.on_readable() {
        return;
    }
    // Watch for writability only while output waits.
    let blocked = conn.write_blocked();
    let mut conns = g.conns.borrow_mut();
    if let Some(e) = conns.get_mut(token) {
        if e.watching_out != blocked {
            let interest = if blocked {
                Interest::Both
            } else {
                Interest::Readable
            };
            let Some(fd) = conn.fd() else {
                return;
            };
            if g.pollset.rewatch(fd, token as u64, interest).is_ok() {
                e.watching_out = blocked;
            }
        }
    }
}

fn tick() -> Poll {
    let Some(g) = GROUP.with(|g| g.borrow().clone()) else {
        return Poll::Idle;
    };
    // A list kept across ticks, so ticking allocates nothing.
    let mut conns = std::mem::take(&mut *g.ticking.borrow_mut());
    conns.extend(g.conns.borrow().iter().map(|(_, e)| e.conn.clone()));
    if conns.is_empty() {
        *g.ticking.borrow_mut() = conns;
        return Poll::Idle;
    }
    let snap = ferrite_lib::target::snapshot();
    let o = snap.options();
    let rate = reactor::tick_rate();
    let interval = o.nop_in_interval as u64 * rate;
    let timeout = o.nop_timeout as u64 * rate;
    let now = reactor::ticks();
    for c in conns.drain(..) {
        c.tick(now, interval, timeout);
    }
    *g.ticking.borrow_mut() = conns;
    Poll::Idle
}
