//! SRP information units (T10 SRP r16a, with the SRP-2 immediate data that
//! Linux `ib_srp` uses), decoded in place from a receive buffer and encoded
//! into a send buffer, without allocation.
//!
//! Every IU starts with its opcode byte. Tags are opaque 8-byte values the
//! initiator picks (Linux writes them in host order); they are carried as
//! `u64` read big-endian and written back the same way, so the bytes echo
//! unchanged.
//!
//! Initiator to target: [`LoginReq`] (in the CM private data, see there),
//! [`Cmd`], [`TskMgmt`], [`ILogout`], [`CredRsp`] and [`AerRsp`] (the
//! answers to the target's requests). Target to initiator: [`LoginRsp`],
//! [`LoginRej`] (both in the CM reply private data), [`Rsp`], [`TLogout`],
//! [`CredReq`].
//!
//! Decoders check lengths, opcodes, descriptor formats and counts and return
//! an [`IuError`] that says what is wrong; they ignore reserved fields, as
//! Linux `ib_srpt` does.

use std::fmt;

/// IU opcodes (SRP r16a table 11).
pub mod opcode {
    pub const LOGIN_REQ: u8 = 0x00;
    pub const TSK_MGMT: u8 = 0x01;
    pub const CMD: u8 = 0x02;
    pub const I_LOGOUT: u8 = 0x03;
    pub const LOGIN_RSP: u8 = 0xc0;
    pub const RSP: u8 = 0xc1;
    pub const LOGIN_REJ: u8 = 0xc2;
    pub const T_LOGOUT: u8 = 0x80;
    pub const CRED_REQ: u8 = 0x81;
    pub const AER_REQ: u8 = 0x82;
    pub const CRED_RSP: u8 = 0x41;
    pub const AER_RSP: u8 = 0x42;
}

/// Buffer formats a login request asks for and a login response grants
/// (`REQUIRED BUFFER FORMATS` / `SUPPORTED BUFFER FORMATS`).
pub mod buf_fmt {
    /// Direct data buffer descriptors.
    pub const DIRECT: u16 = 1 << 1;
    /// Indirect data buffer descriptors.
    pub const INDIRECT: u16 = 1 << 2;
}

/// SRP_LOGIN_REJ reasons (SRP r16a table 13).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum RejectReason {
    /// Unable to establish the RDMA channel, no reason given.
    UnableToEstablishChannel = 0x0001_0000,
    InsufficientResources = 0x0001_0001,
    /// The requested maximum initiator-to-target IU length is too large.
    ReqItIuLengthTooLarge = 0x0001_0002,
    /// Unable to associate the RDMA channel with an I_T nexus (unknown target
    /// port, or an initiator the target does not serve).
    UnableToAssociateChannel = 0x0001_0003,
    /// One or more requested data buffer descriptor formats are not supported.
    UnsupportedDescriptorFormat = 0x0001_0004,
    /// The target does not support multiple RDMA channels per I_T nexus.
    MultiChannelUnsupported = 0x0001_0005,
    /// The initiator has reached the target's limit of channels.
    ChannelLimitReached = 0x0001_0006,
}

impl RejectReason {
    pub fn code(self) -> u32 {
        self as u32
    }

    pub fn from_code(code: u32) -> Option<RejectReason> {
        use RejectReason::*;
        [
            UnableToEstablishChannel,
            InsufficientResources,
            ReqItIuLengthTooLarge,
            UnableToAssociateChannel,
            UnsupportedDescriptorFormat,
            MultiChannelUnsupported,
            ChannelLimitReached,
        ]
        .into_iter()
        .find(|r| r.code() == code)
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            RejectReason::UnableToEstablishChannel => "unable to establish the RDMA channel",
            RejectReason::InsufficientResources => "insufficient resources",
            RejectReason::ReqItIuLengthTooLarge => "requested IU length too large",
            RejectReason::UnableToAssociateChannel => {
                "unable to associate the RDMA channel with an I_T nexus"
            }
            RejectReason::UnsupportedDescriptorFormat => "unsupported data buffer formats",
            RejectReason::MultiChannelUnsupported => "multichannel not supported",
            RejectReason::ChannelLimitReached => "channel limit reached",
        };
        write!(f, "{s} (0x{:08x})", self.code())
    }
}

/// SRP_T_LOGOUT reasons (SRP r16a table 17).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum LogoutReason {
    NoReason = 0,
    InactiveChannel = 1,
    InvalidIuType = 2,
    UnexpectedInitiatorResponse = 3,
    MultiChannelAction = 4,
    UnsupportedDataOutFormat = 6,
    UnsupportedDataInFormat = 7,
    InvalidIuLength = 8,
}

/// Task management functions in SRP_TSK_MGMT (SRP r16a table 20).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TmFunction {
    AbortTask,
    AbortTaskSet,
    ClearTaskSet,
    LunReset,
    ClearAca,
    /// A code SRP does not define; answered "function not supported".
    Other(u8),
}

