//! Block commands: capacity, READ/WRITE edge cases and residuals, VERIFY,
//! WRITE AND VERIFY, WRITE SAME, UNMAP, GET LBA STATUS, COMPARE AND WRITE,
//! ORWRITE, SYNCHRONIZE CACHE, PRE-FETCH.

mod common;

use common::*;
use ferrite_lib::scsi::sense::{asc, key};
use ferrite_lib::scsi::{DataDir, Task};

const BS: u32 = 512;

fn filled(blocks: usize, byte: u8) -> Vec<u8> {
    vec![byte; blocks * BS as usize]
}

fn rc16(alloc: u32) -> Task {
    let mut c = [0u8; 16];
    c[0] = 0x9e;
    c[1] = 0x10;
    c[10..14].copy_from_slice(&alloc.to_be_bytes());
    din(&c, alloc)
}

#[test]
fn capacity() {
    let mut steps = vec![
        din(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8),
        din(&[0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0], 8),
        rc16(32),
    ];
    for alloc in 0..16 {
        steps.push(rc16(alloc));
    }
    let out = run(tasks(steps));
    assert_eq!(out[0].good().data, [0, 0, 0x07, 0xff, 0, 0, 2, 0]);
    out[1].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
    let d = &out[2].good().data;
    assert_eq!(be64(d), 2047);
    assert_eq!(be32(&d[8..]), 512);
    assert_eq!(d[12], 0, "no protection");
    assert_eq!(d[14] & 0xc0, 0xc0, "LBPME and LBPRZ");
    for (alloc, o) in out[3..].iter().enumerate() {
        assert_eq!(o.good().data, d[..alloc], "allocation length {alloc}");
    }
}

#[test]
fn read_write_edges() {
    let mut six = [0x08u8, 0, 0, 0, 0, 0]; // READ(6) of 0 blocks: 256 blocks
    six[3] = 16;
    let mut steps = vec![
        din(&read10(0, 0), 0),                  // 0
        none(&read10(2049, 0)),                 // 1
        none(&read10(0xffff_ffff, 1)),          // 2
        din(&read16(1 << 63, 1), 512),          // 3
        din(&read16(u64::MAX, 2), 1024),        // 4: wraps
        din(&read16(2047, 2), 1024),            // 5
        din(&read16(2047, 1), 512),             // 6
        din(&six, 256 * 512),                   // 7
        din(&read16(0, 16385), 16385 * 512),    // 8: beyond MAXIMUM TRANSFER LENGTH
        none(&write10(2049, 0)),                // 9
        dout(&write16(2047, 2), &filled(2, 1)), // 10
    ];
    for p in 1..8u8 {
        let mut r = read10(0, 1);
        r[1] = p << 5;
        steps.push(din(&r, 512));
        let mut w = write10(0, 1);
        w[1] = p << 5;
        steps.push(dout(&w, &filled(1, 9)));
    }
    for flags in [0x10u8, 0x08, 0x18, 0x02] {
        let mut r = read10(0, 1);
        r[1] = flags;
        steps.push(din(&r, 512));
        let mut w = write10(5, 1);
        w[1] = flags;
        steps.push(dout(&w, &filled(1, 3)));
    }
    let out = run(tasks(steps));
    out[0].good();
    assert!(out[0].data.is_empty());
    for i in [1, 2, 3, 4, 5, 9, 10] {
        out[i].check(key::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE);
    }
    assert_eq!(out[6].good().data.len(), 512);
    assert_eq!(
        out[7].good().data.len(),
        256 * 512,
        "READ(6) length 0 is 256 blocks"
    );
    out[8].check(key::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE);
    for o in &out[11..25] {
        o.check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
    }
    for o in &out[25..] {
        o.good();
    }
}

