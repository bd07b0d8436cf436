//! Persistent reservations, SPC-2 reservations and unit attentions over a real
//! reactor and malloc bdevs, with several I_T nexuses on one device.

mod harness;

use ferrite_lib::scsi::status;
use harness::*;

const BS: u32 = 512;
const K1: u64 = 0x1111_0000_0000_0001;
const K2: u64 = 0x2222_0000_0000_0002;
const K3: u64 = 0x3333_0000_0000_0003;

// PR OUT service actions.
const REGISTER: u8 = 0;
const RESERVE: u8 = 1;
const RELEASE: u8 = 2;
const CLEAR: u8 = 3;
const PREEMPT: u8 = 4;
const PREEMPT_AND_ABORT: u8 = 5;
const REGISTER_IGNORE: u8 = 6;
const REGISTER_AND_MOVE: u8 = 7;

// Additional sense codes.
const POWER_ON: u16 = 0x2900;
const CAPACITY_CHANGED: u16 = 0x2a09;
const RESERVATIONS_PREEMPTED: u16 = 0x2a03;
const RESERVATIONS_RELEASED: u16 = 0x2a04;
const REGISTRATIONS_PREEMPTED: u16 = 0x2a05;
const LUNS_CHANGED: u16 = 0x3f0e;

fn one_lun(ports: usize) -> impl FnOnce() -> Env + Send + 'static {
    move || {
        let b = malloc_bdev(2048, BS);
        env_one(&[(0, b)], ports)
    }
}

/// Each port takes its POWER ON unit attention.
fn clear_uas(ports: usize) -> Vec<Step> {
    (0..ports).map(|p| Step::Exec(p, tur(0))).collect()
}

/// Reads and writes of a registrant and a non-registrant under each type.
#[test]
fn access_under_every_reservation_type() {
    // (type, registrant reads, registrant writes, others read, others write)
    let table = [
        (1u8, true, false, true, false),
        (3, false, false, false, false),
        (5, true, true, true, false),
        (6, true, true, false, false),
        (7, true, true, true, false),
        (8, true, true, false, false),
    ];
    for (rtype, rr, rw, ur, uw) in table {
        let block = pattern(BS as usize, rtype);
        let r = run(one_lun(3), move |_| {
            let mut s = clear_uas(3);
            s.extend([
                Step::Exec(0, prout(0, REGISTER_IGNORE, 0, 0, K1, 0)), // 3
                Step::Exec(1, prout(0, REGISTER, 0, 0, K2, 0)),        // 4
                Step::Exec(0, prout(0, RESERVE, rtype, K1, 0, 0)),     // 5
                Step::Exec(0, read10(0, 1, 1, BS)),                    // 6
                Step::Exec(0, write10(0, 1, &block, BS)),              // 7
                Step::Exec(1, read10(0, 1, 1, BS)),                    // 8
                Step::Exec(1, write10(0, 1, &block, BS)),              // 9
                Step::Exec(2, read10(0, 1, 1, BS)),                    // 10
                Step::Exec(2, write10(0, 1, &block, BS)),              // 11
                Step::Exec(2, tur(0)),                                 // 12
                Step::Exec(2, inquiry(0)),                             // 13
                Step::Exec(2, prin(0, 1, 64)),                         // 14
                Step::Exec(0, prout(0, RELEASE, rtype, K1, 0, 0)),     // 15
                Step::Exec(1, write10(0, 1, &block, BS)),              // 16
            ]);
            s
        });
        for i in 3..8 {
            r.at(i).good();
        }
        let expect = |i: usize, ok: bool| {
            if ok {
                r.at(i).good();
            } else {
                r.at(i).conflict();
            }
        };
        expect(8, rr);
        expect(9, rw);
        expect(10, ur);
        expect(11, uw);
        r.at(12).good();
        r.at(13).good();
        let all_reg = rtype >= 7;
        assert_eq!(
            reservation(r.at(14).good()),
            Some((if all_reg { 0 } else { K1 }, rtype))
        );
        r.at(15).good();
        if matches!(rtype, 1 | 3) {
            r.at(16).good();
        } else {
            // A registrants-only or all-registrants reservation was released:
            // the other registrant hears of it first.
            r.at(16).ua(RESERVATIONS_RELEASED);
        }
    }
}

