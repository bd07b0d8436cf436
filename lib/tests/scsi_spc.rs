//! Primary commands: INQUIRY and VPD pages, REPORT LUNS, REQUEST SENSE,
//! REPORT SUPPORTED OPERATION CODES / TASK MANAGEMENT FUNCTIONS, REPORT TARGET
//! PORT GROUPS, MODE SENSE and MODE SELECT.

mod common;

use common::*;
use ferrite_lib::scsi::sense::{asc, key};

#[test]
fn inquiry_standard_data() {
    let out = run(tasks(vec![
        din(&[0x12, 0, 0, 1, 0, 0], 256),
        din(&[0x12, 0, 0, 0, 5, 0], 5),
        din(&[0x12, 0, 1, 1, 0, 0], 256),
        din(&[0x12, 0x02, 0, 1, 0, 0], 256),
        at_lun(din(&[0x12, 0, 0, 0, 36, 0], 36), 7),
    ]));
    let d = &out[0].good().data;
    assert_eq!(d.len(), 96);
    assert_eq!(d[0], 0x00, "connected direct-access device");
    assert_eq!(d[2], 0x06, "SPC-4");
    assert_eq!(d[3] & 0x0f, 2, "response data format");
    assert_eq!(d[4] as usize, d.len() - 5, "additional length");
    assert_eq!((d[5] >> 4) & 3, 1, "TPGS implicit");
    assert_eq!(d[5] & 0x01, 0, "no protection");
    assert_eq!(d[7] & 0x02, 0x02, "CmdQue");
    assert_eq!(&d[8..16], b"FERRITE ");
    assert_eq!(&d[16..27], b"Malloc disk");
    assert!(d[8..36].iter().all(|&c| (0x20..0x7f).contains(&c)));
    let versions: Vec<u16> = (0..8).map(|i| be16(&d[58 + 2 * i..])).collect();
    for v in [0x00a0, 0x0960, 0x0460, 0x04c0] {
        assert!(versions.contains(&v), "version descriptor {v:#06x}");
    }
    // Allocation length 5: five bytes, no residual beyond them.
    assert_eq!(out[1].good().data.len(), 5);
    assert_eq!(out[1].cmd_len, 5);
    out[2].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
    out[3].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
    // A LUN that is not there: peripheral qualifier 011b.
    assert_eq!(out[4].good().data[0], 0x7f);
}