/// libiscsi's iSCSIResiduals: what moves when the expected length and the
/// CDB disagree.
#[test]
fn residuals() {
    let mut read_as_write = din(&read10(0, 1), 512);
    read_as_write.dir = DataDir::Write;
    assert!(read_as_write.data.set(&[0xa6; 512]));
    let mut a_b = filled(1, b'b');
    a_b.extend(filled(1, b'x'));
    let out = run(tasks(vec![
        dout(&write10(0, 2), &filled(2, b'a')), // 0
        din(&read10(0, 1), 0),                  // 1: overflow, no data
        din(&read10(0, 1), 10000),              // 2: underflow
        din(&read10(0, 1), 200),                // 3: 200 bytes
        din(&read10(0, 2), 512),                // 4: one block
        read_as_write,                          // 5
        none(&write10(0, 1)),                   // 6: EDTL 0
        dout(&write10(0, 1), &[b'z'; 200]),     // 7: part of a block
        din(&read10(0, 2), 1024),               // 8
        dout(&write10(0, 2), &filled(1, b'b')), // 9: one block of two
        dout(&write10(1, 1), &a_b),             // 10: two blocks for one, at LBA 1
        din(&read10(0, 3), 1536),               // 11
    ]));
    out[0].good();
    assert!(out[1].good().data.is_empty());
    assert_eq!(out[1].cmd_len, 512);
    assert_eq!(out[2].good().data, filled(1, b'a'));
    assert_eq!(out[2].cmd_len, 512);
    assert_eq!(out[3].good().data, [b'a'; 200]);
    assert_eq!(out[4].good().data, filled(1, b'a'));
    assert_eq!(out[4].cmd_len, 1024);
    assert!(
        out[5].good().data.is_empty(),
        "a read flagged as a write moves nothing"
    );
    out[6].good();
    assert_eq!(out[6].cmd_len, 512);
    out[7].good();
    assert_eq!(out[7].cmd_len, 512);
    let d = &out[8].good().data;
    assert_eq!(d[..200], [b'z'; 200], "the 200 bytes sent are written");
    assert_eq!(d[200..], filled(2, b'a')[200..], "the rest keeps its data");
    out[9].good();
    assert_eq!(out[9].cmd_len, 1024);
    out[10].good();
    let d = &out[11].good().data;
    assert_eq!(d[..512], filled(1, b'b')[..], "block 0 written");
    assert_eq!(
        d[512..1024],
        filled(1, b'b')[..],
        "block 1: only the CDB's block"
    );
    assert_eq!(d[1024..], filled(1, 0)[..], "block 2 untouched");
}

/// A bidirectional task (iSCSI's R and W bits both set) is refused whatever
/// its CDB: nothing written, nothing read back.
#[test]
fn bidirectional_tasks_are_refused() {
    let bidi = |cdb: &[u8], data: &[u8]| {
        let mut t = dout(cdb, data);
        t.dir = DataDir::Bidi;
        t
    };
    let xdwriteread10 = [0x53, 0, 0, 0, 0, 0, 0, 0, 1, 0];
    let out = run(tasks(vec![
        dout(&write10(0, 1), &filled(1, b'a')), // 0
        bidi(&write10(0, 1), &filled(1, b'b')), // 1
        bidi(&read10(0, 1), &filled(1, b'c')),  // 2
        bidi(&xdwriteread10, &filled(1, b'd')), // 3
        din(&read10(0, 1), 512),                // 4
    ]));
    out[0].good();
    for o in &out[1..4] {
        o.check(key::ILLEGAL_REQUEST, asc::INVALID_COMMAND_OPERATION_CODE);
        assert!(o.data.is_empty(), "no data back: {o:?}");
    }
    assert_eq!(
        out[4].good().data,
        filled(1, b'a'),
        "the block is untouched"
    );
}

/// Data the transport hands in as small buffers is still written right.
#[test]
fn write_from_small_buffers() {
    use ferrite_reactor::mem::Buffer;
    let data: Vec<u8> = (0..40u8).flat_map(|i| vec![i; 8192]).collect();
    let mut w = dout(&write16(10, 640), &[]);
    w.data.clear();
    for chunk in data.chunks(8192) {
        let mut b = Buffer::alloc(8192).unwrap();
        b.copy_from_slice(chunk);
        w.data.push(b);
    }
    w.expected_len = data.len() as u32;
    let out = run(tasks(vec![w, read_blocks(10, 640, BS)]));
    out[0].good();
    assert!(out[1].good().data == data);
}

fn verify(op: u8, lba: u64, n: u32, bytchk: u8, data: Option<&[u8]>) -> Task {
    let cdb = match op {
        0x2f => {
            let mut c = read10(lba as u32, n as u16);
            c[0] = op;
            c.to_vec()
        }
        _ => cdb16(op, lba, n).to_vec(),
    };
    let mut cdb = cdb;
    cdb[1] |= bytchk << 1;
    match data {
        Some(d) => dout(&cdb, d),
        None => none(&cdb),
    }
}

