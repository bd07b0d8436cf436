//! The RDMA layer iSER and SRP stand on: RDMA CM listeners and connections,
//! queue pairs on per-reactor completion and shared receive queues, the
//! buffer arena registered once per device, and a reactor poller that routes
//! completions back to their connection.
//!
//! All FFI (libibverbs, librdmacm through `rdma-sys`) is in [`sys`]; the rest
//! is safe code.
//!
//! # Model
//!
//! * **Devices** ([`Device`]): per RDMA device one protection domain, and the
//!   arena's I/O region (every pool [`Buffer`](ferrite_reactor::mem::Buffer))
//!   registered once with local access. [`Conn::sge`] turns a buffer into a
//!   scatter/gather entry: no registration per I/O. Initiators that let the
//!   peer RDMA into their buffers get an rkey from [`Conn::remote`] (the
//!   region is then registered a second time with remote access; a target
//!   never does this).
//! * **Per reactor and device** (made on the reactor's first connection on
//!   that device): one CQ shared by all the reactor's QPs (grown as QPs are
//!   added), one SRQ kept full of arena buffers of [`RdmaConfig::recv_len`]
//!   bytes (or, with [`RdmaConfig::recv_header_len`], two-part receives: a
//!   header buffer and a data buffer, so 8 KiB of immediate data after an
//!   iSER or SRP header lands at the start of its own small buffer), a
//!   completion channel registered as a reactor interrupt, and one
//!   RDMA CM event channel per reactor for its connections. The `"rdma"`
//!   poller reaps up to 128 completions per call in batches of 32, arms the
//!   CQ when it goes idle (reading and acknowledging old events first, then
//!   polling once more), refills the SRQ, and every millisecond reads CM
//!   events, async events and drain time-outs.
//! * **Connections** ([`Conn`]): one RC QP each, living on one reactor.
//!   Completions come back to the connection's [`Handler`] on that reactor:
//!   `wr_id` carries the connection's slab key (with a generation) and the
//!   caller's 32-bit tag; receives are routed by QP number. No heap
//!   allocation per I/O.
//!
//! # Passive side (a target)
//!
//! ```ignore
//! // On the control reactor: listen and watch the listener's fd.
//! let listener = rdma::Listener::bind("169.254.77.1:3260".parse()?, 128)?;
//! reactor::register_interrupt(listener.fd())?;
//! // In a poller: take requests, hand each to a reactor (ConnectRequest is Send).
//! while let Some(req) = listener.next_request()? {
//!     if !acceptable(req.private_data()) {
//!         req.reject(&my_reject_data)?;          // e.g. SRP_LOGIN_REJ
//!         continue;
//!     }
//!     reactor::send(target, Box::new(move || {
//!         let handler: Rc<dyn rdma::Handler> = Rc::new(MyConn::new());
//!         match req.accept(&rdma::QpConfig::default(), &my_accept_data, handler) {
//!             Ok(conn) => { /* keep conn, or get it in the callbacks */ }
//!             Err(e) => tracing::warn!("accept: {e}"),
//!         }
//!     }))?;
//! }
//! ```
//!
//! # Active side (load generators, tests)
//!
//! ```ignore
//! let conn = rdma::connect(addr, &rdma::QpConfig::default(), &login_data, handler)?;
//! // handler.established(conn, peer_private_data) or handler.connect_failed(conn, why)
//! ```
//!
//! # Posting
//!
//! ```ignore
//! // RDMA WRITE of the data to the peer's buffer, then the response by SEND;
//! // one doorbell, one signalled completion (tag 42) for both.
//! let data = [conn.sge(&buf)];
//! let rsp = [conn.sge(&rsp_buf)];
//! conn.post(&[
//!     rdma::Wr::write(42, rdma::Remote { addr: va, rkey: stag }, &data),
//!     rdma::Wr::send(42, &rsp),     // or Wr::send_invalidate(42, stag, &rsp)
//! ])?;
//! // RDMA READ of the peer's data into ours (signalled):
//! conn.post(&[rdma::Wr::read(7, rdma::Remote { addr, rkey }, &[conn.sge(&dst)])])?;
//! ```
//!
//! `post` fails with `WouldBlock` when the send queue lacks room (retry after
//! completions) and `NotConnected` once the connection is going down. Keep
//! the memory of a work request untouched until it completes. Tags are the
//! caller's (`u32::MAX` is reserved). At most 16 work requests per chain and
//! [`Conn::max_send_sge`] entries per request; stay within
//! [`Conn::max_rdma_reads`] outstanding READs.
//!
//! # Life of a connection
//!
//! `established` → any number of `recv` / `completed` → `disconnecting` (peer
//! disconnect, an error completion, a fatal QP event, device removal; not
//! for the caller's own [`Conn::disconnect`]) → flushed `completed`s (errors
//! with [`WcError::is_flush`]) → `closed`. Closing moves the QP to error,
//! posts a drain marker behind everything and destroys the QP when it comes
//! back and the device has raised `IBV_EVENT_QP_LAST_WQE_REACHED` for it (the
//! verbs rule for a QP on an SRQ; 0.5 s after the marker without it, 5 s
//! without the marker), so every tag posted gets exactly one completion
//! (signalled ones, and failed ones) before `closed`. Handler calls always
//! come from the poller, never from inside `post` or `disconnect`.
//!
//! # The port going down
//!
//! A connection closed while its port is not ACTIVE (the link under a RoCE
//! device down: its posts fail with "local QP operation error") does not
//! tell the peer then: its QP is flushed and destroyed as usual and its
//! handler hears `closed`, but the DREQ (and the CM id's destruction, which
//! would send one) waits until the port is active again. A CM message sent
//! while the port is down fails on the device's QP1, and Debian 12's
//! soft-RoCE never recovers QP1 from that: the node would take no RDMA CM
//! connection again, from anyone. Listeners need nothing: the address and
//! GIDs stay through a link outage and the listener's id gets no event.
//!
//! # Known limits
//!
//! * Debian 12's rxe does not raise `IBV_EVENT_QP_LAST_WQE_REACHED`, so there
//!   a closing QP waits 0.5 s after its drain for nothing, and a receive it
//!   had taken for a message still arriving when it died is not returned (its
//!   slot stays out of the SRQ).
//! * A connect request answered (accepted or rejected) while the port is
//!   down still sends its CM reply then.
//! * Async QP events (fatal, access error) close the connection on its
//!   reactor; no test provokes one. SEND with invalidate is posted as the
//!   verbs define it but only a real initiator (ib_iser, ib_srp with FRWR)
//!   can check it: the layer makes no invalidatable keys of its own.
//! * One event channel per listener; the listener reports its own device
//!   removal in the log only.

pub mod cm;
pub mod conn;
pub mod device;
pub mod group;
pub mod sys;

pub use cm::{ConnectRequest, Listener};
pub use conn::{
    CloseReason, Conn, ConnectFailure, Done, Handler, Op, QpConfig, Recv, Remote, State, WcError,
    Wr, MAX_CONNS_PER_REACTOR, MAX_SEND_WR, RESERVED_TAG,
};
pub use device::{devices, pin_devices, Device};
pub use group::{
    close_all_local, configure, connect, local_conns, local_stats, LocalStats, RdmaConfig,
};
pub use sys::{live_counts, Sge, MAX_CHAIN, MAX_PRIVATE_DATA, MAX_SGE};
