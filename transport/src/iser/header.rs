//! The iSER header (RFC 7145 §9.2) and the Hello/HelloReply messages
//! (§9.3, §9.4), and the split of a received SEND into its parts.
//!
//! Every iSCSI PDU travels in one RDMA SEND behind a 28-byte iSER header:
//!
//! ```text
//! byte 0      opcode (bits 7-4: 1 = iSCSI control-type PDU, 2 = Hello,
//!             3 = HelloReply), W = 0x08 (write STag valid), R = 0x04 (read
//!             STag valid), other bits reserved
//! bytes 1-3   reserved
//! bytes 4-7   write STag    (the initiator's buffer the target RDMA READs)
//! bytes 8-15  write base VA
//! bytes 16-19 read STag     (the initiator's buffer the target RDMA WRITEs)
//! bytes 20-27 read base VA
//! ```
//!
//! The initiator sets W/R on SCSI commands with solicited write data / read
//! data; the target never advertises a buffer, so its headers carry the
//! opcode alone. No digests and no padding on the wire: the SEND's length says
//! where the PDU ends (a sender that pads by up to 3 bytes is accepted).
//!
//! Receiver rules: reserved bits and bytes are ignored (as Linux isert does);
//! an unknown opcode, a truncated PDU or one longer than its lengths say is an
//! error, and the connection that sent it is ended.

use std::fmt;

use crate::iscsi::pdu::{self, Bhs, BHS_LEN};

/// Length of the iSER header in front of each iSCSI PDU.
pub const ISER_HEADER_LEN: usize = 28;
/// Length of a Hello or HelloReply message.
pub const HELLO_LEN: usize = 12;
/// The iSER protocol version of RFC 7145 (the only one there is).
pub const ISER_VERSION: u8 = 1;

const OPCODE_SHIFT: u8 = 4;
const WRITE_STAG_VALID: u8 = 0x08;
const READ_STAG_VALID: u8 = 0x04;
/// HelloReply: the target rejects the initiator's versions.
const HELLO_REJECT: u8 = 0x01;

/// The opcode in bits 7-4 of an iSER header's first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IserOpcode {
    /// An iSCSI control-type PDU follows the header.
    Control,
    /// iSER Hello (initiator to target, iWARP start-up).
    Hello,
    /// iSER HelloReply (target to initiator).
    HelloReply,
}

impl IserOpcode {
    fn from_byte(b: u8) -> Result<Self, MessageError> {
        match b >> OPCODE_SHIFT {
            1 => Ok(IserOpcode::Control),
            2 => Ok(IserOpcode::Hello),
            3 => Ok(IserOpcode::HelloReply),
            other => Err(MessageError::UnknownOpcode(other)),
        }
    }

    fn bits(self) -> u8 {
        let code = match self {
            IserOpcode::Control => 1,
            IserOpcode::Hello => 2,
            IserOpcode::HelloReply => 3,
        };
        code << OPCODE_SHIFT
    }
}

/// An initiator buffer the target may reach by RDMA: its STag (rkey) and the
/// address of its first byte in the initiator's memory region.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoteBuffer {
    pub stag: u32,
    pub va: u64,
}

impl RemoteBuffer {
    /// The address `offset` bytes into the buffer (what an RDMA READ of the
    /// write data from that offset targets). None if it would wrap.
    pub fn at(&self, offset: u32) -> Option<u64> {
        self.va.checked_add(u64::from(offset))
    }
}

/// The iSER header of an iSCSI control-type PDU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IserHeader {
    /// Where the target RDMA READs solicited write data from (W bit).
    pub write: Option<RemoteBuffer>,
    /// Where the target RDMA WRITEs read data to (R bit).
    pub read: Option<RemoteBuffer>,
}

impl IserHeader {
    /// The header a target puts in front of every PDU it sends.
    pub const TARGET: IserHeader = IserHeader {
        write: None,
        read: None,
    };