#[test]
fn verify_and_write_and_verify() {
    // 5000 blocks cross the 4096-block chunks of the engine.
    let pattern: Vec<u8> = (0..5000 * 512u32)
        .map(|i| (i * 13 + i / 512) as u8)
        .collect();
    let mut bad = pattern.clone();
    let off = 4500 * 512 + 17;
    bad[off] ^= 0x55;
    let mut bad2 = pattern[..8 * 512].to_vec();
    bad2[3 * 512 + 100] ^= 1;
    let same = filled(1, 0x5a);
    let mut same_bad = filled(6, 0x5a);
    same_bad[4 * 512 + 2] = 0;
    let mut wv1 = verify(0x8e, 6000, 6, 1, Some(&same_bad));
    wv1.cdb[1] = 0x02; // BYTCHK 1
    let mut vp = verify(0x8f, 0, 1, 1, Some(&pattern[..512]));
    vp.cdb[1] |= 0x20; // VRPROTECT
    let out = run_on(
        8192,
        BS,
        tasks(vec![
            write_blocks(0, &pattern, BS),                   // 0
            verify(0x8f, 0, 5000, 0, None),                  // 1: medium
            verify(0x8f, 0, 5000, 1, Some(&pattern)),        // 2: match
            verify(0x8f, 0, 5000, 1, Some(&bad)),            // 3: mismatch
            verify(0x2f, 0, 8, 1, Some(&bad2)),              // 4
            verify(0x8f, 0, 0, 1, None),                     // 5: no blocks
            verify(0x8f, 8192, 1, 1, Some(&pattern[..512])), // 6
            verify(0x8f, 0, 1, 2, Some(&pattern[..512])),    // 7: BYTCHK 10b
            vp,                                              // 8
            dout(&cdb16(0x93, 6000, 6), &same),              // 9: WRITE SAME
            verify(0x8f, 6000, 6, 3, Some(&same)),           // 10: one block for all
            write_blocks(6004, &filled(1, 0), BS),           // 11
            verify(0x8f, 6000, 6, 3, Some(&same)),           // 12
            wv1,                                             // 13: WRITE AND VERIFY
            read_blocks(6000, 6, BS),                        // 14
            verify(0x8e, 7000, 2, 0, Some(&filled(2, 4))),   // 15
            read_blocks(7000, 2, BS),                        // 16
            verify(0x8e, 7000, 2, 3, Some(&filled(2, 4))),   // 17: BYTCHK 11b
        ]),
    );
    out[0].good();
    out[1].good();
    assert_eq!(out[1].cmd_len, 0, "BYTCHK 0 moves no data");
    out[2].good();
    out[3].check(key::MISCOMPARE, asc::MISCOMPARE_DURING_VERIFY);
    assert_eq!(out[3].sense.information(), Some(off as u64));
    out[4].check(key::MISCOMPARE, asc::MISCOMPARE_DURING_VERIFY);
    assert_eq!(out[4].sense.information(), Some(3 * 512 + 100));
    out[5].good();
    out[6].check(key::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE);
    out[7].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
    out[8].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
    out[9].good();
    out[10].good();
    assert_eq!(out[10].cmd_len, 512);
    out[12].check(key::MISCOMPARE, asc::MISCOMPARE_DURING_VERIFY);
    assert_eq!(out[12].sense.information(), Some(4 * 512));
    out[13].good();
    assert_eq!(out[14].good().data, same_bad);
    out[15].good();
    assert_eq!(out[16].good().data, filled(2, 4));
    out[17].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
}

fn ws16(lba: u64, n: u32, flags: u8, data: Option<&[u8]>) -> Task {
    let mut c = cdb16(0x93, lba, n);
    c[1] = flags;
    match data {
        Some(d) => dout(&c, d),
        None => {
            let mut t = none(&c);
            t.dir = DataDir::Write;
            t
        }
    }
}

fn ws10(lba: u32, n: u16, flags: u8, data: &[u8]) -> Task {
    let mut c = read10(lba, n);
    c[0] = 0x41;
    c[1] = flags;
    dout(&c, data)
}

