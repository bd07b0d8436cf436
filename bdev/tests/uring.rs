//! The uring bdev on real reactors over a file in tmpfs (/dev/shm): data round
//! trips at both block sizes and across several buffers, FUA and flush, unmap
//! and write-zeroes reading back zeros, compare, rescan of a grown file, bad
//! create arguments, and deleting a bdev with I/O in flight.

mod common;

use std::fs;
use std::path::PathBuf;

use common::*;
use ferrite_bdev::modules::uring;
use ferrite_bdev::{self as bdev, BdevError, IoData, IoError, IoRequest, IoType};

/// A fresh file of `bytes` in /dev/shm, removed on drop.
struct TmpFile(PathBuf);

impl TmpFile {
    fn new(tag: &str, bytes: u64) -> TmpFile {
        let p = PathBuf::from(format!(
            "/dev/shm/ferrite-uring-{tag}-{}",
            std::process::id()
        ));
        let f = fs::File::create(&p).expect("create tmp file");
        f.set_len(bytes).expect("size tmp file");
        TmpFile(p)
    }
    fn path(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TmpFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn create(name: &str, file: &str, bs: Option<u32>) -> Result<String, BdevError> {
    uring::create(uring::CreateParams {
        name: name.into(),
        filename: file.into(),
        block_size: bs,
        uuid: None,
        sqpoll: false,
    })
}

/// Data of `len` bytes where byte i is (i / 512 + seed) as u8, so misplaced
/// blocks show.
fn pattern(len: usize, seed: u8) -> IoData {
    let mut d = IoData::alloc(len).expect("buffers");
    let v: Vec<u8> = (0..len).map(|i| (i / 512) as u8 ^ seed).collect();
    d.copy_from_slice(0, &v);
    d
}

#[test]
fn data_round_trips_at_both_block_sizes_and_reaches_the_file() {
    for bs in [512u32, 4096] {
        let f = TmpFile::new(&format!("rw{bs}"), 4 << 20);
        let name = format!("U{bs}");
        let (n, path) = (name.clone(), f.path());
        let got = on_reactors(1, move |tx| {
            create(&n, &path, Some(bs)).expect("created");
            let desc = bdev::open(&n, true, |_| {}).unwrap();
            let ch = desc.channel();
            let b = bs as usize;
            // 300 KiB spans three buffers (128 + 128 + 44 KiB).
            let big = 300 * 1024 / b;
            let ch2 = ch.clone();
            run_all(
                &ch,
                vec![
                    IoRequest::write(1, 3, pattern(3 * b, 1), false),
                    IoRequest::write(64, big as u64, pattern(big * b, 2), true),
                    IoRequest::flush(0, 0),
                ],
                move |w| {
                    assert!(w.iter().all(|(s, _)| s.is_ok()), "{w:?}");
                    run_all(
                        &ch2,
                        vec![
                            IoRequest::read(0, 4, filled(4 * b, 0xff)),
                            IoRequest::read(64, big as u64, filled(big * b, 0)),
                        ],
                        move |r| {
                            let _keep = desc;
                            assert!(r.iter().all(|(s, _)| s.is_ok()), "{r:?}");
                            tx.send((bytes(&r[0].1.data), bytes(&r[1].1.data))).unwrap();
                        },
                    );
                },
            );
        });
        let b = bs as usize;
        assert!(got.0[..b].iter().all(|&x| x == 0), "block 0 untouched");
        assert_eq!(got.0[b..], bytes(&pattern(3 * b, 1))[..]);
        assert_eq!(got.1, bytes(&pattern(got.1.len(), 2)));
        // And the file holds it.
        let disk = fs::read(&f.0).unwrap();
        assert_eq!(disk[64 * b..64 * b + got.1.len()], got.1[..]);
    }
}

#[test]
fn unmap_and_write_zeroes_read_back_zeros_and_compare_works() {
    let f = TmpFile::new("unmap", 1 << 20);
    let path = f.path();
    let out = on_reactors(1, move |tx| {
        create("Uz", &path, Some(4096)).expect("created");
        let desc = bdev::open("Uz", true, |_| {}).unwrap();
        let b = desc.bdev().clone();
        assert!(b.supports(IoType::Unmap) && b.supports(IoType::WriteZeroes));
        assert!(b.backend().unmap_reads_zeroes(), "holes read back as zeros");
        let ch = desc.channel();
        let (ch2, ch3) = (ch.clone(), ch.clone());
        run_all(
            &ch,
            vec![IoRequest::write(0, 16, filled(16 * 4096, 0xab), false)],
            move |w| {
                assert!(w[0].0.is_ok());
                run_all(
                    &ch2,
                    vec![
                        IoRequest::unmap(2, 3),
                        IoRequest::write_zeroes(8, 2),
                        IoRequest::compare(12, 1, filled(4096, 0xab)),
                        IoRequest::compare(13, 1, filled(4096, 0xac)),
                    ],
                    move |r| {
                        assert!(r[0].0.is_ok() && r[1].0.is_ok(), "{r:?}");
                        assert!(r[2].0.is_ok(), "equal data compares");
                        assert!(
                            matches!(r[3].0, Err(IoError::Miscompare { offset: 0 })),
                            "{:?}",
                            r[3].0
                        );
                        run_all(
                            &ch3,
                            vec![IoRequest::read(0, 16, filled(16 * 4096, 0x55))],
                            move |r| {
                                let _keep = desc;
                                tx.send(bytes(&r[0].1.data)).unwrap();
                            },
                        );
                    },
                );
            },
        );
    });
    for blk in 0..16 {
        let zero = (2..5).contains(&blk) || (8..10).contains(&blk);
        let want = if zero { 0 } else { 0xab };
        assert!(
            out[blk * 4096..(blk + 1) * 4096].iter().all(|&x| x == want),
            "block {blk}"
        );
    }
}

#[test]
fn rescan_picks_up_a_grown_file() {
    let f = TmpFile::new("grow", 1 << 20);
    let path = f.path();
    let p2 = path.clone();
    let (before, after, read_ok) = on_reactors(1, move |tx| {
        create("Ug", &path, None).expect("created");
        let before = bdev::get("Ug").unwrap().num_blocks();
        fs::OpenOptions::new()
            .write(true)
            .open(&p2)
            .unwrap()
            .set_len(3 << 20)
            .unwrap();
        let after = uring::rescan("Ug").expect("rescan");
        let desc = bdev::open("Ug", false, |_| {}).unwrap();
        let ch = desc.channel();
        run_all(
            &ch,
            vec![IoRequest::read(after - 8, 8, filled(8 * 512, 1))],
            move |r| {
                let _keep = desc;
                tx.send((before, after, r[0].0.is_ok())).unwrap();
            },
        );
    });
    assert_eq!(before, 2048);
    assert_eq!(after, 6144);
    assert!(read_ok, "the new blocks are readable");
}

#[test]
fn bad_create_arguments_are_refused_with_reasons() {
    let f = TmpFile::new("bad", 1000 * 512 + 512);
    let path = f.path();
    let errs = on_reactors(1, move |tx| {
        let e = |r: Result<String, BdevError>| r.expect_err("refused").to_string();
        let v = vec![
            e(create("B0", "/nonexistent/ferrite", None)),
            e(create("B1", "/dev/shm", None)),
            e(create("B2", &path, Some(4096))),
            e(create("B3", &path, Some(1000))),
            e(create("B4", "/dev/null", None)),
        ];
        tx.send(v).unwrap();
    });
    assert!(errs[0].contains("No such file"), "{}", errs[0]);
    assert!(errs[1].contains("is a directory"), "{}", errs[1]);
    assert!(
        errs[2].contains("not a multiple of block_size"),
        "{}",
        errs[2]
    );
    assert!(errs[3].contains("block_size 1000"), "{}", errs[3]);
    assert!(errs[4].contains("neither"), "{}", errs[4]);
}

#[test]
fn delete_with_io_in_flight_completes_every_io_then_removes_the_bdev() {
    let f = TmpFile::new("del", 8 << 20);
    let path = f.path();
    let (statuses, gone) = on_reactors(1, move |tx| {
        create("Ud", &path, Some(4096)).expect("created");
        let desc = std::rc::Rc::new(std::cell::RefCell::new(Some(
            bdev::open("Ud", true, |_| {}).unwrap(),
        )));
        let ch = desc.borrow().as_ref().unwrap().channel();
        let reqs = (0..64)
            .map(|i| IoRequest::write(i * 8, 8, filled(8 * 4096, i as u8), i % 2 == 0))
            .collect();
        let d2 = desc.clone();
        run_all(&ch, reqs, move |r| {
            let statuses: Vec<bool> = r.iter().map(|(s, _)| s.is_ok()).collect();
            // The I/O is back: close, and let the delete finish.
            d2.borrow_mut().take();
            let tx = tx.clone();
            let check = move || tx.send((statuses, bdev::get("Ud").is_none())).unwrap();
            ferrite_reactor::register_timed_poller(
                "check",
                std::time::Duration::from_millis(50),
                {
                    let mut check = Some(check);
                    move || {
                        if let Some(c) = check.take() {
                            c();
                        }
                        ferrite_reactor::Poll::Idle
                    }
                },
            );
        });
        // Delete while all 64 writes are in flight.
        uring::delete("Ud", |r| r.expect("deleted"));
    });
    assert_eq!(statuses.len(), 64);
    assert!(statuses.iter().all(|&s| s), "in-flight I/O finished");
    assert!(gone, "the bdev is gone once its user closed it");
}

/// Writes one block and flushes it, `left` times in a row, then reports.
fn write_flush_loop(ch: ferrite_bdev::IoChannel, left: u32, done: Box<dyn FnOnce(bool)>) {
    if left == 0 {
        done(true);
        return;
    }
    let ch2 = ch.clone();
    run_all(
        &ch,
        vec![IoRequest::write(
            left as u64,
            1,
            filled(4096, left as u8),
            false,
        )],
        move |w| {
            if w[0].0.is_err() {
                done(false);
                return;
            }
            let ch3 = ch2.clone();
            run_all(&ch2, vec![IoRequest::flush(0, 0)], move |f| {
                if f[0].0.is_err() {
                    done(false);
                    return;
                }
                write_flush_loop(ch3, left - 1, done);
            });
        },
    );
}

/// A flush goes to the kernel's io-wq and takes the disk's time: the reactor falls
/// asleep meanwhile and must be woken by the ring's completion, or this hangs.
#[test]
fn a_sleeping_reactor_wakes_for_ring_completions() {
    let path = std::env::temp_dir().join(format!("ferrite-uring-sleep-{}", std::process::id()));
    fs::File::create(&path).unwrap().set_len(1 << 20).unwrap();
    let p = path.display().to_string();
    let (ok, slept) = on_reactors(1, move |tx| {
        create("Us", &p, Some(4096)).expect("created");
        let desc = bdev::open("Us", true, |_| {}).unwrap();
        let ch = desc.channel();
        let before = ferrite_reactor::local_stats().sleeps;
        write_flush_loop(
            ch,
            20,
            Box::new(move |ok| {
                let _keep = desc;
                let slept = ferrite_reactor::local_stats().sleeps - before;
                tx.send((ok, slept)).unwrap();
            }),
        );
    });
    let _ = fs::remove_file(&path);
    assert!(ok, "every write and flush succeeded");
    assert!(slept > 0, "the reactor slept during the flushes");
}