    /// Decodes the header of an iSCSI control-type PDU.
    pub fn decode(b: &[u8; ISER_HEADER_LEN]) -> Result<IserHeader, MessageError> {
        match IserOpcode::from_byte(b[0])? {
            IserOpcode::Control => {}
            other => return Err(MessageError::NotControl(other)),
        }
        let u32_at = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let u64_at = |at: usize| (u64::from(u32_at(at)) << 32) | u64::from(u32_at(at + 4));
        let write = (b[0] & WRITE_STAG_VALID != 0).then(|| RemoteBuffer {
            stag: u32_at(4),
            va: u64_at(8),
        });
        let read = (b[0] & READ_STAG_VALID != 0).then(|| RemoteBuffer {
            stag: u32_at(16),
            va: u64_at(20),
        });
        Ok(IserHeader { write, read })
    }

    /// Encodes the header of an iSCSI control-type PDU.
    pub fn encode(&self) -> [u8; ISER_HEADER_LEN] {
        let mut b = [0u8; ISER_HEADER_LEN];
        b[0] = IserOpcode::Control.bits();
        if let Some(w) = self.write {
            b[0] |= WRITE_STAG_VALID;
            b[4..8].copy_from_slice(&w.stag.to_be_bytes());
            b[8..16].copy_from_slice(&w.va.to_be_bytes());
        }
        if let Some(r) = self.read {
            b[0] |= READ_STAG_VALID;
            b[16..20].copy_from_slice(&r.stag.to_be_bytes());
            b[20..28].copy_from_slice(&r.va.to_be_bytes());
        }
        b
    }

    /// The STag a SEND with invalidate may retire when the task ends (the
    /// read STag, else the write STag), as Linux isert picks it.
    pub fn stag_to_invalidate(&self) -> Option<u32> {
        self.read.or(self.write).map(|b| b.stag)
    }
}

/// An iSER Hello: the initiator's versions and how many RDMA READs it can
/// serve at once (IRD).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    pub max_version: u8,
    pub min_version: u8,
    pub ird: u16,
}

impl Hello {
    fn decode(b: &[u8]) -> Hello {
        Hello {
            max_version: b[1] >> 4,
            min_version: b[1] & 0x0f,
            ird: u16::from_be_bytes([b[2], b[3]]),
        }
    }

    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut b = [0u8; HELLO_LEN];
        b[0] = IserOpcode::Hello.bits();
        b[1] = (self.max_version.min(15) << 4) | self.min_version.min(15);
        b[2..4].copy_from_slice(&self.ird.to_be_bytes());
        b
    }

    /// The target's answer: version 1 if the initiator's range holds it (else a
    /// reject), and as many outstanding RDMA READs (ORD) as both sides allow.
    pub fn answer(&self, target_max_ord: u16) -> HelloReply {
        let ok = self.min_version <= ISER_VERSION
            && self.max_version >= ISER_VERSION
            && self.min_version <= self.max_version;
        HelloReply {
            reject: !ok,
            max_version: ISER_VERSION,
            current_version: if ok { ISER_VERSION } else { 0 },
            ord: if ok { self.ird.min(target_max_ord) } else { 0 },
        }
    }
}

/// An iSER HelloReply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HelloReply {
    /// The target does not speak any of the initiator's versions.
    pub reject: bool,
    pub max_version: u8,
    pub current_version: u8,
    /// RDMA READs the target will have outstanding at most.
    pub ord: u16,
}

impl HelloReply {
    fn decode(b: &[u8]) -> HelloReply {
        HelloReply {
            reject: b[0] & HELLO_REJECT != 0,
            max_version: b[1] >> 4,
            current_version: b[1] & 0x0f,
            ord: u16::from_be_bytes([b[2], b[3]]),
        }
    }

    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut b = [0u8; HELLO_LEN];
        b[0] = IserOpcode::HelloReply.bits() | if self.reject { HELLO_REJECT } else { 0 };
        b[1] = (self.max_version.min(15) << 4) | self.current_version.min(15);
        b[2..4].copy_from_slice(&self.ord.to_be_bytes());
        b
    }
}

