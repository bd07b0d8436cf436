//! The only module that touches `rdma-sys` (libibverbs and librdmacm): thin owning
//! wrappers with a safe surface. Swapping the bindings means changing this file.
//!
//! Ownership rules the types enforce:
//! * a [`CmId`] keeps the [`EventChannel`] it reports to alive (an `Arc`), so the
//!   channel is never destroyed under an id;
//! * a [`CmId`] owns its QP (made by [`CmId::create_qp`]) and destroys it first;
//! * [`Cq`], [`Srq`] and [`Mr`] keep their protection domain or completion
//!   channel alive the same way;
//! * device contexts ([`Verbs`]) are librdmacm's, pinned for the process by
//!   [`Verbs::pin_all`], so a raw context pointer never dangles.
//!
//! Every event is copied out and acknowledged before the call returns, so no
//! destroy call ever waits for an unacknowledged event.

use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::os::raw::{c_int, c_void};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arrayvec::ArrayVec;
use rdma_sys as ffi;

/// Most work requests one `post_send` call links together.
pub const MAX_CHAIN: usize = 16;
/// Most scatter/gather entries one work request carries.
pub const MAX_SGE: usize = 16;
/// Most receive work requests posted in one call.
pub const MAX_RECV_BATCH: usize = 64;
/// The largest private data any CM message carries (the length is a u8).
pub const MAX_PRIVATE_DATA: usize = 255;

/// CM ids and QPs alive in the process (for leak checks).
static LIVE_IDS: AtomicUsize = AtomicUsize::new(0);
static LIVE_QPS: AtomicUsize = AtomicUsize::new(0);

/// How many CM ids and QPs exist now.
pub fn live_counts() -> (usize, usize) {
    (
        LIVE_IDS.load(Ordering::Relaxed),
        LIVE_QPS.load(Ordering::Relaxed),
    )
}

fn last_error() -> io::Error {
    io::Error::last_os_error()
}

/// librdmacm calls return -1 and set errno.
fn cm_check(rc: c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(last_error())
    }
}

/// Verbs calls return 0 or an errno value (some return -1 with errno).
fn verbs_check(rc: c_int) -> io::Result<()> {
    match rc {
        0 => Ok(()),
        -1 => Err(last_error()),
        e => Err(io::Error::from_raw_os_error(e.abs())),
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we were handed; no pointers.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(last_error());
    }
    // SAFETY: as above.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) };
    if rc < 0 {
        return Err(last_error());
    }
    Ok(())
}

fn would_block(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN))
}

/// A socket address in the C form librdmacm takes.
struct RawAddr(libc::sockaddr_storage);

impl RawAddr {
    fn new(addr: &SocketAddr) -> RawAddr {
        // SAFETY: sockaddr_storage is plain old data; all zeros is a valid value.
        let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*a.ip()).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
                unsafe { ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in, sin) };
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
                unsafe { ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in6, sin6) };
            }
        }
        RawAddr(ss)
    }

    fn as_mut_ptr(&mut self) -> *mut libc::sockaddr {
        &mut self.0 as *mut _ as *mut libc::sockaddr
    }
}

