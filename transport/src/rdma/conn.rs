//! One RDMA connection (a CM id and its RC queue pair) living on one reactor:
//! posting work requests, and the callbacks ([`Handler`]) its completions and
//! CM events come back through.

use std::cell::{Cell, OnceCell, RefCell};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrayvec::ArrayVec;
use ferrite_reactor::mem::Buffer;

use super::group::Queues;
use super::sys::{self, CmId, QpCaps, SendWr, Sge, WrOp, MAX_PRIVATE_DATA};

/// The tag the layer's own drain marker carries; user tags must differ.
pub const RESERVED_TAG: u32 = u32::MAX;

// wr_id layout: bit 63 says "a receive on the SRQ" (then the low bits are the
// receive slot); otherwise bits 44..63 name the connection (slab index and
// generation), bits 32..44 count the send-queue entries the completion
// retires, bits 0..32 are the caller's tag.
const RECV_BIT: u64 = 1 << 63;
const COUNT_SHIFT: u32 = 32;
const COUNT_BITS: u32 = 12;
const KEY_SHIFT: u32 = COUNT_SHIFT + COUNT_BITS;
const KEY_BITS: u32 = 63 - KEY_SHIFT;
/// Most send-queue entries one connection may have outstanding.
pub const MAX_SEND_WR: u32 = (1 << COUNT_BITS) - 2;
/// Slab index bits of a connection key; the rest is a generation.
pub(crate) const INDEX_BITS: u32 = 14;
/// Most connections one reactor holds.
pub const MAX_CONNS_PER_REACTOR: usize = 1 << INDEX_BITS;

pub(crate) fn recv_wr_id(slot: u32) -> u64 {
    RECV_BIT | slot as u64
}

pub(crate) fn send_wr_id(key: u32, count: u32, tag: u32) -> u64 {
    debug_assert!(count < (1 << COUNT_BITS));
    debug_assert!((key as u64) < (1 << KEY_BITS));
    ((key as u64) << KEY_SHIFT) | ((count as u64) << COUNT_SHIFT) | tag as u64
}

/// What a wr_id says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WrId {
    Recv { slot: u32 },
    Send { key: u32, count: u32, tag: u32 },
}

pub(crate) fn decode_wr_id(wr_id: u64) -> WrId {
    if wr_id & RECV_BIT != 0 {
        WrId::Recv { slot: wr_id as u32 }
    } else {
        WrId::Send {
            key: ((wr_id >> KEY_SHIFT) & ((1 << KEY_BITS) - 1)) as u32,
            count: ((wr_id >> COUNT_SHIFT) & ((1 << COUNT_BITS) - 1)) as u32,
            tag: wr_id as u32,
        }
    }
}

/// Connection keys: slab index plus a generation, so a completion for a closed
/// connection never reaches the one that took its slot.
pub(crate) fn make_key(index: usize, generation: u32) -> u32 {
    (index as u32) | ((generation & ((1 << (KEY_BITS - INDEX_BITS)) - 1)) << INDEX_BITS)
}

pub(crate) fn key_index(key: u32) -> usize {
    (key & ((1 << INDEX_BITS) - 1)) as usize
}

/// Sizes of a connection's queue pair and the RDMA READ depths it offers.
#[derive(Debug, Clone, Copy)]
pub struct QpConfig {
    /// Send-queue entries the caller may have outstanding (at most
    /// [`MAX_SEND_WR`]; clamped to the device).
    pub max_send_wr: u32,
    /// Scatter/gather entries per send-side work request (clamped to the
    /// device and to 16).
    pub max_send_sge: u32,
    /// Bytes a SEND may carry inline (clamped to what the device grants).
    pub max_inline: u32,
    /// RDMA READs the peer may have outstanding against us (clamped to the
    /// peer's initiator depth and the device). A target can leave it 0.
    pub responder_resources: u8,
    /// RDMA READs we may have outstanding against the peer (clamped to the
    /// peer's responder resources and the device).
    pub initiator_depth: u8,
}

impl Default for QpConfig {
    fn default() -> Self {
        QpConfig {
            max_send_wr: 256,
            max_send_sge: 16,
            max_inline: 128,
            responder_resources: 16,
            initiator_depth: 16,
        }
    }
}

/// The peer's memory a RDMA READ or WRITE targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remote {
    pub addr: u64,
    pub rkey: u32,
}

