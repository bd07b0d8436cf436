//! Byte-exact checks against the layouts of RFC 7143 §11. Each PDU is written
//! out field by field at the offsets the RFC's diagrams give.

use super::*;

/// A BHS built from (offset, bytes) pieces.
fn bhs(fields: &[(usize, &[u8])]) -> Bhs {
    let mut b = [0u8; BHS_LEN];
    for (at, bytes) in fields {
        b[*at..*at + bytes.len()].copy_from_slice(bytes);
    }
    b
}

const LUN1: [u8; 8] = [0, 1, 0, 0, 0, 0, 0, 0];

// ---------------------------------------------------------------------------
// Decoding.

#[test]
fn scsi_command_read10() {
    // I=1, F=1 R=1 ATTR=Simple, DSL 0, LUN 1, ITT 0x11223344, EDTL 4096,
    // CmdSN 7, ExpStatSN 9, CDB READ(10) LBA 0x10 length 8.
    let b = bhs(&[
        (0, &[0x41, 0xc1]),
        (8, &LUN1),
        (16, &[0x11, 0x22, 0x33, 0x44]),
        (20, &4096u32.to_be_bytes()),
        (24, &7u32.to_be_bytes()),
        (28, &9u32.to_be_bytes()),
        (32, &[0x28, 0, 0, 0, 0, 0x10, 0, 0, 8, 0]),
    ]);
    let InitiatorPdu::ScsiCommand(cmd) = InitiatorPdu::decode(&b).unwrap() else {
        panic!("not a command");
    };
    assert!(cmd.immediate && cmd.final_bit && cmd.read && !cmd.write);
    assert_eq!(cmd.attr, TaskAttribute::Simple);
    assert_eq!(cmd.lun.index(), Some(1));
    assert_eq!(cmd.itt, 0x1122_3344);
    assert_eq!(cmd.expected_data_len, 4096);
    assert_eq!((cmd.cmd_sn, cmd.exp_stat_sn), (7, 9));
    assert_eq!(&cmd.cdb[..10], &[0x28, 0, 0, 0, 0, 0x10, 0, 0, 8, 0]);
    assert_eq!((cmd.ahs_len, cmd.data_len), (0, 0));
    assert_eq!(InitiatorPdu::decode(&b).unwrap().itt(), 0x1122_3344);
}

#[test]
fn scsi_command_write_with_immediate_data_and_ahs() {
    // W=1, F=0 (unsolicited Data-Out follows), ATTR=Ordered, one AHS word,
    // 512 bytes of immediate data.
    let b = bhs(&[(0, &[0x01, 0x22]), (4, &[1, 0, 0x02, 0x00])]);
    let InitiatorPdu::ScsiCommand(cmd) = InitiatorPdu::decode(&b).unwrap() else {
        panic!();
    };
    assert!(!cmd.immediate && !cmd.final_bit && cmd.write && !cmd.read);
    assert_eq!(cmd.attr, TaskAttribute::Ordered);
    assert_eq!((cmd.ahs_len, cmd.data_len), (4, 512));
    assert_eq!(SegmentLengths::of(&b), SegmentLengths { ahs: 4, data: 512 });
}

#[test]
fn scsi_command_errors() {
    for attr in 5..=7u8 {
        let b = bhs(&[(0, &[0x01, 0x80 | attr])]);
        let err = InitiatorPdu::decode(&b).unwrap_err();
        assert_eq!(err.kind, PduErrorKind::ReservedValue("task attribute"));
        assert_eq!(err.reject_reason(), RejectReason::ProtocolError);
    }
    // F=0 without W.
    let b = bhs(&[(0, &[0x01, 0x40])]);
    assert_eq!(
        InitiatorPdu::decode(&b).unwrap_err().reject_reason(),
        RejectReason::InvalidPduField
    );
}