/// Reads a socket address librdmacm filled in (`AF_INET`/`AF_INET6`, else `None`).
///
/// # Safety
/// `sa` must point to a readable `sockaddr_storage`-sized socket address.
unsafe fn read_addr(sa: *const libc::sockaddr_storage) -> Option<SocketAddr> {
    match (*sa).ss_family as c_int {
        libc::AF_INET => {
            let sin = &*(sa as *const libc::sockaddr_in);
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            let sin6 = &*(sa as *const libc::sockaddr_in6);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// RDMA CM event channel and events
// ---------------------------------------------------------------------------

struct ChannelInner(NonNull<ffi::rdma_event_channel>);

// SAFETY: an event channel is an fd plus librdmacm's bookkeeping, which is
// internally locked; it may be used and destroyed from any thread.
unsafe impl Send for ChannelInner {}
// SAFETY: as above; librdmacm serialises calls on a channel.
unsafe impl Sync for ChannelInner {}

impl Drop for ChannelInner {
    fn drop(&mut self) {
        // SAFETY: made by rdma_create_event_channel; every CmId on it holds an Arc
        // to this, so none is left when the last reference goes.
        unsafe { ffi::rdma_destroy_event_channel(self.0.as_ptr()) };
    }
}

/// A non-blocking RDMA CM event channel: [`EventChannel::next_event`] never
/// waits, and [`EventChannel::fd`] can be watched (a reactor interrupt or a
/// `PollSet`) to learn when events are waiting.
#[derive(Clone)]
pub struct EventChannel(Arc<ChannelInner>);

impl EventChannel {
    pub fn new() -> io::Result<EventChannel> {
        // SAFETY: no arguments; null is an error.
        let ch = unsafe { ffi::rdma_create_event_channel() };
        let ch = NonNull::new(ch).ok_or_else(last_error)?;
        let ch = EventChannel(Arc::new(ChannelInner(ch)));
        set_nonblocking(ch.fd())?;
        Ok(ch)
    }

    pub fn fd(&self) -> RawFd {
        // SAFETY: the channel is live while self is.
        unsafe { (*self.0 .0.as_ptr()).fd }
    }

    fn raw(&self) -> *mut ffi::rdma_event_channel {
        self.0 .0.as_ptr()
    }

    /// The next event, copied out and acknowledged; `None` when none waits.
    /// A connect request carries its new id, which the caller then owns.
    pub fn next_event(&self) -> io::Result<Option<CmEvent>> {
        let mut ev: *mut ffi::rdma_cm_event = ptr::null_mut();
        // SAFETY: the channel is live; ev receives an event we ack below.
        let rc = unsafe { ffi::rdma_get_cm_event(self.raw(), &mut ev) };
        if rc != 0 {
            let e = last_error();
            return if would_block(&e) { Ok(None) } else { Err(e) };
        }
        // SAFETY: on success ev points to a valid event until it is acked; we copy
        // everything we need out of it first. The private data pointer, when set,
        // is valid for private_data_len bytes (librdmacm's own copy).
        let out = unsafe {
            let e = &*ev;
            let kind = CmEventKind::from_raw(e.event);
            let conn = &e.param.conn;
            let mut private_data = ArrayVec::new();
            if !conn.private_data.is_null() && conn.private_data_len > 0 {
                let pd = std::slice::from_raw_parts(
                    conn.private_data as *const u8,
                    conn.private_data_len as usize,
                );
                private_data.try_extend_from_slice(pd).ok();
            }
            let id = NonNull::new(e.id);
            let context = id.map(|id| (*id.as_ptr()).context as u64).unwrap_or(0);
            let new_id = if kind == CmEventKind::ConnectRequest {
                id.map(|id| {
                    LIVE_IDS.fetch_add(1, Ordering::Relaxed);
                    CmId {
                        id,
                        channel: self.clone(),
                        qp: std::cell::Cell::new(None),
                    }
                })
            } else {
                None
            };
            CmEvent {
                kind,
                status: e.status,
                context,
                id_addr: id.map(|p| p.as_ptr() as usize).unwrap_or(0),
                listen_context: NonNull::new(e.listen_id)
                    .map(|l| (*l.as_ptr()).context as u64)
                    .unwrap_or(0),
                private_data,
                // The kernel's IB CM hands these over from our side's view
                // (its `cm_format_req_event` and `cm_format_rep_event` swap the
                // wire fields): `conn.responder_resources` is the peer's
                // initiator depth and `conn.initiator_depth` the peer's
                // responder resources. CmEvent holds the peer's own values.
                initiator_depth: conn.responder_resources,
                responder_resources: conn.initiator_depth,
                new_id,
            }
        };
        // SAFETY: ev came from rdma_get_cm_event and is acked exactly once.
        unsafe { ffi::rdma_ack_cm_event(ev) };
        Ok(Some(out))
    }
}

/// What an RDMA CM event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmEventKind {
    AddrResolved,
    AddrError,
    RouteResolved,
    RouteError,
    ConnectRequest,
    ConnectResponse,
    ConnectError,
    Unreachable,
    Rejected,
    Established,
    Disconnected,
    DeviceRemoval,
    AddrChange,
    TimewaitExit,
    Other(u32),
}

impl CmEventKind {
    fn from_raw(t: ffi::rdma_cm_event_type::Type) -> CmEventKind {
        use ffi::rdma_cm_event_type::*;
        match t {
            RDMA_CM_EVENT_ADDR_RESOLVED => CmEventKind::AddrResolved,
            RDMA_CM_EVENT_ADDR_ERROR => CmEventKind::AddrError,
            RDMA_CM_EVENT_ROUTE_RESOLVED => CmEventKind::RouteResolved,
            RDMA_CM_EVENT_ROUTE_ERROR => CmEventKind::RouteError,
            RDMA_CM_EVENT_CONNECT_REQUEST => CmEventKind::ConnectRequest,
            RDMA_CM_EVENT_CONNECT_RESPONSE => CmEventKind::ConnectResponse,
            RDMA_CM_EVENT_CONNECT_ERROR => CmEventKind::ConnectError,
            RDMA_CM_EVENT_UNREACHABLE => CmEventKind::Unreachable,
            RDMA_CM_EVENT_REJECTED => CmEventKind::Rejected,
            RDMA_CM_EVENT_ESTABLISHED => CmEventKind::Established,
            RDMA_CM_EVENT_DISCONNECTED => CmEventKind::Disconnected,
            RDMA_CM_EVENT_DEVICE_REMOVAL => CmEventKind::DeviceRemoval,
            RDMA_CM_EVENT_ADDR_CHANGE => CmEventKind::AddrChange,
            RDMA_CM_EVENT_TIMEWAIT_EXIT => CmEventKind::TimewaitExit,
            t => CmEventKind::Other(t),
        }
    }
}

/// One RDMA CM event, copied out of librdmacm (already acknowledged).
pub struct CmEvent {
    pub kind: CmEventKind,
    /// The event's status: for `Rejected` the IB CM reject reason (28 is
    /// "consumer defined", a peer's reject with private data), else an errno.
    pub status: i32,
    /// The context value set on the event's id ([`CmId::set_context`]).
    pub context: u64,
    /// The id's address, to tell ids apart (a fresh id has context 0).
    pub id_addr: usize,
    /// The context of the listening id, for connect requests.
    pub listen_context: u64,
    /// The peer's private data (connect request, response, established,
    /// rejected), as long as the CM delivered it (often zero-padded).
    pub private_data: ArrayVec<u8, MAX_PRIVATE_DATA>,
    /// The peer's connection parameters (connect request, established), as
    /// the peer set them: the RDMA READs it will have outstanding against us,
    /// and the ones it lets us have outstanding against it.
    pub initiator_depth: u8,
    pub responder_resources: u8,
    /// For a connect request: the new id, now the caller's.
    pub new_id: Option<CmId>,
}

// ---------------------------------------------------------------------------
// RDMA CM ids
// ---------------------------------------------------------------------------

/// Connection parameters for accept and connect.
#[derive(Debug, Clone, Copy)]
pub struct ConnParam {
    pub responder_resources: u8,
    pub initiator_depth: u8,
    pub retry_count: u8,
    pub rnr_retry_count: u8,
}

/// The capabilities of a QP, asked for and granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpCaps {
    pub max_send_wr: u32,
    pub max_send_sge: u32,
    pub max_inline_data: u32,
}

/// An RDMA CM id (`RDMA_PS_TCP`, reliable connected) and the QP made on it.
/// Dropping it destroys the QP, then the id.
pub struct CmId {
    id: NonNull<ffi::rdma_cm_id>,
    channel: EventChannel,
    qp: std::cell::Cell<Option<NonNull<ffi::ibv_qp>>>,
}

// SAFETY: an id may be handed to another thread while nobody else uses it (a
// connect request moving to the reactor that takes it); librdmacm has no
// thread affinity. It is not Sync: its QP pointer lives in a Cell.
unsafe impl Send for CmId {}

impl CmId {
    /// A new id reporting to `channel`.
    pub fn new(channel: &EventChannel) -> io::Result<CmId> {
        let mut id: *mut ffi::rdma_cm_id = ptr::null_mut();
        // SAFETY: the channel is live; id receives the new id.
        let rc = unsafe {
            ffi::rdma_create_id(
                channel.raw(),
                &mut id,
                ptr::null_mut(),
                ffi::rdma_port_space::RDMA_PS_TCP,
            )
        };
        cm_check(rc)?;
        let id = NonNull::new(id).ok_or_else(last_error)?;
        LIVE_IDS.fetch_add(1, Ordering::Relaxed);
        Ok(CmId {
            id,
            channel: channel.clone(),
            qp: std::cell::Cell::new(None),
        })
    }

    fn raw(&self) -> *mut ffi::rdma_cm_id {
        self.id.as_ptr()
    }

    /// The id's address, as [`CmEvent::id_addr`] reports it.
    pub fn addr(&self) -> usize {
        self.raw() as usize
    }

    /// Tags the id; its events carry the value as [`CmEvent::context`].
    pub fn set_context(&self, value: u64) {
        // SAFETY: the id is live and only this thread uses it.
        unsafe { (*self.raw()).context = value as usize as *mut c_void };
    }

    pub fn bind(&self, addr: &SocketAddr) -> io::Result<()> {
        let mut a = RawAddr::new(addr);
        // SAFETY: the id is live; the address is valid for the call.
        cm_check(unsafe { ffi::rdma_bind_addr(self.raw(), a.as_mut_ptr()) })
    }

    pub fn listen(&self, backlog: i32) -> io::Result<()> {
        // SAFETY: the id is live and bound.
        cm_check(unsafe { ffi::rdma_listen(self.raw(), backlog) })
    }

    /// Starts resolving `dst` (an `AddrResolved` or `AddrError` event follows).
    pub fn resolve_addr(&self, dst: &SocketAddr, timeout_ms: i32) -> io::Result<()> {
        let mut a = RawAddr::new(dst);
        // SAFETY: the id is live; a null source lets the CM pick one.
        cm_check(unsafe {
            ffi::rdma_resolve_addr(self.raw(), ptr::null_mut(), a.as_mut_ptr(), timeout_ms)
        })
    }

    /// Starts resolving the route (a `RouteResolved` or `RouteError` event follows).
    pub fn resolve_route(&self, timeout_ms: i32) -> io::Result<()> {
        // SAFETY: the id is live with its address resolved.
        cm_check(unsafe { ffi::rdma_resolve_route(self.raw(), timeout_ms) })
    }

    /// Moves the id's events to `channel`.
    pub fn migrate(&mut self, channel: &EventChannel) -> io::Result<()> {
        // SAFETY: both are live; events of this id on the old channel were all
        // acked (we ack every event as we read it), so this does not block.
        cm_check(unsafe { ffi::rdma_migrate_id(self.raw(), channel.raw()) })?;
        self.channel = channel.clone();
        Ok(())
    }

    /// The device the id is bound to (after bind to a device address, a
    /// connect request, or address resolution).
    pub fn verbs(&self) -> Option<Verbs> {
        // SAFETY: the id is live; verbs is librdmacm's context, pinned (see Verbs).
        NonNull::new(unsafe { (*self.raw()).verbs }).map(Verbs)
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        // SAFETY: the id is live; route.addr is inline storage of a sockaddr_storage.
        unsafe { read_addr(&(*self.raw()).route.addr.src_addr_union.src_storage) }
    }

    pub fn peer_addr(&self) -> Option<SocketAddr> {
        // SAFETY: as above.
        unsafe { read_addr(&(*self.raw()).route.addr.dst_addr_union.dst_storage) }
    }

    /// Makes the id's RC QP with both queues on `cq` and receives from `srq`.
    pub fn create_qp(&self, pd: &Pd, cq: &Cq, srq: &Srq, caps: QpCaps) -> io::Result<QpCaps> {
        if self.qp.get().is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the id has a QP",
            ));
        }
        // SAFETY: ibv_qp_init_attr is plain old data; zero is "unset".
        let mut attr: ffi::ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        attr.send_cq = cq.raw();
        attr.recv_cq = cq.raw();
        attr.srq = srq.raw();
        attr.qp_type = ffi::ibv_qp_type::IBV_QPT_RC;
        attr.sq_sig_all = 0;
        attr.cap.max_send_wr = caps.max_send_wr;
        attr.cap.max_send_sge = caps.max_send_sge;
        attr.cap.max_inline_data = caps.max_inline_data;
        // SAFETY: id, pd, cq and srq are live and of one device (the caller got
        // them for this id's verbs); attr is valid for the call.
        let rc = unsafe { ffi::rdma_create_qp(self.raw(), pd.raw(), &mut attr) };
        cm_check(rc)?;
        // SAFETY: on success the id's qp field is the new QP.
        let qp = NonNull::new(unsafe { (*self.raw()).qp }).ok_or_else(last_error)?;
        self.qp.set(Some(qp));
        LIVE_QPS.fetch_add(1, Ordering::Relaxed);
        Ok(QpCaps {
            max_send_wr: attr.cap.max_send_wr,
            max_send_sge: attr.cap.max_send_sge,
            max_inline_data: attr.cap.max_inline_data,
        })
    }

    pub fn qp_num(&self) -> Option<u32> {
        // SAFETY: the QP is live while it is in the Cell.
        self.qp.get().map(|qp| unsafe { (*qp.as_ptr()).qp_num })
    }

    /// Moves the QP to the error state: outstanding work requests flush.
    pub fn qp_to_error(&self) -> io::Result<()> {
        let Some(qp) = self.qp.get() else {
            return Ok(());
        };
        // SAFETY: ibv_qp_attr is plain old data; only qp_state is read (mask).
        let mut attr: ffi::ibv_qp_attr = unsafe { std::mem::zeroed() };
        attr.qp_state = ffi::ibv_qp_state::IBV_QPS_ERR;
        // SAFETY: the QP is live; attr is valid for the call.
        verbs_check(unsafe {
            ffi::ibv_modify_qp(
                qp.as_ptr(),
                &mut attr,
                ffi::ibv_qp_attr_mask::IBV_QP_STATE.0 as c_int,
            )
        })
    }

    /// Destroys the QP (if any). Its completions already in the CQ stay there.
    pub fn destroy_qp(&self) {
        if self.qp.take().is_some() {
            // SAFETY: the QP was made by rdma_create_qp on this id and nothing else
            // holds its pointer (posting goes through this id).
            unsafe { ffi::rdma_destroy_qp(self.raw()) };
            LIVE_QPS.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn conn_param(p: &ConnParam, private_data: &[u8]) -> io::Result<ffi::rdma_conn_param> {
        if private_data.len() > MAX_PRIVATE_DATA {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "private data longer than 255 bytes",
            ));
        }
        Ok(ffi::rdma_conn_param {
            private_data: if private_data.is_empty() {
                ptr::null()
            } else {
                private_data.as_ptr() as *const c_void
            },
            private_data_len: private_data.len() as u8,
            responder_resources: p.responder_resources,
            initiator_depth: p.initiator_depth,
            flow_control: 1,
            retry_count: p.retry_count,
            rnr_retry_count: p.rnr_retry_count,
            srq: 1,
            qp_num: 0,
        })
    }

    pub fn accept(&self, p: &ConnParam, private_data: &[u8]) -> io::Result<()> {
        let mut param = Self::conn_param(p, private_data)?;
        // SAFETY: the id is a connect request's, with its QP made; param and the
        // private data it points to are valid for the call (librdmacm copies).
        cm_check(unsafe { ffi::rdma_accept(self.raw(), &mut param) })
    }

    pub fn connect(&self, p: &ConnParam, private_data: &[u8]) -> io::Result<()> {
        let mut param = Self::conn_param(p, private_data)?;
        // SAFETY: as for accept; the id has its route resolved and its QP made.
        cm_check(unsafe { ffi::rdma_connect(self.raw(), &mut param) })
    }

    pub fn reject(&self, private_data: &[u8]) -> io::Result<()> {
        if private_data.len() > MAX_PRIVATE_DATA {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "private data longer than 255 bytes",
            ));
        }
        let p = if private_data.is_empty() {
            ptr::null()
        } else {
            private_data.as_ptr() as *const c_void
        };
        // SAFETY: the id is a connect request's; the data is valid for the call.
        cm_check(unsafe { ffi::rdma_reject(self.raw(), p, private_data.len() as u8) })
    }

    /// The device port the id is bound to (1 when librdmacm has not said).
    pub fn port_num(&self) -> u8 {
        // SAFETY: the id is live; port_num is a plain field librdmacm fills in.
        let port = unsafe { (*self.raw()).port_num };
        if port == 0 {
            1
        } else {
            port
        }
    }

    /// Starts disconnecting: the QP goes to error and the peer is told.
    pub fn disconnect(&self) -> io::Result<()> {
        // SAFETY: the id is live.
        cm_check(unsafe { ffi::rdma_disconnect(self.raw()) })
    }

    /// Posts `wrs` to the send queue, linked into one call. Fails with
    /// `ENOTCONN` when the QP is gone.
    pub fn post_send(&self, wrs: &[SendWr<'_>]) -> io::Result<()> {
        let Some(qp) = self.qp.get() else {
            return Err(io::Error::from_raw_os_error(libc::ENOTCONN));
        };
        if wrs.is_empty() {
            return Ok(());
        }
        if wrs.len() > MAX_CHAIN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "too many work requests in one chain",
            ));
        }
        // SAFETY: ibv_send_wr is plain old data (ints, pointers, unions of those);
        // all zeros is a valid, empty request.
        let mut raw: [ffi::ibv_send_wr; MAX_CHAIN] = unsafe { std::mem::zeroed() };
        let base = raw.as_mut_ptr();
        for (i, wr) in wrs.iter().enumerate() {
            if wr.sges.len() > MAX_SGE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "too many scatter/gather entries",
                ));
            }
            let r = &mut raw[i];
            r.wr_id = wr.wr_id;
            // Sge is #[repr(C)] with ibv_sge's layout (checked below); the verbs
            // only read the list.
            r.sg_list = wr.sges.as_ptr() as *mut ffi::ibv_sge;
            r.num_sge = wr.sges.len() as c_int;
            let mut flags = 0;
            if wr.signaled {
                flags |= ffi::ibv_send_flags::IBV_SEND_SIGNALED.0;
            }
            if wr.inline {
                flags |= ffi::ibv_send_flags::IBV_SEND_INLINE.0;
            }
            if wr.solicited {
                flags |= ffi::ibv_send_flags::IBV_SEND_SOLICITED.0;
            }
            r.send_flags = flags;
            match wr.op {
                WrOp::Send => r.opcode = ffi::ibv_wr_opcode::IBV_WR_SEND,
                WrOp::SendInvalidate { rkey } => {
                    r.opcode = ffi::ibv_wr_opcode::IBV_WR_SEND_WITH_INV;
                    r.imm_data_invalidated_rkey_union.invalidated_rkey = rkey;
                }
                WrOp::RdmaWrite { remote_addr, rkey } => {
                    r.opcode = ffi::ibv_wr_opcode::IBV_WR_RDMA_WRITE;
                    r.wr.rdma = ffi::rdma_t { remote_addr, rkey };
                }
                WrOp::RdmaRead { remote_addr, rkey } => {
                    r.opcode = ffi::ibv_wr_opcode::IBV_WR_RDMA_READ;
                    r.wr.rdma = ffi::rdma_t { remote_addr, rkey };
                }
            }
            if i + 1 < wrs.len() {
                // SAFETY: i + 1 < MAX_CHAIN, inside the array.
                r.next = unsafe { base.add(i + 1) };
            }
        }
        let mut bad: *mut ffi::ibv_send_wr = ptr::null_mut();
        // SAFETY: the QP is live; the chain and its sge lists live on this stack
        // frame (and in `wrs`) for the call, which copies them into the queue.
        let rc = unsafe { ffi::ibv_post_send(qp.as_ptr(), base, &mut bad) };
        verbs_check(rc)
    }
}

