//! The 48-byte Basic Header Segment (BHS) of RFC 7143 §11: decoding of the PDUs
//! an initiator sends, encoding of the PDUs a target sends, Additional Header
//! Segments (AHS) and data-segment padding.
//!
//! Everything here works on `&[u8; 48]` / `[u8; 48]` and never allocates, so the
//! same code serves the TCP mover (which reads the BHS from a socket buffer) and
//! the iSER mover (which finds it in a RECV buffer behind the iSER header).
//!
//! Receiver rules applied (RFC 7143 §11.2.1.1): reserved bits and reserved fields
//! are ignored; a reserved *code value* in a defined field is a protocol error.

use std::fmt;

/// Length of the Basic Header Segment.
pub const BHS_LEN: usize = 48;

/// A Basic Header Segment as it is on the wire.
pub type Bhs = [u8; BHS_LEN];

/// The largest value the 24-bit DataSegmentLength field can hold.
pub const MAX_DATA_SEGMENT_LEN: u32 = 0x00ff_ffff;

/// The tag value meaning "no tag" (ITT of unsolicited target PDUs, TTT of
/// PDUs that need no answer).
pub const RESERVED_TAG: u32 = 0xffff_ffff;

/// The only iSCSI version there is (Version-max / Version-min / Version-active).
pub const ISCSI_VERSION: u8 = 0x00;

/// The largest CDB an Extended CDB AHS can carry: 16 bytes in the BHS plus up
/// to 244 in the AHS (SPC's variable-length CDBs stop at 260).
pub const MAX_CDB_LEN: usize = 260;

/// The largest AHS area: TotalAHSLength counts 4-byte words in one byte.
pub const MAX_AHS_LEN: usize = 255 * 4;

/// Bit 6 of byte 0: the PDU is an immediate command (CmdSN not advanced).
pub const IMMEDIATE_BIT: u8 = 0x40;

/// Bit 7 of byte 1: the final PDU of a sequence (F bit).
pub const FINAL_BIT: u8 = 0x80;

const OPCODE_MASK: u8 = 0x3f;

/// Opcodes (byte 0, bits 0-5).
pub mod opcode {
    pub const NOP_OUT: u8 = 0x00;
    pub const SCSI_COMMAND: u8 = 0x01;
    pub const TASK_MGMT_REQUEST: u8 = 0x02;
    pub const LOGIN_REQUEST: u8 = 0x03;
    pub const TEXT_REQUEST: u8 = 0x04;
    pub const SCSI_DATA_OUT: u8 = 0x05;
    pub const LOGOUT_REQUEST: u8 = 0x06;
    pub const SNACK_REQUEST: u8 = 0x10;

    pub const NOP_IN: u8 = 0x20;
    pub const SCSI_RESPONSE: u8 = 0x21;
    pub const TASK_MGMT_RESPONSE: u8 = 0x22;
    pub const LOGIN_RESPONSE: u8 = 0x23;
    pub const TEXT_RESPONSE: u8 = 0x24;
    pub const SCSI_DATA_IN: u8 = 0x25;
    pub const LOGOUT_RESPONSE: u8 = 0x26;
    pub const R2T: u8 = 0x31;
    pub const ASYNC_MESSAGE: u8 = 0x32;
    pub const REJECT: u8 = 0x3f;
}

// ---------------------------------------------------------------------------
// Byte helpers (offsets are constants, so the indexing cannot fail).