#[test]
fn data_out() {
    let b = bhs(&[
        (0, &[0x05, 0x80]),
        (5, &[0, 0x20, 0]),
        (8, &LUN1),
        (16, &5u32.to_be_bytes()),
        (20, &0xaabbccddu32.to_be_bytes()),
        (28, &3u32.to_be_bytes()),
        (36, &2u32.to_be_bytes()),
        (40, &16384u32.to_be_bytes()),
    ]);
    assert_eq!(
        InitiatorPdu::decode(&b).unwrap(),
        InitiatorPdu::DataOut(DataOut {
            final_bit: true,
            lun: Lun(LUN1),
            itt: 5,
            ttt: 0xaabb_ccdd,
            exp_stat_sn: 3,
            data_sn: 2,
            buffer_offset: 16384,
            data_len: 8192,
        })
    );
}

#[test]
fn nop_out() {
    let b = bhs(&[
        (0, &[0x40, 0x80]),
        (5, &[0, 0, 4]),
        (16, &RESERVED_TAG.to_be_bytes()),
        (20, &RESERVED_TAG.to_be_bytes()),
        (24, &100u32.to_be_bytes()),
        (28, &200u32.to_be_bytes()),
    ]);
    assert_eq!(
        InitiatorPdu::decode(&b).unwrap(),
        InitiatorPdu::NopOut(NopOut {
            immediate: true,
            lun: Lun::default(),
            itt: RESERVED_TAG,
            ttt: RESERVED_TAG,
            cmd_sn: 100,
            exp_stat_sn: 200,
            data_len: 4,
        })
    );
}

#[test]
fn task_management() {
    let b = bhs(&[
        (0, &[0x42, 0x81]),
        (8, &LUN1),
        (16, &10u32.to_be_bytes()),
        (20, &4u32.to_be_bytes()),
        (24, &11u32.to_be_bytes()),
        (28, &12u32.to_be_bytes()),
        (32, &13u32.to_be_bytes()),
        (36, &14u32.to_be_bytes()),
    ]);
    assert_eq!(
        InitiatorPdu::decode(&b).unwrap(),
        InitiatorPdu::TaskMgmt(TaskMgmtRequest {
            immediate: true,
            function: TaskMgmtFunction::AbortTask,
            lun: Lun(LUN1),
            itt: 10,
            referenced_task_tag: 4,
            cmd_sn: 11,
            exp_stat_sn: 12,
            ref_cmd_sn: 13,
            exp_data_sn: 14,
        })
    );
    for (code, f) in [
        (5, TaskMgmtFunction::LogicalUnitReset),
        (6, TaskMgmtFunction::TargetWarmReset),
        (8, TaskMgmtFunction::TaskReassign),
        (9, TaskMgmtFunction::Other(9)),
        (0, TaskMgmtFunction::Other(0)),
    ] {
        let b = bhs(&[(0, &[0x02, 0x80 | code])]);
        let InitiatorPdu::TaskMgmt(t) = InitiatorPdu::decode(&b).unwrap() else {
            panic!()
        };
        assert_eq!(t.function, f);
        assert_eq!(f.code(), code);
    }
}

#[test]
fn login_request() {
    // I=1; T=1 C=0 CSG=1 NSG=3; versions 0/0; DSL 300; ISID 80 12 34 56 78 9a;
    // TSIH 0; ITT 1; CID 2; CmdSN 3; ExpStatSN 4.
    let b = bhs(&[
        (0, &[0x43, 0x87, 0x00, 0x00]),
        (5, &[0, 0x01, 0x2c]),
        (8, &[0x80, 0x12, 0x34, 0x56, 0x78, 0x9a, 0x00, 0x00]),
        (16, &1u32.to_be_bytes()),
        (20, &2u16.to_be_bytes()),
        (24, &3u32.to_be_bytes()),
        (28, &4u32.to_be_bytes()),
    ]);
    let expected = LoginRequest {
        continue_bit: false,
        current_stage: Stage::OperationalNegotiation,
        next_stage: Some(Stage::FullFeature),
        version_max: 0,
        version_min: 0,
        isid: Isid([0x80, 0x12, 0x34, 0x56, 0x78, 0x9a]),
        tsih: 0,
        itt: 1,
        cid: 2,
        cmd_sn: 3,
        exp_stat_sn: 4,
        data_len: 300,
    };
    assert_eq!(
        InitiatorPdu::decode(&b).unwrap(),
        InitiatorPdu::Login(expected)
    );
    assert_eq!(expected.isid.to_string(), "80123456789a");

    // T=0: NSG bits are ignored.
    let b = bhs(&[(0, &[0x43, 0x46])]);
    let InitiatorPdu::Login(req) = InitiatorPdu::decode(&b).unwrap() else {
        panic!()
    };
    assert!(req.continue_bit);
    assert_eq!(req.current_stage, Stage::OperationalNegotiation);
    assert_eq!(req.next_stage, None);
}