impl Drop for CmId {
    fn drop(&mut self) {
        self.destroy_qp();
        // SAFETY: the id is ours, its QP is gone and all its events were acked;
        // its channel is alive (we hold a reference).
        unsafe { ffi::rdma_destroy_id(self.raw()) };
        LIVE_IDS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a send-queue work request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrOp {
    Send,
    /// SEND that invalidates the peer's `rkey` on arrival.
    SendInvalidate {
        rkey: u32,
    },
    RdmaWrite {
        remote_addr: u64,
        rkey: u32,
    },
    RdmaRead {
        remote_addr: u64,
        rkey: u32,
    },
}

/// One send-queue work request.
#[derive(Debug, Clone, Copy)]
pub struct SendWr<'a> {
    pub wr_id: u64,
    pub op: WrOp,
    pub sges: &'a [Sge],
    pub signaled: bool,
    pub inline: bool,
    pub solicited: bool,
}

/// A scatter/gather entry: `len` bytes at `addr` in memory registered with `lkey`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sge {
    pub addr: u64,
    pub len: u32,
    pub lkey: u32,
}

const _: () = {
    assert!(std::mem::size_of::<Sge>() == std::mem::size_of::<ffi::ibv_sge>());
    assert!(std::mem::align_of::<Sge>() == std::mem::align_of::<ffi::ibv_sge>());
    assert!(std::mem::offset_of!(Sge, addr) == std::mem::offset_of!(ffi::ibv_sge, addr));
    assert!(std::mem::offset_of!(Sge, len) == std::mem::offset_of!(ffi::ibv_sge, length));
    assert!(std::mem::offset_of!(Sge, lkey) == std::mem::offset_of!(ffi::ibv_sge, lkey));
};