#[inline]
fn get_u16(b: &Bhs, at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
fn get_u32(b: &Bhs, at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
fn get_u24(b: &Bhs, at: usize) -> u32 {
    u32::from_be_bytes([0, b[at], b[at + 1], b[at + 2]])
}

#[inline]
fn put_u16(b: &mut Bhs, at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
fn put_u32(b: &mut Bhs, at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

#[inline]
fn put_u24(b: &mut Bhs, at: usize, v: u32) {
    debug_assert!(
        v <= MAX_DATA_SEGMENT_LEN,
        "DataSegmentLength {v} over 24 bits"
    );
    b[at..at + 3].copy_from_slice(&v.to_be_bytes()[1..]);
}

#[inline]
fn get_lun(b: &Bhs) -> Lun {
    let mut lun = [0u8; 8];
    lun.copy_from_slice(&b[8..16]);
    Lun(lun)
}

// ---------------------------------------------------------------------------
// Fields common to every PDU.

/// The opcode of a BHS (byte 0 without the I bit).
#[inline]
pub fn opcode_of(bhs: &Bhs) -> u8 {
    bhs[0] & OPCODE_MASK
}

/// Whether the I (immediate delivery) bit is set.
#[inline]
pub fn is_immediate(bhs: &Bhs) -> bool {
    bhs[0] & IMMEDIATE_BIT != 0
}

/// The Initiator Task Tag (bytes 16-19), whatever the opcode.
#[inline]
pub fn initiator_task_tag(bhs: &Bhs) -> u32 {
    get_u32(bhs, 16)
}

/// Padding needed after `len` bytes to reach a 4-byte boundary (0..=3).
#[inline]
pub const fn pad_len(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// `len` rounded up to a 4-byte boundary.
#[inline]
pub const fn padded_len(len: usize) -> usize {
    len + pad_len(len)
}

/// How many bytes follow a BHS on the wire (digests aside): read these to get
/// the whole PDU before decoding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentLengths {
    /// TotalAHSLength in bytes (the field counts 4-byte words).
    pub ahs: usize,
    /// DataSegmentLength: payload bytes, not counting padding.
    pub data: usize,
}

impl SegmentLengths {
    /// Reads TotalAHSLength (byte 4) and DataSegmentLength (bytes 5-7).
    #[inline]
    pub fn of(bhs: &Bhs) -> Self {
        SegmentLengths {
            ahs: usize::from(bhs[4]) * 4,
            data: get_u24(bhs, 5) as usize,
        }
    }

    /// The data segment as it is on the wire, padding included.
    #[inline]
    pub fn padded_data(&self) -> usize {
        padded_len(self.data)
    }
}

/// An 8-byte logical unit number, kept as the initiator sent it (SAM
/// addressing is the SCSI layer's business).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Lun(pub [u8; 8]);

impl Lun {
    /// The LUN bytes read as one big-endian number.
    pub const fn to_u64(self) -> u64 {
        u64::from_be_bytes(self.0)
    }

    /// The inverse of [`Lun::to_u64`].
    pub const fn from_u64(v: u64) -> Self {
        Lun(v.to_be_bytes())
    }

    /// The SAM single-level LUN for `index`: peripheral device addressing
    /// below 256, flat space addressing up to 16383 (what Linux and libiscsi
    /// produce for plain LUN numbers).
    pub const fn from_index(index: u16) -> Self {
        let mut lun = [0u8; 8];
        if index < 256 {
            lun[1] = index as u8;
        } else {
            lun[0] = 0x40 | ((index >> 8) as u8 & 0x3f);
            lun[1] = index as u8;
        }
        Lun(lun)
    }

    /// The LUN number of a single-level peripheral or flat-space LUN; `None`
    /// for other address methods or multi-level LUNs.
    pub fn index(self) -> Option<u16> {
        if self.0[2..].iter().any(|&b| b != 0) {
            return None;
        }
        match self.0[0] >> 6 {
            0b00 if self.0[0] == 0 => Some(u16::from(self.0[1])),
            0b01 => Some(u16::from(self.0[0] & 0x3f) << 8 | u16::from(self.0[1])),
            _ => None,
        }
    }
}

/// The Initiator Session ID (6 bytes of the Login PDUs; RFC 7143 §11.12.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Isid(pub [u8; 6]);

impl fmt::Display for Isid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Errors and Reject reasons.

/// Reject reasons (RFC 7143 §11.17.1), the byte 2 of a Reject PDU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RejectReason {
    DataDigestError = 0x02,
    SnackReject = 0x03,
    ProtocolError = 0x04,
    CommandNotSupported = 0x05,
    ImmediateCommandReject = 0x06,
    TaskInProgress = 0x07,
    InvalidDataAck = 0x08,
    InvalidPduField = 0x09,
    LongOperationReject = 0x0a,
    WaitingForLogout = 0x0c,
}

impl RejectReason {
    /// The wire value.
    pub const fn code(self) -> u8 {
        self as u8
    }
}

/// What is wrong with a BHS an initiator sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PduErrorKind {
    /// An opcode no iSCSI initiator may send that we do not implement
    /// (reserved or vendor-specific).
    UnsupportedOpcode,
    /// A target opcode (0x20-0x3f) arrived at the target.
    TargetOpcode,
    /// A defined field holds a reserved code value (RFC 7143 §11.2.1.1).
    ReservedValue(&'static str),
    /// A combination of fields the RFC forbids.
    InvalidField(&'static str),
}

/// A BHS that cannot be accepted, with the opcode it carried so the caller
/// can tell a login failure from a Reject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PduError {
    pub opcode: u8,
    pub kind: PduErrorKind,
}

impl PduError {
    fn reserved(opcode: u8, field: &'static str) -> Self {
        PduError {
            opcode,
            kind: PduErrorKind::ReservedValue(field),
        }
    }

    fn invalid(opcode: u8, what: &'static str) -> Self {
        PduError {
            opcode,
            kind: PduErrorKind::InvalidField(what),
        }
    }

    /// The Reject reason to answer with. During login a bad Login Request
    /// is answered with a Login Response instead (status 0x0200).
    pub fn reject_reason(&self) -> RejectReason {
        match self.kind {
            PduErrorKind::UnsupportedOpcode => RejectReason::CommandNotSupported,
            PduErrorKind::TargetOpcode | PduErrorKind::ReservedValue(_) => {
                RejectReason::ProtocolError
            }
            PduErrorKind::InvalidField(_) => RejectReason::InvalidPduField,
        }
    }
}

impl fmt::Display for PduError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            PduErrorKind::UnsupportedOpcode => write!(f, "unsupported opcode {:#04x}", self.opcode),
            PduErrorKind::TargetOpcode => {
                write!(f, "target opcode {:#04x} sent by an initiator", self.opcode)
            }
            PduErrorKind::ReservedValue(field) => {
                write!(f, "opcode {:#04x}: reserved value in {field}", self.opcode)
            }
            PduErrorKind::InvalidField(what) => write!(f, "opcode {:#04x}: {what}", self.opcode),
        }
    }
}

impl std::error::Error for PduError {}

// ---------------------------------------------------------------------------
// Initiator PDUs (decoding).

/// SCSI task attributes (SCSI Command byte 1, bits 0-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskAttribute {
    Untagged = 0,
    Simple = 1,
    Ordered = 2,
    HeadOfQueue = 3,
    Aca = 4,
}

/// Login stages (CSG/NSG).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    SecurityNegotiation = 0,
    OperationalNegotiation = 1,
    FullFeature = 3,
}

impl Stage {
    fn from_bits(bits: u8) -> Option<Self> {
        match bits {
            0 => Some(Stage::SecurityNegotiation),
            1 => Some(Stage::OperationalNegotiation),
            3 => Some(Stage::FullFeature),
            _ => None,
        }
    }
}