#[test]
fn login_request_errors() {
    let cases: [(u8, PduErrorKind); 3] = [
        (0xc1, PduErrorKind::InvalidField("T and C both set")),
        (0x08, PduErrorKind::ReservedValue("CSG")),
        (0x82, PduErrorKind::ReservedValue("NSG")),
    ];
    for (flags, kind) in cases {
        let b = bhs(&[(0, &[0x43, flags])]);
        let err = InitiatorPdu::decode(&b).unwrap_err();
        assert_eq!(err.kind, kind);
        assert_eq!(err.opcode, opcode::LOGIN_REQUEST);
    }
}

#[test]
fn text_request() {
    let b = bhs(&[
        (0, &[0x44, 0x80]),
        (5, &[0, 0, 16]),
        (16, &7u32.to_be_bytes()),
        (20, &RESERVED_TAG.to_be_bytes()),
        (24, &8u32.to_be_bytes()),
        (28, &9u32.to_be_bytes()),
    ]);
    assert_eq!(
        InitiatorPdu::decode(&b).unwrap(),
        InitiatorPdu::Text(TextRequest {
            immediate: true,
            final_bit: true,
            continue_bit: false,
            lun: Lun::default(),
            itt: 7,
            ttt: RESERVED_TAG,
            cmd_sn: 8,
            exp_stat_sn: 9,
            data_len: 16,
        })
    );
    let b = bhs(&[(0, &[0x04, 0xc0])]);
    assert_eq!(
        InitiatorPdu::decode(&b).unwrap_err().kind,
        PduErrorKind::InvalidField("F and C both set")
    );
}

#[test]
fn logout_request() {
    let b = bhs(&[
        (0, &[0x46, 0x81]),
        (16, &3u32.to_be_bytes()),
        (20, &[0, 5]),
        (24, &6u32.to_be_bytes()),
        (28, &7u32.to_be_bytes()),
    ]);
    assert_eq!(
        InitiatorPdu::decode(&b).unwrap(),
        InitiatorPdu::Logout(LogoutRequest {
            immediate: true,
            reason: LogoutReason::CloseConnection,
            itt: 3,
            cid: 5,
            cmd_sn: 6,
            exp_stat_sn: 7,
        })
    );
    let b = bhs(&[(0, &[0x06, 0x83])]);
    assert_eq!(
        InitiatorPdu::decode(&b).unwrap_err().kind,
        PduErrorKind::ReservedValue("logout reason code")
    );
}

#[test]
fn snack_request() {
    let b = bhs(&[
        (0, &[0x10, 0x81]),
        (16, &3u32.to_be_bytes()),
        (20, &4u32.to_be_bytes()),
        (28, &5u32.to_be_bytes()),
        (40, &6u32.to_be_bytes()),
        (44, &7u32.to_be_bytes()),
    ]);
    assert_eq!(
        InitiatorPdu::decode(&b).unwrap(),
        InitiatorPdu::Snack(SnackRequest {
            snack_type: SnackType::Status,
            lun: Lun::default(),
            itt: 3,
            ttt: 4,
            exp_stat_sn: 5,
            beg_run: 6,
            run_length: 7,
        })
    );
    let b = bhs(&[(0, &[0x10, 0x84])]);
    assert_eq!(
        InitiatorPdu::decode(&b).unwrap_err().reject_reason(),
        RejectReason::ProtocolError
    );
}

