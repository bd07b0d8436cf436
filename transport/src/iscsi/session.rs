//! iSCSI sessions: the registry that assigns TSIHs and finds sessions for new
//! connections and reinstatement, and the per-reactor session state (the SCSI
//! port, the CmdSN window) shared by the session's connections.
//!
//! A session lives on one reactor, and every connection of the session is
//! moved there when it joins, so nothing about a session is shared between
//! reactors on the I/O path.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::num::NonZeroU16;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ferrite_lib::scsi::ScsiPort;

use super::conn::Conn;
use super::params::{SessionParams, SessionType};
use super::pdu::Isid;

/// What every reactor may know about a session.
#[derive(Debug)]
pub(crate) struct SessionEntry {
    pub tsih: u16,
    pub isid: Isid,
    pub initiator: String,
    pub target: Option<String>,
    pub portal_group_tag: u16,
    pub reactor: usize,
    pub params: SessionParams,
    /// Set when the session is being closed (reinstated, target deleted, shutdown).
    pub closing: AtomicBool,
    /// Connections in the session now (checked against MaxConnections by
    /// logins on any reactor).
    pub conns: AtomicUsize,
}

#[derive(Default)]
struct Registry {
    sessions: Vec<Arc<SessionEntry>>,
    last_tsih: u16,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    sessions: Vec::new(),
    last_tsih: 0,
});

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Registers a new session and returns its entry, plus the entry of an older
/// session with the same initiator, ISID and target that it reinstates.
pub(crate) fn create_entry(
    isid: Isid,
    initiator: &str,
    target: Option<&str>,
    portal_group_tag: u16,
    reactor: usize,
    params: SessionParams,
) -> Option<(Arc<SessionEntry>, Option<Arc<SessionEntry>>)> {
    let mut reg = registry();
    let old = reg
        .sessions
        .iter()
        .position(|s| {
            s.isid == isid
                && s.initiator == initiator
                && s.target.as_deref() == target
                && s.portal_group_tag == portal_group_tag
        })
        .map(|i| reg.sessions.remove(i));
    // TSIH 0 is reserved; pick the next free one.
    let mut tsih = reg.last_tsih;
    for _ in 0..=u16::MAX {
        tsih = tsih.wrapping_add(1);
        if tsih != 0 && !reg.sessions.iter().any(|s| s.tsih == tsih) {
            break;
        }
    }
    if tsih == 0 || reg.sessions.iter().any(|s| s.tsih == tsih) {
        return None;
    }
    reg.last_tsih = tsih;
    let entry = Arc::new(SessionEntry {
        tsih,
        isid,
        initiator: initiator.to_string(),
        target: target.map(str::to_string),
        portal_group_tag,
        reactor,
        params,
        closing: AtomicBool::new(false),
        conns: AtomicUsize::new(0),
    });
    reg.sessions.push(entry.clone());
    if let Some(o) = &old {
        o.closing.store(true, Ordering::Release);
    }
    Some((entry, old))
}

/// Unregisters a session that never started (its login failed after binding).
pub(crate) fn forget_entry(entry: &Arc<SessionEntry>) {
    registry().sessions.retain(|s| !Arc::ptr_eq(s, entry));
}

/// The session `tsih` of this initiator and ISID, for a connection joining it.
pub(crate) fn find_entry(
    tsih: NonZeroU16,
    isid: Isid,
    initiator: &str,
) -> Option<Arc<SessionEntry>> {
    registry()
        .sessions
        .iter()
        .find(|s| s.tsih == tsih.get() && s.isid == isid && s.initiator == initiator)
        .cloned()
}

/// Every session's entry (for listing and for closing a target's sessions).
pub(crate) fn entries() -> Vec<Arc<SessionEntry>> {
    registry().sessions.clone()
}

/// The CmdSN window (RFC 7143 §4.2.2.1): commands are taken in CmdSN order
/// inside [ExpCmdSN, MaxCmdSN].
#[derive(Debug, Clone, Copy)]
pub(crate) struct CmdWindow {
    pub exp_cmd_sn: u32,
    /// How many commands the session takes at once (at most [`MAX_WINDOW`]).
    pub depth: u32,
    /// Commands taken but not yet answered.
    pub outstanding: u32,
    /// CmdSNs received ahead of `exp_cmd_sn` (bit i: `exp_cmd_sn + i`), as
    /// happens with several connections: ExpCmdSN moves over them only when
    /// the ones before have come too.
    ahead: [u64; 4],
}

/// The widest command window (the `ahead` bitmap's size).
pub(crate) const MAX_WINDOW: u32 = 256;

/// What the window says about a CmdSN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmdSnCheck {
    /// Take it.
    Take,
    /// Outside the window, or already taken: ignore it (RFC 7143 §4.2.2.1).
    Ignore,
}

impl CmdWindow {
    pub fn new(exp_cmd_sn: u32, depth: u32) -> CmdWindow {
        CmdWindow {
            exp_cmd_sn,
            depth: depth.clamp(1, MAX_WINDOW),
            outstanding: 0,
            ahead: [0; 4],
        }
    }

