use proptest::prelude::*;

use super::*;

fn login() -> LoginReq {
    LoginReq {
        tag: 0x0102_0304_0506_0708,
        req_it_iu_len: 8260,
        req_buf_fmt: buf_fmt::DIRECT | buf_fmt::INDIRECT,
        req_flags: IMMED_REQUESTED | 1,
        imm_data_offset: 68,
        initiator_port_id: PortId::new(0x1111, 0x0002_c903_00aa_bb01),
        target_port_id: PortId::new(0x0002_c903_0011_2233, 0x0002_c903_0044_5566),
    }
}

/// The 56 bytes Linux ib_srp puts in the RDMA CM connect request, laid out by
/// hand from `struct srp_login_req_rdma` (tag 0, as ib_srp sends it).
#[test]
fn rdma_cm_login_as_ib_srp_lays_it_out() {
    let mut b = [0u8; 56];
    b[8..10].copy_from_slice(&0x0006u16.to_be_bytes()); // DIRECT | INDIRECT
    b[10] = 0x81; // IMMED_REQUESTED | MULTICHAN_MULTI
    b[11] = 0x00; // SRP_LOGIN_REQ
    b[12..16].copy_from_slice(&8260u32.to_be_bytes());
    b[16..24].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]); // initiator_ext
    b[24..32].copy_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 1]);
    b[32..40].copy_from_slice(&0x5254_00ff_fe12_3456u64.to_be_bytes()); // id_ext
    b[40..48].copy_from_slice(&0x5254_00ff_fe12_3457u64.to_be_bytes()); // ioc_guid
    b[48..50].copy_from_slice(&68u16.to_be_bytes());
    let r = LoginReq::parse_rdma_cm(&b).unwrap();
    assert_eq!(r.tag, 0);
    assert_eq!(r.req_it_iu_len, 8260);
    assert_eq!(r.req_buf_fmt, buf_fmt::DIRECT | buf_fmt::INDIRECT);
    assert_eq!(r.multichannel(), MultiChannel::Multi);
    assert!(r.immediate_requested());
    assert_eq!(r.imm_data_offset, 68);
    assert_eq!(r.target_port_id.id_ext(), 0x5254_00ff_fe12_3456);
    assert_eq!(r.target_port_id.guid(), 0x5254_00ff_fe12_3457);
    assert_eq!(r.initiator_port_id.guid(), 0xfe80_0000_0000_0001);
    assert_eq!(
        r.initiator_port_id.to_string(),
        "0x0000000000000000fe80000000000001"
    );
    assert_eq!(r.encode_rdma_cm(), b);
}

#[test]
fn ib_login_form_round_trips_and_checks_its_opcode() {
    let l = login();
    let b = l.encode_ib();
    assert_eq!(b[0], opcode::LOGIN_REQ);
    assert_eq!(LoginReq::parse_ib(&b).unwrap(), l);
    // IB CM private data is 92 bytes: the tail is ignored.
    let mut long = [0u8; 92];
    long[..64].copy_from_slice(&b);
    assert_eq!(LoginReq::parse_ib(&long).unwrap(), l);
    let mut bad = b;
    bad[0] = opcode::CMD;
    assert_eq!(LoginReq::parse_ib(&bad), Err(IuError::Unexpected(0x02)));
    bad[0] = 0x77;
    assert_eq!(LoginReq::parse_ib(&bad), Err(IuError::UnknownOpcode(0x77)));
    assert_eq!(
        LoginReq::parse_ib(&b[..63]),
        Err(IuError::Short {
            what: "SRP_LOGIN_REQ",
            need: 64,
            got: 63
        })
    );
    assert!(matches!(
        LoginReq::parse_rdma_cm(&l.encode_rdma_cm()[..55]),
        Err(IuError::Short { need: 56, .. })
    ));
}

#[test]
fn multichannel_flags() {
    let mut l = login();
    for (flags, want) in [
        (0x00, MultiChannel::Single),
        (0x01, MultiChannel::Multi),
        (0x02, MultiChannel::Reserved(2)),
        (0x83, MultiChannel::Reserved(3)),
    ] {
        l.req_flags = flags;
        assert_eq!(l.multichannel(), want);
    }
}