#[test]
fn keys_reservation_capabilities_and_full_status() {
    let r = run(one_lun(2), |_| {
        let mut s = clear_uas(2);
        s.extend([
            Step::Exec(0, prin(0, 0, 256)),                    // 2: no keys
            Step::Exec(0, prout(0, REGISTER, 0, 0, K1, 0)),    // 3
            Step::Exec(1, prout(0, REGISTER, 0, 0, K2, 0x04)), // 4: ALL_TG_PT
            Step::Exec(0, prin(0, 0, 256)),                    // 5
            Step::Exec(0, prin(0, 0, 8)),                      // 6: truncated
            Step::Exec(0, prout(0, RESERVE, 3, K1, 0, 0)),     // 7
            Step::Exec(1, prin(0, 3, 1024)),                   // 8: full status
            Step::Exec(1, prin(0, 2, 64)),                     // 9: capabilities
            Step::Exec(1, prin(0, 4, 64)),                     // 10: bad service action
            Step::Exec(0, prout(0, REGISTER, 0, K2, K3, 0)),   // 11: wrong key
            Step::Exec(0, prout(0, RESERVE, 3, K1, 0, 0)),     // 12: again, same type
            Step::Exec(0, prout(0, RESERVE, 1, K1, 0, 0)),     // 13: other type
            Step::Exec(0, prout(0, RELEASE, 1, K1, 0, 0)),     // 14: wrong type
            Step::Exec(0, prout_raw(0, RESERVE, 3, &[0; 23])), // 15: short list
            Step::Exec(0, prout(0, RESERVE, 0x13, K1, 0, 0)),  // 16: scope 1
            Step::Exec(0, prout(0, RESERVE, 2, K1, 0, 0)),     // 17: bad type
            Step::Exec(1, prout(0, RELEASE, 3, K2, 0, 0)),     // 18: not holder
            Step::Exec(0, prout(0, REGISTER, 0, K1, K3, 0)),   // 19: new key
            Step::Exec(1, prin(0, 1, 64)),                     // 20
            Step::Exec(0, prout(0, REGISTER, 0, 0, K1, 0)),    // 21: registered, key 0
            Step::Exec(1, prout(0, REGISTER, 0, 0, 0, 0)),     // 22: unregistered nexus? no: K2
        ]);
        s
    });
    assert_eq!(keys(r.at(2).good()), (0, vec![]));
    assert_eq!(keys(r.at(5).good()), (2, vec![K1, K2]));
    let t = r.at(6).good();
    assert_eq!(t.data.len(), 8);
    assert_eq!(u32::from_be_bytes(t.data[4..8].try_into().unwrap()), 16);
    r.at(7).good();
    // READ FULL STATUS: two descriptors with iSCSI TransportIDs.
    let fs = &r.at(8).good().data;
    let mut at = 8;
    let mut seen = Vec::new();
    while at < fs.len() {
        let key = u64::from_be_bytes(fs[at..at + 8].try_into().unwrap());
        let flags = fs[at + 12];
        let scope_type = fs[at + 13];
        let rtp = u16::from_be_bytes([fs[at + 18], fs[at + 19]]);
        let tid_len = u32::from_be_bytes(fs[at + 20..at + 24].try_into().unwrap()) as usize;
        let tid = &fs[at + 24..at + 24 + tid_len];
        assert_eq!(tid[0], 0x45);
        let name = String::from_utf8_lossy(&tid[4..])
            .trim_end_matches('\0')
            .to_string();
        seen.push((key, flags, scope_type, rtp, name));
        at += 24 + tid_len;
    }
    assert_eq!(at, fs.len());
    assert_eq!(
        seen,
        vec![
            (K1, 0x01, 0x03, 1, initiator(0)),
            (K2, 0x02, 0x00, 1, initiator(1)),
        ]
    );
    let caps = &r.at(9).good().data;
    assert_eq!(u16::from_be_bytes([caps[0], caps[1]]), 8);
    assert_eq!(caps[2] & 0x1d, 0x1d, "CRH SIP_C ATP_C PTPL_C");
    assert_eq!(caps[4], 0xea);
    assert_eq!(caps[5], 0x01);
    r.at(10).check(0x05, 0x2400);
    r.at(11).conflict();
    r.at(12).good();
    r.at(13).conflict();
    r.at(14).check(0x05, 0x2604);
    r.at(15).check(0x05, 0x1a00);
    r.at(16).check(0x05, 0x2400);
    r.at(17).check(0x05, 0x2400);
    r.at(18).good();
    r.at(19).good();
    // The reservation follows its holder's new key.
    assert_eq!(reservation(r.at(20).good()), Some((K3, 3)));
    r.at(21).conflict();
    r.at(22).conflict();
}