// ---------------------------------------------------------------------------
// Devices, protection domains, memory regions
// ---------------------------------------------------------------------------

/// A device context opened by librdmacm (not ours to close).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Verbs(NonNull<ffi::ibv_context>);

// SAFETY: libibverbs contexts are thread-safe; librdmacm keeps them open while
// pinned (pin_all) for the life of the process.
unsafe impl Send for Verbs {}
// SAFETY: as above.
unsafe impl Sync for Verbs {}

/// Device limits the layer sizes its queues by.
#[derive(Debug, Clone, Copy)]
pub struct DeviceAttr {
    pub max_qp_wr: u32,
    pub max_sge: u32,
    pub max_cqe: u32,
    pub max_srq_wr: u32,
    pub max_qp_rd_atom: u8,
    pub max_qp_init_rd_atom: u8,
    pub node_guid: u64,
}

/// What an async event says.
#[derive(Debug, Clone, Copy)]
pub struct AsyncEvent {
    /// `ibv_event_type` as a number (see [`AsyncEvent::name`]).
    pub kind: u32,
    /// The QP it is about, for QP events.
    pub qp_num: Option<u32>,
}

pub const ASYNC_QP_FATAL: u32 = 1;
pub const ASYNC_QP_REQ_ERR: u32 = 2;
pub const ASYNC_QP_ACCESS_ERR: u32 = 3;
pub const ASYNC_COMM_EST: u32 = 4;
pub const ASYNC_PATH_MIG_ERR: u32 = 7;
pub const ASYNC_DEVICE_FATAL: u32 = 8;
pub const ASYNC_PORT_ACTIVE: u32 = 9;
pub const ASYNC_PORT_ERR: u32 = 10;
pub const ASYNC_QP_LAST_WQE_REACHED: u32 = 16;