#[test]
fn login_rsp_and_rej_layouts() {
    let rsp = LoginRsp {
        req_lim_delta: 128,
        tag: 7,
        max_it_iu_len: 8260,
        max_ti_iu_len: 8260,
        buf_fmt: buf_fmt::DIRECT | buf_fmt::INDIRECT,
        rsp_flags: rsp_flags::MULTICHAN_MAINTAINED | rsp_flags::IMMED_SUPPORTED,
    };
    let b = rsp.encode();
    assert_eq!(b.len(), 52);
    assert_eq!(b[0], 0xc0);
    assert_eq!(&b[4..8], &128u32.to_be_bytes());
    assert_eq!(&b[16..20], &8260u32.to_be_bytes());
    assert_eq!(b[26], 0x82);
    assert_eq!(LoginRsp::parse(&b).unwrap(), rsp);

    let rej = LoginRej {
        reason: RejectReason::UnableToAssociateChannel,
        tag: 9,
        buf_fmt: buf_fmt::DIRECT | buf_fmt::INDIRECT,
    };
    let b = rej.encode();
    assert_eq!(b.len(), 32);
    assert_eq!(b[0], 0xc2);
    assert_eq!(&b[4..8], &0x0001_0003u32.to_be_bytes());
    assert_eq!(LoginRej::parse(&b).unwrap(), (0x0001_0003, 9, 6));
    assert_eq!(
        RejectReason::from_code(0x0001_0006),
        Some(RejectReason::ChannelLimitReached)
    );
    assert_eq!(RejectReason::from_code(0x0001_0007), None);
}

fn read10() -> [u8; 10] {
    [0x28, 0, 0, 0, 0, 8, 0, 0, 8, 0]
}