/// The holder unregistering ends a reservation (all but all-registrants
/// types, which last while anyone is registered).
#[test]
fn holder_unregistering_releases_its_reservation() {
    for rtype in [1u8, 3, 5, 6, 7, 8] {
        let r = run(one_lun(2), move |_| {
            let mut s = clear_uas(2);
            s.extend([
                Step::Exec(0, prout(0, REGISTER_IGNORE, 0, 0, K1, 0)), // 2
                Step::Exec(1, prout(0, REGISTER_IGNORE, 0, 0, K2, 0)), // 3
                Step::Exec(0, prout(0, RESERVE, rtype, K1, 0, 0)),     // 4
                Step::Exec(0, prout(0, REGISTER, 0, K1, 0, 0)),        // 5
                Step::Exec(0, prin(0, 1, 64)),                         // 6
                Step::Exec(1, tur(0)),                                 // 7
                Step::Exec(1, prout(0, RELEASE, rtype, K2, 0, 0)),     // 8
                Step::Exec(1, prout(0, REGISTER, 0, K2, 0, 0)),        // 9
                Step::Exec(1, prin(0, 0, 64)),                         // 10
            ]);
            s
        });
        for i in 2..6 {
            r.at(i).good();
        }
        if rtype >= 7 {
            assert_eq!(reservation(r.at(6).good()), Some((0, rtype)));
            r.at(7).good();
        } else {
            assert_eq!(reservation(r.at(6).good()), None);
            if matches!(rtype, 5 | 6) {
                r.at(7).ua(RESERVATIONS_RELEASED);
            } else {
                r.at(7).good();
            }
        }
        r.at(8).good();
        r.at(9).good();
        assert_eq!(keys(r.at(10).good()).1, Vec::<u64>::new());
    }
}

#[test]
fn clear_and_preempt() {
    let r = run(one_lun(3), |_| {
        let mut s = clear_uas(3);
        s.extend([
            Step::Exec(0, prout(0, REGISTER, 0, 0, K1, 0)), // 3
            Step::Exec(1, prout(0, REGISTER, 0, 0, K2, 0)), // 4
            Step::Exec(2, prout(0, REGISTER, 0, 0, K2, 0)), // 5: same key
            Step::Exec(1, prout(0, RESERVE, 1, K2, 0, 0)),  // 6: WE by init1
            Step::Exec(0, prin(0, 0, 64)),                  // 7
            // Preempt the holder's key: init1 and init2 go, init0 holds EA.
            Step::Exec(0, prout(0, PREEMPT, 3, K1, K2, 0)), // 8
            Step::Exec(1, tur(0)),                          // 9
            Step::Exec(2, read10(0, 0, 1, BS)),             // 10
            Step::Exec(2, read10(0, 0, 1, BS)),             // 11
            Step::Exec(0, prin(0, 0, 64)),                  // 12
            Step::Exec(0, prin(0, 1, 64)),                  // 13
            // Preempting a key nobody has conflicts; SARK 0 without an
            // all-registrants reservation is an error.
            Step::Exec(0, prout(0, PREEMPT, 3, K1, K3, 0)), // 14
            Step::Exec(0, prout(0, PREEMPT, 3, K1, 0, 0)),  // 15
            // An unregistered nexus cannot preempt.
            Step::Exec(1, prout(0, PREEMPT, 3, K2, K1, 0)), // 16
            Step::Exec(1, prout(0, REGISTER, 0, 0, K2, 0)), // 17
            Step::Exec(1, prout(0, CLEAR, 0, K2, 0, 0)),    // 18
            Step::Exec(0, tur(0)),                          // 19
            Step::Exec(0, prin(0, 0, 64)),                  // 20
            Step::Exec(0, prin(0, 1, 64)),                  // 21
            Step::Exec(2, write10(0, 0, &[7; BS as usize], BS)), // 22
        ]);
        s
    });
    for i in 3..7 {
        r.at(i).good();
    }
    let (gen, _) = keys(r.at(7).good());
    r.at(8).good();
    r.at(9).ua(REGISTRATIONS_PREEMPTED);
    r.at(10).ua(REGISTRATIONS_PREEMPTED);
    r.at(11).conflict();
    assert_eq!(keys(r.at(12).good()), (gen + 1, vec![K1]));
    assert_eq!(reservation(r.at(13).good()), Some((K1, 3)));
    r.at(14).conflict();
    r.at(15).check(0x05, 0x2600);
    r.at(16).conflict();
    r.at(17).good();
    r.at(18).good();
    r.at(19).ua(RESERVATIONS_PREEMPTED);
    assert_eq!(keys(r.at(20).good()), (gen + 3, vec![]));
    assert_eq!(reservation(r.at(21).good()), None);
    r.at(22).good();
}

