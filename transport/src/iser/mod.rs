//! iSER (RFC 7145): iSCSI over RDMA, the protocol side, free of verbs so that
//! it can be tested without an RDMA device.
//!
//! - [`header`]: the 28-byte iSER header in front of every iSCSI PDU sent in
//!   an RDMA SEND (opcode, the Write/Read STag-valid bits, the initiator's
//!   write and read STags and base addresses), the Hello and HelloReply
//!   messages, and [`header::parse_message`], which splits a received SEND
//!   into iSER header, BHS, AHS and data in place.
//! - [`cm`]: the private data of the RDMA CM connect request and accept, and
//!   what the target uses of it (send with invalidate, zero-based addresses).
//!
//! The iSCSI session and login logic is `crate::iscsi`'s, shared with TCP; the
//! login negotiates the iSER keys there (`RDMAExtensions`,
//! `TargetRecvDataSegmentLength`, `InitiatorRecvDataSegmentLength`,
//! `MaxOutstandingUnexpectedPDUs`, see `iscsi::params`).
//!
//! How an iSER connection moves data (RFC 7145 §7), for the connection driver
//! built on the RDMA layer:
//!
//! ```text
//! RECV completion  -> parse_message: iSER header + BHS (+ AHS, data) in place
//! SCSI read        -> RDMA WRITE of the data to (read STag, read VA)
//!                     chained with the SEND of the SCSI Response
//! SCSI write       -> immediate data from the command's SEND, the rest by
//!                     RDMA READ from (write STag, write VA + offset), at most
//!                     the initiator's ORD (CM initiator depth) at once; no R2T
//! other PDUs       -> SEND of iSER header (no STags) + BHS + data
//! ```

/// The largest data segment an initiator may SEND us (immediate data, text):
/// what an RDMA receive buffer (the arena's 8 KiB ones) holds after the iSER
/// header and the BHS.
pub const TARGET_RECV_DATA_SEGMENT_LENGTH: u32 = (ferrite_reactor::mem::SMALL_BUF_SIZE
    - header::ISER_HEADER_LEN
    - crate::iscsi::pdu::BHS_LEN) as u32;

pub mod cm;
pub(crate) mod driver;
pub mod header;
pub(crate) mod link;

pub use cm::{CmAccept, CmRequest, CmRequestError, ConnectOptions, DeviceCaps};
pub use header::{
    parse_message, Hello, HelloReply, IserHeader, IserMessage, IserOpcode, MessageError,
    RemoteBuffer, ISER_HEADER_LEN,
};
