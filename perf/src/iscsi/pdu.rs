//! The initiator's half of RFC 7143 §11: encoding the PDUs an initiator sends
//! (SCSI Command, Data-Out, NOP-Out, Login, Logout) and decoding the fields of
//! the PDUs a target sends. The target's own module (`ferrite_transport::iscsi::pdu`)
//! decodes initiator PDUs and encodes target PDUs; the unit tests below run each
//! side against the other.
//!
//! Everything works on `[u8; 48]` and never allocates.

pub use ferrite_transport::iscsi::pdu::{
    opcode, pad_len, padded_len, Bhs, Lun, BHS_LEN, FINAL_BIT, IMMEDIATE_BIT, RESERVED_TAG,
};

/// SCSI Command flags (byte 1).
pub const CMD_READ: u8 = 0x40;
pub const CMD_WRITE: u8 = 0x20;
/// Task attribute SIMPLE.
pub const ATTR_SIMPLE: u8 = 0x01;

/// Data-In flags (byte 1).
pub const DATA_IN_STATUS: u8 = 0x01;
pub const DATA_IN_UNDERFLOW: u8 = 0x02;
pub const DATA_IN_OVERFLOW: u8 = 0x04;
pub const DATA_IN_ACK: u8 = 0x40;

/// SCSI Response flags (byte 1).
pub const RSP_UNDERFLOW: u8 = 0x02;
pub const RSP_OVERFLOW: u8 = 0x04;

/// Login flags (byte 1).
pub const LOGIN_TRANSIT: u8 = 0x80;
pub const LOGIN_CONTINUE: u8 = 0x40;

/// SCSI status codes.
pub const STATUS_GOOD: u8 = 0x00;
pub const STATUS_CHECK_CONDITION: u8 = 0x02;

#[inline]
pub fn get_u16(b: &Bhs, at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
pub fn get_u32(b: &Bhs, at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
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
fn put_data_len(b: &mut Bhs, len: usize) {
    debug_assert!(len <= 0x00ff_ffff);
    b[5..8].copy_from_slice(&(len as u32).to_be_bytes()[1..]);
}

/// The opcode of a target PDU (byte 0, bits 0-5).
#[inline]
pub fn opcode_of(b: &Bhs) -> u8 {
    b[0] & 0x3f
}

/// TotalAHSLength in bytes.
#[inline]
pub fn ahs_len(b: &Bhs) -> usize {
    usize::from(b[4]) * 4
}

/// DataSegmentLength.
#[inline]
pub fn data_len(b: &Bhs) -> usize {
    u32::from_be_bytes([0, b[5], b[6], b[7]]) as usize
}

#[inline]
pub fn itt(b: &Bhs) -> u32 {
    get_u32(b, 16)
}

#[inline]
pub fn ttt(b: &Bhs) -> u32 {
    get_u32(b, 20)
}

#[inline]
pub fn stat_sn(b: &Bhs) -> u32 {
    get_u32(b, 24)
}

#[inline]
pub fn exp_cmd_sn(b: &Bhs) -> u32 {
    get_u32(b, 28)
}

#[inline]
pub fn max_cmd_sn(b: &Bhs) -> u32 {
    get_u32(b, 32)
}

/// Data-In: DataSN; R2T: R2TSN.
#[inline]
pub fn data_sn(b: &Bhs) -> u32 {
    get_u32(b, 36)
}

/// Data-In and R2T: Buffer Offset.
#[inline]
pub fn buffer_offset(b: &Bhs) -> u32 {
    get_u32(b, 40)
}

/// R2T: Desired Data Transfer Length.
#[inline]
pub fn desired_length(b: &Bhs) -> u32 {
    get_u32(b, 44)
}

/// Data-In (with S) and SCSI Response: Residual Count.
#[inline]
pub fn residual(b: &Bhs) -> u32 {
    get_u32(b, 44)
}

/// Whether a target PDU carries a StatSN that advances the connection's
/// ExpStatSN (RFC 7143 §4.2.2.2): responses, Data-In with status, answers to
/// our NOP-Outs, Rejects and asynchronous messages; not R2Ts, plain Data-In or
/// the target's own NOP-In pings.
#[inline]
pub fn carries_status(b: &Bhs) -> bool {
    match opcode_of(b) {
        opcode::SCSI_DATA_IN => b[1] & DATA_IN_STATUS != 0,
        opcode::NOP_IN => itt(b) != RESERVED_TAG,
        opcode::R2T => false,
        _ => true,
    }
}

/// Whether a target PDU carries ExpCmdSN/MaxCmdSN (all but Login Responses
/// before the session exists, which are read in the login code).
#[inline]
pub fn carries_window(b: &Bhs) -> bool {
    matches!(
        opcode_of(b),
        opcode::NOP_IN
            | opcode::SCSI_RESPONSE
            | opcode::TASK_MGMT_RESPONSE
            | opcode::TEXT_RESPONSE
            | opcode::SCSI_DATA_IN
            | opcode::LOGOUT_RESPONSE
            | opcode::R2T
            | opcode::ASYNC_MESSAGE
            | opcode::REJECT
    )
}

/// Serial-number arithmetic (RFC 1982, 32 bits): `a > b`.
#[inline]
pub fn sn_gt(a: u32, b: u32) -> bool {
    a != b && (a.wrapping_sub(b) as i32) > 0
}

/// `a <= b` in serial-number arithmetic.
#[inline]
pub fn sn_le(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) >= 0
}

/// A SCSI Command PDU.
#[derive(Debug, Clone, Copy)]
pub struct Command<'a> {
    pub read: bool,
    pub write: bool,
    /// No unsolicited Data-Out follows.
    pub final_: bool,
    pub lun: Lun,
    pub itt: u32,
    pub edtl: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub immediate_data: u32,
    pub cdb: &'a [u8; 16],
}