#[test]
fn preempt_and_abort_aborts_the_preempted_nexus_tasks() {
    let r = run(
        || {
            let base = malloc_bdev(2048, BS);
            let slow = delay_bdev(&base, 200_000);
            env_one(&[(0, slow)], 2)
        },
        |_| {
            let mut s = clear_uas(2);
            s.extend([
                Step::Exec(0, prout(0, REGISTER, 0, 0, K1, 0)), // 2
                Step::Exec(1, prout(0, REGISTER, 0, 0, K2, 0)), // 3
                Step::Exec(1, prout(0, RESERVE, 5, K2, 0, 0)),  // 4
                Step::Start(1, tagged(write10(0, 8, &[1; 4096], BS), 0x77)), // 5
                Step::Exec(0, prout(0, PREEMPT_AND_ABORT, 1, K1, K2, 0)), // 6
                Step::Exec(1, tur(0)),                          // 7
                Step::Exec(1, write10(0, 8, &[2; 512], BS)),    // 8
                Step::Exec(0, prin(0, 1, 64)),                  // 9
            ]);
            s
        },
    );
    for i in 2..5 {
        r.at(i).good();
    }
    let w = r.at(5);
    assert!(w.aborted, "{w:?}");
    assert_eq!(w.status, status::TASK_ABORTED);
    r.at(6).good();
    assert!(
        r.position(5) < r.position(6),
        "PREEMPT AND ABORT ended first"
    );
    r.at(7).ua(REGISTRATIONS_PREEMPTED);
    r.at(8).conflict();
    assert_eq!(reservation(r.at(9).good()), Some((K1, 1)));
}

#[test]
fn register_and_move() {
    let r = run(one_lun(2), |_| {
        let mut s = clear_uas(2);
        let to1 = {
            let tid = iscsi_tid(&initiator(1));
            let mut p = vec![0u8; 24];
            p[0..8].copy_from_slice(&K1.to_be_bytes());
            p[8..16].copy_from_slice(&K3.to_be_bytes());
            p[17] = 0x02; // UNREG
            p[18..20].copy_from_slice(&1u16.to_be_bytes());
            p[20..24].copy_from_slice(&(tid.len() as u32).to_be_bytes());
            p.extend_from_slice(&tid);
            p
        };
        let to_self = {
            let mut p = to1.clone();
            let tid = iscsi_tid(&initiator(0));
            p.truncate(24);
            p[20..24].copy_from_slice(&(tid.len() as u32).to_be_bytes());
            p.extend_from_slice(&tid);
            p
        };
        s.extend([
            Step::Exec(0, prout(0, REGISTER, 0, 0, K1, 0)), // 2
            Step::Exec(0, prout_raw(0, REGISTER_AND_MOVE, 0, &to1)), // 3: no reservation
            Step::Exec(0, prout(0, RESERVE, 1, K1, 0, 0)),  // 4
            Step::Exec(0, prout_raw(0, REGISTER_AND_MOVE, 0, &to_self)), // 5
            Step::Exec(0, prout_raw(0, REGISTER_AND_MOVE, 0, &to1)), // 6
            Step::Exec(1, prin(0, 1, 64)),                  // 7
            Step::Exec(1, prin(0, 0, 64)),                  // 8
            Step::Exec(0, write10(0, 0, &[3; 512], BS)),    // 9
            Step::Exec(1, write10(0, 0, &[3; 512], BS)),    // 10
            Step::Exec(0, prout_raw(0, REGISTER_AND_MOVE, 0, &to1)), // 11: not registered now
        ]);
        s
    });
    r.at(2).good();
    r.at(3).conflict();
    r.at(4).good();
    r.at(5).check(0x05, 0x2600);
    r.at(6).good();
    assert_eq!(reservation(r.at(7).good()), Some((K3, 1)));
    assert_eq!(keys(r.at(8).good()).1, vec![K3]);
    r.at(9).conflict();
    r.at(10).good();
    r.at(11).conflict();
}