/// Task management functions (RFC 7143 §11.5.1). Functions the target does
/// not know stay as their code, to be answered "function not supported".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskMgmtFunction {
    AbortTask,
    AbortTaskSet,
    ClearAca,
    ClearTaskSet,
    LogicalUnitReset,
    TargetWarmReset,
    TargetColdReset,
    TaskReassign,
    /// Any other code, including RFC 7144's QUERY TASK (9) and later, which
    /// need iSCSIProtocolLevel 2.
    Other(u8),
}

impl TaskMgmtFunction {
    fn from_code(code: u8) -> Self {
        match code {
            1 => TaskMgmtFunction::AbortTask,
            2 => TaskMgmtFunction::AbortTaskSet,
            3 => TaskMgmtFunction::ClearAca,
            4 => TaskMgmtFunction::ClearTaskSet,
            5 => TaskMgmtFunction::LogicalUnitReset,
            6 => TaskMgmtFunction::TargetWarmReset,
            7 => TaskMgmtFunction::TargetColdReset,
            8 => TaskMgmtFunction::TaskReassign,
            other => TaskMgmtFunction::Other(other),
        }
    }

    /// The wire value.
    pub fn code(self) -> u8 {
        match self {
            TaskMgmtFunction::AbortTask => 1,
            TaskMgmtFunction::AbortTaskSet => 2,
            TaskMgmtFunction::ClearAca => 3,
            TaskMgmtFunction::ClearTaskSet => 4,
            TaskMgmtFunction::LogicalUnitReset => 5,
            TaskMgmtFunction::TargetWarmReset => 6,
            TaskMgmtFunction::TargetColdReset => 7,
            TaskMgmtFunction::TaskReassign => 8,
            TaskMgmtFunction::Other(code) => code,
        }
    }
}

/// Logout reason codes (Logout Request byte 1, bits 0-6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogoutReason {
    CloseSession = 0,
    CloseConnection = 1,
    RemoveConnectionForRecovery = 2,
}

/// SNACK types (SNACK Request byte 1, bits 0-3). At ErrorRecoveryLevel 0 a
/// target answers any SNACK with a Reject (reason Protocol Error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnackType {
    DataR2t = 0,
    Status = 1,
    DataAck = 2,
    RData = 3,
}

/// NOP-Out (0x00). ITT 0xffffffff means no NOP-In is wanted; TTT other than
/// 0xffffffff answers a target's NOP-In.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NopOut {
    pub immediate: bool,
    pub lun: Lun,
    pub itt: u32,
    pub ttt: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    /// Ping data length.
    pub data_len: u32,
}

/// SCSI Command (0x01).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScsiCommand {
    pub immediate: bool,
    /// F: no unsolicited Data-Out PDUs follow this command.
    pub final_bit: bool,
    /// R: data flows from target to initiator.
    pub read: bool,
    /// W: data flows from initiator to target.
    pub write: bool,
    pub attr: TaskAttribute,
    pub lun: Lun,
    pub itt: u32,
    /// Expected Data Transfer Length (the write length for bidirectional
    /// commands; the read length is in an AHS).
    pub expected_data_len: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    /// The first 16 CDB bytes; longer CDBs continue in an Extended CDB AHS.
    pub cdb: [u8; 16],
    /// TotalAHSLength in bytes.
    pub ahs_len: usize,
    /// Immediate data length.
    pub data_len: u32,
}

/// Task Management Function Request (0x02).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskMgmtRequest {
    pub immediate: bool,
    pub function: TaskMgmtFunction,
    pub lun: Lun,
    pub itt: u32,
    pub referenced_task_tag: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub ref_cmd_sn: u32,
    pub exp_data_sn: u32,
}

/// Login Request (0x03). Always immediate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginRequest {
    /// C: the text continues in the next Login Request.
    pub continue_bit: bool,
    pub current_stage: Stage,
    /// NSG when the T (transit) bit is set, `None` when it is not.
    pub next_stage: Option<Stage>,
    pub version_max: u8,
    pub version_min: u8,
    pub isid: Isid,
    pub tsih: u16,
    pub itt: u32,
    pub cid: u16,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub data_len: u32,
}

/// Text Request (0x04).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextRequest {
    pub immediate: bool,
    pub final_bit: bool,
    /// C: the text continues in the next Text Request.
    pub continue_bit: bool,
    pub lun: Lun,
    pub itt: u32,
    pub ttt: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub data_len: u32,
}

/// SCSI Data-Out (0x05).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataOut {
    pub final_bit: bool,
    pub lun: Lun,
    pub itt: u32,
    /// 0xffffffff for unsolicited data, else the TTT of the R2T answered.
    pub ttt: u32,
    pub exp_stat_sn: u32,
    pub data_sn: u32,
    pub buffer_offset: u32,
    pub data_len: u32,
}

/// Logout Request (0x06).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogoutRequest {
    pub immediate: bool,
    pub reason: LogoutReason,
    pub itt: u32,
    /// The connection to close (reserved when closing the session).
    pub cid: u16,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

/// SNACK Request (0x10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnackRequest {
    pub snack_type: SnackType,
    pub lun: Lun,
    pub itt: u32,
    /// TTT for DataACK and R-Data SNACKs (the SNACK Tag), else reserved.
    pub ttt: u32,
    pub exp_stat_sn: u32,
    pub beg_run: u32,
    pub run_length: u32,
}

/// Any PDU an initiator may send, decoded from its BHS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitiatorPdu {
    NopOut(NopOut),
    ScsiCommand(ScsiCommand),
    TaskMgmt(TaskMgmtRequest),
    Login(LoginRequest),
    Text(TextRequest),
    DataOut(DataOut),
    Logout(LogoutRequest),
    Snack(SnackRequest),
}