impl Command<'_> {
    pub fn encode(&self) -> Bhs {
        let mut b = [0u8; BHS_LEN];
        b[0] = opcode::SCSI_COMMAND;
        b[1] = ATTR_SIMPLE
            | if self.final_ { FINAL_BIT } else { 0 }
            | if self.read { CMD_READ } else { 0 }
            | if self.write { CMD_WRITE } else { 0 };
        put_data_len(&mut b, self.immediate_data as usize);
        b[8..16].copy_from_slice(&self.lun.0);
        put_u32(&mut b, 16, self.itt);
        put_u32(&mut b, 20, self.edtl);
        put_u32(&mut b, 24, self.cmd_sn);
        put_u32(&mut b, 28, self.exp_stat_sn);
        b[32..48].copy_from_slice(self.cdb);
        b
    }
}

/// A SCSI Data-Out PDU.
#[derive(Debug, Clone, Copy)]
pub struct DataOut {
    pub final_: bool,
    pub lun: Lun,
    pub itt: u32,
    /// The R2T's TTT, or [`RESERVED_TAG`] for unsolicited data.
    pub ttt: u32,
    pub exp_stat_sn: u32,
    pub data_sn: u32,
    pub offset: u32,
    pub len: u32,
}

impl DataOut {
    pub fn encode(&self) -> Bhs {
        let mut b = [0u8; BHS_LEN];
        b[0] = opcode::SCSI_DATA_OUT;
        b[1] = if self.final_ { FINAL_BIT } else { 0 };
        put_data_len(&mut b, self.len as usize);
        b[8..16].copy_from_slice(&self.lun.0);
        put_u32(&mut b, 16, self.itt);
        put_u32(&mut b, 20, self.ttt);
        put_u32(&mut b, 28, self.exp_stat_sn);
        put_u32(&mut b, 36, self.data_sn);
        put_u32(&mut b, 40, self.offset);
        b
    }
}

/// A NOP-Out answering a target's NOP-In ping (immediate, ITT reserved, the
/// ping's TTT and LUN, its data echoed).
#[derive(Debug, Clone, Copy)]
pub struct NopOut {
    pub lun: [u8; 8],
    pub itt: u32,
    pub ttt: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub len: u32,
}

impl NopOut {
    pub fn encode(&self) -> Bhs {
        let mut b = [0u8; BHS_LEN];
        b[0] = opcode::NOP_OUT | IMMEDIATE_BIT;
        b[1] = FINAL_BIT;
        put_data_len(&mut b, self.len as usize);
        b[8..16].copy_from_slice(&self.lun);
        put_u32(&mut b, 16, self.itt);
        put_u32(&mut b, 20, self.ttt);
        put_u32(&mut b, 24, self.cmd_sn);
        put_u32(&mut b, 28, self.exp_stat_sn);
        b
    }
}