impl TmFunction {
    pub fn from_code(code: u8) -> TmFunction {
        match code {
            0x01 => TmFunction::AbortTask,
            0x02 => TmFunction::AbortTaskSet,
            0x04 => TmFunction::ClearTaskSet,
            0x08 => TmFunction::LunReset,
            0x40 => TmFunction::ClearAca,
            other => TmFunction::Other(other),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            TmFunction::AbortTask => 0x01,
            TmFunction::AbortTaskSet => 0x02,
            TmFunction::ClearTaskSet => 0x04,
            TmFunction::LunReset => 0x08,
            TmFunction::ClearAca => 0x40,
            TmFunction::Other(c) => c,
        }
    }
}

/// Response codes in the response data of an SRP_RSP (SRP r16a table 24, and
/// SAM-5's FUNCTION SUCCEEDED / INCORRECT LUN).
pub mod rsp_code {
    pub const NO_FAILURE: u8 = 0x00;
    pub const REQUEST_FIELDS_INVALID: u8 = 0x02;
    pub const TMF_NOT_SUPPORTED: u8 = 0x04;
    pub const TMF_FAILED: u8 = 0x05;
    pub const TMF_SUCCEEDED: u8 = 0x08;
    pub const INCORRECT_LUN: u8 = 0x09;
}

/// What is wrong with an IU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IuError {
    /// Shorter than its fixed part or than its fields say.
    Short {
        what: &'static str,
        need: usize,
        got: usize,
    },
    /// No SRP IU has this opcode.
    UnknownOpcode(u8),
    /// A known opcode that an initiator never sends (or not at this point).
    Unexpected(u8),
    /// A data buffer descriptor format SRP does not define, or immediate data
    /// for Data-In.
    BadFormat { data_out: bool, format: u8 },
    /// The descriptor count of an indirect descriptor does not fit its table
    /// or the IU.
    BadCount {
        data_out: bool,
        count: u8,
        table: u32,
    },
    /// Immediate data that does not lie inside the IU.
    ImmediateOutside { offset: usize, len: u32, iu: usize },
}

impl fmt::Display for IuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            IuError::Short { what, need, got } => {
                write!(f, "{what}: {got} bytes, need {need}")
            }
            IuError::UnknownOpcode(op) => write!(f, "unknown IU opcode 0x{op:02x}"),
            IuError::Unexpected(op) => write!(f, "unexpected IU opcode 0x{op:02x}"),
            IuError::BadFormat { data_out, format } => write!(
                f,
                "unsupported {} buffer descriptor format {format}",
                dir_name(data_out)
            ),
            IuError::BadCount {
                data_out,
                count,
                table,
            } => write!(
                f,
                "{} descriptor count {count} does not fit a table of {table} bytes or the IU",
                dir_name(data_out)
            ),
            IuError::ImmediateOutside { offset, len, iu } => write!(
                f,
                "immediate data of {len} bytes at {offset} lies outside the {iu}-byte IU"
            ),
        }
    }
}

impl std::error::Error for IuError {}

fn dir_name(data_out: bool) -> &'static str {
    if data_out {
        "data-out"
    } else {
        "data-in"
    }
}

fn need(what: &'static str, buf: &[u8], len: usize) -> Result<(), IuError> {
    if buf.len() < len {
        return Err(IuError::Short {
            what,
            need: len,
            got: buf.len(),
        });
    }
    Ok(())
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(v)
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// An SRP port identifier: 8 bytes of identifier extension then an 8-byte
/// EUI-64 (the IOC GUID for a target port, the port GUID for an initiator's).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PortId(pub [u8; 16]);

impl PortId {
    pub fn new(id_ext: u64, guid: u64) -> PortId {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&id_ext.to_be_bytes());
        b[8..].copy_from_slice(&guid.to_be_bytes());
        PortId(b)
    }

    pub fn id_ext(&self) -> u64 {
        be64(&self.0, 0)
    }

    pub fn guid(&self) -> u64 {
        be64(&self.0, 8)
    }
}

impl fmt::Display for PortId {
    /// `0x` and 32 hex digits, as LIO names SRP initiator ports.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:016x}{:016x}", self.id_ext(), self.guid())
    }
}

impl fmt::Debug for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// SRP_LOGIN_REQ `REQ FLAGS`: the multichannel action (bits 1-0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MultiChannel {
    /// Terminate the nexus's other channels (a fresh login).
    Single,
    /// Keep them (Linux `ib_srp` opens one channel per CPU this way).
    Multi,
    /// A reserved value (2 or 3).
    Reserved(u8),
}

const MULTICHAN_MASK: u8 = 0x03;
/// SRP-2: the initiator wants to send immediate data.
pub const IMMED_REQUESTED: u8 = 0x80;

/// SRP_LOGIN_RSP `RSP FLAGS`.
pub mod rsp_flags {
    /// No other channel of the nexus existed.
    pub const MULTICHAN_NO_CHAN: u8 = 0x0;
    /// Other channels of the nexus were terminated.
    pub const MULTICHAN_TERMINATED: u8 = 0x1;
    /// Other channels of the nexus were kept.
    pub const MULTICHAN_MAINTAINED: u8 = 0x2;
    /// SRP-2: the target accepts immediate data.
    pub const IMMED_SUPPORTED: u8 = 0x80;
}