impl InitiatorPdu {
    /// Decodes and validates a BHS. Never allocates and never panics.
    pub fn decode(bhs: &Bhs) -> Result<Self, PduError> {
        let op = opcode_of(bhs);
        let immediate = is_immediate(bhs);
        let flags = bhs[1];
        let final_bit = flags & FINAL_BIT != 0;
        let data_len = get_u24(bhs, 5);
        let itt = get_u32(bhs, 16);
        match op {
            opcode::NOP_OUT => Ok(InitiatorPdu::NopOut(NopOut {
                immediate,
                lun: get_lun(bhs),
                itt,
                ttt: get_u32(bhs, 20),
                cmd_sn: get_u32(bhs, 24),
                exp_stat_sn: get_u32(bhs, 28),
                data_len,
            })),
            opcode::SCSI_COMMAND => {
                let attr = match flags & 0x07 {
                    0 => TaskAttribute::Untagged,
                    1 => TaskAttribute::Simple,
                    2 => TaskAttribute::Ordered,
                    3 => TaskAttribute::HeadOfQueue,
                    4 => TaskAttribute::Aca,
                    _ => return Err(PduError::reserved(op, "task attribute")),
                };
                let write = flags & 0x20 != 0;
                // Unsolicited Data-Out (F=0) only makes sense for writes.
                if !final_bit && !write {
                    return Err(PduError::invalid(op, "F=0 on a command without W"));
                }
                let mut cdb = [0u8; 16];
                cdb.copy_from_slice(&bhs[32..48]);
                Ok(InitiatorPdu::ScsiCommand(ScsiCommand {
                    immediate,
                    final_bit,
                    read: flags & 0x40 != 0,
                    write,
                    attr,
                    lun: get_lun(bhs),
                    itt,
                    expected_data_len: get_u32(bhs, 20),
                    cmd_sn: get_u32(bhs, 24),
                    exp_stat_sn: get_u32(bhs, 28),
                    cdb,
                    ahs_len: usize::from(bhs[4]) * 4,
                    data_len,
                }))
            }
            opcode::TASK_MGMT_REQUEST => Ok(InitiatorPdu::TaskMgmt(TaskMgmtRequest {
                immediate,
                function: TaskMgmtFunction::from_code(flags & 0x7f),
                lun: get_lun(bhs),
                itt,
                referenced_task_tag: get_u32(bhs, 20),
                cmd_sn: get_u32(bhs, 24),
                exp_stat_sn: get_u32(bhs, 28),
                ref_cmd_sn: get_u32(bhs, 32),
                exp_data_sn: get_u32(bhs, 36),
            })),
            opcode::LOGIN_REQUEST => {
                let transit = flags & 0x80 != 0;
                let continue_bit = flags & 0x40 != 0;
                if transit && continue_bit {
                    return Err(PduError::invalid(op, "T and C both set"));
                }
                let current_stage =
                    Stage::from_bits((flags >> 2) & 0x03).ok_or(PduError::reserved(op, "CSG"))?;
                let next_stage = if transit {
                    Some(Stage::from_bits(flags & 0x03).ok_or(PduError::reserved(op, "NSG"))?)
                } else {
                    None
                };
                let mut isid = [0u8; 6];
                isid.copy_from_slice(&bhs[8..14]);
                Ok(InitiatorPdu::Login(LoginRequest {
                    continue_bit,
                    current_stage,
                    next_stage,
                    version_max: bhs[2],
                    version_min: bhs[3],
                    isid: Isid(isid),
                    tsih: get_u16(bhs, 14),
                    itt,
                    cid: get_u16(bhs, 20),
                    cmd_sn: get_u32(bhs, 24),
                    exp_stat_sn: get_u32(bhs, 28),
                    data_len,
                }))
            }
            opcode::TEXT_REQUEST => {
                let continue_bit = flags & 0x40 != 0;
                if final_bit && continue_bit {
                    return Err(PduError::invalid(op, "F and C both set"));
                }
                Ok(InitiatorPdu::Text(TextRequest {
                    immediate,
                    final_bit,
                    continue_bit,
                    lun: get_lun(bhs),
                    itt,
                    ttt: get_u32(bhs, 20),
                    cmd_sn: get_u32(bhs, 24),
                    exp_stat_sn: get_u32(bhs, 28),
                    data_len,
                }))
            }
            opcode::SCSI_DATA_OUT => Ok(InitiatorPdu::DataOut(DataOut {
                final_bit,
                lun: get_lun(bhs),
                itt,
                ttt: get_u32(bhs, 20),
                exp_stat_sn: get_u32(bhs, 28),
                data_sn: get_u32(bhs, 36),
                buffer_offset: get_u32(bhs, 40),
                data_len,
            })),
            opcode::LOGOUT_REQUEST => {
                let reason = match flags & 0x7f {
                    0 => LogoutReason::CloseSession,
                    1 => LogoutReason::CloseConnection,
                    2 => LogoutReason::RemoveConnectionForRecovery,
                    _ => return Err(PduError::reserved(op, "logout reason code")),
                };
                Ok(InitiatorPdu::Logout(LogoutRequest {
                    immediate,
                    reason,
                    itt,
                    cid: get_u16(bhs, 20),
                    cmd_sn: get_u32(bhs, 24),
                    exp_stat_sn: get_u32(bhs, 28),
                }))
            }
            opcode::SNACK_REQUEST => {
                let snack_type = match flags & 0x0f {
                    0 => SnackType::DataR2t,
                    1 => SnackType::Status,
                    2 => SnackType::DataAck,
                    3 => SnackType::RData,
                    _ => return Err(PduError::reserved(op, "SNACK type")),
                };
                Ok(InitiatorPdu::Snack(SnackRequest {
                    snack_type,
                    lun: get_lun(bhs),
                    itt,
                    ttt: get_u32(bhs, 20),
                    exp_stat_sn: get_u32(bhs, 28),
                    beg_run: get_u32(bhs, 40),
                    run_length: get_u32(bhs, 44),
                }))
            }
            0x20..=0x3f => Err(PduError {
                opcode: op,
                kind: PduErrorKind::TargetOpcode,
            }),
            _ => Err(PduError {
                opcode: op,
                kind: PduErrorKind::UnsupportedOpcode,
            }),
        }
    }