#[test]
fn spec_i_pt_registers_the_named_ports() {
    let r = run(one_lun(3), |_| {
        let mut s = clear_uas(3);
        let mut p = vec![0u8; 28];
        p[8..16].copy_from_slice(&K1.to_be_bytes());
        p[20] = 0x08; // SPEC_I_PT
        let t1 = iscsi_tid(&initiator(1));
        // Format 00b: every port of initiator 2.
        let mut t2 = iscsi_tid("iqn.2026-01.test:init2");
        t2[0] = 0x05;
        let n = (t1.len() + t2.len()) as u32;
        p[24..28].copy_from_slice(&n.to_be_bytes());
        p.extend_from_slice(&t1);
        p.extend_from_slice(&t2);
        s.extend([
            Step::Exec(0, prout_raw(0, REGISTER, 0, &p)),     // 3
            Step::Exec(0, prin(0, 0, 64)),                    // 4
            Step::Exec(1, prout(0, RESERVE, 6, K1, 0, 0)),    // 5: init1 is registered
            Step::Exec(2, write10(0, 0, &[4; 512], BS)),      // 6: so is init2
            Step::Exec(0, prout_raw(0, REGISTER, 0, &p)),     // 7: SPEC_I_PT when registered
            Step::Exec(0, prout(0, RESERVE, 6, K1, 0, 0x08)), // 8: SPEC_I_PT elsewhere
        ]);
        s
    });
    r.at(3).good();
    assert_eq!(keys(r.at(4).good()).1, vec![K1, K1, K1]);
    r.at(5).good();
    r.at(6).good();
    r.at(7).check(0x05, 0x2600);
    r.at(8).check(0x05, 0x2600);
}

