//! iSER connections on the RDMA layer: listeners for iSER portals, connect
//! requests checked and accepted on the least-loaded reactor with the iSER
//! private data, and the handler that feeds a connection's receives and
//! completions to its [`IserLink`] under the shared iSCSI connection logic.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;

use arrayvec::ArrayVec;
use ferrite_reactor as reactor;

use super::cm::{ConnectOptions, DeviceCaps};
use super::link::{Completion, IserLink, Verbs, Work, MAX_CHAIN, MAX_SGES, WRITE_TAG};
use crate::iscsi::conn::{Conn, PortalInfo, Transport};
use crate::iscsi::link::Link;
use crate::rdma;

/// An RDMA CM listener of one iSER portal.
pub(crate) struct IserListener {
    listener: rdma::Listener,
}

impl IserListener {
    pub fn bind(addr: SocketAddr) -> io::Result<IserListener> {
        Ok(IserListener {
            listener: rdma::Listener::bind(addr, 128)?,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    pub fn fd(&self) -> RawFd {
        self.listener.fd()
    }

    /// Takes the connect requests waiting: bad ones are rejected here, good
    /// ones handed to a reactor. Returns how many were taken.
    pub fn accept(&self, pg_tag: u16) -> usize {
        let mut n = 0;
        loop {
            let req = match self.listener.next_request() {
                Ok(Some(req)) => req,
                Ok(None) => return n,
                Err(e) => {
                    tracing::warn!("iSER listener {}: {e}", self.local_addr());
                    return n;
                }
            };
            n += 1;
            let device = DeviceCaps {
                remote_invalidate: true,
                max_reads_per_qp: rdma::QpConfig::default().initiator_depth,
            };
            let negotiated = ConnectOptions::negotiate(
                req.private_data(),
                req.peer_responder_resources(),
                device,
            );
            let (options, accept) = match negotiated {
                Ok(ok) => ok,
                Err(e) => {
                    tracing::info!(
                        "iSER connect request from {:?} rejected: {e}",
                        req.peer_addr()
                    );
                    let _ = req.reject(&[]);
                    continue;
                }
            };
            let target = crate::iscsi::least_loaded_reactor(reactor::handle().count());
            let msg = Box::new(move || accept_here(req, pg_tag, options, accept.encode()));
            if let Err(e) = reactor::send(target, msg) {
                tracing::error!("cannot hand an iSER connection to reactor {target}: {e}");
            }
        }
    }
}

/// Accepts on this reactor and puts the connection in its iSCSI poll group.
fn accept_here(
    req: rdma::ConnectRequest,
    pg_tag: u16,
    options: ConnectOptions,
    private_data: [u8; 4],
) {
    let (Some(local), Some(peer)) = (req.local_addr(), req.peer_addr()) else {
        let _ = req.reject(&[]);
        return;
    };
    let handler = Rc::new(IserHandler {
        conn: RefCell::new(None),
    });
    let config = rdma::QpConfig {
        initiator_depth: options.max_outstanding_reads,
        // The target never lets the initiator RDMA READ from it.
        responder_resources: 0,
        ..rdma::QpConfig::default()
    };
    let rconn = match req.accept(&config, &private_data, handler.clone()) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("iSER accept from {peer}: {e}");
            return;
        }
    };
    let link = IserLink::new(
        Box::new(RdmaVerbs(rconn.clone())),
        rconn.max_rdma_reads(),
        rconn.max_send_wr(),
        (rconn.max_send_sge() as usize).min(MAX_SGES),
        options.send_with_invalidate,
    );
    let portal = PortalInfo {
        portal_group_tag: pg_tag,
        local,
        peer,
        transport: Transport::Iser,
    };
    let conn = crate::iscsi::add_link(Link::Iser(Box::new(link)), portal);
    tracing::debug!(
        "iSER conn {} from {peer}: {} RDMA READs, send with invalidate {}",
        conn.id,
        rconn.max_rdma_reads(),
        options.send_with_invalidate
    );
    *handler.conn.borrow_mut() = Some(conn);
}

/// The RDMA layer's callbacks for one iSER connection.
struct IserHandler {
    /// Until the RDMA connection is closed (it holds the buffers of what is
    /// still posted).
    conn: RefCell<Option<Rc<Conn>>>,
}

impl IserHandler {
    fn conn(&self) -> Option<Rc<Conn>> {
        self.conn.borrow().clone()
    }
}

impl rdma::Handler for IserHandler {
    fn recv(&self, c: &rdma::Conn, msg: rdma::Recv) {
        if let Some(conn) = self.conn() {
            // The link takes whole messages: with two-part receives (which
            // SRP needs, see `crate::rdma_config`) the part behind the
            // header is copied back behind it.
            match msg.into_single() {
                Some(buf) => conn.iser_recv(buf),
                None => {
                    tracing::info!(
                        "iSER conn {}: message larger than a receive buffer",
                        conn.id
                    );
                    c.disconnect();
                }
            }
        }
    }

    fn completed(&self, _c: &rdma::Conn, tag: u32, result: Result<rdma::Done, rdma::WcError>) {
        let Some(conn) = self.conn() else {
            return;
        };
        let done = match result {
            Ok(_) => Completion::Ok,
            Err(e) => {
                if !e.is_flush() {
                    tracing::info!("iSER conn {}: work request failed: {e}", conn.id);
                }
                Completion::Failed
            }
        };
        conn.iser_completed(tag, done);
    }

    fn disconnecting(&self, _c: &rdma::Conn, reason: rdma::CloseReason) {
        if let Some(conn) = self.conn() {
            conn.close(&format!("RDMA connection going down ({reason:?})"));
        }
    }

    fn closed(&self, _c: &rdma::Conn) {
        // Everything posted has completed: the buffers may go now.
        self.conn.borrow_mut().take();
    }
}

/// The link's work requests as the RDMA layer's.
struct RdmaVerbs(rdma::Conn);

impl Verbs for RdmaVerbs {
    fn post(&self, chain: &[Work<'_>]) -> io::Result<()> {
        let c = &self.0;
        let mut sges: ArrayVec<ArrayVec<rdma::Sge, MAX_SGES>, MAX_CHAIN> = ArrayVec::new();
        for w in chain {
            let mut list = ArrayVec::new();
            match w {
                Work::Write { from, .. } | Work::Read { into: from, .. } => {
                    for s in from {
                        list.push(c.sge_range(s.buf, s.offset, s.len));
                    }
                }
                Work::Send { msg, .. } => list.push(c.sge_range(msg.buf, msg.offset, msg.len)),
            }
            sges.push(list);
        }
        let mut wrs: ArrayVec<rdma::Wr<'_>, MAX_CHAIN> = ArrayVec::new();
        for (w, list) in chain.iter().zip(&sges) {
            wrs.push(match w {
                Work::Write { to, .. } => rdma::Wr::write(
                    WRITE_TAG,
                    rdma::Remote {
                        addr: to.va,
                        rkey: to.stag,
                    },
                    list,
                ),
                Work::Send {
                    tag,
                    invalidate: Some(rkey),
                    ..
                } => rdma::Wr::send_invalidate(*tag, *rkey, list),
                Work::Send { tag, .. } => rdma::Wr::send(*tag, list),
                Work::Read { tag, from, .. } => rdma::Wr::read(
                    *tag,
                    rdma::Remote {
                        addr: from.va,
                        rkey: from.stag,
                    },
                    list,
                ),
            });
        }
        c.post(&wrs)
    }

    fn disconnect(&self) {
        self.0.disconnect();
    }
}