    /// The Initiator Task Tag.
    pub fn itt(&self) -> u32 {
        match self {
            InitiatorPdu::NopOut(p) => p.itt,
            InitiatorPdu::ScsiCommand(p) => p.itt,
            InitiatorPdu::TaskMgmt(p) => p.itt,
            InitiatorPdu::Login(p) => p.itt,
            InitiatorPdu::Text(p) => p.itt,
            InitiatorPdu::DataOut(p) => p.itt,
            InitiatorPdu::Logout(p) => p.itt,
            InitiatorPdu::Snack(p) => p.itt,
        }
    }
}

// ---------------------------------------------------------------------------
// Additional Header Segments (RFC 7143 §11.2.2).

/// AHSType of the Extended CDB AHS.
pub const AHS_EXTENDED_CDB: u8 = 1;
/// AHSType of the Bidirectional Read Expected Data Transfer Length AHS.
pub const AHS_BIDI_READ_LENGTH: u8 = 2;

/// The AHSs of a SCSI Command, borrowed from the receive buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommandAhs<'a> {
    /// CDB bytes 16 and up.
    pub extended_cdb: Option<&'a [u8]>,
    /// Expected read length of a bidirectional command.
    pub bidi_read_expected_len: Option<u32>,
}

/// A whole CDB: the 16 BHS bytes plus an Extended CDB AHS, if any.
#[derive(Clone, Copy)]
pub struct Cdb {
    bytes: [u8; MAX_CDB_LEN],
    len: u16,
}

impl Cdb {
    /// The CDB bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Debug for Cdb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Cdb").field(&self.as_slice()).finish()
    }
}

impl PartialEq for Cdb {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Cdb {}

impl ScsiCommand {
    /// The full CDB, joining the BHS bytes and the Extended CDB AHS.
    pub fn full_cdb(&self, ahs: &CommandAhs<'_>) -> Cdb {
        let mut bytes = [0u8; MAX_CDB_LEN];
        bytes[..16].copy_from_slice(&self.cdb);
        let mut len = 16;
        if let Some(ext) = ahs.extended_cdb {
            // parse_command_ahs bounds the extension to 244 bytes.
            let ext = &ext[..ext.len().min(MAX_CDB_LEN - 16)];
            bytes[16..16 + ext.len()].copy_from_slice(ext);
            len += ext.len();
        }
        Cdb {
            bytes,
            len: len as u16,
        }
    }
}

/// Parses the AHS area of a SCSI Command (`ahs` is TotalAHSLength*4 bytes).
///
/// Each AHS is AHSLength (2 bytes: the bytes after AHSType, the reserved byte
/// included, padding excluded), AHSType (1 byte), then the AHS-specific field,
/// padded to 4 bytes. Reserved AHS types and repeated AHSs are protocol
/// errors; types 60-63 (non-iSCSI extensions) are skipped.
pub fn parse_command_ahs(ahs: &[u8]) -> Result<CommandAhs<'_>, PduError> {
    let op = opcode::SCSI_COMMAND;
    if !ahs.len().is_multiple_of(4) || ahs.len() > MAX_AHS_LEN {
        return Err(PduError::invalid(op, "TotalAHSLength"));
    }
    let mut out = CommandAhs::default();
    let mut rest = ahs;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(PduError::invalid(op, "truncated AHS"));
        }
        let ahs_len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let ahs_type = rest[2] & 0x3f;
        // AHSLength counts from byte 3 on; the whole AHS is 3 + AHSLength
        // bytes before padding.
        let total = padded_len(3 + ahs_len);
        if ahs_len == 0 || total > rest.len() {
            return Err(PduError::invalid(op, "AHSLength"));
        }
        let specific = &rest[3..3 + ahs_len];
        match ahs_type {
            AHS_EXTENDED_CDB => {
                // A reserved byte, then at least one CDB byte.
                if out.extended_cdb.is_some() {
                    return Err(PduError::invalid(op, "two Extended CDB AHSs"));
                }
                let cdb = &specific[1..];
                if cdb.is_empty() || cdb.len() > MAX_CDB_LEN - 16 {
                    return Err(PduError::invalid(op, "Extended CDB AHS length"));
                }
                out.extended_cdb = Some(cdb);
            }
            AHS_BIDI_READ_LENGTH => {
                if out.bidi_read_expected_len.is_some() {
                    return Err(PduError::invalid(op, "two Bidirectional Read Length AHSs"));
                }
                if ahs_len != 5 {
                    return Err(PduError::invalid(op, "Bidirectional Read Length AHSLength"));
                }
                out.bidi_read_expected_len = Some(u32::from_be_bytes([
                    specific[1],
                    specific[2],
                    specific[3],
                    specific[4],
                ]));
            }
            60..=63 => {}
            _ => return Err(PduError::reserved(op, "AHSType")),
        }
        rest = &rest[total..];
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Target PDUs (encoding).

/// The sequence numbers most target PDUs carry in bytes 24-35.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusSeq {
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

impl StatusSeq {
    fn put(&self, bhs: &mut Bhs) {
        put_u32(bhs, 24, self.stat_sn);
        put_u32(bhs, 28, self.exp_cmd_sn);
        put_u32(bhs, 32, self.max_cmd_sn);
    }
}