/// A Login Request.
#[derive(Debug, Clone, Copy)]
pub struct LoginRequest {
    pub transit: bool,
    pub csg: u8,
    pub nsg: u8,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub itt: u32,
    pub cid: u16,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub len: u32,
}

impl LoginRequest {
    pub fn encode(&self) -> Bhs {
        let mut b = [0u8; BHS_LEN];
        b[0] = opcode::LOGIN_REQUEST | IMMEDIATE_BIT;
        b[1] = if self.transit { LOGIN_TRANSIT } else { 0 }
            | (self.csg & 3) << 2
            | if self.transit { self.nsg & 3 } else { 0 };
        // Version-max and Version-min: 0.
        put_data_len(&mut b, self.len as usize);
        b[8..14].copy_from_slice(&self.isid);
        put_u16(&mut b, 14, self.tsih);
        put_u32(&mut b, 16, self.itt);
        put_u16(&mut b, 20, self.cid);
        put_u32(&mut b, 24, self.cmd_sn);
        put_u32(&mut b, 28, self.exp_stat_sn);
        b
    }
}

/// What a Login Response says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginResponse {
    pub transit: bool,
    pub cont: bool,
    pub csg: u8,
    pub nsg: u8,
    pub tsih: u16,
    pub itt: u32,
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    pub status_class: u8,
    pub status_detail: u8,
}

impl LoginResponse {
    pub fn decode(b: &Bhs) -> LoginResponse {
        LoginResponse {
            transit: b[1] & LOGIN_TRANSIT != 0,
            cont: b[1] & LOGIN_CONTINUE != 0,
            csg: (b[1] >> 2) & 3,
            nsg: b[1] & 3,
            tsih: get_u16(b, 14),
            itt: itt(b),
            stat_sn: stat_sn(b),
            exp_cmd_sn: exp_cmd_sn(b),
            max_cmd_sn: max_cmd_sn(b),
            status_class: b[36],
            status_detail: b[37],
        }
    }
}

/// Logout reasons.
pub const LOGOUT_CLOSE_SESSION: u8 = 0;
pub const LOGOUT_CLOSE_CONNECTION: u8 = 1;

