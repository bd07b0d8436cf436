use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::*;
use crate::iscsi::policy::{Portal, TargetRecord};

const T1: &str = "iqn.2026-11.test:disk1";
const T2: &str = "iqn.2026-11.test:disk2";

/// Two targets: disk1 on an IPv4 and an IPv6 portal, disk2 on one portal.
struct Directory;

impl TargetDirectory for Directory {
    fn send_targets(
        &self,
        _initiator: &InitiatorInfo<'_>,
        _portal_group_tag: u16,
        query: TargetQuery<'_>,
    ) -> Vec<TargetRecord> {
        let all = vec![
            TargetRecord {
                name: T1.into(),
                portals: vec![
                    Portal {
                        address: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 3260),
                        portal_group_tag: 1,
                    },
                    Portal {
                        address: SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 3261),
                        portal_group_tag: 2,
                    },
                ],
            },
            TargetRecord {
                name: T2.into(),
                portals: vec![Portal {
                    address: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 3260),
                    portal_group_tag: 1,
                }],
            },
        ];
        match query {
            TargetQuery::All => all,
            TargetQuery::Named(name) => all.into_iter().filter(|r| r.name == name).collect(),
        }
    }
}

fn ctx(session_type: SessionType) -> TextContext<'static> {
    TextContext {
        session_type,
        target_name: match session_type {
            SessionType::Normal => Some(T1),
            SessionType::Discovery => None,
        },
        initiator: InitiatorInfo {
            name: "iqn.2026-11.test:initiator",
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        },
        portal_group_tag: 1,
        max_send_data_segment_length: 8192,
    }
}

fn request(itt: u32, ttt: u32, final_bit: bool, continue_bit: bool, len: usize) -> TextRequest {
    TextRequest {
        immediate: true,
        final_bit,
        continue_bit,
        lun: Lun::default(),
        itt,
        ttt,
        cmd_sn: 1,
        exp_stat_sn: 1,
        data_len: len as u32,
    }
}

fn ask(
    ex: &mut TextExchange,
    ctx: &TextContext<'_>,
    text: &[u8],
) -> Result<TextReply, RejectReason> {
    ex.handle(
        &request(5, RESERVED_TAG, true, false, text.len()),
        text,
        ctx,
        &Directory,
    )
}

const DISCOVERY_ALL: &[u8] = b"TargetName=iqn.2026-11.test:disk1\0\
TargetAddress=192.0.2.1:3260,1\0\
TargetAddress=[::1]:3261,2\0\
TargetName=iqn.2026-11.test:disk2\0\
TargetAddress=192.0.2.1:3260,1\0";

#[test]
fn send_targets_all_in_discovery() {
    let mut ex = TextExchange::new();
    let reply = ask(&mut ex, &ctx(SessionType::Discovery), b"SendTargets=All\0").unwrap();
    assert_eq!(reply.data, DISCOVERY_ALL);
    // libiscsi wants exactly F=1, C=0 (byte 1 == 0x80).
    assert!(reply.final_bit && !reply.continue_bit);
    assert_eq!(reply.ttt, RESERVED_TAG);
    let seq = StatusSeq {
        stat_sn: 3,
        exp_cmd_sn: 4,
        max_cmd_sn: 5,
    };
    let bhs = reply.response(5, Lun::default(), seq).encode();
    assert_eq!(&bhs[..2], &[0x24, 0x80]);
    assert_eq!(
        u32::from_be_bytes([0, bhs[5], bhs[6], bhs[7]]) as usize,
        DISCOVERY_ALL.len()
    );
    assert_eq!(&bhs[16..24], &[0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff]);
}

#[test]
fn send_targets_in_a_normal_session_shows_the_session_target_only() {
    let want = b"TargetName=iqn.2026-11.test:disk1\0\
TargetAddress=192.0.2.1:3260,1\0\
TargetAddress=[::1]:3261,2\0";
    for text in [
        &b"SendTargets=All\0"[..],
        b"SendTargets=\0",
        b"SendTargets=iqn.2026-11.test:disk1\0",
    ] {
        let mut ex = TextExchange::new();
        let reply = ask(&mut ex, &ctx(SessionType::Normal), text).unwrap();
        assert_eq!(reply.data, want, "{:?}", std::str::from_utf8(text));
    }
    // Another target: nothing.
    let mut ex = TextExchange::new();
    let reply = ask(
        &mut ex,
        &ctx(SessionType::Normal),
        b"SendTargets=iqn.2026-11.test:disk2\0",
    )
    .unwrap();
    assert!(reply.data.is_empty() && reply.final_bit);
}