/// A residual count and which way it goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Residual {
    #[default]
    None,
    /// The initiator expected more than was transferred.
    Underflow(u32),
    /// More was asked for (by the CDB) than the initiator expected.
    Overflow(u32),
}

impl Residual {
    /// (overflow, underflow, count)
    fn parts(self) -> (bool, bool, u32) {
        match self {
            Residual::None => (false, false, 0),
            Residual::Underflow(n) => (false, true, n),
            Residual::Overflow(n) => (true, false, n),
        }
    }
}

/// iSCSI service responses (SCSI Response byte 2).
pub mod service_response {
    pub const COMMAND_COMPLETED: u8 = 0x00;
    pub const TARGET_FAILURE: u8 = 0x01;
}

fn header(op: u8, flags: u8, data_len: u32) -> Bhs {
    let mut bhs = [0u8; BHS_LEN];
    bhs[0] = op;
    bhs[1] = flags;
    put_u24(&mut bhs, 5, data_len);
    bhs
}

/// SCSI Response (0x21). The data segment holds SenseLength (2 bytes), sense
/// data and response data; `data_len` is its length.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScsiResponse {
    pub itt: u32,
    /// A [`service_response`] value.
    pub response: u8,
    /// SCSI status (valid when the response is "command completed").
    pub status: u8,
    pub residual: Residual,
    /// The read residual of a bidirectional command (o/u bits).
    pub bidi_read_residual: Residual,
    /// Data-In and R2T PDUs sent for the command (0 when none).
    pub exp_data_sn: u32,
    pub seq: StatusSeq,
    pub data_len: u32,
}

impl ScsiResponse {
    pub fn encode(&self) -> Bhs {
        let (o, u, count) = self.residual.parts();
        let (bo, bu, bidi_count) = self.bidi_read_residual.parts();
        let flags = FINAL_BIT
            | if bo { 0x10 } else { 0 }
            | if bu { 0x08 } else { 0 }
            | if o { 0x04 } else { 0 }
            | if u { 0x02 } else { 0 };
        let mut bhs = header(opcode::SCSI_RESPONSE, flags, self.data_len);
        bhs[2] = self.response;
        bhs[3] = self.status;
        put_u32(&mut bhs, 16, self.itt);
        // Bytes 20-23 (SNACK Tag) stay 0: no R-Data SNACKs at ERL 0.
        self.seq.put(&mut bhs);
        put_u32(&mut bhs, 36, self.exp_data_sn);
        put_u32(&mut bhs, 40, bidi_count);
        put_u32(&mut bhs, 44, count);
        bhs
    }
}

/// The A bit of a Data-In: asks for a DataACK SNACK (ERL > 0 only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataAckRequest {
    pub lun: Lun,
    pub ttt: u32,
}

/// SCSI Data-In (0x25).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataIn {
    /// F: last Data-In of the command (or of a sequence).
    pub final_bit: bool,
    /// A bit with the LUN and TTT it requires; `None` at ERL 0.
    pub ack: Option<DataAckRequest>,
    /// S bit with the SCSI status: the status is sent in this PDU (phase
    /// collapse) and `seq.stat_sn` is valid. Requires `final_bit`.
    pub status: Option<u8>,
    /// O/U bits and residual count; encoded only with a status.
    pub residual: Residual,
    pub itt: u32,
    /// StatSN is written only with a status; ExpCmdSN and MaxCmdSN always.
    pub seq: StatusSeq,
    pub data_sn: u32,
    pub buffer_offset: u32,
    pub data_len: u32,
}

impl DataIn {
    pub fn encode(&self) -> Bhs {
        debug_assert!(self.status.is_none() || self.final_bit, "S bit needs F");
        let mut flags = if self.final_bit { FINAL_BIT } else { 0 };
        if self.ack.is_some() {
            flags |= 0x40;
        }
        let mut residual_count = 0;
        if self.status.is_some() {
            let (o, u, count) = self.residual.parts();
            flags |= 0x01 | if o { 0x04 } else { 0 } | if u { 0x02 } else { 0 };
            residual_count = count;
        }
        let mut bhs = header(opcode::SCSI_DATA_IN, flags, self.data_len);
        bhs[3] = self.status.unwrap_or(0);
        put_u32(&mut bhs, 16, self.itt);
        match self.ack {
            Some(ack) => {
                bhs[8..16].copy_from_slice(&ack.lun.0);
                put_u32(&mut bhs, 20, ack.ttt);
            }
            None => put_u32(&mut bhs, 20, RESERVED_TAG),
        }
        self.seq.put(&mut bhs);
        if self.status.is_none() {
            put_u32(&mut bhs, 24, 0);
        }
        put_u32(&mut bhs, 36, self.data_sn);
        put_u32(&mut bhs, 40, self.buffer_offset);
        put_u32(&mut bhs, 44, residual_count);
        bhs
    }
}

/// Ready To Transfer (0x31). StatSN is the next one, not consumed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct R2t {
    pub lun: Lun,
    pub itt: u32,
    pub ttt: u32,
    pub seq: StatusSeq,
    pub r2t_sn: u32,
    pub buffer_offset: u32,
    pub desired_len: u32,
}

impl R2t {
    pub fn encode(&self) -> Bhs {
        let mut bhs = header(opcode::R2T, FINAL_BIT, 0);
        bhs[8..16].copy_from_slice(&self.lun.0);
        put_u32(&mut bhs, 16, self.itt);
        put_u32(&mut bhs, 20, self.ttt);
        self.seq.put(&mut bhs);
        put_u32(&mut bhs, 36, self.r2t_sn);
        put_u32(&mut bhs, 40, self.buffer_offset);
        put_u32(&mut bhs, 44, self.desired_len);
        bhs
    }
}