#[test]
fn opcode_errors() {
    for op in [0x07u8, 0x0f, 0x1c, 0x1e] {
        let err = InitiatorPdu::decode(&bhs(&[(0, &[op])])).unwrap_err();
        assert_eq!(err.kind, PduErrorKind::UnsupportedOpcode);
        assert_eq!(err.reject_reason(), RejectReason::CommandNotSupported);
    }
    for op in [0x20u8, 0x21, 0x25, 0x3f] {
        let err = InitiatorPdu::decode(&bhs(&[(0, &[op])])).unwrap_err();
        assert_eq!(err.kind, PduErrorKind::TargetOpcode);
        assert_eq!(err.reject_reason(), RejectReason::ProtocolError);
    }
    // Bit 7 of byte 0 is reserved and ignored.
    let b = bhs(&[(0, &[0x80, 0x80])]);
    assert!(matches!(
        InitiatorPdu::decode(&b),
        Ok(InitiatorPdu::NopOut(_))
    ));
}

// ---------------------------------------------------------------------------
// AHS.

#[test]
fn extended_cdb_ahs() {
    // A 32-byte CDB: 16 in the BHS, 16 in the AHS. AHSLength = 16 + 1
    // (the reserved byte) = 17; 3 + 17 = 20 bytes, already aligned.
    let mut ahs = vec![0, 17, AHS_EXTENDED_CDB, 0];
    ahs.extend(16u8..32);
    let parsed = parse_command_ahs(&ahs).unwrap();
    assert_eq!(parsed.extended_cdb, Some(&ahs[4..20]));
    let b = bhs(&[
        (0, &[0x01, 0x80]),
        (4, &[5]),
        (32, &[0x7f, 0, 0, 0, 0, 0, 0, 0x18]),
    ]);
    let InitiatorPdu::ScsiCommand(cmd) = InitiatorPdu::decode(&b).unwrap() else {
        panic!()
    };
    let cdb = cmd.full_cdb(&parsed);
    assert_eq!(cdb.as_slice().len(), 32);
    assert_eq!(cdb.as_slice()[0], 0x7f);
    assert_eq!(&cdb.as_slice()[16..], &(16u8..32).collect::<Vec<_>>()[..]);
    assert_eq!(cmd.full_cdb(&CommandAhs::default()).as_slice(), &cmd.cdb);

    // An 18-byte CDB: 2 extension bytes, AHSLength 3, padded to 8 bytes.
    let ahs = [0, 3, 1, 0, 0xaa, 0xbb, 0, 0];
    assert_eq!(
        parse_command_ahs(&ahs).unwrap().extended_cdb,
        Some(&[0xaa, 0xbb][..])
    );
    // The longest: 260 bytes.
    let mut ahs = vec![0, 245, 1, 0];
    ahs.extend(std::iter::repeat_n(9, 244));
    assert_eq!(ahs.len() % 4, 0);
    let parsed = parse_command_ahs(&ahs).unwrap();
    assert_eq!(cmd.full_cdb(&parsed).as_slice().len(), MAX_CDB_LEN);
}

#[test]
fn bidi_read_length_ahs() {
    let mut ahs = vec![0, 5, AHS_BIDI_READ_LENGTH, 0];
    ahs.extend(65536u32.to_be_bytes());
    let mut with_cdb = ahs.clone();
    with_cdb.extend([0, 2, 1, 0, 0xcc, 0, 0, 0]);
    let parsed = parse_command_ahs(&with_cdb).unwrap();
    assert_eq!(parsed.bidi_read_expected_len, Some(65536));
    assert_eq!(parsed.extended_cdb, Some(&[0xcc][..]));
    assert_eq!(parse_command_ahs(&[]).unwrap(), CommandAhs::default());
}