#[test]
fn write_same() {
    let x = filled(1, b'x');
    let zero = filled(1, 0);
    let ff = filled(1, 0xff);
    let out = run_on(
        8192,
        BS,
        tasks(vec![
            ws16(10, 5000, 0, Some(&x)),          // 0: pattern across chunks
            read_blocks(10, 5000, BS),            // 1
            ws16(10, 3, 0, Some(&zero)),          // 2: zeros
            read_blocks(9, 5, BS),                // 3
            write_blocks(100, &filled(4, 7), BS), // 4
            ws16(100, 2, 0x01, None),             // 5: NDOB
            ws10(102, 2, 0x08, &ff),              // 6: UNMAP, data not zero
            read_blocks(100, 4, BS),              // 7
            ws16(0, 1, 0x10 | 0x08, Some(&zero)), // 8: ANCHOR
            ws16(0, 1, 0x20, Some(&zero)),        // 9: WRPROTECT
            ws10(0, 1, 0x04, &zero),              // 10: PBDATA
            ws16(8192, 1, 0, Some(&x)),           // 11
            ws16(8190, 3, 0, Some(&x)),           // 12
            ws16(8193, 0, 0, Some(&x)),           // 13: 0 blocks past the end
            ws16(u64::MAX, 0, 0, Some(&x)),       // 14
            ws16(8000, 0, 0, Some(&x)),           // 15: to the end
            read_blocks(7999, 193, BS),           // 16
            ws16(0, 0x10000, 0x08, Some(&zero)),  // 17: MAXIMUM WRITE SAME LENGTH
            ws16(0, 2, 0, Some(&filled(2, 1))),   // 18: two blocks of data
            ws16(0, 2, 0, Some(&[1u8; 100])),     // 19: part of a block
        ]),
    );
    out[0].good();
    assert!(out[1].good().data.iter().all(|&b| b == b'x'));
    out[2].good();
    let d = &out[3].good().data;
    assert!(
        d[..2048].iter().all(|&b| b == 0),
        "9 never written, 10-12 zeroed"
    );
    assert_eq!(d[2048..], x[..]);
    out[5].good();
    assert_eq!(out[5].cmd_len, 0, "NDOB: no data-out");
    out[6].good();
    assert!(
        out[7].good().data.iter().all(|&b| b == 0),
        "NDOB and UNMAP read zeros"
    );
    for i in [8, 9, 10] {
        out[i].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
    }
    for i in [11, 12, 13, 14] {
        out[i].check(key::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE);
    }
    out[15].good();
    let d = &out[16].good().data;
    assert!(d[..512].iter().all(|&b| b == 0), "7999 untouched");
    assert!(d[512..].iter().all(|&b| b == b'x'), "8000 to the end");
    out[17].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
    out[18].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
    out[19].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
}

#[test]
fn limits_of_a_large_lun() {
    // 70000 blocks: WRITE SAME with 0 blocks from LBA 0 exceeds MAXIMUM WRITE
    // SAME LENGTH; from the last 65535 blocks it does not. Transfers stop at
    // MAXIMUM TRANSFER LENGTH.
    let zero = filled(1, 0);
    let out = run_on(
        70000,
        BS,
        tasks(vec![
            ws16(0, 0, 0, Some(&zero)),
            ws16(70000 - 65536, 0, 0, Some(&zero)),
            ws16(70000 - 65535, 0, 0x08, Some(&zero)),
            din(&read16(0, 16385), 16385 * 512),
            din(&read16(0, 16384), 16384 * 512),
            dout(&write16(0, 16385), &[]),
        ]),
    );
    out[0].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
    out[1].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
    out[2].good();
    out[3].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
    assert_eq!(
        out[3].sense.key_specific(),
        Some([0xc0, 0, 10]),
        "TRANSFER LENGTH"
    );
    assert_eq!(out[4].good().data.len(), 8 << 20, "MAXIMUM TRANSFER LENGTH");
    out[5].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
}

/// An UNMAP parameter list with `descs` (LBA, blocks).
fn unmap(descs: &[(u64, u32)]) -> Task {
    let mut p = vec![0u8; 8];
    for &(lba, n) in descs {
        p.extend_from_slice(&lba.to_be_bytes());
        p.extend_from_slice(&n.to_be_bytes());
        p.extend_from_slice(&[0; 4]);
    }
    let len = p.len() as u16;
    p[0..2].copy_from_slice(&(len - 2).to_be_bytes());
    p[2..4].copy_from_slice(&(len - 8).to_be_bytes());
    let mut c = [0u8; 10];
    c[0] = 0x42;
    c[7..9].copy_from_slice(&len.to_be_bytes());
    dout(&c, &p)
}

