//! The bdev layer through the malloc and null modules on real reactors.

mod common;

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use ferrite_bdev::modules::{malloc, null};
use ferrite_bdev::{self as bdev, BdevError, IoError, IoRequest, IoType};

fn malloc(name: &str, blocks: u64, bs: u32) {
    malloc::create(malloc::CreateParams {
        name: Some(name.into()),
        num_blocks: blocks,
        block_size: bs,
        uuid: None,
    })
    .expect("malloc created");
}

#[test]
fn write_then_read_back_at_both_block_sizes() {
    for bs in [512u32, 4096] {
        let name = format!("rw{bs}");
        let n = name.clone();
        let got = on_reactors(1, move |tx| {
            malloc(&n, 1024, bs);
            let desc = bdev::open(&n, true, |_| {}).unwrap();
            let ch = desc.channel();
            let bsz = bs as usize;
            let ch2 = ch.clone();
            run_all(
                &ch,
                vec![
                    IoRequest::write(10, 3, filled(3 * bsz, 0x5a), false),
                    IoRequest::write(13, 1, filled(bsz, 0xa5), true),
                    IoRequest::write(100, 32, filled(32 * bsz, 0x11), false),
                ],
                move |w| {
                    assert!(w.iter().all(|(s, _)| s.is_ok()), "{w:?}");
                    run_all(
                        &ch2,
                        vec![
                            IoRequest::read(10, 4, filled(4 * bsz, 0)),
                            IoRequest::read(1000, 24, filled(24 * bsz, 0xff)),
                        ],
                        move |r| {
                            let _keep = desc;
                            tx.send((bytes(&r[0].1.data), bytes(&r[1].1.data))).unwrap();
                        },
                    );
                },
            );
        });
        let bsz = bs as usize;
        assert!(got.0[..3 * bsz].iter().all(|&b| b == 0x5a));
        assert!(got.0[3 * bsz..].iter().all(|&b| b == 0xa5));
        assert!(got.1.iter().all(|&b| b == 0), "fresh blocks read as zeros");
    }
}

#[test]
fn bad_io_gets_a_clear_error_and_nothing_else_happens() {
    let res = on_reactors(1, |tx| {
        malloc("bad0", 100, 512);
        let desc = bdev::open("bad0", true, |_| {}).unwrap();
        let ch = desc.channel();
        let rec: Rc<dyn ferrite_bdev::IoCallback> = Rc::new(Recorder::default());
        let mut errs = Vec::new();
        for r in [
            IoRequest::read(99, 2, filled(1024, 0)),
            IoRequest::read(u64::MAX, 2, filled(1024, 0)),
            IoRequest::read(0, 2, filled(1000, 0)),
            IoRequest::write(0, 0, ferrite_bdev::IoData::new(), false),
            IoRequest::unmap(50, 51),
        ] {
            errs.push(ch.submit(r, &rec, 0).map_err(|(e, _)| e).err());
        }
        assert_eq!(ch.outstanding(), 0);
        drop(desc);
        tx.send(errs).unwrap();
    });
    assert_eq!(
        res,
        vec![
            Some(IoError::OutOfRange),
            Some(IoError::OutOfRange),
            Some(IoError::BadLength),
            Some(IoError::BadLength),
            Some(IoError::OutOfRange)
        ]
    );
}

#[test]
fn unmap_write_zeroes_compare_and_compare_and_write() {
    let res = on_reactors(1, |tx| {
        malloc("cmp0", 64, 512);
        let desc = bdev::open("cmp0", true, |_| {}).unwrap();
        let ch = desc.channel();
        let ch2 = ch.clone();
        run_all(
            &ch,
            vec![IoRequest::write(0, 8, filled(4096, 7), false)],
            move |_| {
                let mut caw_bad = filled(2048, 7);
                caw_bad.copy_from_slice(700, &[9]); // differs at byte 700
                let mut caw_ok = filled(2048, 7);
                caw_ok.copy_from_slice(1024, &[1; 1024]);
                let ch3 = ch2.clone();
                run_all(
                    &ch2,
                    vec![
                        IoRequest::compare(0, 2, filled(1024, 7)),
                        IoRequest::compare(0, 2, {
                            let mut d = filled(1024, 7);
                            d.copy_from_slice(513, &[8]);
                            d
                        }),
                        IoRequest::compare_and_write(2, 2, caw_bad, false),
                        IoRequest::compare_and_write(4, 2, caw_ok, true),
                        IoRequest::unmap(6, 1),
                        IoRequest::write_zeroes(7, 1),
                    ],
                    move |r| {
                        let st: Vec<_> = r.iter().map(|(s, _)| *s).collect();
                        run_all(
                            &ch3,
                            vec![IoRequest::read(0, 8, filled(4096, 0xee))],
                            move |rd| {
                                let _keep = desc;
                                tx.send((st, bytes(&rd[0].1.data))).unwrap();
                            },
                        );
                    },
                );
            },
        );
    });
    let (st, data) = res;
    assert_eq!(st[0], Ok(()));
    assert_eq!(st[1], Err(IoError::Miscompare { offset: 513 }));
    assert_eq!(st[2], Err(IoError::Miscompare { offset: 700 }));
    assert_eq!(st[3], Ok(()));
    assert_eq!(st[4], Ok(()));
    assert_eq!(st[5], Ok(()));
    assert!(
        data[1024..2048].iter().all(|&b| b == 7),
        "miscompare wrote nothing"
    );
    assert!(
        data[2048..2560].iter().all(|&b| b == 1),
        "compare-and-write wrote"
    );
    assert!(
        data[3072..4096].iter().all(|&b| b == 0),
        "unmap and write-zeroes zero"
    );
}