impl AsyncEvent {
    pub fn name(&self) -> &'static str {
        const NAMES: [&str; 20] = [
            "CQ error",
            "QP fatal",
            "QP request error",
            "QP access error",
            "communication established",
            "SQ drained",
            "path migrated",
            "path migration error",
            "device fatal",
            "port active",
            "port error",
            "LID change",
            "P_Key change",
            "SM change",
            "SRQ error",
            "SRQ limit reached",
            "QP last WQE reached",
            "client reregister",
            "GID change",
            "WQ fatal",
        ];
        NAMES.get(self.kind as usize).copied().unwrap_or("unknown")
    }
}

impl Verbs {
    /// Opens (through librdmacm) every RDMA device and keeps them open for the
    /// life of the process, so contexts taken from ids never close under us.
    /// Returns how many there are.
    pub fn pin_all() -> io::Result<usize> {
        let mut n: c_int = 0;
        // SAFETY: n receives the count; the list is deliberately never freed,
        // which keeps librdmacm's reference on every device.
        let list = unsafe { ffi::rdma_get_devices(&mut n) };
        if list.is_null() {
            return Err(last_error());
        }
        Ok(n.max(0) as usize)
    }

    pub fn name(&self) -> String {
        // SAFETY: the context and its device are live (pinned); the name is a
        // NUL-terminated array inside ibv_device.
        unsafe {
            let dev = (*self.0.as_ptr()).device;
            if dev.is_null() {
                return String::from("?");
            }
            CStr::from_ptr((*dev).name.as_ptr())
                .to_string_lossy()
                .into_owned()
        }
    }