#[test]
fn ahs_errors() {
    let bad: [&[u8]; 8] = [
        &[0, 5, 2, 0, 0, 0],                               // not whole words
        &[0, 9, 1, 0],                                     // longer than the area
        &[0, 0, 1, 0],                                     // AHSLength 0
        &[0, 1, 1, 0],                                     // no CDB byte
        &[0, 4, 2, 0, 0, 0, 0, 0],                         // bidi AHSLength must be 5
        &[0, 1, 7, 0],                                     // reserved AHSType
        &[0, 2, 1, 0, 1, 0, 0, 0, 0, 2, 1, 0, 2, 0, 0, 0], // two extended CDBs
        &[0, 1, 1],                                        // truncated
    ];
    for ahs in bad {
        assert!(parse_command_ahs(ahs).is_err(), "{ahs:?}");
    }
    let mut too_long = vec![0, 246, 1, 0];
    too_long.extend([0; 248]);
    assert!(parse_command_ahs(&too_long).is_err());
    // Types 60-63 are skipped.
    assert_eq!(
        parse_command_ahs(&[0, 1, 60, 0]).unwrap(),
        CommandAhs::default()
    );
}

// ---------------------------------------------------------------------------
// Encoding.

fn seq() -> StatusSeq {
    StatusSeq {
        stat_sn: 0x0101_0101,
        exp_cmd_sn: 0x0202_0202,
        max_cmd_sn: 0x0303_0303,
    }
}

const SEQ_BYTES: [u8; 12] = [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3];

#[test]
fn scsi_response() {
    let got = ScsiResponse {
        itt: 0x1234,
        response: service_response::COMMAND_COMPLETED,
        status: 0x02,
        residual: Residual::Underflow(512),
        bidi_read_residual: Residual::None,
        exp_data_sn: 4,
        seq: seq(),
        data_len: 20,
    }
    .encode();
    let want = bhs(&[
        (0, &[0x21, 0x82, 0x00, 0x02]),
        (5, &[0, 0, 20]),
        (16, &[0, 0, 0x12, 0x34]),
        (24, &SEQ_BYTES),
        (36, &4u32.to_be_bytes()),
        (44, &512u32.to_be_bytes()),
    ]);
    assert_eq!(got, want);

    // Overflow, and bidi read residuals in o/u and bytes 40-43.
    let got = ScsiResponse {
        residual: Residual::Overflow(1),
        bidi_read_residual: Residual::Overflow(2),
        ..Default::default()
    }
    .encode();
    assert_eq!(got[1], 0x80 | 0x10 | 0x04);
    assert_eq!(&got[40..48], &[0, 0, 0, 2, 0, 0, 0, 1]);
    let got = ScsiResponse {
        bidi_read_residual: Residual::Underflow(3),
        ..Default::default()
    }
    .encode();
    assert_eq!(got[1], 0x80 | 0x08);
}

#[test]
fn data_in() {
    // Last Data-In with phase-collapsed GOOD status and an underflow.
    let got = DataIn {
        final_bit: true,
        ack: None,
        status: Some(0),
        residual: Residual::Underflow(100),
        itt: 9,
        seq: seq(),
        data_sn: 3,
        buffer_offset: 8192,
        data_len: 4096,
    }
    .encode();
    let want = bhs(&[
        (0, &[0x25, 0x83, 0x00, 0x00]),
        (5, &[0, 0x10, 0]),
        (16, &9u32.to_be_bytes()),
        (20, &RESERVED_TAG.to_be_bytes()),
        (24, &SEQ_BYTES),
        (36, &3u32.to_be_bytes()),
        (40, &8192u32.to_be_bytes()),
        (44, &100u32.to_be_bytes()),
    ]);
    assert_eq!(got, want);

    // A middle Data-In: no S, so no StatSN and no residual.
    let got = DataIn {
        final_bit: false,
        status: None,
        residual: Residual::Overflow(5),
        seq: seq(),
        data_len: 1,
        ..Default::default()
    }
    .encode();
    assert_eq!(got[1], 0x00);
    assert_eq!(&got[24..28], &[0; 4]);
    assert_eq!(&got[28..36], &SEQ_BYTES[4..]);
    assert_eq!(&got[44..48], &[0; 4]);

    // A bit: LUN and TTT go in.
    let got = DataIn {
        final_bit: true,
        ack: Some(DataAckRequest {
            lun: Lun(LUN1),
            ttt: 0x77,
        }),
        ..Default::default()
    }
    .encode();
    assert_eq!(got[1], 0xc0);
    assert_eq!(&got[8..16], &LUN1);
    assert_eq!(&got[20..24], &[0, 0, 0, 0x77]);
}