#[test]
fn claims_and_write_opens_exclude_each_other() {
    let r = on_reactors(1, |tx| {
        malloc("claim0", 16, 512);
        let reader = bdev::open("claim0", false, |_| {}).unwrap();
        let owner = bdev::open("claim0", true, |_| {}).unwrap();
        owner.claim("split").unwrap();
        let second = bdev::open("claim0", false, |_| {}).unwrap();
        let e1 = second.claim("other").unwrap_err();
        let e2 = bdev::open("claim0", true, |_| {}).err().unwrap();
        assert_eq!(
            bdev::get("claim0").unwrap().claimed_by().as_deref(),
            Some("split")
        );
        drop(owner);
        let writer = bdev::open("claim0", true, |_| {}).unwrap();
        let e3 = reader.claim("x").unwrap_err();
        drop((writer, reader, second));
        tx.send((e1, e2, e3)).unwrap();
    });
    assert!(matches!(r.0, BdevError::Busy(_)));
    assert!(matches!(r.1, BdevError::Busy(_)));
    assert!(matches!(r.2, BdevError::Busy(_)));
}

#[test]
fn duplicate_names_and_bad_sizes_are_refused() {
    let errs = on_reactors(1, |tx| {
        malloc("dup0", 16, 512);
        let e = vec![
            malloc::create(malloc::CreateParams {
                name: Some("dup0".into()),
                num_blocks: 16,
                block_size: 512,
                uuid: None,
            })
            .unwrap_err()
            .errno(),
            malloc::create(malloc::CreateParams {
                name: Some("bs0".into()),
                num_blocks: 16,
                block_size: 520,
                uuid: None,
            })
            .unwrap_err()
            .errno(),
            null::create(null::CreateParams {
                name: "nul0".into(),
                num_blocks: 0,
                block_size: 512,
                uuid: None,
            })
            .unwrap_err()
            .errno(),
            malloc::create(malloc::CreateParams {
                name: Some("huge0".into()),
                num_blocks: 1 << 40,
                block_size: 4096,
                uuid: None,
            })
            .unwrap_err()
            .errno(),
        ];
        tx.send(e).unwrap();
    });
    assert_eq!(
        errs,
        vec![-libc::EEXIST, -libc::EINVAL, -libc::EINVAL, -libc::ENOMEM]
    );
}

#[test]
fn removing_an_open_bdev_tells_its_users_first() {
    let (told_first, gone) = on_reactors(2, |tx| {
        malloc("rm0", 16, 512);
        let told = Arc::new(AtomicBool::new(false));
        let holder: Rc<std::cell::RefCell<Option<bdev::Desc>>> = Default::default();
        let (t2, h2) = (told.clone(), holder.clone());
        // The user closes its descriptor when told.
        let desc = bdev::open("rm0", true, move |ev| {
            assert_eq!(ev, bdev::BdevEvent::Remove);
            t2.store(true, Ordering::SeqCst);
            h2.borrow_mut().take();
        })
        .unwrap();
        let _ch = desc.channel();
        *holder.borrow_mut() = Some(desc);
        malloc::delete("rm0", move |res| {
            res.unwrap();
            tx.send((told.load(Ordering::SeqCst), bdev::get("rm0").is_none()))
                .unwrap();
        });
    });
    assert!(told_first);
    assert!(gone);
}

#[test]
fn iostat_counts_ops_and_bytes_and_failures_apart() {
    let st = on_reactors(1, |tx| {
        null::create(null::CreateParams {
            name: "stat0".into(),
            num_blocks: 1000,
            block_size: 4096,
            uuid: None,
        })
        .unwrap();
        let desc = bdev::open("stat0", true, |_| {}).unwrap();
        let ch = desc.channel();
        run_all(
            &ch,
            vec![
                IoRequest::read(0, 2, filled(8192, 1)),
                IoRequest::read(0, 1, filled(4096, 1)),
                IoRequest::write(0, 1, filled(4096, 1), false),
                IoRequest::unmap(0, 10),
            ],
            move |r| {
                assert!(
                    bytes(&r[0].1.data).iter().all(|&b| b == 0),
                    "null reads zeros"
                );
                let _keep = desc;
                tx.send(bdev::get("stat0").unwrap().iostat()).unwrap();
            },
        );
    });
    let rd = st.get(IoType::Read);
    assert_eq!((rd.ops, rd.bytes), (2, 12288));
    assert_eq!(st.get(IoType::Write).ops, 1);
    assert_eq!(st.get(IoType::Unmap).bytes, 40960);
}