    pub fn query(&self) -> io::Result<DeviceAttr> {
        let mut attr = MaybeUninit::<ffi::ibv_device_attr>::zeroed();
        // SAFETY: the context is live; attr is writable for the call.
        verbs_check(unsafe { ffi::ibv_query_device(self.0.as_ptr(), attr.as_mut_ptr()) })?;
        // SAFETY: filled in by a successful query (and zeroed before).
        let a = unsafe { attr.assume_init() };
        Ok(DeviceAttr {
            max_qp_wr: a.max_qp_wr.max(0) as u32,
            max_sge: a.max_sge.max(0) as u32,
            max_cqe: a.max_cqe.max(0) as u32,
            max_srq_wr: a.max_srq_wr.max(0) as u32,
            max_qp_rd_atom: a.max_qp_rd_atom.clamp(0, 255) as u8,
            max_qp_init_rd_atom: a.max_qp_init_rd_atom.clamp(0, 255) as u8,
            node_guid: u64::from_be(a.node_guid),
        })
    }

    /// Whether `port` is ACTIVE now (asks the kernel: a system call, for the
    /// control path only).
    pub fn port_active(&self, port: u8) -> io::Result<bool> {
        let mut attr = MaybeUninit::<ffi::ibv_port_attr>::zeroed();
        // SAFETY: the context is live; attr is writable for the call (and
        // zeroed, so fields an old provider leaves alone read as 0).
        verbs_check(unsafe { ffi::___ibv_query_port(self.0.as_ptr(), port, attr.as_mut_ptr()) })?;
        // SAFETY: filled in by a successful query.
        let state = unsafe { attr.assume_init() }.state;
        Ok(state == ffi::ibv_port_state::IBV_PORT_ACTIVE)
    }

    pub fn alloc_pd(&self) -> io::Result<Pd> {
        // SAFETY: the context is live.
        let pd = unsafe { ffi::ibv_alloc_pd(self.0.as_ptr()) };
        Ok(Pd(NonNull::new(pd).ok_or_else(last_error)?))
    }

    /// The async event fd, made non-blocking.
    pub fn async_fd(&self) -> io::Result<RawFd> {
        // SAFETY: the context is live.
        let fd = unsafe { (*self.0.as_ptr()).async_fd };
        set_nonblocking(fd)?;
        Ok(fd)
    }

    /// The next async event (acknowledged), or `None` when none waits. Needs
    /// [`Verbs::async_fd`] called once first (to make it non-blocking).
    pub fn next_async_event(&self) -> Option<AsyncEvent> {
        let mut ev = MaybeUninit::<ffi::ibv_async_event>::zeroed();
        // SAFETY: the context is live; ev is writable; the fd is non-blocking so
        // this returns -1 (EAGAIN) when there is nothing.
        let rc = unsafe { ffi::ibv_get_async_event(self.0.as_ptr(), ev.as_mut_ptr()) };
        if rc != 0 {
            return None;
        }
        // SAFETY: filled in by a successful call. The type is read as a plain
        // number (a newer kernel may report a type the Rust enum lacks); for QP
        // events the QP stays valid until the event is acked below.
        let out = unsafe {
            let p = ev.as_ptr();
            let kind = ptr::read(ptr::addr_of!((*p).event_type) as *const u32);
            let qp_num = match kind {
                1..=7 | 16 => {
                    let qp = (*p).element.qp;
                    (!qp.is_null()).then(|| (*qp).qp_num)
                }
                _ => None,
            };
            AsyncEvent { kind, qp_num }
        };
        // SAFETY: acks the event just read, once.
        unsafe { ffi::ibv_ack_async_event(ev.as_mut_ptr()) };
        Some(out)
    }

    pub fn create_comp_channel(&self) -> io::Result<CompChannel> {
        // SAFETY: the context is live.
        let ch = unsafe { ffi::ibv_create_comp_channel(self.0.as_ptr()) };
        let ch = CompChannel(NonNull::new(ch).ok_or_else(last_error)?);
        set_nonblocking(ch.fd())?;
        Ok(ch)
    }

    /// A CQ of at least `cqe` entries whose events go to `channel`.
    pub fn create_cq(&self, cqe: u32, channel: &Rc<CompChannel>) -> io::Result<Cq> {
        // SAFETY: the context and the channel are live (the Cq keeps the channel).
        let cq = unsafe {
            ffi::ibv_create_cq(
                self.0.as_ptr(),
                cqe.min(i32::MAX as u32) as c_int,
                ptr::null_mut(),
                channel.0.as_ptr(),
                0,
            )
        };
        Ok(Cq {
            cq: NonNull::new(cq).ok_or_else(last_error)?,
            channel: channel.clone(),
            unacked: std::cell::Cell::new(0),
        })
    }
}

use std::rc::Rc;

/// A protection domain.
pub struct Pd(NonNull<ffi::ibv_pd>);

// SAFETY: protection domains are thread-safe verbs objects.
unsafe impl Send for Pd {}
// SAFETY: as above.
unsafe impl Sync for Pd {}

impl Pd {
    fn raw(&self) -> *mut ffi::ibv_pd {
        self.0.as_ptr()
    }

    /// Registers `len` bytes at `addr`: local write always, and remote read and
    /// write when `remote` (what a peer needs to RDMA into or out of it).
    ///
    /// The memory must stay mapped while the region lives; callers register
    /// only the buffer arena, which is never unmapped.
    pub fn register(self: &Arc<Pd>, addr: *mut u8, len: usize, remote: bool) -> io::Result<Mr> {
        let mut access = ffi::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0;
        if remote {
            access |= ffi::ibv_access_flags::IBV_ACCESS_REMOTE_READ.0
                | ffi::ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0;
        }
        // SAFETY: the PD is live; the range is mapped for the life of the
        // region (caller's contract above).
        let mr = unsafe { ffi::ibv_reg_mr(self.raw(), addr as *mut c_void, len, access as c_int) };
        let mr = NonNull::new(mr).ok_or_else(last_error)?;
        // SAFETY: a registered MR's keys are plain fields.
        let (lkey, rkey) = unsafe { ((*mr.as_ptr()).lkey, (*mr.as_ptr()).rkey) };
        Ok(Mr {
            mr,
            lkey,
            rkey,
            _pd: self.clone(),
        })
    }