#[test]
fn send_targets_by_name_in_discovery() {
    let mut ex = TextExchange::new();
    let reply = ask(
        &mut ex,
        &ctx(SessionType::Discovery),
        b"SendTargets=iqn.2026-11.test:disk2\0",
    )
    .unwrap();
    assert_eq!(
        reply.data,
        b"TargetName=iqn.2026-11.test:disk2\0TargetAddress=192.0.2.1:3260,1\0"
    );
    let reply = ask(
        &mut ex,
        &ctx(SessionType::Discovery),
        b"SendTargets=iqn.2026-11.test:nope\0",
    )
    .unwrap();
    assert!(reply.data.is_empty());
}

// libiscsi's test_iscsi_sendtargets_invalid: every one of these must fail on
// the initiator's side, which rejects anything but TargetName/TargetAddress.
#[test]
fn invalid_send_targets() {
    let cases: [(&[u8], &[u8]); 5] = [
        (
            b"SendTargetsPlease=All\0",
            b"SendTargetsPlease=NotUnderstood\0",
        ),
        (b"SendTargets=Alle\0", b"SendTargets=Reject\0"),
        (b"SendTargets=A\0", b"SendTargets=Reject\0"),
        (b"sENDtARGETS=aLL\0", b"sENDtARGETS=NotUnderstood\0"),
        (
            b"X-com.example.Probe=1\0",
            b"X-com.example.Probe=NotUnderstood\0",
        ),
    ];
    for session in [SessionType::Normal, SessionType::Discovery] {
        for (text, want) in cases {
            let mut ex = TextExchange::new();
            let reply = ask(&mut ex, &ctx(session), text).unwrap();
            assert_eq!(reply.data, want);
        }
    }
    let mut ex = TextExchange::new();
    let reply = ask(&mut ex, &ctx(SessionType::Discovery), b"SendTargets=\0").unwrap();
    assert_eq!(reply.data, b"SendTargets=Reject\0");
}

#[test]
fn full_feature_phase_negotiation() {
    let c = ctx(SessionType::Normal);
    let mut ex = TextExchange::new();
    let reply = ask(
        &mut ex,
        &c,
        b"MaxRecvDataSegmentLength=16384\0InitiatorAlias=h\0",
    )
    .unwrap();
    assert!(reply.data.is_empty());
    assert_eq!(reply.max_send_data_segment_length, Some(16384));
    // Out of range: clamped. Malformed: rejected.
    let reply = ask(&mut ex, &c, b"MaxRecvDataSegmentLength=1\0").unwrap();
    assert_eq!(reply.max_send_data_segment_length, Some(512));
    let reply = ask(&mut ex, &c, b"MaxRecvDataSegmentLength=x\0").unwrap();
    assert_eq!(reply.data, b"MaxRecvDataSegmentLength=Reject\0");
    assert_eq!(reply.max_send_data_segment_length, None);
    // Keys settled at login cannot change now.
    let reply = ask(
        &mut ex,
        &c,
        b"HeaderDigest=CRC32C\0MaxBurstLength=512\0AuthMethod=None\0",
    )
    .unwrap();
    assert_eq!(
        reply.data,
        b"HeaderDigest=Reject\0MaxBurstLength=Reject\0AuthMethod=Reject\0"
    );
}

#[test]
fn protocol_errors_become_rejects() {
    let c = ctx(SessionType::Discovery);
    let bad: [&[u8]; 6] = [
        b"SendTargets=All",
        b"SendTargets=All\0SendTargets=All\0",
        b"TargetAlias=me\0",
        b"MaxRecvDataSegmentLength=Reject\0",
        b"SendTargets=NotUnderstood\0",
        b"=x\0",
    ];
    for text in bad {
        let mut ex = TextExchange::new();
        assert_eq!(
            ask(&mut ex, &c, text),
            Err(RejectReason::ProtocolError),
            "{text:?}"
        );
    }
}

#[test]
fn long_answers_are_split_by_the_initiators_limit() {
    let mut c = ctx(SessionType::Discovery);
    c.max_send_data_segment_length = 40;
    let mut ex = TextExchange::new();
    let first = ask(&mut ex, &c, b"SendTargets=All\0").unwrap();
    assert!(first.continue_bit && !first.final_bit);
    assert_ne!(first.ttt, RESERVED_TAG);
    assert_eq!(first.data.len(), 40);
    let ttt = first.ttt;
    let mut joined = first.data;
    loop {
        let reply = ex
            .handle(&request(5, ttt, true, false, 0), &[], &c, &Directory)
            .unwrap();
        joined.extend_from_slice(&reply.data);
        assert!(reply.data.len() <= 40);
        if reply.final_bit {
            assert!(!reply.continue_bit);
            assert_eq!(reply.ttt, RESERVED_TAG);
            break;
        }
        assert!(reply.continue_bit);
        assert_eq!(reply.ttt, ttt);
    }
    assert_eq!(joined, DISCOVERY_ALL);

    // While sending: a wrong TTT, or data in the fetching request.
    let mut ex = TextExchange::new();
    let first = ask(&mut ex, &c, b"SendTargets=All\0").unwrap();
    assert_eq!(
        ex.handle(
            &request(5, first.ttt + 1, true, false, 0),
            &[],
            &c,
            &Directory
        ),
        Err(RejectReason::InvalidPduField)
    );
    assert_eq!(
        ex.handle(&request(6, first.ttt, true, false, 0), &[], &c, &Directory),
        Err(RejectReason::InvalidPduField),
        "another ITT"
    );
    // The exchange survived the bad PDUs.
    assert!(ex
        .handle(&request(5, first.ttt, true, false, 0), &[], &c, &Directory)
        .is_ok());
    let mut ex = TextExchange::new();
    let first = ask(&mut ex, &c, b"SendTargets=All\0").unwrap();
    assert_eq!(
        ex.handle(
            &request(5, first.ttt, true, false, 2),
            b"A=",
            &c,
            &Directory
        ),
        Err(RejectReason::ProtocolError)
    );
    // A new exchange (TTT 0xffffffff) drops the old one.
    let mut ex = TextExchange::new();
    let first = ask(&mut ex, &c, b"SendTargets=All\0").unwrap();
    let fresh = ask(&mut ex, &c, b"SendTargets=iqn.2026-11.test:disk2\0").unwrap();
    assert!(fresh.continue_bit);
    assert_eq!(
        ex.handle(&request(5, first.ttt, true, false, 0), &[], &c, &Directory),
        Err(RejectReason::InvalidPduField)
    );
}