#[test]
fn aptpl_state_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("ferrite-pr-test-{}", std::process::id()));
    ferrite_lib::scsi::set_pr_dir(&dir);
    let r = run(one_lun(2), |env| {
        let bdev = env.bdevs[0].clone();
        let mut s = clear_uas(2);
        s.extend([
            Step::Exec(0, prout(0, REGISTER, 0, 0, K1, 0x01)), // 2: APTPL
            Step::Exec(1, prout(0, REGISTER, 0, 0, K2, 0x01)), // 3
            Step::Exec(0, prout(0, RESERVE, 1, K1, 0, 0)),     // 4
            Step::Exec(0, prin(0, 2, 64)),                     // 5: PTPL_A
            Step::Do(Box::new(move |env: &mut Env| {
                let uuid = ferrite_bdev::get(&bdev).unwrap().uuid();
                let path = ferrite_lib::scsi::pr_dir().join(format!("{}.json", uuid.simple()));
                assert!(path.exists(), "{} not written", path.display());
                // Everything goes; a new device over the same bdev comes.
                env.ports.clear();
                env.devs.clear();
                let dev = ferrite_lib::scsi::ScsiDev::new("iqn.2026-01.test:again", &[(0, bdev)])
                    .unwrap();
                env.ports = (0..2).map(|i| Some(port(&dev, i))).collect();
                env.devs.push(dev);
            })), // 6
            Step::Exec(0, tur(0)),                             // 7
            Step::Exec(1, tur(0)),                             // 8
            Step::Exec(1, prin(0, 0, 64)),                     // 9
            Step::Exec(1, prin(0, 1, 64)),                     // 10
            Step::Exec(0, write10(0, 0, &[5; 512], BS)),       // 11: holder
            Step::Exec(1, write10(0, 0, &[5; 512], BS)),       // 12
            Step::Exec(1, prout(0, REGISTER, 0, K2, 0, 0)),    // 13
            Step::Exec(0, prout(0, REGISTER, 0, K1, K1, 0)),   // 14: APTPL off
            Step::Exec(0, prin(0, 2, 64)),                     // 15
        ]);
        s
    });
    for i in 2..5 {
        r.at(i).good();
    }
    assert_eq!(r.at(5).good().data[3] & 0x01, 0x01);
    r.at(7).ua(POWER_ON);
    r.at(8).ua(POWER_ON);
    let (gen, k) = keys(r.at(9).good());
    assert_eq!(k, vec![K1, K2]);
    assert_eq!(gen, 2);
    assert_eq!(reservation(r.at(10).good()), Some((K1, 1)));
    r.at(11).good();
    r.at(12).conflict();
    r.at(13).good();
    r.at(14).good();
    assert_eq!(r.at(15).good().data[3] & 0x01, 0x00);
    let left: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        left.iter()
            .all(|p| p.extension().is_none_or(|e| e != "json")),
        "APTPL off leaves no file: {left:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reserve6_between_two_initiators() {
    let r = run(one_lun(3), |_| {
        let mut s = clear_uas(3);
        s.extend([
            Step::Exec(0, reserve6(0)), // 3
            Step::Exec(0, reserve6(0)), // 4: again
            Step::Exec(1, reserve6(0)), // 5
            Step::Exec(1, release6(0)), // 6: no-op
            Step::Exec(
                0,
                task(
                    0,
                    &[0x1a, 0, 0x3f, 0, 255, 0],
                    ferrite_lib::scsi::DataDir::Read,
                    255,
                    None,
                ),
            ), // 7
            Step::Exec(
                1,
                task(
                    0,
                    &[0x1a, 0, 0x3f, 0, 255, 0],
                    ferrite_lib::scsi::DataDir::Read,
                    255,
                    None,
                ),
            ), // 8
            Step::Exec(1, inquiry(0)),  // 9
            Step::Exec(1, report_luns(0)), // 10
            Step::Exec(1, prin(0, 0, 64)), // 11: PR IN conflicts
            Step::Exec(0, prin(0, 0, 64)), // 12: even for the holder
            Step::Exec(0, release6(0)), // 13
            Step::Exec(1, reserve6(0)), // 14
            Step::Exec(0, read10(0, 0, 1, BS)), // 15
            Step::Exec(
                1,
                task(
                    0,
                    &[0x16, 0x10, 0, 0, 0, 0],
                    ferrite_lib::scsi::DataDir::None,
                    0,
                    None,
                ),
            ), // 16: 3rdPty
            Step::Exec(1, release6(0)), // 17
            // With a registration around, RESERVE conflicts for others...
            Step::Exec(2, prout(0, REGISTER, 0, 0, K3, 0)), // 18
            Step::Exec(1, reserve6(0)),                     // 19
            // ...and is a no-op for a registrant under a registrants-only one.
            Step::Exec(2, prout(0, RESERVE, 5, K3, 0, 0)), // 20
            Step::Exec(2, reserve6(0)),                    // 21
            Step::Exec(2, prout(0, CLEAR, 0, K3, 0, 0)),   // 22
            Step::Exec(1, reserve6(0)),                    // 23
            // Dropping the holder's port (its nexus) releases it.
            Step::Do(Box::new(|env: &mut Env| env.ports[1] = None)), // 24
            Step::Exec(0, reserve6(0)),                              // 25
            Step::Exec(0, release6(0)),                              // 26
        ]);
        s
    });
    r.at(3).good();
    r.at(4).good();
    r.at(5).conflict();
    r.at(6).good();
    r.at(7).good();
    r.at(8).conflict();
    r.at(9).good();
    r.at(10).good();
    r.at(11).conflict();
    r.at(12).conflict();
    r.at(13).good();
    r.at(14).good();
    r.at(15).conflict();
    r.at(16).check(0x05, 0x2400);
    r.at(17).good();
    r.at(18).good();
    r.at(19).conflict();
    r.at(20).good();
    r.at(21).good();
    r.at(22).good();
    r.at(23).good();
    r.at(25).good();
    r.at(26).good();
}