/// An SRP_LOGIN_REQ, from either of its two wire forms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginReq {
    pub tag: u64,
    /// Largest IU the initiator will send, in bytes.
    pub req_it_iu_len: u32,
    /// [`buf_fmt`] bits the initiator will use.
    pub req_buf_fmt: u16,
    pub req_flags: u8,
    /// SRP-2: where immediate data starts in an SRP_CMD.
    pub imm_data_offset: u16,
    pub initiator_port_id: PortId,
    pub target_port_id: PortId,
}

impl LoginReq {
    /// Length of the IB CM form (the IU as SRP r16a defines it).
    pub const IB_LEN: usize = 64;
    /// Length of the RDMA CM form Linux `ib_srp` sends: RDMA CM over
    /// InfiniBand carries only 56 bytes of private data, so the reserved bytes
    /// are dropped and the fields reordered.
    pub const RDMA_CM_LEN: usize = 56;

    /// Decodes the 64-byte IB form (opcode first). Longer input is accepted
    /// (IB CM private data is 92 bytes); the rest is ignored.
    pub fn parse_ib(b: &[u8]) -> Result<LoginReq, IuError> {
        need("SRP_LOGIN_REQ", b, Self::IB_LEN)?;
        if b[0] != opcode::LOGIN_REQ {
            return Err(opcode_error(b[0]));
        }
        Ok(LoginReq {
            tag: be64(b, 8),
            req_it_iu_len: be32(b, 16),
            req_buf_fmt: be16(b, 24),
            req_flags: b[26],
            imm_data_offset: be16(b, 28),
            initiator_port_id: port_id(b, 32),
            target_port_id: port_id(b, 48),
        })
    }

    /// Decodes the 56-byte RDMA CM form:
    ///
    /// ```text
    /// 0 tag (8)  8 req_buf_fmt (2)  10 req_flags  11 opcode  12 req_it_iu_len (4)
    /// 16 initiator port id (16)  32 target port id (16)  48 imm_data_offset (2)
    /// 50 reserved (6)
    /// ```
    pub fn parse_rdma_cm(b: &[u8]) -> Result<LoginReq, IuError> {
        need("SRP_LOGIN_REQ (RDMA CM)", b, Self::RDMA_CM_LEN)?;
        if b[11] != opcode::LOGIN_REQ {
            return Err(opcode_error(b[11]));
        }
        Ok(LoginReq {
            tag: be64(b, 0),
            req_buf_fmt: be16(b, 8),
            req_flags: b[10],
            req_it_iu_len: be32(b, 12),
            initiator_port_id: port_id(b, 16),
            target_port_id: port_id(b, 32),
            imm_data_offset: be16(b, 48),
        })
    }

    pub fn multichannel(&self) -> MultiChannel {
        match self.req_flags & MULTICHAN_MASK {
            0 => MultiChannel::Single,
            1 => MultiChannel::Multi,
            r => MultiChannel::Reserved(r),
        }
    }

    pub fn immediate_requested(&self) -> bool {
        self.req_flags & IMMED_REQUESTED != 0
    }

    /// Encodes the IB form (for initiators and tests).
    pub fn encode_ib(&self) -> [u8; Self::IB_LEN] {
        let mut b = [0u8; Self::IB_LEN];
        b[0] = opcode::LOGIN_REQ;
        put64(&mut b, 8, self.tag);
        put32(&mut b, 16, self.req_it_iu_len);
        put16(&mut b, 24, self.req_buf_fmt);
        b[26] = self.req_flags;
        put16(&mut b, 28, self.imm_data_offset);
        b[32..48].copy_from_slice(&self.initiator_port_id.0);
        b[48..64].copy_from_slice(&self.target_port_id.0);
        b
    }

    /// Encodes the RDMA CM form (for initiators and tests).
    pub fn encode_rdma_cm(&self) -> [u8; Self::RDMA_CM_LEN] {
        let mut b = [0u8; Self::RDMA_CM_LEN];
        put64(&mut b, 0, self.tag);
        put16(&mut b, 8, self.req_buf_fmt);
        b[10] = self.req_flags;
        b[11] = opcode::LOGIN_REQ;
        put32(&mut b, 12, self.req_it_iu_len);
        b[16..32].copy_from_slice(&self.initiator_port_id.0);
        b[32..48].copy_from_slice(&self.target_port_id.0);
        put16(&mut b, 48, self.imm_data_offset);
        b
    }
}

fn port_id(b: &[u8], at: usize) -> PortId {
    let mut p = [0u8; 16];
    p.copy_from_slice(&b[at..at + 16]);
    PortId(p)
}

fn opcode_error(op: u8) -> IuError {
    match op {
        opcode::LOGIN_REQ
        | opcode::TSK_MGMT
        | opcode::CMD
        | opcode::I_LOGOUT
        | opcode::LOGIN_RSP
        | opcode::RSP
        | opcode::LOGIN_REJ
        | opcode::T_LOGOUT
        | opcode::CRED_REQ
        | opcode::AER_REQ
        | opcode::CRED_RSP
        | opcode::AER_RSP => IuError::Unexpected(op),
        _ => IuError::UnknownOpcode(op),
    }
}

