use super::*;

fn scope(session_type: SessionType, leading: bool, iser: bool) -> NegotiationScope {
    NegotiationScope {
        session_type,
        leading,
        iser,
    }
}

fn normal() -> NegotiationScope {
    scope(SessionType::Normal, true, false)
}

fn pairs<'a>(list: &[(&'a str, &'a str)]) -> Vec<KeyValue<'a>> {
    list.iter()
        .map(|&(key, value)| KeyValue { key, value })
        .collect()
}

fn answers(n: &mut Negotiator, list: &[(&str, &str)]) -> Vec<(String, String)> {
    n.negotiate(&pairs(list))
        .unwrap()
        .into_iter()
        .map(|a| (a.key, a.value))
        .collect()
}

fn answer(n: &mut Negotiator, key: &str, value: &str) -> String {
    let got = answers(n, &[(key, value)]);
    assert_eq!(got.len(), 1, "{key}={value} -> {got:?}");
    got[0].1.clone()
}

fn own(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn key_names_round_trip() {
    for (key, name) in NAMES {
        assert_eq!(Key::from_name(name), Some(*key));
        assert_eq!(key.name(), *name);
    }
    // Names are case-sensitive.
    assert_eq!(Key::from_name("sendtargets"), None);
    assert_eq!(
        Key::from_name("iSCSIProtocolLevel"),
        Some(Key::IscsiProtocolLevel)
    );
}

// The operational keys libiscsi sends (lib/login.c, in its order) and what a
// target with default limits answers.
#[test]
fn libiscsi_operational_keys() {
    let mut n = Negotiator::new(TargetLimits::default(), normal());
    let got = answers(
        &mut n,
        &[
            ("HeaderDigest", "None,CRC32C"),
            ("DataDigest", "None"),
            ("InitialR2T", "No"),
            ("ImmediateData", "Yes"),
            ("MaxBurstLength", "262144"),
            ("FirstBurstLength", "262144"),
            ("DefaultTime2Wait", "2"),
            ("DefaultTime2Retain", "0"),
            ("MaxOutstandingR2T", "1"),
            ("ErrorRecoveryLevel", "0"),
            ("IFMarker", "No"),
            ("OFMarker", "No"),
            ("MaxConnections", "1"),
            ("MaxRecvDataSegmentLength", "262144"),
            ("DataPDUInOrder", "Yes"),
            ("DataSequenceInOrder", "Yes"),
        ],
    );
    assert_eq!(
        got,
        own(&[
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
            ("InitialR2T", "Yes"),
            ("ImmediateData", "Yes"),
            ("MaxBurstLength", "262144"),
            ("FirstBurstLength", "65536"),
            ("DefaultTime2Wait", "2"),
            ("DefaultTime2Retain", "0"),
            ("MaxOutstandingR2T", "1"),
            ("ErrorRecoveryLevel", "0"),
            ("IFMarker", "No"),
            ("OFMarker", "No"),
            ("MaxConnections", "1"),
            ("DataPDUInOrder", "Yes"),
            ("DataSequenceInOrder", "Yes"),
        ])
    );
    assert_eq!(
        n.declarations(),
        vec![Answer::new("MaxRecvDataSegmentLength", "262144")]
    );
    assert!(n.declarations().is_empty(), "declared once");
    let s = n.session_params();
    assert_eq!(
        (
            s.initial_r2t,
            s.immediate_data,
            s.max_burst_length,
            s.first_burst_length
        ),
        (true, true, 262144, 65536)
    );
    assert_eq!(s.default_time2retain, 0);
    let c = n.connection_params();
    assert_eq!(c.max_send_data_segment_length, 262144);
    assert_eq!(c.max_recv_data_segment_length, 262144);
    assert_eq!(c.header_digest, DigestType::None);
}

// open-iscsi's set (usr/login.c fill_op_params_text), normal session.
#[test]
fn open_iscsi_operational_keys() {
    let limits = TargetLimits {
        initial_r2t: false,
        max_outstanding_r2t: 16,
        ..TargetLimits::default()
    };
    let mut n = Negotiator::new(limits, normal());
    let got = answers(
        &mut n,
        &[
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
            ("DefaultTime2Wait", "2"),
            ("DefaultTime2Retain", "0"),
            ("IFMarker", "No"),
            ("OFMarker", "No"),
            ("ErrorRecoveryLevel", "0"),
            ("InitialR2T", "No"),
            ("ImmediateData", "Yes"),
            ("MaxBurstLength", "16776192"),
            ("FirstBurstLength", "262144"),
            ("MaxOutstandingR2T", "1"),
            ("MaxConnections", "1"),
            ("DataPDUInOrder", "Yes"),
            ("DataSequenceInOrder", "Yes"),
            ("MaxRecvDataSegmentLength", "262144"),
        ],
    );
    let get = |k: &str| got.iter().find(|(key, _)| key == k).unwrap().1.clone();
    assert_eq!(get("InitialR2T"), "No");
    assert_eq!(get("MaxBurstLength"), "1048576");
    assert_eq!(get("FirstBurstLength"), "65536");
    assert_eq!(get("MaxOutstandingR2T"), "1");
    // open-iscsi fails the login unless MaxConnections is exactly 1.
    assert_eq!(get("MaxConnections"), "1");
    assert_eq!(get("ErrorRecoveryLevel"), "0");
    assert!(!got.iter().any(|(k, _)| k == "MaxRecvDataSegmentLength"));
}

#[test]
fn numbers_are_clamped_into_range_then_settled() {
    let mut n = Negotiator::new(TargetLimits::default(), normal());
    // Above 2^24-1, then the target's limit.
    assert_eq!(answer(&mut n, "MaxBurstLength", "99999999999"), "1048576");
    // Below 512: raised to 512.
    assert_eq!(answer(&mut n, "FirstBurstLength", "100"), "512");
    assert_eq!(answer(&mut n, "MaxConnections", "0"), "1");
    assert_eq!(answer(&mut n, "ErrorRecoveryLevel", "2"), "0");
    assert_eq!(answer(&mut n, "DefaultTime2Wait", "7200"), "3600");
    assert_eq!(answer(&mut n, "MaxOutstandingR2T", "70000"), "1");
    assert_eq!(answer(&mut n, "iSCSIProtocolLevel", "2"), "1");
    // A declaration out of range is clamped too.
    assert!(answers(&mut n, &[("MaxRecvDataSegmentLength", "100")]).is_empty());
    assert_eq!(n.connection_params().max_send_data_segment_length, 512);
    let s = n.session_params();
    assert_eq!((s.max_burst_length, s.first_burst_length), (1048576, 512));
    assert_eq!(s.default_time2wait, 3600);
}

#[test]
fn number_result_functions_and_encodings() {
    let limits = TargetLimits {
        max_burst_length: 65536,
        default_time2wait: 2,
        default_time2retain: 20,
        ..TargetLimits::default()
    };
    let mut n = Negotiator::new(limits, normal());
    assert_eq!(answer(&mut n, "MaxBurstLength", "0x8000"), "32768");
    assert_eq!(answer(&mut n, "DefaultTime2Wait", "0"), "2");
    assert_eq!(answer(&mut n, "DefaultTime2Retain", "30"), "20");
    let mut n = Negotiator::new(limits, normal());
    assert_eq!(answer(&mut n, "MaxBurstLength", "0bAQAAAA=="), "65536");
    assert_eq!(answer(&mut n, "DefaultTime2Wait", "10"), "10");
    assert_eq!(answer(&mut n, "DefaultTime2Retain", "0"), "0");
    // Malformed numbers are rejected, and change nothing.
    let mut n = Negotiator::new(limits, normal());
    assert_eq!(answer(&mut n, "MaxBurstLength", "lots"), "Reject");
    assert_eq!(answer(&mut n, "MaxConnections", "-1"), "Reject");
    assert_eq!(n.session_params().max_burst_length, 262144);
}

#[test]
fn booleans_and_or() {
    let strict = TargetLimits {
        immediate_data: false,
        initial_r2t: true,
        ..TargetLimits::default()
    };
    let lax = TargetLimits {
        immediate_data: true,
        initial_r2t: false,
        ..TargetLimits::default()
    };
    let cases = [
        (strict, "ImmediateData", "Yes", "No"),
        (strict, "ImmediateData", "No", "No"),
        (lax, "ImmediateData", "Yes", "Yes"),
        (lax, "ImmediateData", "No", "No"),
        (strict, "InitialR2T", "No", "Yes"),
        (strict, "InitialR2T", "Yes", "Yes"),
        (lax, "InitialR2T", "No", "No"),
        (lax, "InitialR2T", "Yes", "Yes"),
        // Out-of-order data is not implemented: OR with our Yes.
        (lax, "DataPDUInOrder", "No", "Yes"),
        (lax, "DataSequenceInOrder", "No", "Yes"),
        (lax, "ImmediateData", "yes", "Reject"),
        (lax, "InitialR2T", "True", "Reject"),
    ];
    for (limits, key, offer, want) in cases {
        let mut n = Negotiator::new(limits, normal());
        assert_eq!(answer(&mut n, key, offer), want, "{key}={offer}");
    }
    let mut n = Negotiator::new(lax, normal());
    answers(&mut n, &[("InitialR2T", "No"), ("ImmediateData", "No")]);
    let s = n.session_params();
    assert!(!s.initial_r2t && !s.immediate_data);
}

#[test]
fn first_burst_never_exceeds_max_burst() {
    // FirstBurstLength before MaxBurstLength, both above what the other allows.
    let mut n = Negotiator::new(
        TargetLimits {
            max_burst_length: 1 << 20,
            first_burst_length: 1 << 20,
            ..TargetLimits::default()
        },
        normal(),
    );
    let got = answers(
        &mut n,
        &[("FirstBurstLength", "262144"), ("MaxBurstLength", "65536")],
    );
    assert_eq!(
        got,
        own(&[("FirstBurstLength", "65536"), ("MaxBurstLength", "65536")])
    );
    let s = n.session_params();
    assert_eq!((s.first_burst_length, s.max_burst_length), (65536, 65536));
    // The corrected value is the one a repeat must match.
    assert_eq!(answer(&mut n, "FirstBurstLength", "262144"), "65536");

    // Limits with the first burst over the max burst are sanitized.
    let limits = TargetLimits {
        max_burst_length: 8192,
        first_burst_length: 65536,
        ..TargetLimits::default()
    }
    .sanitized();
    assert_eq!(limits.first_burst_length, 8192);
}

#[test]
fn digests() {
    let cases = [
        (AllowedDigests::ANY, "None,CRC32C", "None"),
        (AllowedDigests::ANY, "CRC32C,None", "CRC32C"),
        (AllowedDigests::ANY, "CRC32C", "CRC32C"),
        (AllowedDigests::NONE_ONLY, "CRC32C,None", "None"),
        (AllowedDigests::NONE_ONLY, "CRC32C", "Reject"),
        (AllowedDigests::CRC32C_ONLY, "None", "Reject"),
        (AllowedDigests::CRC32C_ONLY, "None,CRC32C", "CRC32C"),
        // Unknown values are skipped; case matters.
        (AllowedDigests::ANY, "MD5,CRC32C", "CRC32C"),
        (AllowedDigests::ANY, "crc32c", "Reject"),
        (AllowedDigests::ANY, "", "Reject"),
    ];
    for (allowed, offer, want) in cases {
        let limits = TargetLimits {
            header_digests: allowed,
            data_digests: allowed,
            ..TargetLimits::default()
        };
        let mut n = Negotiator::new(limits, normal());
        assert_eq!(answer(&mut n, "HeaderDigest", offer), want, "{offer}");
        assert_eq!(answer(&mut n, "DataDigest", offer), want, "{offer}");
    }
    let mut n = Negotiator::new(TargetLimits::default(), normal());
    answers(
        &mut n,
        &[("HeaderDigest", "CRC32C"), ("DataDigest", "CRC32C,None")],
    );
    let c = n.connection_params();
    assert_eq!(
        (c.header_digest, c.data_digest),
        (DigestType::Crc32c, DigestType::Crc32c)
    );

    // iSER moves no digests.
    let mut n = Negotiator::new(
        TargetLimits::default(),
        scope(SessionType::Normal, true, true),
    );
    assert_eq!(answer(&mut n, "HeaderDigest", "CRC32C,None"), "None");
    assert_eq!(answer(&mut n, "DataDigest", "CRC32C"), "Reject");
}

#[test]
fn lists_and_obsolete_keys() {
    let mut n = Negotiator::new(TargetLimits::default(), normal());
    assert_eq!(
        answer(&mut n, "TaskReporting", "ResponseFence,RFC3720"),
        "RFC3720"
    );
    assert_eq!(answer(&mut n, "IFMarker", "Yes"), "No");
    assert_eq!(answer(&mut n, "OFMarker", "No"), "No");
    assert_eq!(answer(&mut n, "IFMarkInt", "2048"), "Reject");
    assert_eq!(answer(&mut n, "OFMarkInt", "1~65535"), "Reject");
    let mut n = Negotiator::new(TargetLimits::default(), normal());
    assert_eq!(answer(&mut n, "TaskReporting", "FastAbort"), "Reject");
}

#[test]
fn unknown_and_extension_keys_are_not_understood() {
    let mut n = Negotiator::new(TargetLimits::default(), normal());
    let got = answers(
        &mut n,
        &[
            ("X-com.example.Turbo", "Yes"),
            ("X#IANA-thing", "1"),
            ("SomethingNew", "1"),
            ("maxburstlength", "512"),
            ("X-com.cisco.protocol", "draft20"),
        ],
    );
    assert!(got.iter().all(|(_, v)| v == "NotUnderstood"), "{got:?}");
    assert_eq!(got.len(), 5);
    // Even with a reserved value: an unknown key is just not understood.
    assert_eq!(answer(&mut n, "X-foo", "Reject"), "NotUnderstood");
}

#[test]
fn discovery_sessions() {
    let mut n = Negotiator::new(
        TargetLimits::default(),
        scope(SessionType::Discovery, true, false),
    );
    let got = answers(
        &mut n,
        &[
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
            ("InitialR2T", "No"),
            ("ImmediateData", "Yes"),
            ("MaxBurstLength", "262144"),
            ("FirstBurstLength", "262144"),
            ("DefaultTime2Wait", "2"),
            ("DefaultTime2Retain", "0"),
            ("MaxOutstandingR2T", "1"),
            ("ErrorRecoveryLevel", "0"),
            ("MaxConnections", "1"),
            ("DataPDUInOrder", "Yes"),
            ("DataSequenceInOrder", "Yes"),
            ("TaskReporting", "RFC3720"),
            ("RDMAExtensions", "Yes"),
            ("MaxRecvDataSegmentLength", "32768"),
        ],
    );
    let irrelevant = [
        "InitialR2T",
        "ImmediateData",
        "MaxBurstLength",
        "FirstBurstLength",
        "MaxOutstandingR2T",
        "MaxConnections",
        "DataPDUInOrder",
        "DataSequenceInOrder",
        "TaskReporting",
        "RDMAExtensions",
    ];
    for (k, v) in &got {
        let want_irrelevant = irrelevant.contains(&k.as_str());
        assert_eq!(v == "Irrelevant", want_irrelevant, "{k}={v}");
    }
    assert_eq!(n.connection_params().max_send_data_segment_length, 32768);
    assert_eq!(n.declarations().len(), 1);
    assert_eq!(n.session_params().session_type, SessionType::Discovery);
    assert!(n.target_offers().is_empty());
}

#[test]
fn non_leading_connections_negotiate_connection_keys_only() {
    let mut n = Negotiator::new(
        TargetLimits::default(),
        scope(SessionType::Normal, false, false),
    );
    let got = answers(
        &mut n,
        &[
            ("HeaderDigest", "CRC32C,None"),
            ("MaxBurstLength", "65536"),
            ("ErrorRecoveryLevel", "0"),
            ("MaxRecvDataSegmentLength", "65536"),
        ],
    );
    assert_eq!(
        got,
        own(&[
            ("HeaderDigest", "CRC32C"),
            ("MaxBurstLength", "Irrelevant"),
            ("ErrorRecoveryLevel", "Irrelevant"),
        ])
    );
}

#[test]
fn iser_keys() {
    // On TCP: RDMAExtensions is answered No, the other iSER keys are irrelevant.
    let mut n = Negotiator::new(TargetLimits::default(), normal());
    let got = answers(
        &mut n,
        &[
            ("RDMAExtensions", "Yes"),
            ("TargetRecvDataSegmentLength", "262144"),
            ("InitiatorRecvDataSegmentLength", "262144"),
            ("MaxOutstandingUnexpectedPDUs", "8"),
        ],
    );
    assert_eq!(
        got,
        own(&[
            ("RDMAExtensions", "No"),
            ("TargetRecvDataSegmentLength", "Irrelevant"),
            ("InitiatorRecvDataSegmentLength", "Irrelevant"),
            ("MaxOutstandingUnexpectedPDUs", "Irrelevant"),
        ])
    );
    assert!(!n.session_params().rdma_extensions);

    // On an iSER connection, open-iscsi's keys (no digests, no MRDSL).
    let limits = TargetLimits {
        iser_target_recv_data_segment_length: 131072,
        max_outstanding_unexpected_pdus: 16,
        ..TargetLimits::default()
    };
    let mut n = Negotiator::new(limits, scope(SessionType::Normal, true, true));
    let got = answers(
        &mut n,
        &[
            ("InitiatorRecvDataSegmentLength", "262144"),
            ("TargetRecvDataSegmentLength", "262144"),
            ("RDMAExtensions", "Yes"),
            ("MaxOutstandingUnexpectedPDUs", "0"),
        ],
    );
    assert_eq!(
        got,
        own(&[
            ("InitiatorRecvDataSegmentLength", "8192"),
            ("TargetRecvDataSegmentLength", "131072"),
            ("RDMAExtensions", "Yes"),
            ("MaxOutstandingUnexpectedPDUs", "16"),
        ])
    );
    assert!(n.session_params().rdma_extensions);
    assert_eq!(n.session_params().max_outstanding_unexpected_pdus, 16);
    let c = n.connection_params();
    assert_eq!(c.iser_target_recv_data_segment_length, 131072);
    // The target's own default (the RFC's, 8192) caps what it sends.
    assert_eq!(c.iser_initiator_recv_data_segment_length, 8192);
    // In iSER-assisted mode MaxRecvDataSegmentLength is not declared.
    assert!(n.declarations().is_empty());

    for (ours, offer, want) in [(0, "0", "0"), (0, "8", "8"), (16, "8", "8"), (4, "1", "2")] {
        let limits = TargetLimits {
            max_outstanding_unexpected_pdus: ours,
            ..TargetLimits::default()
        };
        let mut n = Negotiator::new(limits, scope(SessionType::Normal, true, true));
        assert_eq!(answer(&mut n, "MaxOutstandingUnexpectedPDUs", offer), want);
    }
}

#[test]
fn iser_portals_speak_iser_assisted_mode_only() {
    let iser = scope(SessionType::Normal, true, true);
    // RDMAExtensions=No on an iSER connection fails the login, with a reason.
    let mut n = Negotiator::new(TargetLimits::default(), iser);
    let e = n
        .negotiate(&pairs(&[("RDMAExtensions", "No")]))
        .unwrap_err();
    assert_eq!(e, NegotiationError::RdmaExtensionsRequired);
    assert!(e.to_string().contains("iSER portal"), "{e}");

    // Not offered: the target offers it when the initiator wants to leave
    // the operational stage, and the login waits for Yes.
    let mut n = Negotiator::new(TargetLimits::default(), iser);
    answers(&mut n, &[("ErrorRecoveryLevel", "0")]);
    let offers = n.target_offers();
    assert_eq!(
        offers,
        vec![Answer::new("RDMAExtensions", "Yes")],
        "{offers:?}"
    );
    assert!(n.awaiting_answers());
    assert!(answers(&mut n, &[("RDMAExtensions", "Yes")]).is_empty());
    assert!(!n.awaiting_answers());
    assert!(n.session_params().rdma_extensions);
    assert!(n.connection_params().iser_assisted);
    // ... and an answer of No fails it.
    let mut n = Negotiator::new(TargetLimits::default(), iser);
    n.target_offers();
    assert_eq!(
        n.negotiate(&pairs(&[("RDMAExtensions", "No")])),
        Err(NegotiationError::RdmaExtensionsRequired)
    );

    // TCP: never offered; an initiator's Yes is answered No (tested above).
    let mut n = Negotiator::new(TargetLimits::default(), normal());
    assert!(n.target_offers().is_empty());
    assert!(!n.connection_params().iser_assisted);
}

#[test]
fn data_segment_limits_per_transport() {
    let limits = TargetLimits {
        max_recv_data_segment_length: 65536,
        iser_target_recv_data_segment_length: 16384,
        iser_initiator_recv_data_segment_length: 32768,
        ..TargetLimits::default()
    };
    // TCP: the MaxRecvDataSegmentLength declarations.
    let mut n = Negotiator::new(limits, normal());
    answers(&mut n, &[("MaxRecvDataSegmentLength", "262144")]);
    n.declarations();
    let c = n.connection_params();
    assert_eq!(
        (c.recv_segment_limit(), c.send_segment_limit()),
        (65536, 262144)
    );

    // iSER-assisted: the iSER keys, whatever MaxRecvDataSegmentLength says
    // (an initiator may still declare it; it is not used).
    let mut n = Negotiator::new(limits, scope(SessionType::Normal, true, true));
    answers(
        &mut n,
        &[
            ("MaxRecvDataSegmentLength", "4096"),
            ("InitiatorRecvDataSegmentLength", "262144"),
            ("TargetRecvDataSegmentLength", "262144"),
            ("RDMAExtensions", "Yes"),
        ],
    );
    assert!(n.declarations().is_empty());
    let c = n.connection_params();
    assert!(c.iser_assisted);
    assert_eq!(
        (c.recv_segment_limit(), c.send_segment_limit()),
        (16384, 32768)
    );
    // Digests stay off whatever is offered.
    let mut n = Negotiator::new(limits, scope(SessionType::Normal, true, true));
    assert_eq!(answer(&mut n, "HeaderDigest", "CRC32C,None"), "None");
    assert_eq!(answer(&mut n, "DataDigest", "CRC32C"), "Reject");

    // A Discovery session over iSER (open-iscsi -I iser): MaxRecvDataSegmentLength
    // as on TCP, the iSER keys irrelevant.
    let mut n = Negotiator::new(limits, scope(SessionType::Discovery, true, true));
    let got = answers(
        &mut n,
        &[
            ("MaxRecvDataSegmentLength", "32768"),
            ("RDMAExtensions", "Yes"),
            ("MaxOutstandingUnexpectedPDUs", "0"),
        ],
    );
    assert_eq!(
        got,
        own(&[
            ("RDMAExtensions", "Irrelevant"),
            ("MaxOutstandingUnexpectedPDUs", "Irrelevant")
        ])
    );
    assert!(n.target_offers().is_empty());
    assert_eq!(n.declarations().len(), 1);
    let c = n.connection_params();
    assert!(!c.iser_assisted);
    assert_eq!(
        (c.recv_segment_limit(), c.send_segment_limit()),
        (65536, 32768)
    );

    // A second connection of an iSER session is iSER-assisted too.
    let n = Negotiator::new(limits, scope(SessionType::Normal, false, true));
    assert!(n.connection_params().iser_assisted);
}

#[test]
fn protocol_errors() {
    let mut n = Negotiator::new(TargetLimits::default(), normal());
    for value in ["Reject", "Irrelevant", "NotUnderstood"] {
        assert_eq!(
            n.negotiate(&pairs(&[("MaxBurstLength", value)])),
            Err(NegotiationError::ReservedValue("MaxBurstLength".into()))
        );
    }
    for key in ["TargetAlias", "TargetAddress", "TargetPortalGroupTag"] {
        assert_eq!(
            n.negotiate(&pairs(&[(key, "x")])),
            Err(NegotiationError::WrongSender(key.into()))
        );
    }
    assert_eq!(
        n.negotiate(&pairs(&[("MaxRecvDataSegmentLength", "big")])),
        Err(NegotiationError::BadDeclaration(
            "MaxRecvDataSegmentLength".into()
        ))
    );
}

#[test]
fn repeats_must_agree() {
    let mut n = Negotiator::new(TargetLimits::default(), normal());
    assert_eq!(answer(&mut n, "MaxBurstLength", "65536"), "65536");
    // The same offer again (open-iscsi re-sends keys after a partial
    // response): the same answer.
    assert_eq!(answer(&mut n, "MaxBurstLength", "65536"), "65536");
    assert_eq!(
        n.negotiate(&pairs(&[("MaxBurstLength", "32768")])),
        Err(NegotiationError::Renegotiated("MaxBurstLength".into()))
    );
    // A different offer with the same outcome is not a change.
    assert_eq!(answer(&mut n, "ErrorRecoveryLevel", "0"), "0");
    assert_eq!(answer(&mut n, "ErrorRecoveryLevel", "1"), "0");
    // Declarations too.
    assert!(answers(&mut n, &[("MaxRecvDataSegmentLength", "8192")]).is_empty());
    assert!(answers(&mut n, &[("MaxRecvDataSegmentLength", "8192")]).is_empty());
    assert_eq!(
        n.negotiate(&pairs(&[("MaxRecvDataSegmentLength", "4096")])),
        Err(NegotiationError::Renegotiated(
            "MaxRecvDataSegmentLength".into()
        ))
    );
    assert_eq!(n.session_params().max_burst_length, 65536);
}

#[test]
fn target_offers_what_its_limits_need() {
    let limits = TargetLimits {
        max_burst_length: 65536,
        first_burst_length: 16384,
        immediate_data: false,
        header_digests: AllowedDigests::CRC32C_ONLY,
        ..TargetLimits::default()
    };
    // The initiator offered nothing: the target offers.
    let mut n = Negotiator::new(limits, normal());
    assert!(answers(&mut n, &[]).is_empty());
    let offers = n.target_offers();
    assert_eq!(
        offers,
        vec![
            Answer::new("ImmediateData", "No"),
            Answer::new("MaxBurstLength", "65536"),
            Answer::new("FirstBurstLength", "16384"),
            Answer::new("HeaderDigest", "CRC32C"),
        ]
    );
    assert!(n.awaiting_answers());
    assert!(n.target_offers().is_empty(), "offered once");
    // The initiator answers; nothing is sent back to answers.
    let got = answers(
        &mut n,
        &[
            ("ImmediateData", "No"),
            ("MaxBurstLength", "32768"),
            ("FirstBurstLength", "16384"),
            ("HeaderDigest", "CRC32C"),
        ],
    );
    assert!(got.is_empty());
    assert!(!n.awaiting_answers());
    let s = n.session_params();
    assert_eq!(
        (s.immediate_data, s.max_burst_length, s.first_burst_length),
        (false, 32768, 16384)
    );
    assert_eq!(n.connection_params().header_digest, DigestType::Crc32c);

    // Answers the target cannot live with.
    for (key, bad) in [
        ("MaxBurstLength", "131072"),
        ("MaxBurstLength", "Reject"),
        ("ImmediateData", "Yes"),
        ("HeaderDigest", "None"),
    ] {
        let mut n = Negotiator::new(limits, normal());
        n.target_offers();
        assert_eq!(
            n.negotiate(&pairs(&[(key, bad)])),
            Err(NegotiationError::UnacceptableAnswer(key.into())),
            "{key}={bad}"
        );
    }

    // Keys the initiator offered are not offered again.
    let mut n = Negotiator::new(limits, normal());
    answers(
        &mut n,
        &[
            ("ImmediateData", "Yes"),
            ("MaxBurstLength", "262144"),
            ("FirstBurstLength", "262144"),
            ("HeaderDigest", "None,CRC32C"),
        ],
    );
    assert!(n.target_offers().is_empty());
    assert!(!n.awaiting_answers());

    // Default limits need no offers.
    let mut n = Negotiator::new(TargetLimits::default(), normal());
    assert!(n.target_offers().is_empty());
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn key_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(NAMES.iter().map(|(_, n)| n.to_string()).collect::<Vec<_>>()),
            "[A-Za-z#-]{1,12}",
        ]
    }

    fn value_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("Yes".to_string()),
            Just("No".to_string()),
            Just("None,CRC32C".to_string()),
            Just("Reject".to_string()),
            "[0-9]{1,12}",
            "0x[0-9a-f]{0,20}",
            "0b[A-Za-z0-9+/=]{0,12}",
            "\\PC{0,20}",
        ]
    }

    proptest! {
        #[test]
        fn negotiation_never_panics(
            list in proptest::collection::vec((key_strategy(), value_strategy()), 0..20),
            session in prop_oneof![Just(SessionType::Normal), Just(SessionType::Discovery)],
            leading in any::<bool>(),
            iser in any::<bool>(),
            offers in any::<bool>(),
        ) {
            let mut n = Negotiator::new(TargetLimits::default(), scope(session, leading, iser));
            if offers {
                n.target_offers();
            }
            let kv: Vec<KeyValue<'_>> = list
                .iter()
                .map(|(k, v)| KeyValue { key: k, value: v })
                .collect();
            if let Ok(answers) = n.negotiate(&kv) {
                for a in answers {
                    prop_assert!(!a.value.is_empty() || a.key.is_empty());
                }
            }
            let s = n.session_params();
            prop_assert!(s.first_burst_length <= s.max_burst_length);
            prop_assert!(s.max_burst_length >= MIN_DATA_SEGMENT_LEN);
            prop_assert!(s.error_recovery_level == 0);
            let c = n.connection_params();
            prop_assert!(c.max_send_data_segment_length >= MIN_DATA_SEGMENT_LEN);
        }
    }
}
