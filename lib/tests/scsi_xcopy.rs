//! EXTENDED COPY and RECEIVE COPY RESULTS between LUNs of two devices.

mod harness;

use ferrite_lib::scsi::{xcopy, DataDir, ScsiDev};
use harness::*;

const BS: u32 = 512;
const BLOCKS: u64 = 8192;

/// Devices A and B, one LUN each; port 0 on A, port 1 on B.
fn two_devices() -> Env {
    let a = malloc_bdev(BLOCKS, BS);
    let b = malloc_bdev(BLOCKS, BS);
    let da = ScsiDev::new("iqn.2026-01.test:xa", &[(0, a.clone())]).unwrap();
    let db = ScsiDev::new("iqn.2026-01.test:xb", &[(0, b.clone())]).unwrap();
    let ports = vec![Some(port(&da, 0)), Some(port(&db, 0))];
    Env {
        devs: vec![da, db],
        ports,
        bdevs: vec![a, b],
    }
}

fn naa(bdev: &str) -> [u8; 16] {
    xcopy::naa_designator(&ferrite_bdev::get(bdev).unwrap())
}

/// An identification descriptor CSCD descriptor (E4h) naming `naa`.
fn target(naa: &[u8; 16], bs: u32) -> [u8; 32] {
    let mut d = [0u8; 32];
    d[0] = 0xe4;
    d[4] = 0x01; // binary
    d[5] = 0x03; // LU association, NAA
    d[7] = 16;
    d[8..24].copy_from_slice(naa);
    d[29..32].copy_from_slice(&bs.to_be_bytes()[1..]);
    d
}

/// A block-to-block segment descriptor (02h).
fn segment(src: u16, dst: u16, blocks: u16, src_lba: u64, dst_lba: u64) -> [u8; 28] {
    let mut d = [0u8; 28];
    d[0] = 0x02;
    d[2..4].copy_from_slice(&0x18u16.to_be_bytes());
    d[4..6].copy_from_slice(&src.to_be_bytes());
    d[6..8].copy_from_slice(&dst.to_be_bytes());
    d[10..12].copy_from_slice(&blocks.to_be_bytes());
    d[12..20].copy_from_slice(&src_lba.to_be_bytes());
    d[20..28].copy_from_slice(&dst_lba.to_be_bytes());
    d
}

fn params(list_id: u8, usage: u8, targets: &[[u8; 32]], segments: &[Vec<u8>]) -> Vec<u8> {
    let tdl = 32 * targets.len();
    let sdl: usize = segments.iter().map(|s| s.len()).sum();
    let mut p = vec![0u8; 16];
    p[0] = list_id;
    p[1] = usage << 3;
    p[2..4].copy_from_slice(&(tdl as u16).to_be_bytes());
    p[8..12].copy_from_slice(&(sdl as u32).to_be_bytes());
    for t in targets {
        p.extend_from_slice(t);
    }
    for s in segments {
        p.extend_from_slice(s);
    }
    p
}

fn extended_copy(p: &[u8]) -> ferrite_lib::scsi::Task {
    let mut cdb = [0u8; 16];
    cdb[0] = 0x83;
    cdb[10..14].copy_from_slice(&(p.len() as u32).to_be_bytes());
    let data = if p.is_empty() { None } else { Some(p) };
    task(0, &cdb, DataDir::Write, p.len() as u32, data)
}

fn receive_copy_results(sa: u8, list_id: u8) -> ferrite_lib::scsi::Task {
    let mut cdb = [0u8; 16];
    cdb[0] = 0x84;
    cdb[1] = sa;
    cdb[2] = list_id;
    cdb[10..14].copy_from_slice(&1024u32.to_be_bytes());
    task(0, &cdb, DataDir::Read, 1024, None)
}