/// SRP_LOGIN_RSP (52 bytes), sent in the CM reply's private data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginRsp {
    /// Credits granted: how many requests the initiator may have outstanding.
    pub req_lim_delta: u32,
    pub tag: u64,
    /// Largest IU the target accepts from the initiator.
    pub max_it_iu_len: u32,
    /// Largest IU the target sends to the initiator.
    pub max_ti_iu_len: u32,
    /// [`buf_fmt`] bits supported.
    pub buf_fmt: u16,
    /// [`rsp_flags`].
    pub rsp_flags: u8,
}

impl LoginRsp {
    pub const LEN: usize = 52;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = opcode::LOGIN_RSP;
        put32(&mut b, 4, self.req_lim_delta);
        put64(&mut b, 8, self.tag);
        put32(&mut b, 16, self.max_it_iu_len);
        put32(&mut b, 20, self.max_ti_iu_len);
        put16(&mut b, 24, self.buf_fmt);
        b[26] = self.rsp_flags;
        b
    }

    pub fn parse(b: &[u8]) -> Result<LoginRsp, IuError> {
        need("SRP_LOGIN_RSP", b, Self::LEN)?;
        if b[0] != opcode::LOGIN_RSP {
            return Err(opcode_error(b[0]));
        }
        Ok(LoginRsp {
            req_lim_delta: be32(b, 4),
            tag: be64(b, 8),
            max_it_iu_len: be32(b, 16),
            max_ti_iu_len: be32(b, 20),
            buf_fmt: be16(b, 24),
            rsp_flags: b[26],
        })
    }
}

/// SRP_LOGIN_REJ (32 bytes), sent in the CM reject's private data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginRej {
    pub reason: RejectReason,
    pub tag: u64,
    /// [`buf_fmt`] bits the target supports.
    pub buf_fmt: u16,
}

impl LoginRej {
    pub const LEN: usize = 32;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = opcode::LOGIN_REJ;
        put32(&mut b, 4, self.reason.code());
        put64(&mut b, 8, self.tag);
        put16(&mut b, 24, self.buf_fmt);
        b
    }

    /// Decodes one; the reason code as sent (it may be one SRP does not name).
    pub fn parse(b: &[u8]) -> Result<(u32, u64, u16), IuError> {
        need("SRP_LOGIN_REJ", b, Self::LEN)?;
        if b[0] != opcode::LOGIN_REJ {
            return Err(opcode_error(b[0]));
        }
        Ok((be32(b, 4), be64(b, 8), be16(b, 24)))
    }
}

/// A memory descriptor: a registered range of the initiator's memory
/// (`struct srp_direct_buf`: virtual address, rkey, length).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Desc {
    pub va: u64,
    pub key: u32,
    pub len: u32,
}

impl Desc {
    pub const LEN: usize = 16;

    fn read(b: &[u8], at: usize) -> Desc {
        Desc {
            va: be64(b, at),
            key: be32(b, at + 8),
            len: be32(b, at + 12),
        }
    }

    fn write(&self, b: &mut [u8], at: usize) {
        put64(b, at, self.va);
        put32(b, at + 8, self.key);
        put32(b, at + 12, self.len);
    }

    /// Decodes a table of descriptors (as fetched by RDMA READ): entry `i`.
    /// Panics if `table` is shorter than `(i + 1) * 16` bytes.
    pub fn table_entry(table: &[u8], i: usize) -> Desc {
        Desc::read(table, i * Desc::LEN)
    }

    /// Encodes into `b[..16]`.
    pub fn encode_into(&self, b: &mut [u8]) {
        self.write(b, 0);
    }
}

/// Data buffer descriptor formats (SRP r16a table 15; 3 is SRP-2's).
pub mod desc_fmt {
    pub const NONE: u8 = 0;
    pub const DIRECT: u8 = 1;
    pub const INDIRECT: u8 = 2;
    pub const IMMEDIATE: u8 = 3;
}

/// An indirect data buffer descriptor: the table's own descriptor, the total
/// length, and the part of the table carried in the IU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Indirect<'a> {
    /// Where the whole table lies in the initiator's memory.
    pub table: Desc,
    /// Sum of the lengths of all the table's descriptors.
    pub total_len: u32,
    /// The first `count` descriptors, in the IU (16 bytes each).
    inline: &'a [u8],
}

impl Indirect<'_> {
    /// Descriptors carried in the IU.
    pub fn inline_count(&self) -> usize {
        self.inline.len() / Desc::LEN
    }

    /// Descriptors in the whole table.
    pub fn table_count(&self) -> usize {
        self.table.len as usize / Desc::LEN
    }

    /// Whether the IU carries the whole table (else it must be fetched from
    /// [`table`](Self::table) by RDMA READ).
    pub fn is_complete(&self) -> bool {
        self.inline_count() == self.table_count()
    }

    /// Inline descriptor `i` (`i < inline_count()`).
    pub fn inline(&self, i: usize) -> Desc {
        Desc::read(self.inline, i * Desc::LEN)
    }

    pub fn inline_descs(&self) -> impl Iterator<Item = Desc> + '_ {
        (0..self.inline_count()).map(|i| self.inline(i))
    }
}