#[test]
fn vpd_pages() {
    let pages = [0x00u8, 0x80, 0x83, 0x86, 0xb0, 0xb1, 0xb2];
    let mut ts: Vec<_> = pages
        .iter()
        .map(|&p| din(&[0x12, 1, p, 1, 0, 0], 256))
        .collect();
    ts.push(din(&[0x12, 1, 0x99, 1, 0, 0], 256));
    ts.push(din(&[0x12, 1, 0xb0, 0, 8, 0], 8));
    let out = run(tasks(ts));
    for (o, &p) in out.iter().zip(&pages) {
        let d = &o.good().data;
        assert_eq!(d[1], p);
        assert_eq!(be16(&d[2..]) as usize + 4, d.len(), "page {p:#04x} length");
    }
    let listed = &out[0].data[4..];
    assert!(listed.windows(2).all(|w| w[0] < w[1]), "ascending");
    for p in pages {
        assert!(listed.contains(&p), "page {p:#04x} listed");
    }
    assert_eq!(out[1].data.len(), 4 + 32, "serial");

    // Device identification: NAA and T10 for the LU; relative port 1, group 1
    // and the port's name (iSCSI, PIV); the device's name.
    let d = &out[2].data;
    let mut at = 4;
    let mut found = Vec::new();
    while at < d.len() {
        let (proto, piv_assoc_type, len) = (d[at] >> 4, d[at + 1], d[at + 3] as usize);
        let body = &d[at + 4..at + 4 + len];
        found.push((piv_assoc_type, body.to_vec()));
        if piv_assoc_type & 0x30 != 0 {
            assert_eq!(proto, 5, "iSCSI protocol identifier");
            assert_eq!(piv_assoc_type & 0x80, 0x80, "PIV");
        }
        at += 4 + len;
    }
    assert_eq!(at, d.len());
    let get = |t: u8| found.iter().find(|f| f.0 & 0x3f == t).unwrap().1.clone();
    assert_eq!(get(0x03).len(), 16);
    assert_eq!(get(0x03)[0] >> 4, 6, "NAA 6");
    assert_eq!(&get(0x01)[..8], b"FERRITE ");
    assert_eq!(get(0x14), [0, 0, 0, 1]);
    assert_eq!(get(0x15), [0, 0, 0, 1]);
    let port_name = get(0x18);
    assert_eq!(port_name.len() % 4, 0);
    assert!(port_name.starts_with(b"iqn.2026-01.test:dev,t,0x1\0"));
    assert!(get(0x28).starts_with(b"iqn.2026-01.test:dev\0"));

    let ext = &out[3].data;
    assert_eq!(ext.len(), 64);
    assert_eq!(ext[5] & 0x01, 1, "SIMPSUP");

    // Block limits: SBC-3 length, limits that match the other commands.
    let bl = &out[4].data;
    assert_eq!(bl.len(), 64);
    assert_eq!(bl[3], 0x3c);
    assert_eq!(bl[4] & 1, 0, "WSNZ");
    assert_eq!(bl[5], 255, "MAXIMUM COMPARE AND WRITE LENGTH");
    assert_eq!(be32(&bl[8..]), (8 << 20) / 512, "MAXIMUM TRANSFER LENGTH");
    assert!(
        be32(&bl[20..]) > 0 && be32(&bl[20..]) <= 1 << 20,
        "MAXIMUM UNMAP LBA COUNT"
    );
    assert_eq!(be32(&bl[24..]), 256, "MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT");
    assert_eq!(be64(&bl[36..]), 0xffff, "MAXIMUM WRITE SAME LENGTH");

    assert_eq!(be16(&out[5].data[4..]), 1, "non-rotating");
    let lbp = &out[6].data;
    assert_eq!(lbp[5] & 0xe4, 0xe4, "LBPU LBPWS LBPWS10 LBPRZ");
    assert_eq!(lbp[5] & 0x02, 0, "no ANC_SUP");
    assert_eq!(lbp[6] & 0x07, 2, "thin provisioned");

    out[7].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
    assert_eq!(out[8].good().data.len(), 8);
    assert_eq!(out[8].data[3], 0x3c);
}