#[test]
fn copies_between_luns_of_two_devices() {
    // 3000 blocks: more than one 1 MiB chunk.
    let data = pattern(3000 * BS as usize, 0x5a);
    let expect = data.clone();
    let r = run(two_devices, move |env| {
        let (a, b) = (naa(&env.bdevs[0]), naa(&env.bdevs[1]));
        let ok = params(
            5,
            0b00,
            &[target(&a, BS), target(&b, BS)],
            &[
                segment(0, 1, 3000, 10, 100).to_vec(),
                // And within A: 8 blocks from 10 to 5000.
                segment(0, 0, 8, 10, 5000).to_vec(),
            ],
        );
        let unknown = params(
            6,
            0b00,
            &[target(&a, BS), target(&[0x6f; 16], BS)],
            &[segment(0, 1, 8, 0, 0).to_vec()],
        );
        let beyond = params(
            7,
            0b11,
            &[target(&a, BS), target(&b, BS)],
            &[segment(0, 1, 8, 0, BLOCKS - 4).to_vec()],
        )
        .into_iter()
        .enumerate()
        .map(|(i, x)| if i == 0 { 0 } else { x })
        .collect::<Vec<u8>>();
        let bad_index = params(
            8,
            0b10,
            &[target(&a, BS)],
            &[segment(0, 1, 8, 0, 0).to_vec()],
        );
        let many_targets = params(
            9,
            0b10,
            &[target(&a, BS); 17],
            &[segment(0, 0, 1, 0, 1).to_vec()],
        );
        let stream = {
            let mut s = segment(0, 0, 1, 0, 1).to_vec();
            s[0] = 0x03;
            params(10, 0b10, &[target(&a, BS)], &[s])
        };
        let fc_target = {
            let mut t = target(&a, BS);
            t[0] = 0xe0;
            params(11, 0b10, &[t], &[segment(0, 0, 1, 0, 1).to_vec()])
        };
        let truncated = ok[..ok.len() - 1].to_vec();
        vec![
            Step::Exec(0, tur(0)),                       // 0
            Step::Exec(1, tur(0)),                       // 1
            Step::Exec(0, write10(0, 10, &data, BS)),    // 2
            Step::Exec(0, extended_copy(&ok)),           // 3
            Step::Exec(0, receive_copy_results(0, 5)),   // 4
            Step::Exec(0, receive_copy_results(0, 5)),   // 5: gone
            Step::Exec(1, read10(0, 100, 3000, BS)),     // 6
            Step::Exec(0, read10(0, 5000, 8, BS)),       // 7
            Step::Exec(0, receive_copy_results(3, 0)),   // 8
            Step::Exec(0, extended_copy(&unknown)),      // 9
            Step::Exec(0, extended_copy(&beyond)),       // 10
            Step::Exec(0, extended_copy(&bad_index)),    // 11
            Step::Exec(0, extended_copy(&many_targets)), // 12
            Step::Exec(0, extended_copy(&stream)),       // 13
            Step::Exec(0, extended_copy(&fc_target)),    // 14
            Step::Exec(0, extended_copy(&truncated)),    // 15
            Step::Exec(0, extended_copy(&[])),           // 16
            Step::Exec(0, receive_copy_results(0, 6)),   // 17
            Step::Exec(
                0,
                task(0, &[0x12, 1, 0x8f, 0, 255, 0], DataDir::Read, 255, None),
            ), // 18
        ]
    });
    r.at(0).ua(0x2900);
    r.at(1).ua(0x2900);
    r.at(2).good();
    r.at(3).good();
    let st = &r.at(4).good().data;
    assert_eq!(u32::from_be_bytes(st[0..4].try_into().unwrap()), 8);
    assert_eq!(st[4], 0x00, "completed without errors");
    assert_eq!(u16::from_be_bytes([st[5], st[6]]), 2, "segments processed");
    assert_eq!(st[7], 0x00);
    assert_eq!(
        u32::from_be_bytes(st[8..12].try_into().unwrap()),
        3008 * BS,
        "bytes copied"
    );
    r.at(5).check(0x05, 0x2400);
    assert!(
        r.at(6).good().data == expect,
        "copy to the other device differs"
    );
    assert_eq!(r.at(7).good().data, expect[..8 * BS as usize]);
    let op = &r.at(8).good().data;
    assert_eq!(
        u16::from_be_bytes([op[8], op[9]]),
        xcopy::MAX_TARGET_DESCRIPTORS
    );
    assert_eq!(
        u16::from_be_bytes([op[10], op[11]]),
        xcopy::MAX_SEGMENT_DESCRIPTORS
    );
    assert_eq!(op[43], 2);
    assert_eq!(&op[44..46], &[0x02, 0xe4]);
    r.at(9).check(0x0a, 0x0d02);
    r.at(10).check(0x0a, 0x0000);
    r.at(11).check(0x0a, 0x0d02);
    r.at(12).check(0x05, 0x2606);
    r.at(13).check(0x05, 0x2609);
    r.at(14).check(0x05, 0x2607);
    r.at(15).check(0x05, 0x1a00);
    r.at(16).good();
    // A copy refused before it started holds no status.
    r.at(17).check(0x05, 0x2400);
    // VPD page 8Fh names both commands.
    let vpd = &r.at(18).good().data;
    assert_eq!(vpd[1], 0x8f);
    assert_eq!(&vpd[4..6], &[0x00, 0x01]);
    assert!(vpd[9..].starts_with(&[0x83, 1, 0x00, 0x84, 2, 0x00, 0x03]));
}

#[test]
fn too_long_descriptor_lists_are_length_errors() {
    let r = run(two_devices, |env| {
        let a = naa(&env.bdevs[0]);
        let max_t = xcopy::MAX_TARGET_DESCRIPTORS as usize;
        let max_s = xcopy::MAX_SEGMENT_DESCRIPTORS as usize;
        let seg = segment(0, 0, 1, 0, 1).to_vec();
        let too_many_segments = params(1, 0b10, &[target(&a, BS)], &vec![seg.clone(); max_s + 1]);
        // More descriptor bytes than MAXIMUM DESCRIPTOR LIST LENGTH.
        let n = (xcopy::MAX_DESCRIPTOR_LIST_LENGTH as usize) / 28 + 1;
        let too_long = params(2, 0b10, &vec![target(&a, BS); max_t + 1], &vec![seg; n]);
        vec![
            Step::Exec(0, tur(0)),
            Step::Exec(0, extended_copy(&too_many_segments)), // 1
            Step::Exec(0, extended_copy(&too_long)),          // 2
        ]
    });
    r.at(1).check(0x05, 0x2608);
    r.at(2).check(0x05, 0x1a00);
}