#[test]
fn r2t() {
    let got = R2t {
        lun: Lun(LUN1),
        itt: 1,
        ttt: 2,
        seq: seq(),
        r2t_sn: 3,
        buffer_offset: 65536,
        desired_len: 262144,
    }
    .encode();
    let want = bhs(&[
        (0, &[0x31, 0x80]),
        (8, &LUN1),
        (16, &1u32.to_be_bytes()),
        (20, &2u32.to_be_bytes()),
        (24, &SEQ_BYTES),
        (36, &3u32.to_be_bytes()),
        (40, &65536u32.to_be_bytes()),
        (44, &262144u32.to_be_bytes()),
    ]);
    assert_eq!(got, want);
}

#[test]
fn nop_in() {
    let got = NopIn {
        lun: Lun::default(),
        itt: RESERVED_TAG,
        ttt: 5,
        seq: seq(),
        data_len: 0,
    }
    .encode();
    let want = bhs(&[
        (0, &[0x20, 0x80]),
        (16, &RESERVED_TAG.to_be_bytes()),
        (20, &5u32.to_be_bytes()),
        (24, &SEQ_BYTES),
    ]);
    assert_eq!(got, want);
}

#[test]
fn login_response() {
    let got = LoginResponse {
        continue_bit: false,
        current_stage: Stage::OperationalNegotiation,
        next_stage: Some(Stage::FullFeature),
        version_max: 0,
        version_active: 0,
        isid: Isid([0x80, 1, 2, 3, 4, 5]),
        tsih: 0x0102,
        itt: 7,
        seq: seq(),
        status: LoginStatus::SUCCESS,
        data_len: 40,
    }
    .encode();
    let want = bhs(&[
        (0, &[0x23, 0x87, 0, 0]),
        (5, &[0, 0, 40]),
        (8, &[0x80, 1, 2, 3, 4, 5, 1, 2]),
        (16, &7u32.to_be_bytes()),
        (24, &SEQ_BYTES),
    ]);
    assert_eq!(got, want);

    // A failure: T clear, class/detail at 36-37; C-bit continuation.
    let got = LoginResponse {
        continue_bit: true,
        current_stage: Stage::SecurityNegotiation,
        next_stage: None,
        version_max: 0,
        version_active: 0,
        isid: Isid::default(),
        tsih: 0,
        itt: 0,
        seq: StatusSeq::default(),
        status: LoginStatus::AUTHENTICATION_FAILURE,
        data_len: 0,
    }
    .encode();
    assert_eq!(got[1], 0x40);
    assert_eq!(&got[36..38], &[0x02, 0x01]);
    assert_eq!(LoginStatus::AUTHENTICATION_FAILURE.code(), 0x0201);
    assert_eq!(LoginStatus::SESSION_DOES_NOT_EXIST.to_string(), "0x020a");
    assert!(LoginStatus::SUCCESS.is_success());
    assert!(!LoginStatus::TARGET_MOVED_TEMPORARILY.is_success());
}

#[test]
fn text_response() {
    let got = TextResponse {
        final_bit: false,
        continue_bit: true,
        lun: Lun::default(),
        itt: 3,
        ttt: 4,
        seq: seq(),
        data_len: 8192,
    }
    .encode();
    let want = bhs(&[
        (0, &[0x24, 0x40]),
        (5, &[0, 0x20, 0]),
        (16, &3u32.to_be_bytes()),
        (20, &4u32.to_be_bytes()),
        (24, &SEQ_BYTES),
    ]);
    assert_eq!(got, want);
}