/// One direction's data buffer as an SRP_CMD describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataBuf<'a> {
    None,
    Direct(Desc),
    Indirect(Indirect<'a>),
    /// SRP-2 immediate data: `len` bytes in the IU at the channel's
    /// immediate data offset (see [`Cmd::immediate_data`]). Data-out only.
    Immediate {
        len: u32,
    },
}

impl DataBuf<'_> {
    /// Bytes the initiator's buffer holds.
    pub fn byte_len(&self) -> u64 {
        match self {
            DataBuf::None => 0,
            DataBuf::Direct(d) => d.len as u64,
            DataBuf::Indirect(i) => i.total_len as u64,
            DataBuf::Immediate { len } => *len as u64,
        }
    }

    pub fn is_none(&self) -> bool {
        matches!(self, DataBuf::None)
    }
}

/// SAM task attribute in an SRP_CMD (bits 2-0 of byte 29).
pub mod task_attr {
    pub const SIMPLE: u8 = 0;
    pub const HEAD_OF_QUEUE: u8 = 1;
    pub const ORDERED: u8 = 2;
    pub const ACA: u8 = 4;
}

/// Fixed part of an SRP_CMD, up to the 16-byte CDB.
pub const CMD_FIXED_LEN: usize = 48;
/// Longest additional CDB (the field counts 4-byte words in bits 7-2).
pub const MAX_ADD_CDB_LEN: usize = 252;

/// An SRP_CMD decoded in place.
///
/// ```text
/// 0 opcode  1 sol_not  5 buf_fmt (data-out format << 4 | data-in format)
/// 6 data-out descriptor count  7 data-in descriptor count  8 tag (8)
/// 20 LUN (8)  29 task attribute  31 additional CDB length
/// 32 CDB (16)  48 additional CDB, then the data-out descriptor, then the
/// data-in descriptor; immediate data at the channel's offset
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cmd<'a> {
    iu: &'a [u8],
    pub tag: u64,
    pub lun: [u8; 8],
    pub task_attr: u8,
    pub data_out: DataBuf<'a>,
    pub data_in: DataBuf<'a>,
    add_cdb_len: usize,
}

impl<'a> Cmd<'a> {
    /// Decodes an SRP_CMD from the bytes received (`iu.len()` is the RECV's
    /// byte count).
    pub fn parse(iu: &'a [u8]) -> Result<Cmd<'a>, IuError> {
        need("SRP_CMD", iu, CMD_FIXED_LEN)?;
        if iu[0] != opcode::CMD {
            return Err(opcode_error(iu[0]));
        }
        let add_cdb_len = (iu[31] & !0x03) as usize;
        let mut at = CMD_FIXED_LEN + add_cdb_len;
        need("SRP_CMD additional CDB", iu, at)?;
        let out_fmt = iu[5] >> 4;
        let in_fmt = iu[5] & 0x0f;
        let data_out = Self::desc(iu, &mut at, true, out_fmt, iu[6])?;
        let data_in = Self::desc(iu, &mut at, false, in_fmt, iu[7])?;
        let mut lun = [0u8; 8];
        lun.copy_from_slice(&iu[20..28]);
        Ok(Cmd {
            iu,
            tag: be64(iu, 8),
            lun,
            task_attr: iu[29] & 0x07,
            data_out,
            data_in,
            add_cdb_len,
        })
    }

    fn desc(
        iu: &'a [u8],
        at: &mut usize,
        data_out: bool,
        format: u8,
        count: u8,
    ) -> Result<DataBuf<'a>, IuError> {
        let what = if data_out {
            "SRP_CMD data-out descriptor"
        } else {
            "SRP_CMD data-in descriptor"
        };
        match format {
            desc_fmt::NONE => Ok(DataBuf::None),
            desc_fmt::DIRECT => {
                need(what, iu, *at + Desc::LEN)?;
                let d = Desc::read(iu, *at);
                *at += Desc::LEN;
                Ok(DataBuf::Direct(d))
            }
            desc_fmt::INDIRECT => {
                need(what, iu, *at + 20)?;
                let table = Desc::read(iu, *at);
                let total_len = be32(iu, *at + 16);
                let n = count as usize;
                let table_count = table.len as usize / Desc::LEN;
                if n > table_count || !(table.len as usize).is_multiple_of(Desc::LEN) {
                    return Err(IuError::BadCount {
                        data_out,
                        count,
                        table: table.len,
                    });
                }
                let start = *at + 20;
                let end = start + n * Desc::LEN;
                if iu.len() < end {
                    return Err(IuError::BadCount {
                        data_out,
                        count,
                        table: table.len,
                    });
                }
                *at = end;
                Ok(DataBuf::Indirect(Indirect {
                    table,
                    total_len,
                    inline: &iu[start..end],
                }))
            }
            desc_fmt::IMMEDIATE if data_out => {
                need(what, iu, *at + 4)?;
                let len = be32(iu, *at);
                *at += 4;
                Ok(DataBuf::Immediate { len })
            }
            _ => Err(IuError::BadFormat { data_out, format }),
        }
    }