#[test]
fn report_luns_and_request_sense() {
    let rl = |select: u8, alloc: u32| {
        let mut c = [0u8; 12];
        c[0] = 0xa0;
        c[2] = select;
        c[6..10].copy_from_slice(&alloc.to_be_bytes());
        din(&c, alloc)
    };
    let out = run(tasks(vec![
        rl(0, 256),
        rl(1, 256),
        rl(2, 256),
        rl(3, 256),
        rl(0, 15),
        at_lun(rl(0, 256), 9),
        din(&[0x03, 0, 0, 0, 252, 0], 252),
        din(&[0x03, 1, 0, 0, 252, 0], 252),
        at_lun(din(&[0x03, 0, 0, 0, 252, 0], 252), 9),
    ]));
    assert_eq!(
        out[0].good().data,
        [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(out[1].good().data, [0; 8], "no well-known LUNs");
    assert_eq!(out[2].good().data.len(), 16);
    out[3].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
    out[4].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
    assert_eq!(out[5].good().data.len(), 16, "REPORT LUNS to a missing LUN");
    let s = &out[6].good().data;
    assert_eq!((s[0], s[2], s[12]), (0x70, 0, 0), "NO SENSE, fixed");
    let s = &out[7].good().data;
    assert_eq!((s[0], s[1], s[2]), (0x72, 0, 0), "NO SENSE, descriptor");
    let s = &out[8].good().data;
    assert_eq!(
        (s[2], s[12]),
        (key::ILLEGAL_REQUEST, 0x25),
        "LUN not supported"
    );
}

fn rsoc(rctd: bool, option: u8, op: u8, sa: u16, alloc: u32) -> ferrite_lib::scsi::Task {
    let mut c = [0u8; 12];
    c[0] = 0xa3;
    c[1] = 0x0c;
    c[2] = option | if rctd { 0x80 } else { 0 };
    c[3] = op;
    c[4..6].copy_from_slice(&sa.to_be_bytes());
    c[6..10].copy_from_slice(&alloc.to_be_bytes());
    din(&c, alloc)
}

/// (opcode, service action, SERVACTV, CDB length) of an all-commands reply.
fn descriptors(d: &[u8]) -> Vec<(u8, u16, bool, usize)> {
    let len = be32(d) as usize;
    assert_eq!(len + 4, d.len());
    let mut v = Vec::new();
    let mut at = 4;
    while at < d.len() {
        let ctdp = d[at + 5] & 0x02 != 0;
        v.push((
            d[at],
            be16(&d[at + 2..]),
            d[at + 5] & 1 != 0,
            be16(&d[at + 6..]) as usize,
        ));
        at += 8;
        if ctdp {
            assert_eq!(be16(&d[at..]), 0x0a, "timeouts descriptor length");
            at += 12;
        }
    }
    v
}

#[test]
fn report_supported_operation_codes() {
    let out = run(tasks(vec![
        rsoc(false, 0, 0, 0, 65535),
        rsoc(true, 0, 0, 0, 65535),
        rsoc(false, 0, 0, 0, 16),
    ]));
    let all = descriptors(&out[0].good().data);
    let with_to = descriptors(&out[1].good().data);
    assert_eq!(all, with_to);
    assert_eq!(
        out[1].data.len(),
        4 + 20 * all.len(),
        "CTDP on every descriptor"
    );
    assert_eq!(out[2].good().data.len(), 16, "cut to the allocation length");
    assert!(all.len() >= 38, "{} commands", all.len());
    for &(op, sa, servactv, _) in &all {
        assert!(
            servactv || sa == 0,
            "{op:#04x}: service action without SERVACTV"
        );
    }
    for op in [
        0x28u8, 0x2a, 0x88, 0x8a, 0x89, 0x8b, 0x2f, 0x2e, 0x42, 0x93, 0x41,
    ] {
        assert!(all.iter().any(|d| d.0 == op), "{op:#04x} reported");
    }
    assert!(all.contains(&(0x9e, 0x10, true, 16)));
    assert!(all.contains(&(0x9e, 0x12, true, 16)));

    // One-command formats agree with the list, reject the wrong option, and
    // every reported command reaches a handler (never INVALID OPERATION CODE).
    let mut steps = Vec::new();
    for &(op, sa, servactv, len) in &all {
        steps.push(rsoc(false, if servactv { 2 } else { 1 }, op, sa, 512).into());
        steps.push(rsoc(true, 3, op, sa, 512).into());
        steps.push(rsoc(false, if servactv { 1 } else { 2 }, op, sa, 512).into());
        let mut cdb = vec![0u8; len];
        cdb[0] = op;
        if servactv {
            cdb[1] = sa as u8;
        }
        steps.push(none(&cdb).into());
    }
    steps.push(rsoc(false, 1, 0xee, 0, 512).into());
    steps.push(rsoc(false, 2, 0xee, 3, 512).into());
    steps.push(none(&[0xee, 0, 0, 0, 0, 0]).into());
    steps.push(none(&[0x9e, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).into());
    steps.push(rsoc(false, 1, 0x28, 0, 512).into());
    let out = run(steps);
    for (i, &(op, _, _, len)) in all.iter().enumerate() {
        let one = &out[4 * i].good().data;
        assert_eq!(one[1] & 0x07, 3, "{op:#04x} supported");
        assert_eq!(be16(&one[2..]) as usize, len);
        assert_eq!(one[4], op, "usage data starts with the opcode");
        let rctd = &out[4 * i + 1].good().data;
        assert_eq!(rctd[1] & 0x80, 0x80, "CTDP");
        assert_eq!(rctd.len(), 4 + len + 12);
        out[4 * i + 2].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
        let ran = &out[4 * i + 3];
        assert!(
            ran.asc() != asc::INVALID_COMMAND_OPERATION_CODE,
            "{op:#04x} is reported but not executed"
        );
    }
    let n = 4 * all.len();
    assert_eq!(
        out[n].good().data,
        [0, 1, 0, 0],
        "unknown opcode: not supported"
    );
    assert_eq!(out[n + 1].good().data, [0, 1, 0, 0]);
    out[n + 2].check(key::ILLEGAL_REQUEST, asc::INVALID_COMMAND_OPERATION_CODE);
    out[n + 3].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
    assert_eq!(
        out[n + 3].sense.key_specific(),
        Some([0xcc, 0, 1]),
        "field pointer: byte 1"
    );
    let read10 = &out[n + 4].data;
    assert_eq!(read10[5] & 0x18, 0x18, "READ(10) DPO and FUA");
}

#[test]
fn task_management_functions_and_target_port_groups() {
    let mi = |sa: u8, b2: u8, alloc: u32| {
        let mut c = [0u8; 12];
        c[0] = 0xa3;
        c[1] = sa;
        c[2] = b2;
        c[6..10].copy_from_slice(&alloc.to_be_bytes());
        din(&c, alloc)
    };
    let out = run(tasks(vec![
        mi(0x0d, 0, 64),
        mi(0x0d, 0x80, 64),
        mi(0x0a, 0, 64),
        mi(0x0a | 0x20, 0, 64),
        mi(0x1f, 0, 64),
    ]));
    let t = &out[0].good().data;
    assert_eq!(t.len(), 4);
    assert_eq!(t[0] & 0x80, 0x80, "ABORT TASK");
    assert_eq!(t[0] & 0x08, 0x08, "LOGICAL UNIT RESET");
    assert_eq!(out[1].good().data.len(), 16);
    assert_eq!(out[1].data[3], 0x0c);
    let g = &out[2].good().data;
    assert_eq!(be32(g) as usize, g.len() - 4);
    assert_eq!(g[4] & 0x0f, 0, "active/optimized");
    assert_eq!(be16(&g[6..]), 1, "group 1");
    assert_eq!(g[11], 1, "one port");
    assert_eq!(be16(&g[14..]), 1, "relative target port 1");
    let g = &out[3].good().data;
    assert_eq!(g[4], 0x10, "extended header");
    assert_eq!(be16(&g[10..]), 1);
    out[4].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
}

fn mode_sense6(dbd: bool, pc: u8, page: u8, subpage: u8, alloc: u8) -> ferrite_lib::scsi::Task {
    din(
        &[
            0x1a,
            if dbd { 0x08 } else { 0 },
            (pc << 6) | page,
            subpage,
            alloc,
            0,
        ],
        alloc as u32,
    )
}

fn mode_sense10(llbaa: bool, pc: u8, page: u8) -> ferrite_lib::scsi::Task {
    din(
        &[
            0x5a,
            if llbaa { 0x10 } else { 0 },
            (pc << 6) | page,
            0,
            0,
            0,
            0,
            1,
            0,
            0,
        ],
        256,
    )
}

/// The pages of a MODE SENSE(6) reply, as (code, bytes).
fn pages6(d: &[u8]) -> Vec<(u8, Vec<u8>)> {
    assert_eq!(d[0] as usize + 1, d.len(), "mode data length");
    let mut at = 4 + d[3] as usize;
    let mut v = Vec::new();
    while at < d.len() {
        let len = d[at + 1] as usize + 2;
        v.push((d[at] & 0x3f, d[at..at + len].to_vec()));
        at += len;
    }
    v
}

#[test]
fn mode_sense() {
    let out = run(tasks(vec![
        mode_sense6(false, 0, 0x3f, 0, 255),
        mode_sense6(true, 0, 0x3f, 0xff, 255),
        mode_sense6(true, 1, 0x3f, 0, 255),
        mode_sense6(true, 2, 0x08, 0, 255),
        mode_sense6(true, 3, 0x3f, 0, 255),
        mode_sense6(true, 0, 0x01, 0, 255),
        mode_sense6(true, 0, 0x0a, 0x01, 255),
        mode_sense6(false, 0, 0x3f, 0, 4),
        mode_sense10(false, 0, 0x0a),
        mode_sense10(true, 0, 0x0a),
    ]));
    let d = &out[0].good().data;
    assert_eq!(d[2], 0x10, "DPOFUA, not write protected");
    assert_eq!(d[3], 8, "one block descriptor");
    assert_eq!(be32(&d[4..]), 2048);
    assert_eq!(&d[9..12], &[0, 2, 0], "512-byte blocks");
    let p = pages6(d);
    assert_eq!(
        p.iter().map(|x| x.0).collect::<Vec<_>>(),
        [0x08, 0x0a, 0x1c]
    );
    assert_eq!(p[0].1[2] & 0x04, 0x04, "WCE");
    let control = &p[1].1;
    assert_eq!(control.len(), 12);
    assert_eq!(control[2] >> 5, 0, "TST");
    assert_eq!(control[2] & 0x04, 0, "D_SENSE off");
    assert_eq!(control[4] & 0x08, 0, "SWP off");
    assert_eq!(
        pages6(&out[1].good().data),
        p,
        "subpage FFh: the same pages"
    );
    let ch = pages6(&out[2].good().data);
    assert_eq!(ch[0].1[2], 0x04, "WCE changeable");
    assert_eq!(
        (ch[1].1[2], ch[1].1[4], ch[1].1[5]),
        (0x04, 0x08, 0x40),
        "D_SENSE, SWP and TAS changeable"
    );
    assert_eq!(
        pages6(&out[3].good().data)[0].1[2] & 0x04,
        0x04,
        "WCE by default"
    );
    out[4].check(key::ILLEGAL_REQUEST, asc::SAVING_PARAMETERS_NOT_SUPPORTED);
    out[5].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
    out[6].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
    assert_eq!(out[7].good().data.len(), 4);
    assert_eq!(out[7].cmd_len, 4, "allocation length: no overflow");
    let d = &out[8].good().data;
    assert_eq!(be16(d) as usize + 2, d.len());
    assert_eq!((d[4] & 1, be16(&d[6..])), (0, 8), "short descriptor");
    assert_eq!(d[16], 0x0a);
    let d = &out[9].good().data;
    assert_eq!((d[4] & 1, be16(&d[6..])), (1, 16), "LONGLBA descriptor");
    assert_eq!(be64(&d[8..]), 2048);
    assert_eq!(be32(&d[20..]), 512);
}

fn mode_select6(params: &[u8]) -> ferrite_lib::scsi::Task {
    dout(&[0x15, 0x10, 0, 0, params.len() as u8, 0], params)
}

/// MODE SELECT(6) parameter list with `page` and no block descriptor.
fn select_page(page: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 4];
    p.extend_from_slice(page);
    p
}

fn caching(wce: bool) -> Vec<u8> {
    let mut c = vec![0u8; 20];
    c[0] = 0x08;
    c[1] = 0x12;
    c[2] = if wce { 0x04 } else { 0 };
    c
}

fn control(d_sense: bool, swp: bool) -> Vec<u8> {
    let mut c = vec![0u8; 12];
    c[0] = 0x0a;
    c[1] = 0x0a;
    c[2] = 0x02 | if d_sense { 0x04 } else { 0 };
    c[3] = 0x10;
    c[4] = if swp { 0x08 } else { 0 };
    c
}

#[test]
fn mode_select_round_trip() {
    let mut rcd = caching(true);
    rcd[2] |= 0x01; // RCD: not changeable
    let mut bad_len = caching(true);
    bad_len[1] = 0x10;
    let mut ms10 = vec![0u8; 8 + 8];
    ms10[7] = 8;
    ms10[8..12].copy_from_slice(&2048u32.to_be_bytes());
    ms10[13..16].copy_from_slice(&[0, 2, 0]);
    ms10.extend_from_slice(&caching(true));
    let mut tas = control(false, false);
    tas[5] |= 0x40;
    let mut ms10_bad = ms10.clone();
    ms10_bad[13..16].copy_from_slice(&[0, 0x10, 0]);
    let select10 = |p: &[u8]| {
        let mut c = [0u8; 10];
        c[0] = 0x55;
        c[1] = 0x10;
        c[7..9].copy_from_slice(&(p.len() as u16).to_be_bytes());
        dout(&c, p)
    };
    let mut steps: Vec<Step> = vec![
        mode_select6(&select_page(&caching(false))).into(), // 0
        on_port1(din(&[0x03, 0, 0, 0, 252, 0], 252)),       // 1: the other nexus's sense
        on_port1(mode_sense6(true, 0, 0x08, 0, 255)),       // 2: sees the change
        dout(&write10(0, 1), &[7u8; 512]).into(),           // 3: still writes (FUA)
        mode_select6(&select_page(&rcd)).into(),            // 4
        mode_select6(&select_page(&bad_len)).into(),        // 5
        dout(&[0x15, 0x11, 0, 0, 24, 0], &select_page(&caching(true))).into(), // 6: SP
        dout(&[0x15, 0x00, 0, 0, 24, 0], &select_page(&caching(true))).into(), // 7: PF 0
        mode_select6(&select_page(&caching(true))[..10]).into(), // 8: truncated page
        none(&[0x15, 0x10, 0, 0, 0, 0]).into(),             // 9: nothing
        mode_select6(&select_page(&control(true, false))).into(), // 10: D_SENSE on
        none(&read16(u64::MAX, 1)).into(),                  // 11
        mode_select6(&select_page(&control(false, false))).into(), // 12
        none(&read16(u64::MAX, 1)).into(),                  // 13
        mode_select6(&select_page(&control(false, true))).into(), // 14: SWP on
        dout(&write10(0, 1), &[1u8; 512]).into(),           // 15
        din(&read10(0, 1), 512).into(),                     // 16
        mode_sense6(true, 0, 0x3f, 0, 255).into(),          // 17
        none(&cdb16(0x93, 0, 1)).into(),                    // 18: WRITE SAME with NDOB
        mode_select6(&select_page(&control(false, false))).into(), // 19: SWP off
        dout(&write10(0, 1), &[1u8; 512]).into(),           // 20
        select10(&ms10).into(),                             // 21
        select10(&ms10_bad).into(),                         // 22
        mode_sense6(true, 0, 0x08, 0, 255).into(),          // 23
        mode_select6(&select_page(&tas)).into(),            // 24: TAS on
        mode_sense6(true, 0, 0x0a, 0, 255).into(),          // 25
        mode_select6(&select_page(&control(false, false))).into(), // 26
    ];
    if let Some(s) = steps.get_mut(18) {
        s.task.cdb[1] = 0x01; // NDOB
        s.task.dir = ferrite_lib::scsi::DataDir::Write;
    }
    let out = run(steps);
    out[0].good();
    let s = &out[1].good().data;
    assert!(
        (s[2], s[12], s[13]) == (0, 0, 0)
            || (s[2], s[12], s[13]) == (key::UNIT_ATTENTION, 0x2a, 0x01),
        "NO SENSE or MODE PARAMETERS CHANGED: {s:?}"
    );
    assert_eq!(
        pages6(&out[2].good().data)[0].1[2] & 0x04,
        0,
        "WCE off for every nexus"
    );
    out[3].good();
    out[4].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_PARAMETER_LIST);
    assert_eq!(
        out[4].sense.key_specific(),
        Some([0x88, 0, 6]),
        "byte 6 bit 0"
    );
    out[5].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_PARAMETER_LIST);
    out[6].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
    out[7].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
    out[8].check(key::ILLEGAL_REQUEST, asc::PARAMETER_LIST_LENGTH_ERROR);
    out[9].good();
    out[10].good();
    out[11].check(key::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE);
    assert!(out[11].sense.is_descriptor(), "D_SENSE: descriptor sense");
    assert_eq!(out[11].sense.as_bytes()[0], 0x72);
    out[12].good();
    out[13].check(key::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE);
    assert!(!out[13].sense.is_descriptor());
    out[14].good();
    out[15].check(key::DATA_PROTECT, asc::WRITE_PROTECTED);
    assert_eq!(
        out[16].good().data,
        [7u8; 512],
        "reads still work, data kept"
    );
    assert_eq!(out[17].good().data[2] & 0x80, 0x80, "WP");
    out[18].check(key::DATA_PROTECT, asc::WRITE_PROTECTED);
    out[19].good();
    out[20].good();
    out[21].good();
    out[22].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_PARAMETER_LIST);
    assert_eq!(
        pages6(&out[23].good().data)[0].1[2] & 0x04,
        0x04,
        "WCE back on"
    );
    out[24].good();
    assert_eq!(pages6(&out[25].good().data)[0].1[5] & 0x40, 0x40, "TAS");
    out[26].good();
}
