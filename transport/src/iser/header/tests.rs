use super::*;
use crate::iscsi::pdu::{opcode, InitiatorPdu};
use proptest::prelude::*;

/// A SCSI READ(10) command BHS for 4 KiB, as ib_iser sends it.
fn read_command() -> Bhs {
    let mut b = [0u8; BHS_LEN];
    b[0] = opcode::SCSI_COMMAND;
    b[1] = 0x80 | 0x40 | 0x01; // F, R, SIMPLE
    b[16..20].copy_from_slice(&7u32.to_be_bytes()); // ITT
    b[20..24].copy_from_slice(&4096u32.to_be_bytes()); // EDTL
    b[24..28].copy_from_slice(&1u32.to_be_bytes()); // CmdSN
    b[32] = 0x28;
    b
}

fn with_data(mut bhs: Bhs, ahs_words: u8, data_len: u32) -> Bhs {
    bhs[4] = ahs_words;
    bhs[5..8].copy_from_slice(&data_len.to_be_bytes()[1..]);
    bhs
}

fn message(header: &IserHeader, bhs: &Bhs, rest: &[u8]) -> Vec<u8> {
    let mut m = header.encode().to_vec();
    m.extend_from_slice(bhs);
    m.extend_from_slice(rest);
    m
}

#[test]
fn ib_iser_read_command() {
    // What ib_iser puts in front of a READ: ISCSI_CTRL | ISER_RSV, the read
    // rkey and address; no write STag.
    let mut raw = [0u8; ISER_HEADER_LEN];
    raw[0] = 0x10 | 0x04;
    raw[16..20].copy_from_slice(&0x0012_3456u32.to_be_bytes());
    raw[20..28].copy_from_slice(&0x7f00_dead_beef_0000u64.to_be_bytes());
    let h = IserHeader::decode(&raw).unwrap();
    assert_eq!(h.write, None);
    assert_eq!(
        h.read,
        Some(RemoteBuffer {
            stag: 0x0012_3456,
            va: 0x7f00_dead_beef_0000
        })
    );
    assert_eq!(h.encode(), raw);
    assert_eq!(h.stag_to_invalidate(), Some(0x0012_3456));

    let bhs = read_command();
    let buf = message(&h, &bhs, &[]);
    match parse_message(&buf).unwrap() {
        IserMessage::Pdu {
            header,
            bhs: b,
            ahs,
            data,
        } => {
            assert_eq!(header, h);
            assert_eq!(b, &bhs);
            assert!(ahs.is_empty() && data.is_empty());
            assert!(matches!(
                InitiatorPdu::decode(b).unwrap(),
                InitiatorPdu::ScsiCommand(c) if c.read && c.expected_data_len == 4096
            ));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn write_with_immediate_data() {
    // A write: immediate data in the SEND, the rest to be RDMA READ from the
    // write STag at VA + the immediate length, which ib_iser advertises.
    let h = IserHeader {
        write: Some(RemoteBuffer {
            stag: 9,
            va: 0x1000 + 512,
        }),
        read: None,
    };
    let bhs = with_data(read_command(), 0, 513);
    let mut rest = vec![0xabu8; 513];
    rest.extend_from_slice(&[0, 0, 0]); // padded by a lenient sender
    let buf = message(&h, &bhs, &rest);
    let IserMessage::Pdu { data, header, .. } = parse_message(&buf).unwrap() else {
        panic!("not a PDU");
    };
    assert_eq!(data.len(), 513);
    assert!(data.iter().all(|&b| b == 0xab));
    assert_eq!(header.write.unwrap().at(100), Some(0x1000 + 612));
    assert_eq!(header.stag_to_invalidate(), Some(9));
    // Unpadded is fine too (Linux does not pad).
    let buf = message(&h, &bhs, &rest[..513]);
    assert!(parse_message(&buf).is_ok());
}

#[test]
fn ahs_is_split_out() {
    let bhs = with_data(read_command(), 2, 4);
    let mut rest = vec![0x11u8; 8];
    rest.extend_from_slice(&[0x22; 4]);
    let buf = message(&IserHeader::default(), &bhs, &rest);
    let IserMessage::Pdu { ahs, data, .. } = parse_message(&buf).unwrap() else {
        panic!("not a PDU");
    };
    assert_eq!(ahs, &[0x11; 8]);
    assert_eq!(data, &[0x22; 4]);
}

#[test]
fn malformed_messages() {
    let h = IserHeader::default();
    assert_eq!(
        parse_message(&[]),
        Err(MessageError::Truncated {
            len: 0,
            need: ISER_HEADER_LEN
        })
    );
    // Header alone, no BHS.
    assert_eq!(
        parse_message(&h.encode()),
        Err(MessageError::Truncated { len: 28, need: 76 })
    );
    // Opcodes 0 and 4..15 are not iSER's.
    for op in [0u8, 4, 9, 15] {
        let mut buf = message(&h, &read_command(), &[]);
        buf[0] = op << 4;
        assert_eq!(parse_message(&buf), Err(MessageError::UnknownOpcode(op)));
    }
    // The BHS promises 100 data bytes, the SEND has 10.
    let bhs = with_data(read_command(), 0, 100);
    let buf = message(&h, &bhs, &[0; 10]);
    assert_eq!(
        parse_message(&buf),
        Err(MessageError::PduTruncated { len: 86, need: 176 })
    );
    // Too much after the PDU.
    let buf = message(&h, &read_command(), &[0; 4]);
    let e = parse_message(&buf).unwrap_err();
    assert_eq!(
        e,
        MessageError::TrailingBytes {
            len: 80,
            pdu_len: 76
        }
    );
    assert_eq!(e.to_string(), "4 stray bytes after a 76-byte iSCSI PDU");
    // A Hello where a PDU header is expected.
    let mut raw = [0u8; ISER_HEADER_LEN];
    raw[0] = 0x20;
    assert_eq!(
        IserHeader::decode(&raw),
        Err(MessageError::NotControl(IserOpcode::Hello))
    );
    // A short Hello.
    assert_eq!(
        parse_message(&[0x20, 0x11, 0]),
        Err(MessageError::Truncated { len: 3, need: 12 })
    );
}

#[test]
fn reserved_bits_are_ignored() {
    let mut buf = message(&IserHeader::default(), &read_command(), &[]);
    buf[0] |= 0x03;
    buf[1] = 0xff;
    buf[5] = 0x55; // write STag bytes, W not set
    let IserMessage::Pdu { header, .. } = parse_message(&buf).unwrap() else {
        panic!("not a PDU");
    };
    assert_eq!(header, IserHeader::default());
    assert_eq!(header.stag_to_invalidate(), None);
}

#[test]
fn target_header_is_the_bare_opcode() {
    let mut want = [0u8; ISER_HEADER_LEN];
    want[0] = 0x10;
    assert_eq!(IserHeader::TARGET.encode(), want);
}

#[test]
fn hello_exchange() {
    let hello = Hello {
        max_version: 1,
        min_version: 1,
        ird: 16,
    };
    let bytes = hello.encode();
    assert_eq!(&bytes[..4], &[0x20, 0x11, 0, 16]);
    assert_eq!(parse_message(&bytes), Ok(IserMessage::Hello(hello)));
    let reply = hello.answer(8);
    assert_eq!(
        reply,
        HelloReply {
            reject: false,
            max_version: 1,
            current_version: 1,
            ord: 8
        }
    );
    assert_eq!(&reply.encode()[..4], &[0x30, 0x11, 0, 8]);
    assert_eq!(
        parse_message(&reply.encode()),
        Ok(IserMessage::HelloReply(reply))
    );
    // Only versions 2..3: rejected, saying which version the target has.
    let reply = Hello {
        max_version: 3,
        min_version: 2,
        ird: 4,
    }
    .answer(8);
    assert!(reply.reject);
    assert_eq!(reply.max_version, 1);
    assert_eq!(reply.encode()[0], 0x31);
}

proptest! {
    #[test]
    fn header_round_trip(w in proptest::option::of((any::<u32>(), any::<u64>())),
                         r in proptest::option::of((any::<u32>(), any::<u64>()))) {
        let h = IserHeader {
            write: w.map(|(stag, va)| RemoteBuffer { stag, va }),
            read: r.map(|(stag, va)| RemoteBuffer { stag, va }),
        };
        prop_assert_eq!(IserHeader::decode(&h.encode()), Ok(h));
    }

    #[test]
    fn any_bytes_parse_or_fail_cleanly(buf in proptest::collection::vec(any::<u8>(), 0..400)) {
        match parse_message(&buf) {
            Ok(IserMessage::Pdu { bhs, ahs, data, .. }) => {
                let lens = pdu::SegmentLengths::of(bhs);
                prop_assert_eq!(ahs.len(), lens.ahs);
                prop_assert_eq!(data.len(), lens.data);
                let used = ISER_HEADER_LEN + BHS_LEN + ahs.len() + data.len();
                prop_assert!(buf.len() >= used && buf.len() <= used + 3);
            }
            Ok(IserMessage::Hello(_)) | Ok(IserMessage::HelloReply(_)) => {
                prop_assert!(buf.len() >= HELLO_LEN);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn pdus_of_any_size_split_back(ahs_words in 0u8..8, data_len in 0u32..2000, pad in 0usize..4) {
        let bhs = with_data(read_command(), ahs_words, data_len);
        let ahs_len = usize::from(ahs_words) * 4;
        let rest: Vec<u8> = (0..ahs_len + data_len as usize + pad).map(|i| i as u8).collect();
        let buf = message(&IserHeader::TARGET, &bhs, &rest);
        let IserMessage::Pdu { ahs, data, .. } = parse_message(&buf).unwrap() else {
            return Err(TestCaseError::fail("not a PDU"));
        };
        prop_assert_eq!(ahs, &rest[..ahs_len]);
        prop_assert_eq!(data, &rest[ahs_len..ahs_len + data_len as usize]);
    }
}