    /// The whole CDB (16 bytes plus any additional CDB).
    pub fn cdb(&self) -> &'a [u8] {
        &self.iu[32..CMD_FIXED_LEN + self.add_cdb_len]
    }

    /// The immediate data, which starts `offset` bytes into the IU (the
    /// offset the login request gave). Empty when the command has none.
    pub fn immediate_data(&self, offset: usize) -> Result<&'a [u8], IuError> {
        let DataBuf::Immediate { len } = self.data_out else {
            return Ok(&[]);
        };
        let end = offset.checked_add(len as usize);
        match end {
            Some(end) if end <= self.iu.len() && offset >= self.descriptors_end() => {
                Ok(&self.iu[offset..end])
            }
            _ => Err(IuError::ImmediateOutside {
                offset,
                len,
                iu: self.iu.len(),
            }),
        }
    }

    /// Where the descriptors end in the IU.
    fn descriptors_end(&self) -> usize {
        let size = |d: &DataBuf| match d {
            DataBuf::None => 0,
            DataBuf::Direct(_) => Desc::LEN,
            DataBuf::Indirect(i) => 20 + i.inline.len(),
            DataBuf::Immediate { .. } => 4,
        };
        CMD_FIXED_LEN + self.add_cdb_len + size(&self.data_out) + size(&self.data_in)
    }
}

/// Builds an SRP_CMD (for initiators and tests).
#[derive(Clone, Debug, Default)]
pub struct CmdBuilder<'a> {
    pub tag: u64,
    pub lun: [u8; 8],
    pub task_attr: u8,
    pub cdb: &'a [u8],
    pub data_out: BuildBuf<'a>,
    pub data_in: BuildBuf<'a>,
    /// Where immediate data goes (the login's `imm_data_offset`).
    pub imm_data_offset: usize,
}

/// A data buffer for [`CmdBuilder`].
#[derive(Clone, Debug, Default)]
pub enum BuildBuf<'a> {
    #[default]
    None,
    Direct(Desc),
    /// Table descriptor, total length, the descriptors carried inline.
    Indirect(Desc, u32, &'a [Desc]),
    Immediate(&'a [u8]),
}

impl CmdBuilder<'_> {
    /// Encodes into `out`; returns the IU's length. Panics if `out` is too
    /// short or the CDB longer than 16 + 252 bytes.
    pub fn encode(&self, out: &mut [u8]) -> usize {
        let add = self.cdb.len().saturating_sub(16).div_ceil(4) * 4;
        assert!(add <= MAX_ADD_CDB_LEN, "CDB too long");
        out[..CMD_FIXED_LEN + add].fill(0);
        out[0] = opcode::CMD;
        let fmt = |b: &BuildBuf| match b {
            BuildBuf::None => desc_fmt::NONE,
            BuildBuf::Direct(_) => desc_fmt::DIRECT,
            BuildBuf::Indirect(..) => desc_fmt::INDIRECT,
            BuildBuf::Immediate(_) => desc_fmt::IMMEDIATE,
        };
        out[5] = fmt(&self.data_out) << 4 | fmt(&self.data_in);
        let count = |b: &BuildBuf| match b {
            BuildBuf::Indirect(_, _, d) => d.len() as u8,
            _ => 0,
        };
        out[6] = count(&self.data_out);
        out[7] = count(&self.data_in);
        put64(out, 8, self.tag);
        out[20..28].copy_from_slice(&self.lun);
        out[29] = self.task_attr;
        out[31] = add as u8;
        out[32..32 + self.cdb.len()].copy_from_slice(self.cdb);
        let mut at = CMD_FIXED_LEN + add;
        let mut imm: &[u8] = &[];
        for b in [&self.data_out, &self.data_in] {
            match b {
                BuildBuf::None => {}
                BuildBuf::Direct(d) => {
                    d.write(out, at);
                    at += Desc::LEN;
                }
                BuildBuf::Indirect(table, total, descs) => {
                    table.write(out, at);
                    put32(out, at + 16, *total);
                    at += 20;
                    for d in descs.iter() {
                        d.write(out, at);
                        at += Desc::LEN;
                    }
                }
                BuildBuf::Immediate(data) => {
                    put32(out, at, data.len() as u32);
                    at += 4;
                    imm = data;
                }
            }
        }
        if !imm.is_empty() || matches!(self.data_out, BuildBuf::Immediate(_)) {
            let off = self.imm_data_offset.max(at);
            out[at..off].fill(0);
            out[off..off + imm.len()].copy_from_slice(imm);
            at = off + imm.len();
        }
        at
    }
}

/// SRP_TSK_MGMT (48 bytes).
///
/// ```text
/// 0 opcode  1 sol_not  8 tag (8)  20 LUN (8)  30 function  32 task tag (8)
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TskMgmt {
    pub tag: u64,
    pub lun: [u8; 8],
    pub function: TmFunction,
    /// ABORT TASK: the tag of the task to abort.
    pub task_tag: u64,
}

impl TskMgmt {
    pub const LEN: usize = 48;

    pub fn parse(b: &[u8]) -> Result<TskMgmt, IuError> {
        need("SRP_TSK_MGMT", b, Self::LEN)?;
        if b[0] != opcode::TSK_MGMT {
            return Err(opcode_error(b[0]));
        }
        let mut lun = [0u8; 8];
        lun.copy_from_slice(&b[20..28]);
        Ok(TskMgmt {
            tag: be64(b, 8),
            lun,
            function: TmFunction::from_code(b[30]),
            task_tag: be64(b, 32),
        })
    }

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = opcode::TSK_MGMT;
        put64(&mut b, 8, self.tag);
        b[20..28].copy_from_slice(&self.lun);
        b[30] = self.function.code();
        put64(&mut b, 32, self.task_tag);
        b
    }
}