/// A Logout Request (sent immediate).
#[derive(Debug, Clone, Copy)]
pub struct LogoutRequest {
    pub reason: u8,
    pub itt: u32,
    pub cid: u16,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

impl LogoutRequest {
    pub fn encode(&self) -> Bhs {
        let mut b = [0u8; BHS_LEN];
        b[0] = opcode::LOGOUT_REQUEST | IMMEDIATE_BIT;
        b[1] = FINAL_BIT | (self.reason & 0x7f);
        put_u32(&mut b, 16, self.itt);
        if self.reason != LOGOUT_CLOSE_SESSION {
            put_u16(&mut b, 20, self.cid);
        }
        put_u32(&mut b, 24, self.cmd_sn);
        put_u32(&mut b, 28, self.exp_stat_sn);
        b
    }
}

/// READ(16) or WRITE(16) of `blocks` blocks at `lba`.
#[inline]
pub fn rw16(write: bool, lba: u64, blocks: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = if write { 0x8a } else { 0x88 };
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// READ CAPACITY(16) (SERVICE ACTION IN(16), service action 0x10) with a
/// 32-byte allocation length.
pub fn read_capacity16() -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x9e;
    c[1] = 0x10;
    c[10..14].copy_from_slice(&32u32.to_be_bytes());
    c
}

/// Sense data of a CHECK CONDITION, fixed or descriptor format: (key, asc, ascq).
pub fn sense_key(sense: &[u8]) -> Option<(u8, u8, u8)> {
    let code = sense.first()? & 0x7f;
    match code {
        0x70 | 0x71 => Some((
            sense.get(2)? & 0x0f,
            *sense.get(12).unwrap_or(&0),
            *sense.get(13).unwrap_or(&0),
        )),
        0x72 | 0x73 => Some((sense.get(1)? & 0x0f, *sense.get(2)?, *sense.get(3)?)),
        _ => None,
    }
}

/// A SCSI status and, for CHECK CONDITION, the sense (the data segment of a
/// SCSI Response: a 2-byte length, then the sense data), in words.
pub fn describe_status(status: u8, segment: &[u8]) -> String {
    let name = match status {
        0x00 => "GOOD",
        0x02 => "CHECK CONDITION",
        0x04 => "CONDITION MET",
        0x08 => "BUSY",
        0x18 => "RESERVATION CONFLICT",
        0x28 => "TASK SET FULL",
        0x30 => "ACA ACTIVE",
        0x40 => "TASK ABORTED",
        _ => "status",
    };
    let mut s = format!("{name} ({status:#04x})");
    if segment.len() >= 2 {
        let n = usize::from(u16::from_be_bytes([segment[0], segment[1]]));
        let sense = &segment[2..segment.len().min(2 + n)];
        if let Some((key, asc, ascq)) = sense_key(sense) {
            s.push_str(&format!(
                ", sense key {key:#x}, ASC/ASCQ {asc:#04x}/{ascq:#04x}"
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrite_transport::iscsi::pdu::{
        DataIn, InitiatorPdu, LoginStatus, NopIn, R2t, Residual, ScsiResponse, Stage, StatusSeq,
    };

    fn seq() -> StatusSeq {
        StatusSeq {
            stat_sn: 7,
            exp_cmd_sn: 11,
            max_cmd_sn: 42,
        }
    }

    #[test]
    fn the_target_decodes_our_command() {
        let cdb = rw16(true, 0x0012_3456_789a, 8);
        let b = Command {
            read: false,
            write: true,
            final_: false,
            lun: Lun::from_index(3),
            itt: 0x0102_0304,
            edtl: 4096,
            cmd_sn: 99,
            exp_stat_sn: 5,
            immediate_data: 1024,
            cdb: &cdb,
        }
        .encode();
        match InitiatorPdu::decode(&b).unwrap() {
            InitiatorPdu::ScsiCommand(c) => {
                assert!(c.write && !c.read && !c.final_bit && !c.immediate);
                assert_eq!(c.lun, Lun::from_index(3));
                assert_eq!(c.itt, 0x0102_0304);
                assert_eq!(c.expected_data_len, 4096);
                assert_eq!(c.cmd_sn, 99);
                assert_eq!(c.exp_stat_sn, 5);
                assert_eq!(c.cdb, cdb);
                assert_eq!(c.data_len, 1024);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(data_len(&b), 1024);
    }

    #[test]
    fn the_target_decodes_our_data_out_nop_login_and_logout() {
        let b = DataOut {
            final_: true,
            lun: Lun::from_index(0),
            itt: 9,
            ttt: 0x77,
            exp_stat_sn: 3,
            data_sn: 2,
            offset: 8192,
            len: 4096,
        }
        .encode();
        match InitiatorPdu::decode(&b).unwrap() {
            InitiatorPdu::DataOut(d) => {
                assert!(d.final_bit);
                assert_eq!(
                    (d.itt, d.ttt, d.data_sn, d.buffer_offset),
                    (9, 0x77, 2, 8192)
                );
                assert_eq!(d.data_len, 4096);
            }
            other => panic!("{other:?}"),
        }
        let b = NopOut {
            lun: [0; 8],
            itt: RESERVED_TAG,
            ttt: 5,
            cmd_sn: 1,
            exp_stat_sn: 2,
            len: 0,
        }
        .encode();
        match InitiatorPdu::decode(&b).unwrap() {
            InitiatorPdu::NopOut(n) => {
                assert!(n.immediate);
                assert_eq!((n.itt, n.ttt), (RESERVED_TAG, 5));
            }
            other => panic!("{other:?}"),
        }
        let b = LoginRequest {
            transit: true,
            csg: 1,
            nsg: 3,
            isid: [0x80, 1, 2, 3, 4, 5],
            tsih: 0,
            itt: 1,
            cid: 2,
            cmd_sn: 1,
            exp_stat_sn: 0,
            len: 100,
        }
        .encode();
        match InitiatorPdu::decode(&b).unwrap() {
            InitiatorPdu::Login(l) => {
                assert!(!l.continue_bit);
                assert_eq!(l.current_stage, Stage::OperationalNegotiation);
                assert_eq!(l.next_stage, Some(Stage::FullFeature));
                assert_eq!(l.cid, 2);
                assert_eq!(l.isid.0, [0x80, 1, 2, 3, 4, 5]);
            }
            other => panic!("{other:?}"),
        }
        let b = LogoutRequest {
            reason: LOGOUT_CLOSE_CONNECTION,
            itt: 4,
            cid: 1,
            cmd_sn: 10,
            exp_stat_sn: 20,
        }
        .encode();
        assert!(matches!(
            InitiatorPdu::decode(&b).unwrap(),
            InitiatorPdu::Logout(_)
        ));
    }

    #[test]
    fn we_decode_the_targets_responses() {
        let b = DataIn {
            final_bit: true,
            ack: None,
            status: Some(STATUS_GOOD),
            residual: Residual::Underflow(512),
            itt: 3,
            seq: seq(),
            data_sn: 4,
            buffer_offset: 65536,
            data_len: 512,
        }
        .encode();
        assert_eq!(opcode_of(&b), opcode::SCSI_DATA_IN);
        assert!(b[1] & DATA_IN_STATUS != 0 && b[1] & DATA_IN_UNDERFLOW != 0);
        assert_eq!((itt(&b), data_sn(&b), buffer_offset(&b)), (3, 4, 65536));
        assert_eq!((data_len(&b), residual(&b), b[3]), (512, 512, STATUS_GOOD));
        assert!(carries_status(&b) && carries_window(&b));
        assert_eq!((stat_sn(&b), exp_cmd_sn(&b), max_cmd_sn(&b)), (7, 11, 42));

        let b = R2t {
            lun: Lun::from_index(0),
            itt: 8,
            ttt: 0x55,
            seq: seq(),
            r2t_sn: 1,
            buffer_offset: 4096,
            desired_len: 8192,
        }
        .encode();
        assert_eq!(opcode_of(&b), opcode::R2T);
        assert!(!carries_status(&b));
        assert_eq!(
            (ttt(&b), buffer_offset(&b), desired_length(&b)),
            (0x55, 4096, 8192)
        );

        let b = ScsiResponse {
            itt: 2,
            response: 0,
            status: STATUS_CHECK_CONDITION,
            residual: Residual::None,
            bidi_read_residual: Residual::None,
            exp_data_sn: 0,
            seq: seq(),
            data_len: 20,
        }
        .encode();
        assert_eq!((opcode_of(&b), b[3]), (opcode::SCSI_RESPONSE, 2));

        let b = NopIn {
            lun: Lun::from_index(0),
            itt: RESERVED_TAG,
            ttt: 9,
            seq: seq(),
            data_len: 0,
        }
        .encode();
        assert!(!carries_status(&b));
        assert_eq!(ttt(&b), 9);

        let b = ferrite_transport::iscsi::pdu::LoginResponse {
            continue_bit: false,
            current_stage: Stage::OperationalNegotiation,
            next_stage: Some(Stage::FullFeature),
            version_max: 0,
            version_active: 0,
            isid: ferrite_transport::iscsi::pdu::Isid([0; 6]),
            tsih: 17,
            itt: 1,
            seq: StatusSeq {
                stat_sn: 5,
                exp_cmd_sn: 1,
                max_cmd_sn: 64,
            },
            status: LoginStatus::AUTHENTICATION_FAILURE,
            data_len: 0,
        }
        .encode();
        let r = LoginResponse::decode(&b);
        assert!(r.transit && !r.cont);
        assert_eq!((r.csg, r.nsg, r.tsih, r.stat_sn), (1, 3, 17, 5));
        assert_eq!((r.status_class, r.status_detail), (2, 1));
    }

    #[test]
    fn serial_numbers_and_sense() {
        assert!(sn_gt(1, 0) && sn_gt(0, u32::MAX) && !sn_gt(5, 5));
        assert!(sn_le(5, 5) && sn_le(u32::MAX, 2) && !sn_le(3, 2));
        let mut seg = vec![0, 18, 0x70, 0, 0x06];
        seg.resize(20, 0);
        seg[2 + 12] = 0x29;
        assert_eq!(sense_key(&seg[2..]), Some((6, 0x29, 0)));
        assert!(describe_status(2, &seg).contains("sense key 0x6, ASC/ASCQ 0x29/0x00"));
    }
}