/// A received SEND, split in place.
#[derive(Debug, PartialEq, Eq)]
pub enum IserMessage<'a> {
    /// An iSCSI PDU: the parts borrow the receive buffer.
    Pdu {
        header: IserHeader,
        bhs: &'a Bhs,
        ahs: &'a [u8],
        data: &'a [u8],
    },
    Hello(Hello),
    HelloReply(HelloReply),
}

/// Why a received SEND is not a valid iSER message. Each ends the connection
/// (the peer broke the framing; there is no PDU to answer with a Reject).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageError {
    /// Fewer bytes than the iSER header (or Hello) needs.
    Truncated { len: usize, need: usize },
    /// Opcode bits 7-4 hold a value RFC 7145 does not define.
    UnknownOpcode(u8),
    /// A Hello or HelloReply where an iSCSI PDU header was expected.
    NotControl(IserOpcode),
    /// The SEND is shorter than the BHS's AHS and data lengths say.
    PduTruncated { len: usize, need: usize },
    /// The SEND is longer than the PDU (beyond up to 3 padding bytes).
    TrailingBytes { len: usize, pdu_len: usize },
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageError::Truncated { len, need } => {
                write!(f, "iSER message of {len} bytes, at least {need} needed")
            }
            MessageError::UnknownOpcode(op) => write!(f, "unknown iSER opcode {op:#x}"),
            MessageError::NotControl(op) => {
                write!(f, "iSER {op:?} where an iSCSI PDU was expected")
            }
            MessageError::PduTruncated { len, need } => write!(
                f,
                "iSCSI PDU cut short: the SEND holds {len} bytes, its header says {need}"
            ),
            MessageError::TrailingBytes { len, pdu_len } => write!(
                f,
                "{} stray bytes after a {pdu_len}-byte iSCSI PDU",
                len - pdu_len
            ),
        }
    }
}

impl std::error::Error for MessageError {}

/// Splits a received SEND (the bytes the RECV completion reports) into its
/// iSER header and iSCSI PDU parts, or decodes a Hello/HelloReply. No copy.
pub fn parse_message(buf: &[u8]) -> Result<IserMessage<'_>, MessageError> {
    let Some(&first) = buf.first() else {
        return Err(MessageError::Truncated {
            len: 0,
            need: ISER_HEADER_LEN,
        });
    };
    match IserOpcode::from_byte(first)? {
        IserOpcode::Hello | IserOpcode::HelloReply if buf.len() < HELLO_LEN => {
            Err(MessageError::Truncated {
                len: buf.len(),
                need: HELLO_LEN,
            })
        }
        IserOpcode::Hello => Ok(IserMessage::Hello(Hello::decode(buf))),
        IserOpcode::HelloReply => Ok(IserMessage::HelloReply(HelloReply::decode(buf))),
        IserOpcode::Control => {
            let need = ISER_HEADER_LEN + BHS_LEN;
            if buf.len() < need {
                return Err(MessageError::Truncated {
                    len: buf.len(),
                    need,
                });
            }
            let (iser, rest) = buf.split_at(ISER_HEADER_LEN);
            let header = IserHeader::decode(iser.try_into().expect("split at 28"))?;
            let (bhs, rest) = rest.split_at(BHS_LEN);
            let bhs: &Bhs = bhs.try_into().expect("split at 48");
            let lens = pdu::SegmentLengths::of(bhs);
            let pdu_len = lens.ahs + lens.data;
            if rest.len() < pdu_len {
                return Err(MessageError::PduTruncated {
                    len: need + rest.len(),
                    need: need + pdu_len,
                });
            }
            if rest.len() > pdu_len + 3 {
                return Err(MessageError::TrailingBytes {
                    len: need + rest.len(),
                    pdu_len: need + pdu_len,
                });
            }
            let (ahs, rest) = rest.split_at(lens.ahs);
            Ok(IserMessage::Pdu {
                header,
                bhs,
                ahs,
                data: &rest[..lens.data],
            })
        }
    }
}

#[cfg(test)]
mod tests;