/// IUs of 16 bytes that carry only an opcode and a tag: SRP_I_LOGOUT,
/// SRP_CRED_RSP and SRP_AER_RSP.
fn tag_only(what: &'static str, op: u8, b: &[u8]) -> Result<u64, IuError> {
    need(what, b, 16)?;
    if b[0] != op {
        return Err(opcode_error(b[0]));
    }
    Ok(be64(b, 8))
}

fn encode_tag_only(op: u8, tag: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0] = op;
    put64(&mut b, 8, tag);
    b
}

/// SRP_I_LOGOUT: the initiator ends the channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ILogout {
    pub tag: u64,
}

impl ILogout {
    pub const LEN: usize = 16;

    pub fn parse(b: &[u8]) -> Result<ILogout, IuError> {
        tag_only("SRP_I_LOGOUT", opcode::I_LOGOUT, b).map(|tag| ILogout { tag })
    }

    pub fn encode(&self) -> [u8; 16] {
        encode_tag_only(opcode::I_LOGOUT, self.tag)
    }
}

/// SRP_CRED_RSP: the initiator took the credits of an SRP_CRED_REQ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CredRsp {
    pub tag: u64,
}

impl CredRsp {
    pub fn parse(b: &[u8]) -> Result<CredRsp, IuError> {
        tag_only("SRP_CRED_RSP", opcode::CRED_RSP, b).map(|tag| CredRsp { tag })
    }

    pub fn encode(&self) -> [u8; 16] {
        encode_tag_only(opcode::CRED_RSP, self.tag)
    }
}

/// SRP_AER_RSP: the initiator's answer to an SRP_AER_REQ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AerRsp {
    pub tag: u64,
}

impl AerRsp {
    pub fn parse(b: &[u8]) -> Result<AerRsp, IuError> {
        tag_only("SRP_AER_RSP", opcode::AER_RSP, b).map(|tag| AerRsp { tag })
    }
}

/// SRP_T_LOGOUT (16 bytes): the target ends the channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TLogout {
    pub reason: LogoutReason,
    pub tag: u64,
}

impl TLogout {
    pub const LEN: usize = 16;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = encode_tag_only(opcode::T_LOGOUT, self.tag);
        put32(&mut b, 4, self.reason as u32);
        b
    }

    /// Decodes one: the reason code as sent and the tag.
    pub fn parse(b: &[u8]) -> Result<(u32, u64), IuError> {
        let tag = tag_only("SRP_T_LOGOUT", opcode::T_LOGOUT, b)?;
        Ok((be32(b, 4), tag))
    }
}

/// SRP_CRED_REQ (16 bytes): the target grants credits outside a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CredReq {
    pub req_lim_delta: u32,
    pub tag: u64,
}

impl CredReq {
    pub const LEN: usize = 16;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = encode_tag_only(opcode::CRED_REQ, self.tag);
        put32(&mut b, 4, self.req_lim_delta);
        b
    }

    pub fn parse(b: &[u8]) -> Result<CredReq, IuError> {
        let tag = tag_only("SRP_CRED_REQ", opcode::CRED_REQ, b)?;
        Ok(CredReq {
            req_lim_delta: be32(b, 4),
            tag,
        })
    }
}

/// SRP_RSP flags (byte 18; the status is byte 19).
pub mod rsp_flag {
    pub const RSPVALID: u8 = 1 << 0;
    pub const SNSVALID: u8 = 1 << 1;
    pub const DOOVER: u8 = 1 << 2;
    pub const DOUNDER: u8 = 1 << 3;
    pub const DIOVER: u8 = 1 << 4;
    pub const DIUNDER: u8 = 1 << 5;
}

/// Fixed part of an SRP_RSP.
pub const RSP_FIXED_LEN: usize = 36;

/// An over- or underflow of one direction: the initiator's buffer held
/// `expected` bytes, the command wanted to move `wanted`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Residual {
    #[default]
    Exact,
    /// The command moved less than the buffer holds, by this much.
    Under(u32),
    /// The command wanted more than the buffer holds, by this much.
    Over(u32),
}

impl Residual {
    pub fn of(expected: u64, wanted: u64) -> Residual {
        let clamp = |v: u64| v.min(u32::MAX as u64) as u32;
        match wanted.cmp(&expected) {
            std::cmp::Ordering::Equal => Residual::Exact,
            std::cmp::Ordering::Less => Residual::Under(clamp(expected - wanted)),
            std::cmp::Ordering::Greater => Residual::Over(clamp(wanted - expected)),
        }
    }
}

/// An SRP_RSP to encode.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rsp<'a> {
    pub req_lim_delta: u32,
    pub tag: u64,
    /// SAM status.
    pub status: u8,
    pub data_out: Residual,
    pub data_in: Residual,
    /// Task management: the response code (sent as 4 bytes of response data).
    pub response: Option<u8>,
    /// Sense data (only with CHECK CONDITION, empty otherwise).
    pub sense: &'a [u8],
}

