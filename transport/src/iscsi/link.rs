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
use crate::tcp::Socket;

/// How a connection's commands move their data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DataPath {
    /// Data-In PDUs for reads, R2T and Data-Out for writes (iSCSI/TCP).
    Pdus,
}

/// A TCP connection's socket and framing.
pub(crate) struct TcpLink {
    pub sock: Socket,
    pub recv: Receiver,
    pub send: Sender,
}

/// What carries one connection.
pub(crate) enum Link {
    Tcp(TcpLink),
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
        }
    }

    /// The socket to poll, for links the TCP poll group serves.
    pub fn fd(&self) -> Option<RawFd> {
        match self {
            Link::Tcp(t) => Some(t.sock.as_raw_fd()),
        }
    }

    /// The TCP parts, for a connection moving to another reactor.
    pub fn as_tcp(&self) -> Option<&TcpLink> {
        match self {
            Link::Tcp(t) => Some(t),
        }
    }

    // ---- receiving ----

    /// Starts handling a readiness event.
    pub fn begin(&mut self) {
        match self {
            Link::Tcp(t) => t.recv.begin(),
        }
    }

    /// Receives until one event (see [`RecvEvent`]).
    pub fn poll(&mut self, tasks: &mut dyn TaskDataSlots) -> RecvEvent {
        match self {
            Link::Tcp(t) => t.recv.poll(&mut t.sock, tasks),
        }
    }

    /// The header of the PDU being received.
    pub fn header(&self) -> &Header {
        match self {
            Link::Tcp(t) => &t.recv.header,
        }
    }

    /// Says where the data of the header just returned goes.
    pub fn set_dest(&mut self, dest: Dest) {
        match self {
            Link::Tcp(t) => t.recv.set_dest(dest),
        }
    }

    /// The data of the last PDU whose destination was `Scratch`.
    pub fn scratch(&self) -> &[u8] {
        match self {
            Link::Tcp(t) => t.recv.scratch(),
        }
    }

    /// Input received and not yet framed into PDUs.
    pub fn buffered(&self) -> usize {
        match self {
            Link::Tcp(t) => t.recv.buffered(),
        }
    }

    /// Turns digests on or off (both directions), once the login settled them.
    pub fn set_digests(&mut self, digests: Digests) {
        match self {
            Link::Tcp(t) => {
                t.recv.digests = digests;
                t.send.digests = digests;
            }
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
        }
    }

    /// Closes the connection once the last queued PDU is out.
    pub fn mark_close(&mut self) {
        match self {
            Link::Tcp(t) => t.send.mark_close(),
        }
    }

    /// Nothing waits to be sent.
    pub fn is_empty(&self) -> bool {
        match self {
            Link::Tcp(t) => t.send.is_empty(),
        }
    }

    /// Drops what is queued and ends the connection.
    pub fn shutdown(&mut self, on_release: &mut dyn FnMut(usize)) {
        match self {
            Link::Tcp(t) => {
                t.sock.shutdown();
                t.send.clear(on_release);
            }
        }
    }
}