/// What a work request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Send,
    /// SEND that also invalidates the peer's `rkey` (iSER, SRP).
    SendInvalidate {
        rkey: u32,
    },
    /// Our scatter list into the peer's memory.
    Write(Remote),
    /// The peer's memory into our scatter list.
    Read(Remote),
}

/// One send-side work request. Build with [`Wr::send`], [`Wr::write`],
/// [`Wr::read`]; SENDs and READs are signalled by default, WRITEs not (a
/// WRITE is usually followed by a signalled SEND in the same chain).
#[derive(Debug, Clone, Copy)]
pub struct Wr<'a> {
    pub tag: u32,
    pub op: Op,
    pub sges: &'a [Sge],
    pub signaled: bool,
    pub inline: bool,
    pub solicited: bool,
}

impl<'a> Wr<'a> {
    pub fn send(tag: u32, sges: &'a [Sge]) -> Wr<'a> {
        Wr {
            tag,
            op: Op::Send,
            sges,
            signaled: true,
            inline: false,
            solicited: false,
        }
    }

    pub fn send_invalidate(tag: u32, rkey: u32, sges: &'a [Sge]) -> Wr<'a> {
        Wr {
            op: Op::SendInvalidate { rkey },
            ..Wr::send(tag, sges)
        }
    }

    pub fn write(tag: u32, remote: Remote, sges: &'a [Sge]) -> Wr<'a> {
        Wr {
            op: Op::Write(remote),
            signaled: false,
            ..Wr::send(tag, sges)
        }
    }

    pub fn read(tag: u32, remote: Remote, sges: &'a [Sge]) -> Wr<'a> {
        Wr {
            op: Op::Read(remote),
            ..Wr::send(tag, sges)
        }
    }

    pub fn signaled(mut self, yes: bool) -> Self {
        self.signaled = yes;
        self
    }

    /// Copies the data into the work request (SEND only, up to the QP's
    /// inline size): the buffers are free again as soon as `post` returns.
    pub fn inline(mut self) -> Self {
        self.inline = true;
        self
    }

    pub fn solicited(mut self) -> Self {
        self.solicited = true;
        self
    }
}

/// A message received through the shared receive queue.
#[derive(Debug)]
pub struct Recv {
    /// The message (`buf.len()` is what arrived), or with
    /// [`RdmaConfig::recv_header_len`](super::RdmaConfig::recv_header_len) its
    /// first part. Yours to keep (it goes back to the pool when dropped); the
    /// layer posts fresh buffers in its place.
    pub buf: Buffer,
    /// In two-part mode, the rest of a message longer than the header part,
    /// starting at the buffer's first byte.
    pub data: Option<Buffer>,
    /// The rkey the peer invalidated (SEND with invalidate).
    pub invalidated_rkey: Option<u32>,
    /// Immediate data, when the peer sent some.
    pub imm: Option<u32>,
}

impl Recv {
    /// The whole message in one buffer. In two-part mode the data part is
    /// copied behind the header part, into the header buffer's spare room
    /// (an arena buffer holds [`SMALL_BUF_SIZE`](ferrite_reactor::mem::SMALL_BUF_SIZE)
    /// bytes at least); `None` when the message does not fit there.
    pub fn into_single(self) -> Option<Buffer> {
        let mut buf = self.buf;
        let Some(data) = self.data else {
            return Some(buf);
        };
        let head = buf.len();
        let total = head + data.len();
        if total > buf.capacity() {
            return None;
        }
        buf.set_len(total);
        buf[head..].copy_from_slice(&data);
        Some(buf)
    }
}

/// What a successful work request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    Send,
    Write,
    Read { bytes: u32 },
    Other(u32),
}

/// A work request that failed. Flushed ones ([`WcError::is_flush`]) were
/// never carried out because the connection went down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WcError {
    pub status: u32,
    pub vendor_err: u32,
}

impl WcError {
    pub fn is_flush(&self) -> bool {
        self.status == sys::WC_FLUSH_ERR
    }
}

impl fmt::Display for WcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (status {}, vendor error {:#x})",
            sys::wc_status_str(self.status),
            self.status,
            self.vendor_err
        )
    }
}

impl std::error::Error for WcError {}

/// Why a connection went down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// [`Conn::disconnect`] was called.
    Local,
    /// The peer disconnected (a DREQ, or it went away and the CM noticed).
    PeerDisconnected,
    /// A work request failed (its error was reported first) or the QP hit a
    /// fatal async event.
    Error,
    /// The RDMA device went away.
    DeviceRemoval,
    /// The active side never got connected (see [`ConnectFailure`]).
    ConnectFailed,
    /// Every connection of the reactor is being closed (shutdown).
    Shutdown,
}