impl Rsp<'_> {
    /// Length of the encoded IU when nothing is cut.
    pub fn encoded_len(&self) -> usize {
        RSP_FIXED_LEN + if self.response.is_some() { 4 } else { 0 } + self.sense.len()
    }

    /// Encodes into `out`, cutting the sense so that the IU fits `out` (the
    /// initiator's maximum target-to-initiator IU length). Returns the length.
    /// Panics if `out` cannot hold the fixed part and the response data.
    pub fn encode(&self, out: &mut [u8]) -> usize {
        let resp_len = if self.response.is_some() { 4 } else { 0 };
        let fixed = RSP_FIXED_LEN + resp_len;
        assert!(out.len() >= fixed, "SRP_RSP buffer too small");
        let sense = &self.sense[..self.sense.len().min(out.len() - fixed)];
        out[..fixed].fill(0);
        out[0] = opcode::RSP;
        put32(out, 4, self.req_lim_delta);
        put64(out, 8, self.tag);
        let mut flags = 0;
        let mut res = |r: Residual, over: u8, under: u8, at: usize, out: &mut [u8]| match r {
            Residual::Exact => {}
            Residual::Under(n) => {
                flags |= under;
                put32(out, at, n);
            }
            Residual::Over(n) => {
                flags |= over;
                put32(out, at, n);
            }
        };
        res(self.data_out, rsp_flag::DOOVER, rsp_flag::DOUNDER, 20, out);
        res(self.data_in, rsp_flag::DIOVER, rsp_flag::DIUNDER, 24, out);
        if let Some(code) = self.response {
            flags |= rsp_flag::RSPVALID;
            put32(out, 32, 4);
            out[RSP_FIXED_LEN + 3] = code;
        }
        if !sense.is_empty() {
            flags |= rsp_flag::SNSVALID;
            put32(out, 28, sense.len() as u32);
            out[fixed..fixed + sense.len()].copy_from_slice(sense);
        }
        out[18] = flags;
        out[19] = self.status;
        fixed + sense.len()
    }
}

/// An SRP_RSP decoded (for initiators and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RspView<'a> {
    pub req_lim_delta: u32,
    pub tag: u64,
    pub flags: u8,
    pub status: u8,
    pub data_out_res: u32,
    pub data_in_res: u32,
    pub response_data: &'a [u8],
    pub sense: &'a [u8],
}

impl<'a> RspView<'a> {
    pub fn parse(b: &'a [u8]) -> Result<RspView<'a>, IuError> {
        need("SRP_RSP", b, RSP_FIXED_LEN)?;
        if b[0] != opcode::RSP {
            return Err(opcode_error(b[0]));
        }
        let flags = b[18];
        let sense_len = if flags & rsp_flag::SNSVALID != 0 {
            be32(b, 28) as usize
        } else {
            0
        };
        let resp_len = if flags & rsp_flag::RSPVALID != 0 {
            be32(b, 32) as usize
        } else {
            0
        };
        let end = RSP_FIXED_LEN
            .saturating_add(resp_len)
            .saturating_add(sense_len);
        need("SRP_RSP data", b, end)?;
        let resp_end = RSP_FIXED_LEN + resp_len;
        Ok(RspView {
            req_lim_delta: be32(b, 4),
            tag: be64(b, 8),
            flags,
            status: b[19],
            data_out_res: be32(b, 20),
            data_in_res: be32(b, 24),
            response_data: &b[RSP_FIXED_LEN..resp_end],
            sense: &b[resp_end..end],
        })
    }
}

/// An IU an initiator sends on an established channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitiatorIu<'a> {
    Cmd(Cmd<'a>),
    TskMgmt(TskMgmt),
    ILogout(ILogout),
    CredRsp(CredRsp),
    AerRsp(AerRsp),
}

impl<'a> InitiatorIu<'a> {
    /// Decodes a received IU by its opcode.
    pub fn parse(b: &'a [u8]) -> Result<InitiatorIu<'a>, IuError> {
        let Some(&op) = b.first() else {
            return Err(IuError::Short {
                what: "IU",
                need: 1,
                got: 0,
            });
        };
        match op {
            opcode::CMD => Cmd::parse(b).map(InitiatorIu::Cmd),
            opcode::TSK_MGMT => TskMgmt::parse(b).map(InitiatorIu::TskMgmt),
            opcode::I_LOGOUT => ILogout::parse(b).map(InitiatorIu::ILogout),
            opcode::CRED_RSP => CredRsp::parse(b).map(InitiatorIu::CredRsp),
            opcode::AER_RSP => AerRsp::parse(b).map(InitiatorIu::AerRsp),
            other => Err(opcode_error(other)),
        }
    }

    /// The tag, where the IU carries one the target can answer.
    pub fn tag(&self) -> u64 {
        match self {
            InitiatorIu::Cmd(c) => c.tag,
            InitiatorIu::TskMgmt(t) => t.tag,
            InitiatorIu::ILogout(l) => l.tag,
            InitiatorIu::CredRsp(r) => r.tag,
            InitiatorIu::AerRsp(r) => r.tag,
        }
    }
}

#[cfg(test)]
mod tests;