#[test]
fn unmap_and_get_lba_status() {
    let too_many: Vec<(u64, u32)> = (0..257).map(|i| (i, 1)).collect();
    let mut anchor = unmap(&[(0, 1)]);
    anchor.cdb[1] = 0x01;
    let mut short = unmap(&[]);
    short.cdb[8] = 4;
    let gls = |lba: u64| {
        let mut c = cdb16(0x9e, lba, 24);
        c[1] = 0x12;
        din(&c, 24)
    };
    let out = run(tasks(vec![
        write_blocks(0, &filled(300, b'a'), BS),  // 0
        unmap(&[(10, 5), (20, 0), (100, 50)]),    // 1
        read_blocks(0, 300, BS),                  // 2
        unmap(&[(200, 10), (2040, 9)]),           // 3: past the end
        read_blocks(200, 10, BS),                 // 4: nothing unmapped
        unmap(&[(u64::MAX, 2)]),                  // 5: wraps
        unmap(&too_many),                         // 6
        anchor,                                   // 7
        short,                                    // 8: length 4
        none(&[0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0]), // 9: no list
        unmap(&[]),                               // 10: no descriptors
        unmap(&[(2048, 0)]),                      // 11
        gls(0),                                   // 12
        gls(2047),                                // 13
        gls(2048),                                // 14
        gls(1 << 63),                             // 15
        gls(u64::MAX),                            // 16
    ]));
    out[0].good();
    out[1].good();
    let d = &out[2].good().data;
    let block = |i: usize| &d[i * 512..(i + 1) * 512];
    assert!(block(9).iter().all(|&b| b == b'a'));
    assert!((10..15).all(|i| block(i).iter().all(|&b| b == 0)));
    assert!(block(15).iter().all(|&b| b == b'a'));
    assert!(block(20).iter().all(|&b| b == b'a'));
    assert!((100..150).all(|i| block(i).iter().all(|&b| b == 0)));
    assert!(block(150).iter().all(|&b| b == b'a'));
    out[3].check(key::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE);
    assert!(
        out[4].good().data.iter().all(|&b| b == b'a'),
        "checked before unmapping"
    );
    out[5].check(key::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE);
    out[6].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_PARAMETER_LIST);
    out[7].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
    out[8].check(key::ILLEGAL_REQUEST, asc::PARAMETER_LIST_LENGTH_ERROR);
    out[9].good();
    out[10].good();
    out[11].good();
    let s = &out[12].good().data;
    assert_eq!(be32(s), 20);
    assert_eq!((be64(&s[8..]), be32(&s[16..]), s[20] & 0x0f), (0, 2048, 0));
    let s = &out[13].good().data;
    assert_eq!((be64(&s[8..]), be32(&s[16..])), (2047, 1));
    for o in &out[14..17] {
        o.check(key::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE);
    }
}

fn caw(lba: u64, n: u8, data: &[u8]) -> Task {
    let mut c = [0u8; 16];
    c[0] = 0x89;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[13] = n;
    dout(&c, data)
}

#[test]
fn compare_and_write() {
    let mut ok = filled(2, b'A');
    ok.extend(filled(2, b'B'));
    let mut miss = filled(2, b'B');
    miss[700] = b'C';
    miss.extend(filled(2, b'D'));
    let mut prot = caw(0, 1, &ok[..1024]);
    prot.cdb[1] = 0x40;
    let mut big = filled(255, b'E');
    big.extend(filled(255, b'F'));
    let out = run(tasks(vec![
        write_blocks(10, &filled(2, b'A'), BS),     // 0
        caw(10, 2, &ok),                            // 1
        read_blocks(10, 2, BS),                     // 2
        caw(10, 2, &miss),                          // 3: miscompare at 700
        read_blocks(10, 2, BS),                     // 4
        caw(10, 0, &[]),                            // 5
        caw(10, 0, &ok),                            // 6: 256 blocks wrap the field to 0
        caw(2047, 2, &ok),                          // 7
        caw(10, 1, &ok),                            // 8: data for two blocks
        prot,                                       // 9
        write_blocks(1000, &filled(255, b'E'), BS), // 10
        caw(1000, 255, &big),                       // 11: the most
        read_blocks(1000, 255, BS),                 // 12
    ]));
    out[0].good();
    out[1].good();
    assert_eq!(out[2].good().data, filled(2, b'B'));
    out[3].check(key::MISCOMPARE, asc::MISCOMPARE_DURING_VERIFY);
    assert_eq!(out[3].sense.information(), Some(700));
    assert_eq!(out[4].good().data, filled(2, b'B'), "nothing written");
    out[5].good();
    out[6].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
    out[7].check(key::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE);
    out[8].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
    out[9].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
    out[11].good();
    assert_eq!(out[12].good().data, filled(255, b'F'));
}