/// NOP-In (0x20): an answer to a NOP-Out (ITT of the NOP-Out, TTT
/// 0xffffffff) or a target ping (ITT 0xffffffff, TTT other than 0xffffffff).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NopIn {
    pub lun: Lun,
    pub itt: u32,
    pub ttt: u32,
    pub seq: StatusSeq,
    pub data_len: u32,
}

impl NopIn {
    pub fn encode(&self) -> Bhs {
        let mut bhs = header(opcode::NOP_IN, FINAL_BIT, self.data_len);
        bhs[8..16].copy_from_slice(&self.lun.0);
        put_u32(&mut bhs, 16, self.itt);
        put_u32(&mut bhs, 20, self.ttt);
        self.seq.put(&mut bhs);
        bhs
    }
}

/// Login Status-Class and Status-Detail (RFC 7143 §11.13.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LoginStatus {
    pub class: u8,
    pub detail: u8,
}

impl LoginStatus {
    const fn new(class: u8, detail: u8) -> Self {
        LoginStatus { class, detail }
    }
    pub const SUCCESS: LoginStatus = LoginStatus::new(0x00, 0x00);
    pub const TARGET_MOVED_TEMPORARILY: LoginStatus = LoginStatus::new(0x01, 0x01);
    pub const TARGET_MOVED_PERMANENTLY: LoginStatus = LoginStatus::new(0x01, 0x02);
    pub const INITIATOR_ERROR: LoginStatus = LoginStatus::new(0x02, 0x00);
    pub const AUTHENTICATION_FAILURE: LoginStatus = LoginStatus::new(0x02, 0x01);
    pub const AUTHORIZATION_FAILURE: LoginStatus = LoginStatus::new(0x02, 0x02);
    pub const TARGET_NOT_FOUND: LoginStatus = LoginStatus::new(0x02, 0x03);
    pub const TARGET_REMOVED: LoginStatus = LoginStatus::new(0x02, 0x04);
    pub const UNSUPPORTED_VERSION: LoginStatus = LoginStatus::new(0x02, 0x05);
    pub const TOO_MANY_CONNECTIONS: LoginStatus = LoginStatus::new(0x02, 0x06);
    pub const MISSING_PARAMETER: LoginStatus = LoginStatus::new(0x02, 0x07);
    pub const CANT_INCLUDE_IN_SESSION: LoginStatus = LoginStatus::new(0x02, 0x08);
    pub const SESSION_TYPE_NOT_SUPPORTED: LoginStatus = LoginStatus::new(0x02, 0x09);
    pub const SESSION_DOES_NOT_EXIST: LoginStatus = LoginStatus::new(0x02, 0x0a);
    pub const INVALID_DURING_LOGIN: LoginStatus = LoginStatus::new(0x02, 0x0b);
    pub const TARGET_ERROR: LoginStatus = LoginStatus::new(0x03, 0x00);
    pub const SERVICE_UNAVAILABLE: LoginStatus = LoginStatus::new(0x03, 0x01);
    pub const OUT_OF_RESOURCES: LoginStatus = LoginStatus::new(0x03, 0x02);

    /// Status-Class 0.
    pub fn is_success(self) -> bool {
        self.class == 0
    }

    /// Class and detail as one number, as logs and libiscsi print them
    /// (0x0201 is an authentication failure).
    pub fn code(self) -> u16 {
        u16::from(self.class) << 8 | u16::from(self.detail)
    }
}

impl fmt::Display for LoginStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#06x}", self.code())
    }
}

/// Login Response (0x23).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginResponse {
    pub continue_bit: bool,
    pub current_stage: Stage,
    /// NSG with the T bit; `None` leaves T clear.
    pub next_stage: Option<Stage>,
    pub version_max: u8,
    pub version_active: u8,
    pub isid: Isid,
    pub tsih: u16,
    pub itt: u32,
    pub seq: StatusSeq,
    pub status: LoginStatus,
    pub data_len: u32,
}

impl LoginResponse {
    pub fn encode(&self) -> Bhs {
        let mut flags = (self.current_stage as u8) << 2;
        if let Some(next) = self.next_stage {
            flags |= 0x80 | next as u8;
        }
        if self.continue_bit {
            flags |= 0x40;
        }
        let mut bhs = header(opcode::LOGIN_RESPONSE, flags, self.data_len);
        bhs[2] = self.version_max;
        bhs[3] = self.version_active;
        bhs[8..14].copy_from_slice(&self.isid.0);
        put_u16(&mut bhs, 14, self.tsih);
        put_u32(&mut bhs, 16, self.itt);
        self.seq.put(&mut bhs);
        bhs[36] = self.status.class;
        bhs[37] = self.status.detail;
        bhs
    }
}

/// Text Response (0x24).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TextResponse {
    pub final_bit: bool,
    pub continue_bit: bool,
    pub lun: Lun,
    pub itt: u32,
    /// 0xffffffff with F=1; a tag the initiator echoes otherwise.
    pub ttt: u32,
    pub seq: StatusSeq,
    pub data_len: u32,
}

impl TextResponse {
    pub fn encode(&self) -> Bhs {
        let flags =
            if self.final_bit { FINAL_BIT } else { 0 } | if self.continue_bit { 0x40 } else { 0 };
        let mut bhs = header(opcode::TEXT_RESPONSE, flags, self.data_len);
        bhs[8..16].copy_from_slice(&self.lun.0);
        put_u32(&mut bhs, 16, self.itt);
        put_u32(&mut bhs, 20, self.ttt);
        self.seq.put(&mut bhs);
        bhs
    }
}