#[test]
fn cmd_with_direct_data_in() {
    let cdb = read10();
    let d = Desc {
        va: 0xdead_beef_0000,
        key: 0x1234,
        len: 4096,
    };
    let mut b = [0u8; 128];
    let n = CmdBuilder {
        tag: 42,
        lun: [0, 1, 0, 0, 0, 0, 0, 0],
        task_attr: task_attr::ORDERED,
        cdb: &cdb,
        data_in: BuildBuf::Direct(d),
        ..Default::default()
    }
    .encode(&mut b);
    assert_eq!(n, 64);
    assert_eq!(b[5], 0x01, "data-in format in the low nibble");
    let c = Cmd::parse(&b[..n]).unwrap();
    assert_eq!(c.tag, 42);
    assert_eq!(c.lun, [0, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(c.task_attr, task_attr::ORDERED);
    assert_eq!(&c.cdb()[..10], &cdb);
    assert_eq!(c.cdb().len(), 16);
    assert_eq!(c.data_out, DataBuf::None);
    assert_eq!(c.data_in, DataBuf::Direct(d));
    assert_eq!(c.data_in.byte_len(), 4096);
    assert_eq!(c.immediate_data(68).unwrap(), &[] as &[u8]);
}

#[test]
fn cmd_with_indirect_data_out_partly_inline() {
    let descs = [
        Desc {
            va: 0x1000,
            key: 1,
            len: 4096,
        },
        Desc {
            va: 0x3000,
            key: 1,
            len: 8192,
        },
    ];
    // A table of 4 descriptors of which 2 travel in the IU.
    let table = Desc {
        va: 0x9000,
        key: 2,
        len: 64,
    };
    let cdb = [0x8a; 16];
    let mut b = [0u8; 256];
    let n = CmdBuilder {
        tag: 1,
        cdb: &cdb,
        data_out: BuildBuf::Indirect(table, 20480, &descs),
        ..Default::default()
    }
    .encode(&mut b);
    assert_eq!(n, 48 + 20 + 32);
    assert_eq!(b[5], 0x20);
    assert_eq!(b[6], 2);
    let c = Cmd::parse(&b[..n]).unwrap();
    let DataBuf::Indirect(i) = c.data_out else {
        panic!("{:?}", c.data_out)
    };
    assert_eq!(i.table, table);
    assert_eq!(i.total_len, 20480);
    assert_eq!(i.inline_count(), 2);
    assert_eq!(i.table_count(), 4);
    assert!(!i.is_complete());
    assert_eq!(i.inline_descs().collect::<Vec<_>>(), descs);
    assert_eq!(c.data_out.byte_len(), 20480);
}

#[test]
fn cmd_with_immediate_data_at_the_login_offset() {
    let data: Vec<u8> = (0..512u32).map(|i| i as u8).collect();
    let cdb = [0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0];
    let mut b = vec![0u8; 1024];
    let n = CmdBuilder {
        tag: 5,
        cdb: &cdb,
        data_out: BuildBuf::Immediate(&data),
        imm_data_offset: 68,
        ..Default::default()
    }
    .encode(&mut b);
    assert_eq!(n, 68 + 512);
    assert_eq!(b[5], 0x30);
    let c = Cmd::parse(&b[..n]).unwrap();
    assert_eq!(c.data_out, DataBuf::Immediate { len: 512 });
    assert_eq!(c.immediate_data(68).unwrap(), &data[..]);
    // Cut short: the data no longer fits.
    let c = Cmd::parse(&b[..n - 1]).unwrap();
    assert_eq!(
        c.immediate_data(68),
        Err(IuError::ImmediateOutside {
            offset: 68,
            len: 512,
            iu: n - 1
        })
    );
    // An offset inside the descriptors is refused.
    let c = Cmd::parse(&b[..n]).unwrap();
    assert!(c.immediate_data(50).is_err());
}

#[test]
fn cmd_with_a_long_cdb() {
    let cdb = [0x7f; 32];
    let mut b = [0u8; 128];
    let n = CmdBuilder {
        cdb: &cdb,
        ..Default::default()
    }
    .encode(&mut b);
    assert_eq!(b[31], 16);
    let c = Cmd::parse(&b[..n]).unwrap();
    assert_eq!(c.cdb(), &cdb);
    // The additional CDB length says more than was received.
    assert!(matches!(
        Cmd::parse(&b[..60]),
        Err(IuError::Short {
            what: "SRP_CMD additional CDB",
            ..
        })
    ));
}

#[test]
fn cmd_rejects_bad_formats_and_counts() {
    let mut b = [0u8; 128];
    let n = CmdBuilder {
        cdb: &read10(),
        data_in: BuildBuf::Direct(Desc::default()),
        ..Default::default()
    }
    .encode(&mut b);
    // Immediate data-in does not exist.
    let mut x = b;
    x[5] = 0x03;
    assert_eq!(
        Cmd::parse(&x[..n]),
        Err(IuError::BadFormat {
            data_out: false,
            format: 3
        })
    );
    x[5] = 0x50;
    assert_eq!(
        Cmd::parse(&x[..n]),
        Err(IuError::BadFormat {
            data_out: true,
            format: 5
        })
    );
    // Direct descriptor missing its last byte.
    assert!(matches!(
        Cmd::parse(&b[..n - 1]),
        Err(IuError::Short { .. })
    ));

    // Indirect: more inline descriptors than the table holds.
    let descs = [Desc::default(); 3];
    let table = Desc {
        va: 0,
        key: 0,
        len: 32,
    };
    let n = CmdBuilder {
        cdb: &read10(),
        data_in: BuildBuf::Indirect(table, 0, &descs),
        ..Default::default()
    }
    .encode(&mut b);
    assert_eq!(
        Cmd::parse(&b[..n]),
        Err(IuError::BadCount {
            data_out: false,
            count: 3,
            table: 32
        })
    );
    // A count that runs past the IU.
    let table = Desc {
        va: 0,
        key: 0,
        len: 48,
    };
    let n = CmdBuilder {
        cdb: &read10(),
        data_in: BuildBuf::Indirect(table, 0, &descs),
        ..Default::default()
    }
    .encode(&mut b);
    assert!(Cmd::parse(&b[..n]).is_ok());
    assert_eq!(
        Cmd::parse(&b[..n - 16]),
        Err(IuError::BadCount {
            data_out: false,
            count: 3,
            table: 48
        })
    );
    // A table length that is not a whole number of descriptors.
    let table = Desc {
        va: 0,
        key: 0,
        len: 50,
    };
    let n = CmdBuilder {
        cdb: &read10(),
        data_in: BuildBuf::Indirect(table, 0, &descs[..1]),
        ..Default::default()
    }
    .encode(&mut b);
    assert!(matches!(Cmd::parse(&b[..n]), Err(IuError::BadCount { .. })));
}

#[test]
fn task_management_layout() {
    let t = TskMgmt {
        tag: 0x8000_0000_0000_0001,
        lun: [0, 3, 0, 0, 0, 0, 0, 0],
        function: TmFunction::AbortTask,
        task_tag: 77,
    };
    let b = t.encode();
    assert_eq!(b[0], 0x01);
    assert_eq!(b[30], 0x01);
    assert_eq!(&b[20..28], &t.lun);
    assert_eq!(TskMgmt::parse(&b).unwrap(), t);
    for code in [0x02, 0x04, 0x08, 0x40] {
        let f = TmFunction::from_code(code);
        assert_eq!(f.code(), code);
        assert!(!matches!(f, TmFunction::Other(_)));
    }
    assert_eq!(TmFunction::from_code(0x10), TmFunction::Other(0x10));
    assert!(matches!(
        TskMgmt::parse(&b[..47]),
        Err(IuError::Short { .. })
    ));
}

#[test]
fn short_ius_and_target_side_ius() {
    assert_eq!(
        ILogout::parse(&ILogout { tag: 3 }.encode()).unwrap(),
        ILogout { tag: 3 }
    );
    assert_eq!(
        InitiatorIu::parse(&CredRsp { tag: 4 }.encode()).unwrap(),
        InitiatorIu::CredRsp(CredRsp { tag: 4 })
    );
    let t = TLogout {
        reason: LogoutReason::InvalidIuType,
        tag: 5,
    }
    .encode();
    assert_eq!(t[0], 0x80);
    assert_eq!(TLogout::parse(&t).unwrap(), (2, 5));
    let c = CredReq {
        req_lim_delta: 10,
        tag: 6,
    };
    assert_eq!(CredReq::parse(&c.encode()).unwrap(), c);
    // The target's own IUs are not what an initiator sends.
    assert_eq!(InitiatorIu::parse(&t), Err(IuError::Unexpected(0x80)));
    assert_eq!(
        InitiatorIu::parse(&[0x55; 64]),
        Err(IuError::UnknownOpcode(0x55))
    );
    assert!(matches!(
        InitiatorIu::parse(&[]),
        Err(IuError::Short { .. })
    ));
    assert!(matches!(
        InitiatorIu::parse(&[opcode::I_LOGOUT; 15]),
        Err(IuError::Short { .. })
    ));
}

#[test]
fn rsp_with_sense_and_residuals() {
    let sense = [0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0, 0, 0];
    let r = Rsp {
        req_lim_delta: 1,
        tag: 99,
        status: 0x02,
        data_in: Residual::of(8192, 4096),
        data_out: Residual::Exact,
        response: None,
        sense: &sense,
    };
    let mut b = [0u8; 256];
    let n = r.encode(&mut b);
    assert_eq!(n, 36 + 18);
    assert_eq!(n, r.encoded_len());
    // Offsets of struct srp_rsp as Linux ib_srp reads it.
    assert_eq!(b[0], 0xc1);
    assert_eq!(&b[4..8], &1u32.to_be_bytes());
    assert_eq!(b[18], rsp_flag::SNSVALID | rsp_flag::DIUNDER);
    assert_eq!(b[19], 0x02);
    assert_eq!(&b[24..28], &4096u32.to_be_bytes());
    assert_eq!(&b[28..32], &18u32.to_be_bytes());
    assert_eq!(&b[32..36], &[0, 0, 0, 0]);
    assert_eq!(&b[36..54], &sense);
    let v = RspView::parse(&b[..n]).unwrap();
    assert_eq!(v.tag, 99);
    assert_eq!(v.status, 0x02);
    assert_eq!(v.flags, rsp_flag::SNSVALID | rsp_flag::DIUNDER);
    assert_eq!(v.data_in_res, 4096);
    assert_eq!(v.sense, &sense);
    assert_eq!(v.req_lim_delta, 1);

    // Overflow of a write.
    let r = Rsp {
        data_out: Residual::of(512, 1024),
        ..Default::default()
    };
    let n = r.encode(&mut b);
    let v = RspView::parse(&b[..n]).unwrap();
    assert_eq!(v.flags, rsp_flag::DOOVER);
    assert_eq!(v.data_out_res, 512);

    // Sense cut to the initiator's IU size.
    let r = Rsp {
        sense: &[0xaa; 96],
        ..Default::default()
    };
    let n = r.encode(&mut b[..64]);
    assert_eq!(n, 64);
    assert_eq!(RspView::parse(&b[..n]).unwrap().sense.len(), 28);
}

#[test]
fn tmf_rsp_carries_the_response_code_in_byte_3() {
    let r = Rsp {
        tag: 0x8000_0000_0000_0002,
        response: Some(rsp_code::TMF_NOT_SUPPORTED),
        ..Default::default()
    };
    let mut b = [0u8; 64];
    let n = r.encode(&mut b);
    assert_eq!(n, 40);
    let v = RspView::parse(&b[..n]).unwrap();
    assert_eq!(v.flags, rsp_flag::RSPVALID);
    // Linux ib_srp reads the status from data[3] when resp_data_len >= 4.
    assert_eq!(v.response_data, &[0, 0, 0, 4]);
}

#[test]
fn residual_of() {
    assert_eq!(Residual::of(10, 10), Residual::Exact);
    assert_eq!(Residual::of(10, 4), Residual::Under(6));
    assert_eq!(Residual::of(4, 10), Residual::Over(6));
    assert_eq!(Residual::of(0, u64::MAX), Residual::Over(u32::MAX));
}

fn desc() -> impl Strategy<Value = Desc> {
    (any::<u64>(), any::<u32>(), any::<u32>()).prop_map(|(va, key, len)| Desc { va, key, len })
}

proptest! {
    /// No input makes a decoder panic.
    #[test]
    fn decoders_never_panic(b in proptest::collection::vec(any::<u8>(), 0..400), off in 0usize..600) {
        let _ = LoginReq::parse_ib(&b);
        let _ = LoginReq::parse_rdma_cm(&b);
        let _ = LoginRsp::parse(&b);
        let _ = LoginRej::parse(&b);
        let _ = RspView::parse(&b);
        let _ = TLogout::parse(&b);
        let _ = CredReq::parse(&b);
        if let Ok(InitiatorIu::Cmd(c)) = InitiatorIu::parse(&b) {
            let _ = c.cdb();
            let _ = c.immediate_data(off);
            for d in [c.data_out, c.data_in] {
                if let DataBuf::Indirect(i) = d {
                    prop_assert!(i.inline_count() <= i.table_count());
                    let _ = i.inline_descs().count();
                }
            }
        }
    }

    /// An SRP_CMD with an opcode byte forced is still safe to decode.
    #[test]
    fn cmd_decoder_never_panics(mut b in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Some(first) = b.first_mut() {
            *first = opcode::CMD;
        }
        let _ = Cmd::parse(&b).map(|c| c.immediate_data(68));
    }

    #[test]
    fn login_forms_round_trip(tag in any::<u64>(), len in any::<u32>(), fmt in any::<u16>(),
                              flags in any::<u8>(), off in any::<u16>(),
                              ip in any::<[u8; 16]>(), tp in any::<[u8; 16]>()) {
        let l = LoginReq {
            tag, req_it_iu_len: len, req_buf_fmt: fmt, req_flags: flags,
            imm_data_offset: off, initiator_port_id: PortId(ip), target_port_id: PortId(tp),
        };
        prop_assert_eq!(LoginReq::parse_ib(&l.encode_ib()).unwrap(), l);
        prop_assert_eq!(LoginReq::parse_rdma_cm(&l.encode_rdma_cm()).unwrap(), l);
    }

    #[test]
    fn cmd_round_trips(tag in any::<u64>(), lun in any::<[u8; 8]>(), attr in 0u8..8,
                       cdb in proptest::collection::vec(any::<u8>(), 6..=32),
                       table in desc(), total in any::<u32>(),
                       inline in proptest::collection::vec(desc(), 0..8),
                       extra in 0usize..4, direct in desc(),
                       imm in proptest::collection::vec(any::<u8>(), 0..300),
                       shape in 0u8..4) {
        let table = Desc { len: ((inline.len() + extra) * 16) as u32, ..table };
        let (out, inn) = match shape {
            0 => (BuildBuf::Indirect(table, total, &inline), BuildBuf::None),
            1 => (BuildBuf::None, BuildBuf::Indirect(table, total, &inline)),
            2 => (BuildBuf::Immediate(&imm), BuildBuf::Direct(direct)),
            _ => (BuildBuf::Direct(direct), BuildBuf::Direct(direct)),
        };
        let mut b = vec![0u8; 1024];
        let n = CmdBuilder {
            tag, lun, task_attr: attr, cdb: &cdb, data_out: out, data_in: inn,
            imm_data_offset: 100,
        }.encode(&mut b);
        let c = Cmd::parse(&b[..n]).unwrap();
        prop_assert_eq!(c.tag, tag);
        prop_assert_eq!(c.lun, lun);
        prop_assert_eq!(c.task_attr, attr);
        prop_assert_eq!(&c.cdb()[..cdb.len()], &cdb[..]);
        match shape {
            0 | 1 => {
                let d = if shape == 0 { c.data_out } else { c.data_in };
                let DataBuf::Indirect(i) = d else { panic!("{d:?}") };
                prop_assert_eq!(i.table, table);
                prop_assert_eq!(i.total_len, total);
                prop_assert_eq!(i.inline_descs().collect::<Vec<_>>(), inline.clone());
                prop_assert_eq!(i.is_complete(), extra == 0);
            }
            2 => {
                prop_assert_eq!(c.immediate_data(100).unwrap(), &imm[..]);
                prop_assert_eq!(c.data_in, DataBuf::Direct(direct));
            }
            _ => {
                prop_assert_eq!(c.data_out, DataBuf::Direct(direct));
                prop_assert_eq!(c.data_in, DataBuf::Direct(direct));
            }
        }
        // Any cut of a valid command either decodes or says why not.
        for cut in [0, 1, 47, 48, n / 2, n.saturating_sub(1)] {
            let _ = Cmd::parse(&b[..cut.min(n)]);
        }
    }

    #[test]
    fn rsp_round_trips(tag in any::<u64>(), delta in any::<u32>(), status in any::<u8>(),
                       exp_in in 0u64..1 << 33, want_in in 0u64..1 << 33,
                       exp_out in 0u64..1 << 33, want_out in 0u64..1 << 33,
                       sense in proptest::collection::vec(any::<u8>(), 0..96),
                       resp in proptest::option::of(any::<u8>()), room in 40usize..200) {
        let r = Rsp {
            req_lim_delta: delta, tag, status,
            data_in: Residual::of(exp_in, want_in), data_out: Residual::of(exp_out, want_out),
            response: resp, sense: &sense,
        };
        let mut b = vec![0u8; room];
        let n = r.encode(&mut b);
        prop_assert!(n <= room);
        let v = RspView::parse(&b[..n]).unwrap();
        prop_assert_eq!(v.tag, tag);
        prop_assert_eq!(v.req_lim_delta, delta);
        prop_assert_eq!(v.status, status);
        let kept = sense.len().min(room - 36 - if resp.is_some() { 4 } else { 0 });
        prop_assert_eq!(v.sense, &sense[..kept]);
        if let Some(code) = resp {
            prop_assert_eq!(v.response_data, &[0, 0, 0, code][..]);
        }
        match r.data_in {
            Residual::Exact => prop_assert_eq!(v.flags & (rsp_flag::DIUNDER | rsp_flag::DIOVER), 0),
            Residual::Under(x) => { prop_assert!(v.flags & rsp_flag::DIUNDER != 0); prop_assert_eq!(v.data_in_res, x) }
            Residual::Over(x) => { prop_assert!(v.flags & rsp_flag::DIOVER != 0); prop_assert_eq!(v.data_in_res, x) }
        }
    }
}