#[test]
fn unit_attentions_queue_in_order_and_spare_inquiry() {
    let r = run(one_lun(2), |_| {
        vec![
            Step::Exec(0, inquiry(0)),     // 0: no UA
            Step::Exec(0, report_luns(0)), // 1: no UA
            Step::Exec(0, tur(0)),         // 2: POWER ON
            Step::Exec(0, tur(0)),         // 3
            Step::Do(Box::new(|env: &mut Env| {
                let lun = env.devs[0].luns()[0].clone();
                ferrite_lib::scsi::ua::capacity_changed(&lun);
                // A new LUN: every port sees REPORTED LUNS DATA HAS CHANGED.
                let b = malloc_bdev(64, BS);
                env.devs[0].add_lun(1, &b).unwrap();
            })), // 4
            Step::Exec(0, tur(0)),         // 5: capacity
            Step::Exec(0, request_sense(0)), // 6: RLDHC as data
            Step::Exec(0, tur(0)),         // 7: nothing left
            Step::Exec(1, report_luns(0)), // 8: clears RLDHC
            Step::Exec(1, tur(0)),         // 9: POWER ON
            Step::Exec(1, tur(0)),         // 10: capacity
            Step::Exec(1, tur(0)),         // 11
            Step::Exec(1, tur(1)),         // 12: new LUN: POWER ON
            Step::Exec(1, request_sense(1)), // 13: nothing
        ]
    });
    r.at(0).good();
    r.at(1).good();
    r.at(2).ua(POWER_ON);
    r.at(3).good();
    r.at(5).ua(CAPACITY_CHANGED);
    let rs = r.at(6).good();
    assert_eq!(rs.data[2] & 0x0f, 0x06);
    assert_eq!(u16::from_be_bytes([rs.data[12], rs.data[13]]), LUNS_CHANGED);
    r.at(7).good();
    assert_eq!(&r.at(8).good().data[0..4], &[0, 0, 0, 16]);
    r.at(9).ua(POWER_ON);
    r.at(10).ua(CAPACITY_CHANGED);
    r.at(11).good();
    r.at(12).ua(POWER_ON);
    assert_eq!(r.at(13).good().data[2] & 0x0f, 0);
}

/// `bdev_uring_rescan` of a grown file tells every nexus CAPACITY DATA HAS
/// CHANGED, and READ CAPACITY then reports the new size.
#[test]
fn a_rescan_that_grows_a_uring_bdev_raises_capacity_data_has_changed() {
    use ferrite_bdev::modules::uring;
    let path = format!("/dev/shm/ferrite-rescan-ua-{}", std::process::id());
    std::fs::File::create(&path)
        .and_then(|f| f.set_len(1 << 20))
        .expect("tmpfs file");
    let (p, grow) = (path.clone(), path.clone());
    let read_capacity = || {
        task(
            0,
            &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ferrite_lib::scsi::DataDir::Read,
            8,
            None,
        )
    };
    let r = run(
        move || {
            let name = uring::create(uring::CreateParams {
                name: format!("rescan-ua-{}", std::process::id()),
                filename: p,
                block_size: Some(BS),
                uuid: None,
                sqpoll: false,
            })
            .expect("uring bdev");
            env_one(&[(0, name)], 2)
        },
        move |_| {
            let mut s = clear_uas(2);
            s.extend([
                Step::Exec(0, read_capacity()), // 2: 2048 blocks
                Step::Do(Box::new(move |env: &mut Env| {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&grow)
                        .and_then(|f| f.set_len(2 << 20))
                        .expect("grow");
                    let name = env.devs[0].luns()[0].bdev().name().to_string();
                    let now = ferrite_lib::rpc::bdev::uring_rescan(&name).expect("rescan");
                    assert_eq!(now, 4096);
                    // The same size again: nothing to tell.
                    assert_eq!(ferrite_lib::rpc::bdev::uring_rescan(&name), Ok(4096));
                })), // 3
                Step::Exec(0, tur(0)),          // 4: capacity changed
                Step::Exec(0, tur(0)),          // 5: once only
                Step::Exec(1, read_capacity()), // 6: UA on the other nexus too
                Step::Exec(1, read_capacity()), // 7: 4096 blocks
            ]);
            s
        },
    );
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        u32::from_be_bytes(r.at(2).good().data[0..4].try_into().unwrap()),
        2047
    );
    r.at(4).ua(CAPACITY_CHANGED);
    r.at(5).good();
    r.at(6).ua(CAPACITY_CHANGED);
    assert_eq!(
        u32::from_be_bytes(r.at(7).good().data[0..4].try_into().unwrap()),
        4095
    );
}