#[test]
fn requests_continued_by_the_initiator() {
    let c = ctx(SessionType::Discovery);
    let mut ex = TextExchange::new();
    let text = b"SendTargets=All\0";
    let reply = ex
        .handle(
            &request(9, RESERVED_TAG, false, true, 7),
            &text[..7],
            &c,
            &Directory,
        )
        .unwrap();
    assert!(!reply.final_bit && !reply.continue_bit);
    assert!(reply.data.is_empty());
    assert_ne!(reply.ttt, RESERVED_TAG);
    let reply = ex
        .handle(
            &request(9, reply.ttt, true, false, 9),
            &text[7..],
            &c,
            &Directory,
        )
        .unwrap();
    assert_eq!(reply.data, DISCOVERY_ALL);
    assert!(reply.final_bit);
    // A stray TTT with nothing under way.
    assert_eq!(
        ex.handle(&request(9, 77, true, false, 0), &[], &c, &Directory),
        Err(RejectReason::InvalidPduField)
    );
}

#[test]
fn requests_without_the_final_bit() {
    let c = ctx(SessionType::Normal);
    let mut ex = TextExchange::new();
    let reply = ex
        .handle(
            &request(3, RESERVED_TAG, false, false, 30),
            b"MaxRecvDataSegmentLength=65536\0",
            &c,
            &Directory,
        )
        .unwrap();
    // The target may not end an exchange the initiator keeps open.
    assert!(!reply.final_bit && !reply.continue_bit);
    assert_ne!(reply.ttt, RESERVED_TAG);
    assert_eq!(reply.max_send_data_segment_length, Some(65536));
    let reply = ex
        .handle(
            &request(3, reply.ttt, true, false, 16),
            b"SendTargets=All\0",
            &c,
            &Directory,
        )
        .unwrap();
    assert!(reply.final_bit);
    assert!(reply
        .data
        .starts_with(b"TargetName=iqn.2026-11.test:disk1\0"));
}

#[test]
fn target_addresses() {
    let v4 = Portal {
        address: "10.1.2.3:3260".parse().unwrap(),
        portal_group_tag: 1,
    };
    assert_eq!(v4.target_address(), "10.1.2.3:3260,1");
    let v6 = Portal {
        address: "[fe80::1%2]:3260".parse().unwrap(),
        portal_group_tag: 7,
    };
    assert_eq!(v6.target_address(), "[fe80::1]:3260,7");
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn exchanges_never_panic(
            steps in proptest::collection::vec(
                (any::<bool>(), any::<bool>(), prop_oneof![Just(RESERVED_TAG), 0u32..4, any::<u32>()],
                 prop_oneof![
                    Just(b"SendTargets=All\0".to_vec()),
                    Just(b"SendTargets=".to_vec()),
                    proptest::collection::vec(any::<u8>(), 0..40)
                 ]),
                1..10),
            max in 1u32..64,
            discovery in any::<bool>(),
        ) {
            let mut c = ctx(if discovery { SessionType::Discovery } else { SessionType::Normal });
            c.max_send_data_segment_length = max;
            let mut ex = TextExchange::new();
            for (final_bit, cont, ttt, data) in steps {
                let cont = cont && !final_bit;
                let req = request(1, ttt, final_bit, cont, data.len());
                if let Ok(reply) = ex.handle(&req, &data, &c, &Directory) {
                    prop_assert!(reply.data.len() <= max as usize);
                    prop_assert!(!(reply.final_bit && reply.continue_bit));
                    prop_assert_eq!(reply.final_bit, reply.ttt == RESERVED_TAG);
                }
            }
        }
    }
}