fn orwrite(lba: u64, data: &[u8]) -> Task {
    dout(&cdb16(0x8b, lba, (data.len() / 512) as u32), data)
}

#[test]
fn orwrite_ors_every_block() {
    // 3000 blocks: three chunks of up to 1 MiB.
    let low: Vec<u8> = (0..3000 * 512u32).map(|i| (i as u8) & 0x0f).collect();
    let high: Vec<u8> = (0..3000 * 512u32)
        .map(|i| (i as u8 ^ 0x5a) & 0xf0)
        .collect();
    let both: Vec<u8> = low.iter().zip(&high).map(|(a, b)| a | b).collect();
    let out = run_on(
        4096,
        BS,
        tasks(vec![
            write_blocks(7, &low, BS),
            orwrite(7, &high),
            read_blocks(7, 3000, BS),
            dout(&cdb16(0x8b, 0, 0), &[]),
            orwrite(4095, &filled(2, 1)),
            dout(&cdb16(0x8b, 0, 1), &[0x80u8; 100]),
            read_blocks(0, 1, BS),
        ]),
    );
    out[0].good();
    out[1].good();
    assert!(
        out[2].good().data == both,
        "each block is itself OR the data"
    );
    out[3].good();
    out[4].check(key::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE);
    out[5].good();
    let d = &out[6].good().data;
    assert!(d[..100].iter().all(|&b| b == 0x80), "ORed: the bytes sent");
    assert!(d[100..].iter().all(|&b| b == 0), "and no more");
}

/// libiscsi's reservation tests write 512 bytes with a one-block WRITE(10)
/// whatever the block size: on a 4 KiB LUN that is GOOD, the bytes land at the
/// start of the block and the rest of it is kept.
#[test]
fn partial_block_on_a_4k_lun() {
    let old: Vec<u8> = (0..3 * 4096u32).map(|i| (i % 251) as u8).collect();
    let out = run_on(
        64,
        4096,
        tasks(vec![
            write_blocks(0, &old, 4096),
            dout(&write10(1, 1), &[0xa6; 512]),
            read_blocks(0, 3, 4096),
            dout(&write10(0, 3), &[0x11; 4096 + 100]),
            read_blocks(0, 3, 4096),
        ]),
    );
    out[1].good();
    let d = &out[2].good().data;
    assert_eq!(d[..4096], old[..4096]);
    assert_eq!(d[4096..4096 + 512], [0xa6; 512]);
    assert_eq!(d[4096 + 512..], old[4096 + 512..]);
    out[3].good();
    let mut want = d.clone();
    want[..4196].fill(0x11);
    assert!(out[4].good().data == want, "two blocks, the second merged");
}

#[test]
fn synchronize_cache_prefetch_start_stop() {
    let sync10 = |lba: u32, n: u16| {
        let mut c = read10(lba, n);
        c[0] = 0x35;
        none(&c)
    };
    let prefetch10 = |lba: u32, n: u16, immed: bool| {
        let mut c = read10(lba, n);
        c[0] = 0x34;
        c[1] = if immed { 0x02 } else { 0 };
        none(&c)
    };
    let out = run(tasks(vec![
        sync10(0, 0),
        sync10(100, 10),
        sync10(2040, 9),
        none(&cdb16(0x91, 0, 0)),
        none(&cdb16(0x91, 2049, 0)),
        prefetch10(0, 256, false),
        prefetch10(2047, 1, true),
        prefetch10(2048, 1, false),
        none(&cdb16(0x90, u64::MAX, 1)),
        none(&[0x1b, 1, 0, 0, 1, 0]),
        none(&[0x00, 0, 0, 0, 0, 0]),
    ]));
    for i in [0, 1, 3, 5, 6, 9, 10] {
        out[i].good();
    }
    for i in [2, 4, 7, 8] {
        out[i].check(key::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE);
    }
}

