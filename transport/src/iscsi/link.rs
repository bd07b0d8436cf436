//! The seam between a connection's iSCSI logic ([`conn`](super::conn)) and
//! what carries its PDUs and SCSI data: the one place TCP and iSER differ.
//!
//! Both deliver received PDUs the same way — a header first, then, once the
//! connection has said where its data goes ([`Dest`]), the whole PDU — and
//! take PDUs to send the same way. They differ in how a command's data
//! moves ([`DataPath`]): over TCP, read data goes out as Data-In PDUs and
//! write data beyond the unsolicited part is asked for with R2Ts; over iSER
//! the target moves it itself with RDMA WRITE and RDMA READ (RFC 7145 §7).
//!
//! An enum rather than a trait object, so the TCP path costs one predictable
//! branch per call and nothing else.

use std::os::fd::{AsRawFd, RawFd};

use ferrite_lib::scsi::TaskData;

use super::pdu::Bhs;
use super::wire::{
    Dest, Digests, Flushed, Header, OutData, Receiver, RecvEvent, Sender, TaskDataSlots,
};
use crate::iser::link::IserLink;
use crate::iser::IserHeader;
use crate::tcp::Socket;

/// How a connection's commands move their data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DataPath {
    /// Data-In PDUs for reads, R2T and Data-Out for writes (iSCSI/TCP).
    Pdus,
    /// RDMA WRITE of read data before the SCSI Response, RDMA READ of write
    /// data (iSER).
    Rdma,
}

/// A TCP connection's socket and framing.
pub(crate) struct TcpLink {
    pub sock: Socket,
    pub recv: Receiver,
    pub send: Sender,
}

/// What carries one connection. The TCP parts sit inline (no pointer to
/// follow on the hot path); the iSER ones are boxed.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Link {
    Tcp(TcpLink),
    // Made by the iSER connection driver on the RDMA layer (not in yet).
    #[allow(dead_code)]
    Iser(Box<IserLink>),
}

impl Link {
    pub fn tcp(sock: Socket) -> Link {
        Link::Tcp(TcpLink {
            sock,
            recv: Receiver::new(),
            send: Sender::new(),
        })
    }

    /// How commands on this connection move their data.
    pub fn data_path(&self) -> DataPath {
        match self {
            Link::Tcp(_) => DataPath::Pdus,
            Link::Iser(_) => DataPath::Rdma,
        }
    }

    /// The socket to poll, for links the TCP poll group serves.
    pub fn fd(&self) -> Option<RawFd> {
        match self {
            Link::Tcp(t) => Some(t.sock.as_raw_fd()),
            Link::Iser(_) => None,
        }
    }

    /// The TCP parts, for a connection moving to another reactor.
    pub fn as_tcp(&self) -> Option<&TcpLink> {
        match self {
            Link::Tcp(t) => Some(t),
            Link::Iser(_) => None,
        }
    }

    /// The iSER header of the PDU being handled (none over TCP).
    pub fn iser_header(&self) -> IserHeader {
        match self {
            Link::Tcp(_) => IserHeader::default(),
            Link::Iser(l) => l.iser_header(),
        }
    }

    /// The iSER parts, for the RDMA data path.
    pub fn as_iser(&mut self) -> Option<&mut IserLink> {
        match self {
            Link::Tcp(_) => None,
            Link::Iser(l) => Some(l),
        }
    }

    // ---- receiving ----

    /// Starts handling a readiness event.
    pub fn begin(&mut self) {
        match self {
            Link::Tcp(t) => t.recv.begin(),
            Link::Iser(l) => l.begin(),
        }
    }

    /// Receives until one event (see [`RecvEvent`]).
    pub fn poll(&mut self, tasks: &mut dyn TaskDataSlots) -> RecvEvent {
        match self {
            Link::Tcp(t) => t.recv.poll(&mut t.sock, tasks),
            Link::Iser(l) => l.poll(tasks),
        }
    }

    /// The header of the PDU being received.
    pub fn header(&self) -> &Header {
        match self {
            Link::Tcp(t) => &t.recv.header,
            Link::Iser(l) => l.header(),
        }
    }

    /// Says where the data of the header just returned goes.
    pub fn set_dest(&mut self, dest: Dest) {
        match self {
            Link::Tcp(t) => t.recv.set_dest(dest),
            Link::Iser(l) => l.set_dest(dest),
        }
    }

    /// The data of the last PDU whose destination was `Scratch`.
    pub fn scratch(&self) -> &[u8] {
        match self {
            Link::Tcp(t) => t.recv.scratch(),
            Link::Iser(l) => l.scratch(),
        }
    }

    /// Input received and not yet framed into PDUs.
    pub fn buffered(&self) -> usize {
        match self {
            Link::Tcp(t) => t.recv.buffered(),
            Link::Iser(l) => l.buffered(),
        }
    }

    /// Turns digests on or off (both directions), once the login settled them.
    pub fn set_digests(&mut self, digests: Digests) {
        match self {
            Link::Tcp(t) => {
                t.recv.digests = digests;
                t.send.digests = digests;
            }
            // iSER has no digests (the login forces None).
            Link::Iser(_) => {}
        }
    }

    // ---- sending ----

    /// Queues a PDU; `release` is the task slot to free once it is out.
    pub fn push(
        &mut self,
        bhs: Bhs,
        data: OutData,
        release: Option<usize>,
        task_data: Option<&TaskData>,
    ) {
        match self {
            Link::Tcp(t) => {
                t.send.push(bhs, data, release, task_data);
            }
            Link::Iser(l) => l.push(bhs, data, release),
        }
    }

    /// Sends what is queued, as far as the link takes it now.
    pub fn flush(
        &mut self,
        tasks: &dyn TaskDataSlots,
        on_release: &mut dyn FnMut(usize),
    ) -> std::io::Result<Flushed> {
        match self {
            Link::Tcp(t) => t.send.flush(&mut t.sock, tasks, on_release),
            Link::Iser(l) => l.flush(tasks, on_release),
        }
    }

    /// Closes the connection once the last queued PDU is out.
    pub fn mark_close(&mut self) {
        match self {
            Link::Tcp(t) => t.send.mark_close(),
            Link::Iser(l) => l.mark_close(),
        }
    }

    /// Nothing waits to be sent.
    pub fn is_empty(&self) -> bool {
        match self {
            Link::Tcp(t) => t.send.is_empty(),
            Link::Iser(l) => l.is_empty(),
        }
    }

    /// Drops what is queued and ends the connection.
    pub fn shutdown(&mut self, on_release: &mut dyn FnMut(usize)) {
        match self {
            Link::Tcp(t) => {
                t.sock.shutdown();
                t.send.clear(on_release);
            }
            Link::Iser(l) => l.shutdown(on_release),
        }
    }
}