/// Why an active connect failed.
#[derive(Debug)]
pub enum ConnectFailure<'a> {
    /// The peer rejected, with its private data (an SRP_LOGIN_REJ, an iSER
    /// reject). `status` is the IB CM reason (28: consumer defined).
    Rejected { status: i32, private_data: &'a [u8] },
    /// Address or route resolution failed, or the peer did not answer.
    Unreachable { event: &'static str, status: i32 },
    /// A local set-up step failed.
    Local(io::Error),
}

/// What a connection's owner is told. Every call comes on the connection's
/// reactor, from its poller, never from inside [`Conn::post`].
pub trait Handler {
    /// The connection is up. `private_data` is the peer's accept data on the
    /// active side (empty on the passive side). On the passive side this may
    /// come just before the first [`Handler::recv`] when a message beats the
    /// CM's ESTABLISHED event.
    fn established(&self, conn: &Conn, private_data: &[u8]) {
        let _ = (conn, private_data);
    }

    /// A message arrived.
    fn recv(&self, conn: &Conn, msg: Recv);

    /// A signalled work request finished, or any work request failed
    /// (flushed ones too, signalled or not).
    fn completed(&self, conn: &Conn, tag: u32, result: Result<Done, WcError>);

    /// Active side: the connection could not be made. `closed` follows.
    fn connect_failed(&self, conn: &Conn, why: ConnectFailure<'_>) {
        let _ = (conn, why);
    }

    /// The connection is going down: posting fails from now on; flushed
    /// completions of what was posted still come, then `closed`.
    fn disconnecting(&self, conn: &Conn, reason: CloseReason) {
        let _ = (conn, reason);
    }

    /// Everything posted has completed and the QP is destroyed: the last call.
    /// The layer drops its reference to the handler after it.
    fn closed(&self, conn: &Conn) {
        let _ = conn;
    }
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// Active side: resolving the address and route, or waiting for the
    /// peer's answer.
    Connecting,
    /// Passive side: accepted, waiting for ESTABLISHED.
    Accepting,
    Established,
    /// Disconnected or failed; flushing what was posted.
    Closing,
    Closed,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) struct ConnInner {
    pub(crate) id: CmId,
    pub(crate) queues: OnceCell<Rc<Queues>>,
    pub(crate) key: Cell<u32>,
    pub(crate) serial: u64,
    pub(crate) reactor: usize,
    pub(crate) state: Cell<State>,
    pub(crate) handler: RefCell<Option<Rc<dyn Handler>>>,
    pub(crate) caps: Cell<QpCaps>,
    pub(crate) config: QpConfig,
    /// Send-queue entries posted and not yet retired by a completion.
    pub(crate) sq_used: Cell<u32>,
    /// Unsignalled entries since the last signalled one (retired with it).
    pub(crate) unsignaled: Cell<u32>,
    /// Negotiated RDMA READ depths: ours against the peer, the peer's against us.
    pub(crate) initiator_depth: Cell<u8>,
    pub(crate) responder_resources: Cell<u8>,
    /// Active side: the private data to connect with, until it is sent.
    pub(crate) connect_data: RefCell<Option<ArrayVec<u8, MAX_PRIVATE_DATA>>>,
    /// When the drain marker was posted (ticks), for the drain timeout.
    pub(crate) drain_since: Cell<Option<u64>>,
    pub(crate) peer: Cell<Option<SocketAddr>>,
    pub(crate) local: Cell<Option<SocketAddr>>,
    /// Closed while its port was down: the peer is told (DREQ) and the CM id
    /// destroyed only once the port is active again (see `group`).
    pub(crate) disconnect_deferred: Cell<bool>,
    /// Held: the port was seen active at the last check (the DREQ goes at the
    /// second check in a row, once the interface's addresses and routes are
    /// surely back too).
    pub(crate) port_seen_back: Cell<bool>,
    /// A work request failed (not flushed): the close that follows, whoever
    /// starts it, asks whether the port is down.
    pub(crate) wr_failed: Cell<bool>,
    /// The device said IBV_EVENT_QP_LAST_WQE_REACHED for the QP: it takes no
    /// more receives from the shared receive queue.
    pub(crate) last_wqe: Cell<bool>,
    /// When the drain marker came back (ticks), while waiting for `last_wqe`.
    pub(crate) drained_at: Cell<Option<u64>>,
}

/// A handle on one connection (cheap to clone, stays on its reactor).
#[derive(Clone)]
pub struct Conn(pub(crate) Rc<ConnInner>);

impl ConnInner {
    pub(crate) fn new(id: CmId, reactor: usize, config: QpConfig) -> ConnInner {
        ConnInner {
            id,
            queues: OnceCell::new(),
            key: Cell::new(0),
            serial: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            reactor,
            state: Cell::new(State::Connecting),
            handler: RefCell::new(None),
            caps: Cell::new(QpCaps {
                max_send_wr: 0,
                max_send_sge: 0,
                max_inline_data: 0,
            }),
            config,
            sq_used: Cell::new(0),
            unsignaled: Cell::new(0),
            initiator_depth: Cell::new(0),
            responder_resources: Cell::new(0),
            connect_data: RefCell::new(None),
            drain_since: Cell::new(None),
            peer: Cell::new(None),
            local: Cell::new(None),
            disconnect_deferred: Cell::new(false),
            port_seen_back: Cell::new(false),
            wr_failed: Cell::new(false),
            last_wqe: Cell::new(false),
            drained_at: Cell::new(None),
        }
    }

    pub(crate) fn handler(&self) -> Option<Rc<dyn Handler>> {
        self.handler.borrow().clone()
    }
}

impl Conn {
    /// Posts `wrs` as one chain (one doorbell). Fails with `WouldBlock` when the
    /// send queue has no room for all of them (nothing is posted then), with
    /// `NotConnected` once the connection is going down.
    ///
    /// The memory the scatter lists name must stay untouched until the work
    /// request completes (for unsignalled ones: until a later signalled one
    /// does); inline SENDs copy it at once. The device reaches only the
    /// registered arena, so a mistake garbles buffer contents, never other
    /// memory.
    pub fn post(&self, wrs: &[Wr<'_>]) -> io::Result<()> {
        let c = &self.0;
        match c.state.get() {
            State::Established | State::Accepting => {}
            _ => return Err(io::Error::from(io::ErrorKind::NotConnected)),
        }
        if wrs.len() > sys::MAX_CHAIN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "too many work requests in one chain",
            ));
        }
        let caps = c.caps.get();
        // One entry stays free for the drain marker.
        let limit = caps.max_send_wr.saturating_sub(1);
        if c.sq_used.get() + wrs.len() as u32 > limit {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        let key = c.key.get();
        let mut pending = c.unsignaled.get();
        let mut raw: ArrayVec<SendWr<'_>, { sys::MAX_CHAIN }> = ArrayVec::new();
        for wr in wrs {
            if wr.tag == RESERVED_TAG {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "tag u32::MAX is reserved",
                ));
            }
            if wr.sges.len() > caps.max_send_sge as usize {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "more scatter/gather entries than the QP takes",
                ));
            }
            if wr.inline {
                let len: u64 = wr.sges.iter().map(|s| s.len as u64).sum();
                if len > caps.max_inline_data as u64 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "inline data larger than the QP takes",
                    ));
                }
            }
            let count = if wr.signaled {
                let n = pending + 1;
                pending = 0;
                n
            } else {
                pending += 1;
                0
            };
            raw.push(SendWr {
                wr_id: send_wr_id(key, count, wr.tag),
                op: match wr.op {
                    Op::Send => WrOp::Send,
                    Op::SendInvalidate { rkey } => WrOp::SendInvalidate { rkey },
                    Op::Write(r) => WrOp::RdmaWrite {
                        remote_addr: r.addr,
                        rkey: r.rkey,
                    },
                    Op::Read(r) => WrOp::RdmaRead {
                        remote_addr: r.addr,
                        rkey: r.rkey,
                    },
                },
                sges: wr.sges,
                signaled: wr.signaled,
                inline: wr.inline,
                solicited: wr.solicited,
            });
        }
        c.id.post_send(&raw)?;
        c.sq_used.set(c.sq_used.get() + wrs.len() as u32);
        c.unsignaled.set(pending);
        Ok(())
    }

    /// Starts an orderly close: the peer is told, what was posted flushes, and
    /// the handler gets `disconnecting` then `closed`. Idempotent.
    pub fn disconnect(&self) {
        super::group::begin_close(&self.0, CloseReason::Local);
    }

    pub fn state(&self) -> State {
        self.0.state.get()
    }

    pub fn is_established(&self) -> bool {
        self.0.state.get() == State::Established
    }

    /// A process-wide number naming this connection (for logs and listings).
    pub fn serial(&self) -> u64 {
        self.0.serial
    }

    /// The reactor the connection lives on.
    pub fn reactor(&self) -> usize {
        self.0.reactor
    }

    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.0.peer.get()
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.0.local.get()
    }

    pub fn qp_num(&self) -> Option<u32> {
        self.0.id.qp_num()
    }

    /// RDMA READs we may have outstanding (the negotiated initiator depth).
    pub fn max_rdma_reads(&self) -> u8 {
        self.0.initiator_depth.get()
    }

    /// RDMA READs the peer may have outstanding against us.
    pub fn peer_rdma_reads(&self) -> u8 {
        self.0.responder_resources.get()
    }

    /// Send-queue entries the caller may have outstanding.
    pub fn max_send_wr(&self) -> u32 {
        self.0.caps.get().max_send_wr.saturating_sub(1)
    }

    /// Send-queue entries in use now.
    pub fn send_wr_in_use(&self) -> u32 {
        self.0.sq_used.get()
    }

    pub fn max_send_sge(&self) -> u32 {
        self.0.caps.get().max_send_sge
    }

    pub fn max_inline(&self) -> u32 {
        self.0.caps.get().max_inline_data
    }

    fn device(&self) -> &super::device::Device {
        &self
            .0
            .queues
            .get()
            .expect("the connection has no device yet")
            .device
    }

    pub fn device_name(&self) -> Option<&str> {
        self.0.queues.get().map(|q| q.device.name())
    }

    /// The local key of every arena buffer on this connection's device.
    pub fn lkey(&self) -> u32 {
        self.device().lkey()
    }

    /// The entry for a buffer's first `buf.len()` bytes.
    pub fn sge(&self, buf: &Buffer) -> Sge {
        self.device().sge(buf)
    }

    /// The entry for `len` bytes at `offset` in a buffer.
    pub fn sge_range(&self, buf: &Buffer, offset: usize, len: usize) -> Sge {
        self.device().sge_range(buf, offset, len)
    }

    /// The entry for bytes in the arena's I/O region, `None` for other memory.
    pub fn sge_bytes(&self, bytes: &[u8]) -> Option<Sge> {
        self.device().sge_bytes(bytes)
    }

    /// The remote address and key of a buffer, for a peer to RDMA into or out
    /// of (initiator side: registers the arena for remote access on first use).
    pub fn remote(&self, buf: &Buffer) -> io::Result<Remote> {
        Ok(Remote {
            addr: buf.as_ptr() as u64,
            rkey: self.device().rkey()?,
        })
    }
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("serial", &self.0.serial)
            .field("state", &self.0.state.get())
            .field("peer", &self.0.peer.get())
            .field("qp_num", &self.qp_num())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wr_ids_round_trip() {
        for (key, count, tag) in [
            (0, 0, 0),
            (1, 1, 7),
            (
                make_key(MAX_CONNS_PER_REACTOR - 1, 31),
                MAX_SEND_WR + 1,
                u32::MAX - 1,
            ),
            (make_key(5, 1000), 3, 0xdead_beef),
        ] {
            let id = send_wr_id(key, count, tag);
            assert_eq!(id & RECV_BIT, 0);
            assert_eq!(decode_wr_id(id), WrId::Send { key, count, tag });
        }
        assert_eq!(decode_wr_id(recv_wr_id(12345)), WrId::Recv { slot: 12345 });
    }

    #[test]
    fn keys_keep_index_and_wrap_generation() {
        let k = make_key(77, 3);
        assert_eq!(key_index(k), 77);
        assert_ne!(make_key(77, 3), make_key(77, 4));
        // The generation wraps within the key's bits.
        assert_eq!(make_key(77, 1 << (KEY_BITS - INDEX_BITS)), make_key(77, 0));
        assert!((make_key(MAX_CONNS_PER_REACTOR - 1, u32::MAX) as u64) < (1 << KEY_BITS));
    }
}