    /// Accounts for a non-immediate PDU carrying `sn`.
    pub fn take(&mut self, sn: u32) -> CmdSnCheck {
        if !self.in_window(sn) {
            return CmdSnCheck::Ignore;
        }
        let off = sn.wrapping_sub(self.exp_cmd_sn) as usize;
        let (word, bit) = (off / 64, 1u64 << (off % 64));
        if self.ahead[word] & bit != 0 {
            return CmdSnCheck::Ignore;
        }
        self.ahead[word] |= bit;
        // Move ExpCmdSN over every CmdSN now received in a row.
        while self.ahead[0] & 1 != 0 {
            for w in 0..4 {
                let carry = if w + 1 < 4 { self.ahead[w + 1] & 1 } else { 0 };
                self.ahead[w] = (self.ahead[w] >> 1) | (carry << 63);
            }
            self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
        }
        CmdSnCheck::Take
    }

    pub fn max_cmd_sn(&self) -> u32 {
        let free = self.depth.saturating_sub(self.outstanding).max(1);
        self.exp_cmd_sn.wrapping_add(free - 1)
    }

    /// Serial-number comparison (RFC 1982): whether `sn` lies in the window.
    pub fn in_window(&self, sn: u32) -> bool {
        let off = sn.wrapping_sub(self.exp_cmd_sn);
        let span = self.max_cmd_sn().wrapping_sub(self.exp_cmd_sn);
        off <= span
    }
}

/// A session on its reactor.
pub(crate) struct Session {
    pub entry: Arc<SessionEntry>,
    /// The SCSI port of a normal session (none for discovery).
    pub port: RefCell<Option<ScsiPort>>,
    pub window: Cell<CmdWindow>,
    pub conns: RefCell<Vec<Weak<Conn>>>,
}

thread_local! {
    /// The sessions living on this reactor, by TSIH.
    static LOCAL: RefCell<HashMap<u16, Rc<Session>>> = RefCell::new(HashMap::new());
}

impl Session {
    /// Makes the reactor-local half of a session registered with `entry`.
    pub fn start(
        entry: Arc<SessionEntry>,
        port: Option<ScsiPort>,
        exp_cmd_sn: u32,
        depth: u32,
    ) -> Rc<Session> {
        let s = Rc::new(Session {
            entry,
            port: RefCell::new(port),
            window: Cell::new(CmdWindow::new(exp_cmd_sn, depth)),
            conns: RefCell::new(Vec::new()),
        });
        LOCAL.with(|l| l.borrow_mut().insert(s.entry.tsih, s.clone()));
        s
    }

    /// This reactor's session `tsih`.
    pub fn local(tsih: u16) -> Option<Rc<Session>> {
        LOCAL.with(|l| l.borrow().get(&tsih).cloned())
    }

    pub fn is_discovery(&self) -> bool {
        self.entry.params.session_type == SessionType::Discovery
    }

    pub fn add_conn(&self, conn: &Rc<Conn>) {
        let mut conns = self.conns.borrow_mut();
        conns.retain(|c| c.strong_count() > 0);
        conns.push(Rc::downgrade(conn));
        self.entry.conns.store(conns.len(), Ordering::Release);
    }

    pub fn live_conns(&self) -> Vec<Rc<Conn>> {
        self.conns
            .borrow()
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// A connection left; the session ends with its last connection.
    pub fn remove_conn(&self, conn: &Conn) {
        let mut conns = self.conns.borrow_mut();
        conns.retain(|c| c.upgrade().is_some_and(|c| !std::ptr::eq(&*c, conn)));
        self.entry.conns.store(conns.len(), Ordering::Release);
        let empty = conns.is_empty();
        drop(conns);
        if empty {
            self.end();
        }
    }

    /// Ends the session: the I_T nexus is lost (its tasks at the SCSI layer are
    /// aborted, its SPC-2 reservations released), and it is unregistered.
    pub fn end(&self) {
        if let Some(mut port) = self.port.borrow_mut().take() {
            port.nexus_loss(|_| {});
        }
        LOCAL.with(|l| {
            let mut l = l.borrow_mut();
            if l.get(&self.entry.tsih)
                .is_some_and(|s| std::ptr::eq(&**s, self))
            {
                l.remove(&self.entry.tsih);
            }
        });
        forget_entry(&self.entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_cmd_sn_waits_for_the_gap_to_fill() {
        let mut w = CmdWindow::new(10, 64);
        assert_eq!(w.take(12), CmdSnCheck::Take);
        assert_eq!(w.take(11), CmdSnCheck::Take);
        assert_eq!(w.exp_cmd_sn, 10, "10 has not come yet");
        assert_eq!(w.take(12), CmdSnCheck::Ignore, "a duplicate");
        assert_eq!(w.take(10), CmdSnCheck::Take);
        assert_eq!(w.exp_cmd_sn, 13);
        assert_eq!(w.take(9), CmdSnCheck::Ignore, "behind the window");
        assert_eq!(w.take(13 + 64), CmdSnCheck::Ignore, "beyond MaxCmdSN");
        // Across a bitmap word and past u32::MAX.
        let mut w = CmdWindow::new(u32::MAX - 70, 256);
        for sn in (1..=100u32).map(|i| (u32::MAX - 70).wrapping_add(i)) {
            assert_eq!(w.take(sn), CmdSnCheck::Take);
        }
        assert_eq!(w.take(u32::MAX - 70), CmdSnCheck::Take);
        assert_eq!(w.exp_cmd_sn, (u32::MAX - 70).wrapping_add(101));
    }
}