fn write_atomic(lba: u64, n: u16, data: &[u8]) -> Task {
    let mut c = [0u8; 16];
    c[0] = 0x9c;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[12..14].copy_from_slice(&n.to_be_bytes());
    if data.is_empty() {
        none(&c)
    } else {
        dout(&c, data)
    }
}

#[test]
fn write_atomic_16() {
    let data: Vec<u8> = (0..300 * 512u32).map(|i| (i * 7) as u8).collect();
    let mut boundary = write_atomic(0, 1, &filled(1, 1));
    boundary.cdb[11] = 1;
    let mut prot = write_atomic(0, 1, &filled(1, 1));
    prot.cdb[1] = 0x20;
    let mut dpofua = write_atomic(0, 1, &filled(1, 1));
    dpofua.cdb[1] = 0x18;
    let out = run_on(
        8192,
        BS,
        tasks(vec![
            write_atomic(100, 300, &data),              // 0
            read_blocks(100, 300, BS),                  // 1
            write_atomic(0, 0, &[]),                    // 2
            write_atomic(8192, 1, &filled(1, 1)),       // 3
            write_atomic(8191, 2, &filled(2, 1)),       // 4
            write_atomic(u64::MAX, 1, &filled(1, 1)),   // 5
            boundary,                                   // 6
            prot,                                       // 7
            write_atomic(0, 2049, &filled(2049, 1)),    // 8: beyond MAXIMUM ATOMIC TRANSFER LENGTH
            write_atomic(0, 2, &filled(1, 1)),          // 9: short data
            read_blocks(0, 1, BS),                      // 10
            dpofua,                                     // 11
            write_atomic(6144, 2048, &filled(2048, 9)), // 12: the most
            read_blocks(6144, 2048, BS),                // 13
            din(&[0x12, 1, 0xb0, 0, 64, 0], 64),        // 14
        ]),
    );
    out[0].good();
    assert!(out[1].good().data == data);
    out[2].good();
    for i in [3, 4, 5] {
        out[i].check(key::ILLEGAL_REQUEST, asc::LBA_OUT_OF_RANGE);
    }
    for i in [6, 7, 8] {
        out[i].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_CDB);
    }
    out[9].check(key::ILLEGAL_REQUEST, asc::INVALID_FIELD_IN_INFORMATION_UNIT);
    assert_eq!(out[10].good().data, filled(1, 0), "nothing written");
    out[11].good();
    out[12].good();
    assert!(out[13].good().data == filled(2048, 9));
    let bl = &out[14].good().data;
    assert_eq!(be32(&bl[44..]), 2048, "MAXIMUM ATOMIC TRANSFER LENGTH");
    assert!(
        be32(&bl[44..]) <= be32(&bl[8..]),
        "within MAXIMUM TRANSFER LENGTH"
    );
    assert_eq!(
        &bl[48..64],
        &[0; 16],
        "no alignment, granularity or boundary"
    );
}

#[test]
fn read_defect_data_and_dataless_unmap() {
    let mut ws10 = {
        let mut c = read10(5, 3);
        c[0] = 0x41;
        c[1] = 0x08; // UNMAP, no data-out
        none(&c)
    };
    ws10.dir = DataDir::Write;
    let out = run(tasks(vec![
        din(&[0x37, 0, 0x18 | 5, 0, 0, 0, 0, 0, 32, 0], 32),
        din(&[0xb7, 0x18 | 4, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0], 32),
        write_blocks(4, &filled(5, 0xee), BS),
        ws10,
        read_blocks(4, 5, BS),
    ]));
    assert_eq!(out[0].good().data, [0, 0x1d, 0, 0]);
    assert_eq!(out[1].good().data, [0, 0x1c, 0, 0, 0, 0, 0, 0]);
    out[3].good();
    let d = &out[4].good().data;
    assert!(d[..512].iter().all(|&b| b == 0xee));
    assert!(d[512..2048].iter().all(|&b| b == 0), "unmapped: zeros");
    assert!(d[2048..].iter().all(|&b| b == 0xee));
}