    /// A shared receive queue of `max_wr` receives of up to `max_sge` entries.
    pub fn create_srq(self: &Arc<Pd>, max_wr: u32, max_sge: u32) -> io::Result<Srq> {
        let mut attr = ffi::ibv_srq_init_attr {
            srq_context: ptr::null_mut(),
            attr: ffi::ibv_srq_attr {
                max_wr,
                max_sge,
                srq_limit: 0,
            },
        };
        // SAFETY: the PD is live; attr is valid for the call.
        let srq = unsafe { ffi::ibv_create_srq(self.raw(), &mut attr) };
        Ok(Srq {
            srq: NonNull::new(srq).ok_or_else(last_error)?,
            max_wr: attr.attr.max_wr,
            max_sge,
            _pd: self.clone(),
        })
    }
}

impl Drop for Pd {
    fn drop(&mut self) {
        // SAFETY: every MR, SRQ and QP on it holds (or is held by one holding) an
        // Arc to it, so nothing uses it any more.
        unsafe { ffi::ibv_dealloc_pd(self.raw()) };
    }
}

/// A registered memory region.
pub struct Mr {
    mr: NonNull<ffi::ibv_mr>,
    pub lkey: u32,
    pub rkey: u32,
    _pd: Arc<Pd>,
}

// SAFETY: an MR is a thread-safe verbs object; we only read its keys.
unsafe impl Send for Mr {}
// SAFETY: as above.
unsafe impl Sync for Mr {}

impl Drop for Mr {
    fn drop(&mut self) {
        // SAFETY: registered by ibv_reg_mr; deregistered once.
        unsafe { ffi::ibv_dereg_mr(self.mr.as_ptr()) };
    }
}

// ---------------------------------------------------------------------------
// Completion channels, completion queues, shared receive queues
// ---------------------------------------------------------------------------

/// A completion channel: its fd turns readable when an armed CQ gets a
/// completion.
pub struct CompChannel(NonNull<ffi::ibv_comp_channel>);

impl CompChannel {
    pub fn fd(&self) -> RawFd {
        // SAFETY: the channel is live.
        unsafe { (*self.0.as_ptr()).fd }
    }
}

impl Drop for CompChannel {
    fn drop(&mut self) {
        // SAFETY: every CQ using it holds an Rc to it, so none is left.
        unsafe { ffi::ibv_destroy_comp_channel(self.0.as_ptr()) };
    }
}

/// A completion queue tied to a completion channel.
pub struct Cq {
    cq: NonNull<ffi::ibv_cq>,
    channel: Rc<CompChannel>,
    /// Events read from the channel and not yet acknowledged.
    unacked: std::cell::Cell<u32>,
}

/// One work completion.
#[repr(transparent)]
pub struct Wc(ffi::ibv_wc);

/// Work completion statuses the layer tells apart.
pub const WC_SUCCESS: u32 = ffi::ibv_wc_status::IBV_WC_SUCCESS;
pub const WC_FLUSH_ERR: u32 = ffi::ibv_wc_status::IBV_WC_WR_FLUSH_ERR;

/// Completion opcodes (valid only for successful completions).
pub const WC_OP_SEND: u32 = ffi::ibv_wc_opcode::IBV_WC_SEND;
pub const WC_OP_RDMA_WRITE: u32 = ffi::ibv_wc_opcode::IBV_WC_RDMA_WRITE;
pub const WC_OP_RDMA_READ: u32 = ffi::ibv_wc_opcode::IBV_WC_RDMA_READ;
pub const WC_OP_RECV: u32 = ffi::ibv_wc_opcode::IBV_WC_RECV;

impl Wc {
    pub fn wr_id(&self) -> u64 {
        self.0.wr_id
    }
    pub fn status(&self) -> u32 {
        self.0.status
    }
    pub fn opcode(&self) -> u32 {
        self.0.opcode
    }
    pub fn vendor_err(&self) -> u32 {
        self.0.vendor_err
    }
    pub fn byte_len(&self) -> u32 {
        self.0.byte_len
    }
    pub fn qp_num(&self) -> u32 {
        self.0.qp_num
    }
    /// The rkey the peer invalidated with a SEND with invalidate.
    pub fn invalidated_rkey(&self) -> Option<u32> {
        if self.0.wc_flags & ffi::ibv_wc_flags::IBV_WC_WITH_INV.0 != 0 {
            // SAFETY: the flag says the union holds the invalidated rkey (a u32
            // either way).
            Some(unsafe { self.0.imm_data_invalidated_rkey_union.invalidated_rkey })
        } else {
            None
        }
    }
    /// Immediate data (host order) when the peer sent some.
    pub fn imm_data(&self) -> Option<u32> {
        if self.0.wc_flags & ffi::ibv_wc_flags::IBV_WC_WITH_IMM.0 != 0 {
            // SAFETY: the flag says the union holds immediate data (a u32).
            Some(u32::from_be(unsafe {
                self.0.imm_data_invalidated_rkey_union.imm_data
            }))
        } else {
            None
        }
    }
}

/// A batch of work completions to poll into (on the stack, no allocation,
/// not even zeroed: only what the poll wrote is read).
pub struct WcBatch<const N: usize>([MaybeUninit<Wc>; N]);

impl<const N: usize> WcBatch<N> {
    pub fn new() -> Self {
        WcBatch([const { MaybeUninit::uninit() }; N])
    }
}