/// Logout Response codes (byte 2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogoutResponseCode {
    #[default]
    Closed = 0,
    CidNotFound = 1,
    RecoveryNotSupported = 2,
    CleanupFailed = 3,
}

/// Logout Response (0x26).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogoutResponse {
    pub response: LogoutResponseCode,
    pub itt: u32,
    pub seq: StatusSeq,
    pub time2wait: u16,
    pub time2retain: u16,
}

impl LogoutResponse {
    pub fn encode(&self) -> Bhs {
        let mut bhs = header(opcode::LOGOUT_RESPONSE, FINAL_BIT, 0);
        bhs[2] = self.response as u8;
        put_u32(&mut bhs, 16, self.itt);
        self.seq.put(&mut bhs);
        put_u16(&mut bhs, 40, self.time2wait);
        put_u16(&mut bhs, 42, self.time2retain);
        bhs
    }
}

/// Task Management Function Response codes (byte 2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TaskMgmtResponseCode {
    #[default]
    FunctionComplete = 0,
    TaskDoesNotExist = 1,
    LunDoesNotExist = 2,
    TaskStillAllegiant = 3,
    ReassignmentNotSupported = 4,
    FunctionNotSupported = 5,
    AuthorizationFailed = 6,
    FunctionRejected = 255,
}

/// Task Management Function Response (0x22).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskMgmtResponse {
    pub response: TaskMgmtResponseCode,
    pub itt: u32,
    pub seq: StatusSeq,
}

impl TaskMgmtResponse {
    pub fn encode(&self) -> Bhs {
        let mut bhs = header(opcode::TASK_MGMT_RESPONSE, FINAL_BIT, 0);
        bhs[2] = self.response as u8;
        put_u32(&mut bhs, 16, self.itt);
        self.seq.put(&mut bhs);
        bhs
    }
}

/// Reject (0x3f). Its data segment is the rejected PDU's BHS (48 bytes,
/// without digest), so `DataSegmentLength` is always 48.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reject {
    pub reason: RejectReason,
    pub seq: StatusSeq,
    /// DataSN/R2TSN for a rejected SNACK; 0 otherwise.
    pub data_sn_or_r2t_sn: u32,
}

impl Reject {
    /// Length of a Reject's data segment.
    pub const DATA_LEN: u32 = BHS_LEN as u32;

    pub fn encode(&self) -> Bhs {
        let mut bhs = header(opcode::REJECT, FINAL_BIT, Self::DATA_LEN);
        bhs[2] = self.reason.code();
        put_u32(&mut bhs, 16, RESERVED_TAG);
        self.seq.put(&mut bhs);
        put_u32(&mut bhs, 36, self.data_sn_or_r2t_sn);
        bhs
    }
}

/// Asynchronous events (RFC 7143 §11.9.1) with their parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsyncEvent {
    /// 0: a SCSI asynchronous event; the sense data is in the data segment.
    ScsiEvent,
    /// 1: the target asks for a logout within `time_to_logout` seconds
    /// (Parameter3).
    RequestLogout { time_to_logout: u16 },
    /// 2: the target will drop connection `cid` (Parameter1), with
    /// Time2Wait (Parameter2) and Time2Retain (Parameter3).
    DropConnection {
        cid: u16,
        time2wait: u16,
        time2retain: u16,
    },
    /// 3: the target will drop all connections of the session.
    DropAllConnections { time2wait: u16, time2retain: u16 },
    /// 4: the target asks for a parameter renegotiation within
    /// `time_to_negotiate` seconds (Parameter3).
    RequestNegotiation { time_to_negotiate: u16 },
    /// 5: all tasks of the LUN in the PDU are being terminated.
    TaskTermination,
    /// 255: vendor-specific, with AsyncVCode and three parameters.
    Vendor { vcode: u8, parameters: [u16; 3] },
}

impl AsyncEvent {
    /// (AsyncEvent, AsyncVCode, Parameter1-3)
    fn parts(self) -> (u8, u8, [u16; 3]) {
        match self {
            AsyncEvent::ScsiEvent => (0, 0, [0; 3]),
            AsyncEvent::RequestLogout { time_to_logout } => (1, 0, [0, 0, time_to_logout]),
            AsyncEvent::DropConnection {
                cid,
                time2wait,
                time2retain,
            } => (2, 0, [cid, time2wait, time2retain]),
            AsyncEvent::DropAllConnections {
                time2wait,
                time2retain,
            } => (3, 0, [0, time2wait, time2retain]),
            AsyncEvent::RequestNegotiation { time_to_negotiate } => {
                (4, 0, [0, 0, time_to_negotiate])
            }
            AsyncEvent::TaskTermination => (5, 0, [0; 3]),
            AsyncEvent::Vendor { vcode, parameters } => (255, vcode, parameters),
        }
    }
}

/// Asynchronous Message (0x32). ITT is 0xffffffff; StatSN is consumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsyncMessage {
    pub lun: Lun,
    pub event: AsyncEvent,
    pub seq: StatusSeq,
    pub data_len: u32,
}

impl AsyncMessage {
    pub fn encode(&self) -> Bhs {
        let (event, vcode, params) = self.event.parts();
        let mut bhs = header(opcode::ASYNC_MESSAGE, FINAL_BIT, self.data_len);
        bhs[8..16].copy_from_slice(&self.lun.0);
        put_u32(&mut bhs, 16, RESERVED_TAG);
        self.seq.put(&mut bhs);
        bhs[36] = event;
        bhs[37] = vcode;
        put_u16(&mut bhs, 38, params[0]);
        put_u16(&mut bhs, 40, params[1]);
        put_u16(&mut bhs, 42, params[2]);
        bhs
    }
}

#[cfg(test)]
mod tests;
