//! The passive side of RDMA CM: listeners and the connect requests they
//! receive, which are accepted (on the reactor that will own the connection)
//! or rejected (with private data).

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;

use arrayvec::ArrayVec;

use super::conn::{Conn, Handler, QpConfig};
use super::sys::{CmEventKind, CmId, EventChannel, MAX_PRIVATE_DATA};

/// An RDMA CM listener (`RDMA_PS_TCP`) on an address and port, with its own
/// non-blocking event channel. Poll it with [`Listener::next_request`]; watch
/// [`Listener::fd`] (for instance with `ferrite_reactor::register_interrupt`)
/// so a sleeping reactor wakes when a request arrives.
pub struct Listener {
    // The id before the channel: it must go first.
    id: CmId,
    channel: EventChannel,
    addr: SocketAddr,
}

impl Listener {
    /// Listens on `addr` (a port of 0 picks one). RDMA CM needs an address of
    /// an RDMA-capable interface (or the wildcard), not loopback.
    pub fn bind(addr: SocketAddr, backlog: i32) -> io::Result<Listener> {
        super::device::pin_devices()?;
        let channel = EventChannel::new()?;
        let id = CmId::new(&channel)?;
        id.bind(&addr)?;
        id.listen(backlog)?;
        let addr = id.local_addr().unwrap_or(addr);
        Ok(Listener { id, channel, addr })
    }

    /// The address listened on (with the port picked, if it was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Readable when events wait.
    pub fn fd(&self) -> RawFd {
        self.channel.fd()
    }

    /// The next connect request, without blocking. Other events on the
    /// listener (device removal, address change) are logged and skipped.
    pub fn next_request(&self) -> io::Result<Option<ConnectRequest>> {
        loop {
            let Some(mut ev) = self.channel.next_event()? else {
                return Ok(None);
            };
            if ev.kind != CmEventKind::ConnectRequest {
                if ev.id_addr == self.id.addr() {
                    tracing::warn!("RDMA listener {}: {:?}", self.addr, ev.kind);
                } else {
                    tracing::debug!(
                        "RDMA listener {}: {:?} for a connection not yet taken",
                        self.addr,
                        ev.kind
                    );
                }
                continue;
            }
            let Some(id) = ev.new_id.take() else {
                continue;
            };
            return Ok(Some(ConnectRequest {
                local: id.local_addr(),
                peer: id.peer_addr(),
                device: id.verbs().map(|v| v.name()),
                id,
                private_data: ev.private_data,
                initiator_depth: ev.initiator_depth,
                responder_resources: ev.responder_resources,
            }));
        }
    }
}

/// A peer asking to connect. Accept it on the reactor that will own the
/// connection (it may be sent there: it is `Send`), or reject it; dropping it
/// unanswered destroys the id (the peer times out).
pub struct ConnectRequest {
    id: CmId,
    private_data: ArrayVec<u8, MAX_PRIVATE_DATA>,
    initiator_depth: u8,
    responder_resources: u8,
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    device: Option<String>,
}

impl ConnectRequest {
    /// The peer's private data (as the CM delivered it: for RoCE and IB often
    /// zero-padded past what the peer sent, e.g. 56 bytes for an SRP login).
    pub fn private_data(&self) -> &[u8] {
        &self.private_data
    }

    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    /// The RDMA device the request came in on.
    pub fn device_name(&self) -> Option<&str> {
        self.device.as_deref()
    }

    /// RDMA READs the peer wants to have outstanding against us.
    pub fn peer_initiator_depth(&self) -> u8 {
        self.initiator_depth
    }

    /// RDMA READs the peer lets us have outstanding against it.
    pub fn peer_responder_resources(&self) -> u8 {
        self.responder_resources
    }

    /// Accepts on the calling reactor: makes the QP on this reactor's CQ and
    /// SRQ for the device, answers with `private_data` (at most 196 bytes fit a
    /// reply) and the READ depths (`config`'s, bounded by the peer's and the
    /// device's) with `rnr_retry_count` 7. The handler hears `established`
    /// when the peer confirms.
    pub fn accept(
        self,
        config: &QpConfig,
        private_data: &[u8],
        handler: Rc<dyn Handler>,
    ) -> io::Result<Conn> {
        super::group::accept_here(
            self.id,
            config,
            self.initiator_depth,
            self.responder_resources,
            private_data,
            handler,
        )
    }

    /// Rejects with `private_data` (an SRP_LOGIN_REJ, for instance; at most
    /// 148 bytes fit a reject).
    pub fn reject(self, private_data: &[u8]) -> io::Result<()> {
        self.id.reject(private_data)
    }
}

impl std::fmt::Debug for ConnectRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectRequest")
            .field("peer", &self.peer)
            .field("local", &self.local)
            .field("device", &self.device)
            .field("private_data_len", &self.private_data.len())
            .finish()
    }
}