impl<const N: usize> Default for WcBatch<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// A status's text (libibverbs' own).
pub fn wc_status_str(status: u32) -> &'static str {
    // SAFETY: returns a pointer to a static string for any value ("unknown" for
    // values it does not know).
    unsafe {
        let p = ffi::ibv_wc_status_str(status);
        if p.is_null() {
            return "unknown";
        }
        CStr::from_ptr(p).to_str().unwrap_or("unknown")
    }
}

impl Cq {
    fn raw(&self) -> *mut ffi::ibv_cq {
        self.cq.as_ptr()
    }

    /// How many completions the CQ holds.
    pub fn capacity(&self) -> u32 {
        // SAFETY: the CQ is live; cqe is a plain field.
        unsafe { (*self.raw()).cqe.max(0) as u32 }
    }

    /// Grows the CQ to at least `cqe` entries.
    pub fn resize(&self, cqe: u32) -> io::Result<()> {
        // SAFETY: the CQ is live and polled only by this thread.
        verbs_check(unsafe { ffi::ibv_resize_cq(self.raw(), cqe.min(i32::MAX as u32) as c_int) })
    }

    /// Polls up to N completions into `batch`; returns them.
    pub fn poll<'b, const N: usize>(&self, batch: &'b mut WcBatch<N>) -> &'b [Wc] {
        // SAFETY: the CQ is live; the batch has room for N ibv_wc (Wc is
        // repr(transparent)).
        let n = unsafe {
            ffi::ibv_poll_cq(
                self.raw(),
                N as c_int,
                batch.0.as_mut_ptr() as *mut ffi::ibv_wc,
            )
        };
        let n = n.clamp(0, N as c_int) as usize;
        // SAFETY: ibv_poll_cq wrote the first n entries (it returns how many);
        // MaybeUninit<Wc> has Wc's layout.
        unsafe { std::slice::from_raw_parts(batch.0.as_ptr() as *const Wc, n) }
    }

    /// Asks for an event on the channel at the next completion.
    pub fn arm(&self) -> io::Result<()> {
        // SAFETY: the CQ is live.
        verbs_check(unsafe { ffi::ibv_req_notify_cq(self.raw(), 0) })
    }

    /// Reads every event waiting on the completion channel (non-blocking) and
    /// acknowledges them; returns how many there were.
    pub fn take_events(&self) -> u32 {
        let mut n = 0;
        loop {
            let mut cq: *mut ffi::ibv_cq = ptr::null_mut();
            let mut ctx: *mut c_void = ptr::null_mut();
            // SAFETY: the channel is live and non-blocking; cq/ctx receive the
            // event's CQ, which can only be this one (one CQ per channel).
            let rc = unsafe { ffi::ibv_get_cq_event(self.channel.0.as_ptr(), &mut cq, &mut ctx) };
            if rc != 0 {
                break;
            }
            n += 1;
        }
        if n > 0 {
            self.unacked.set(self.unacked.get() + n);
            // SAFETY: acknowledges events read from this CQ's channel.
            unsafe { ffi::ibv_ack_cq_events(self.raw(), self.unacked.replace(0)) };
        }
        n
    }

    pub fn channel_fd(&self) -> RawFd {
        self.channel.fd()
    }
}

impl Drop for Cq {
    fn drop(&mut self) {
        self.take_events();
        // SAFETY: every QP using it was destroyed first (the owner drops them
        // before the CQ) and all its events are acked.
        unsafe { ffi::ibv_destroy_cq(self.raw()) };
    }
}

/// A shared receive queue.
pub struct Srq {
    srq: NonNull<ffi::ibv_srq>,
    max_wr: u32,
    max_sge: u32,
    _pd: Arc<Pd>,
}

impl Srq {
    fn raw(&self) -> *mut ffi::ibv_srq {
        self.srq.as_ptr()
    }

    /// The number of receives it holds (may exceed what was asked).
    pub fn max_wr(&self) -> u32 {
        self.max_wr
    }

    /// Posts one receive per `(wr_id, sges)` (one or two entries each, at most
    /// what the SRQ was made for), linked into one call.
    pub fn post_recv(&self, wrs: &[(u64, RecvSges)]) -> io::Result<()> {
        if wrs.is_empty() {
            return Ok(());
        }
        if wrs.len() > MAX_RECV_BATCH {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "too many receives in one post",
            ));
        }
        // SAFETY: ibv_recv_wr is plain old data; zero is an empty request.
        let mut raw: [ffi::ibv_recv_wr; MAX_RECV_BATCH] = unsafe { std::mem::zeroed() };
        let base = raw.as_mut_ptr();
        for (i, (wr_id, sges)) in wrs.iter().enumerate() {
            if sges.is_empty() || sges.len() as u32 > self.max_sge {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a receive needs 1 to max_sge entries",
                ));
            }
            raw[i].wr_id = *wr_id;
            // Sge has ibv_sge's layout; the verbs only read the list, which
            // lives in `wrs` for the call.
            raw[i].sg_list = sges.as_ptr() as *mut ffi::ibv_sge;
            raw[i].num_sge = sges.len() as c_int;
            if i + 1 < wrs.len() {
                // SAFETY: i + 1 < MAX_RECV_BATCH.
                raw[i].next = unsafe { base.add(i + 1) };
            }
        }
        let mut bad: *mut ffi::ibv_recv_wr = ptr::null_mut();
        // SAFETY: the SRQ is live; the list and its entries live for the call,
        // which copies them into the queue.
        verbs_check(unsafe { ffi::ibv_post_srq_recv(self.raw(), base, &mut bad) })
    }
}

/// The scatter list of one receive: one or two entries.
pub type RecvSges = ArrayVec<Sge, 2>;

impl Drop for Srq {
    fn drop(&mut self) {
        // SAFETY: every QP using it was destroyed first (the owner's drop order).
        unsafe { ffi::ibv_destroy_srq(self.raw()) };
    }
}