#[test]
fn logout_and_task_mgmt_responses() {
    let got = LogoutResponse {
        response: LogoutResponseCode::Closed,
        itt: 2,
        seq: seq(),
        time2wait: 2,
        time2retain: 20,
    }
    .encode();
    let want = bhs(&[
        (0, &[0x26, 0x80, 0]),
        (16, &2u32.to_be_bytes()),
        (24, &SEQ_BYTES),
        (40, &[0, 2, 0, 20]),
    ]);
    assert_eq!(got, want);

    let got = TaskMgmtResponse {
        response: TaskMgmtResponseCode::FunctionNotSupported,
        itt: 9,
        seq: seq(),
    }
    .encode();
    let want = bhs(&[
        (0, &[0x22, 0x80, 5]),
        (16, &9u32.to_be_bytes()),
        (24, &SEQ_BYTES),
    ]);
    assert_eq!(got, want);
    let rejected = TaskMgmtResponse {
        response: TaskMgmtResponseCode::FunctionRejected,
        ..Default::default()
    }
    .encode();
    assert_eq!(rejected[2], 255);
}

#[test]
fn reject() {
    let got = Reject {
        reason: RejectReason::InvalidPduField,
        seq: seq(),
        data_sn_or_r2t_sn: 0,
    }
    .encode();
    let want = bhs(&[
        (0, &[0x3f, 0x80, 0x09]),
        (5, &[0, 0, 48]),
        (16, &RESERVED_TAG.to_be_bytes()),
        (24, &SEQ_BYTES),
    ]);
    assert_eq!(got, want);
    assert_eq!(RejectReason::DataDigestError.code(), 0x02);
    assert_eq!(RejectReason::ProtocolError.code(), 0x04);
    assert_eq!(RejectReason::CommandNotSupported.code(), 0x05);
    assert_eq!(RejectReason::WaitingForLogout.code(), 0x0c);
}

#[test]
fn async_messages() {
    let got = AsyncMessage {
        lun: Lun::default(),
        event: AsyncEvent::RequestLogout { time_to_logout: 30 },
        seq: seq(),
        data_len: 0,
    }
    .encode();
    let want = bhs(&[
        (0, &[0x32, 0x80]),
        (16, &RESERVED_TAG.to_be_bytes()),
        (24, &SEQ_BYTES),
        (36, &[1, 0, 0, 0, 0, 0, 0, 30]),
    ]);
    assert_eq!(got, want);

    let cases = [
        (AsyncEvent::ScsiEvent, [0u8, 0, 0, 0, 0, 0, 0, 0]),
        (
            AsyncEvent::DropConnection {
                cid: 1,
                time2wait: 2,
                time2retain: 3,
            },
            [2, 0, 0, 1, 0, 2, 0, 3],
        ),
        (
            AsyncEvent::DropAllConnections {
                time2wait: 2,
                time2retain: 3,
            },
            [3, 0, 0, 0, 0, 2, 0, 3],
        ),
        (
            AsyncEvent::RequestNegotiation {
                time_to_negotiate: 9,
            },
            [4, 0, 0, 0, 0, 0, 0, 9],
        ),
        (AsyncEvent::TaskTermination, [5, 0, 0, 0, 0, 0, 0, 0]),
        (
            AsyncEvent::Vendor {
                vcode: 7,
                parameters: [1, 2, 3],
            },
            [255, 7, 0, 1, 0, 2, 0, 3],
        ),
    ];
    for (event, bytes) in cases {
        let got = AsyncMessage {
            lun: Lun(LUN1),
            event,
            seq: seq(),
            data_len: 18,
        }
        .encode();
        assert_eq!(&got[36..44], &bytes, "{event:?}");
        assert_eq!(&got[8..16], &LUN1);
        assert_eq!(&got[5..8], &[0, 0, 18]);
    }
}

// ---------------------------------------------------------------------------
// Small helpers.

#[test]
fn padding() {
    let expect = [(0, 0), (1, 3), (2, 2), (3, 1), (4, 0), (5, 3), (48, 0)];
    for (len, pad) in expect {
        assert_eq!(pad_len(len), pad);
        assert_eq!(padded_len(len), len + pad);
    }
    let b = bhs(&[(4, &[2, 0xff, 0xff, 0xff])]);
    let lens = SegmentLengths::of(&b);
    assert_eq!(lens.ahs, 8);
    assert_eq!(lens.data, MAX_DATA_SEGMENT_LEN as usize);
    assert_eq!(lens.padded_data(), MAX_DATA_SEGMENT_LEN as usize + 1);
}

#[test]
fn luns() {
    assert_eq!(Lun::from_index(0).0, [0; 8]);
    assert_eq!(Lun::from_index(5).0, [0, 5, 0, 0, 0, 0, 0, 0]);
    assert_eq!(Lun::from_index(300).0, [0x41, 0x2c, 0, 0, 0, 0, 0, 0]);
    for i in [0u16, 1, 255, 256, 300, 16383] {
        assert_eq!(Lun::from_index(i).index(), Some(i));
    }
    assert_eq!(Lun([0, 1, 0, 2, 0, 0, 0, 0]).index(), None);
    assert_eq!(Lun([0x81, 1, 0, 0, 0, 0, 0, 0]).index(), None);
    assert_eq!(Lun::from_u64(0x0001_0000_0000_0000).index(), Some(1));
    assert_eq!(Lun(LUN1).to_u64(), 0x0001_0000_0000_0000);
}

#[test]
fn common_fields() {
    let b = bhs(&[(0, &[0x41]), (16, &[1, 2, 3, 4])]);
    assert_eq!(opcode_of(&b), opcode::SCSI_COMMAND);
    assert!(is_immediate(&b));
    assert_eq!(initiator_task_tag(&b), 0x0102_0304);
}

mod fuzz {
    use super::super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn decode_never_panics(bytes in proptest::array::uniform32(any::<u8>()),
                               tail in proptest::array::uniform16(any::<u8>())) {
            let mut b = [0u8; BHS_LEN];
            b[..32].copy_from_slice(&bytes);
            b[32..].copy_from_slice(&tail);
            match InitiatorPdu::decode(&b) {
                Ok(pdu) => prop_assert_eq!(pdu.itt(), initiator_task_tag(&b)),
                Err(e) => { let _ = (e.reject_reason(), e.to_string()); }
            }
            let _ = SegmentLengths::of(&b);
        }

        #[test]
        fn decode_any_opcode(op in 0u8..=0xff, flags in any::<u8>()) {
            let mut b = [0u8; BHS_LEN];
            b[0] = op;
            b[1] = flags;
            let _ = InitiatorPdu::decode(&b);
        }

        #[test]
        fn ahs_parse_never_panics(ahs in proptest::collection::vec(any::<u8>(), 0..1100)) {
            if let Ok(parsed) = parse_command_ahs(&ahs) {
                if let Some(ext) = parsed.extended_cdb {
                    prop_assert!(!ext.is_empty() && ext.len() <= MAX_CDB_LEN - 16);
                }
            }
        }

        #[test]
        fn structured_ahs_parses(cdb_len in 17usize..=260, bidi in proptest::option::of(any::<u32>())) {
            let ext = cdb_len - 16;
            let mut ahs = vec![0, (ext + 1) as u8, AHS_EXTENDED_CDB, 0];
            ahs.extend((0..ext).map(|i| i as u8));
            ahs.resize(padded_len(ahs.len()), 0);
            if let Some(len) = bidi {
                ahs.extend([0, 5, AHS_BIDI_READ_LENGTH, 0]);
                ahs.extend(len.to_be_bytes());
            }
            let parsed = parse_command_ahs(&ahs).unwrap();
            prop_assert_eq!(parsed.extended_cdb.map(<[u8]>::len), Some(ext));
            prop_assert_eq!(parsed.bidi_read_expected_len, bidi);
        }

        #[test]
        fn data_segment_length_round_trips(len in 0u32..=MAX_DATA_SEGMENT_LEN) {
            let b = NopIn { data_len: len, ..Default::default() }.encode();
            prop_assert_eq!(SegmentLengths::of(&b).data, len as usize);
        }
    }
}
