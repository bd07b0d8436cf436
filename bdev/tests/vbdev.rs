//! The stacking vbdevs (split, delay, error) on real reactors.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{mpsc, Arc, Mutex};

use common::*;
use ferrite_bdev::modules::{delay, error, malloc, split};
use ferrite_bdev::{self as bdev, BdevError, IoCallback, IoError, IoRequest, IoStatus};

const MS: u64 = 1_000_000;

fn malloc(name: &str, blocks: u64, bs: u32) {
    malloc::create(malloc::CreateParams {
        name: Some(name.into()),
        num_blocks: blocks,
        block_size: bs,
        uuid: None,
    })
    .expect("malloc created");
}

fn split(base: &str, count: u32, mb: Option<u64>) -> Result<Vec<String>, BdevError> {
    split::create(split::CreateParams {
        base_bdev: base.into(),
        split_count: count,
        split_size_mb: mb,
    })
}

/// A delay bdev whose average and p99 latencies are equal.
fn delay(base: &str, name: &str, read_us: u64, write_us: u64) -> Result<String, BdevError> {
    delay::create(delay::CreateParams {
        base_bdev_name: base.into(),
        name: name.into(),
        avg_read_latency: read_us,
        p99_read_latency: read_us,
        avg_write_latency: write_us,
        p99_write_latency: write_us,
        uuid: None,
    })
}

fn inject(name: &str, io_type: &str, error_type: &str, num: u32) -> Result<(), BdevError> {
    error::inject_error(error::InjectErrorParams {
        name: name.into(),
        io_type: io_type.into(),
        error_type: error_type.into(),
        num,
    })
}

fn write(offset: u64, blocks: u64, byte: u8) -> IoRequest {
    IoRequest::write(offset, blocks, filled(blocks as usize * 512, byte), false)
}

fn read(offset: u64, blocks: u64) -> IoRequest {
    IoRequest::read(offset, blocks, filled(blocks as usize * 512, 0xee))
}

fn statuses<R>(v: &[(IoStatus, R)]) -> Vec<IoStatus> {
    v.iter().map(|(s, _)| *s).collect()
}

fn all(d: &[u8], byte: u8) -> bool {
    d.iter().all(|&b| b == byte)
}

/// Collects labelled results from several reactors; the one that completes the
/// set runs `then` with them, sorted by label.
struct Gather<T> {
    want: usize,
    got: Mutex<Vec<(String, T)>>,
    then: Mutex<Option<GatherDone<T>>>,
}

type GatherDone<T> = Box<dyn FnOnce(Vec<(String, T)>) + Send>;

impl<T: Send + 'static> Gather<T> {
    fn new(want: usize, then: impl FnOnce(Vec<(String, T)>) + Send + 'static) -> Arc<Self> {
        Arc::new(Gather {
            want,
            got: Mutex::new(Vec::new()),
            then: Mutex::new(Some(Box::new(then))),
        })
    }

    fn add(&self, items: impl IntoIterator<Item = (String, T)>) {
        let full = {
            let mut got = self.got.lock().unwrap();
            got.extend(items);
            if got.len() == self.want {
                let mut v = std::mem::take(&mut *got);
                v.sort_by(|a, b| a.0.cmp(&b.0));
                self.then.lock().unwrap().take().map(|f| (f, v))
            } else {
                None
            }
        };
        if let Some((f, v)) = full {
            f(v);
        }
    }
}

// ---- split ----

#[test]
fn split_parts_map_to_the_right_base_blocks() {
    let (st, data, info) = on_reactors(1, |tx| {
        malloc("spm", 100, 512);
        let names = split("spm", 3, None).unwrap();
        assert_eq!(names, ["spmp0", "spmp1", "spmp2"]);
        for n in &names {
            let b = bdev::get(n).unwrap();
            assert_eq!((b.num_blocks(), b.block_size()), (33, 512), "{n}");
            assert_eq!(b.module(), "split");
        }
        let p0 = bdev::get("spmp0").unwrap();
        let p1 = bdev::get("spmp1").unwrap();
        let cfg = p0
            .backend()
            .config(&p0)
            .expect("part 0 recreates the split");
        assert!(p1.backend().config(&p1).is_none(), "only part 0 is saved");
        let info = (
            cfg,
            p1.info()["driver_specific"].clone(),
            bdev::get("spm").unwrap().claimed_by(),
        );

        let d1 = bdev::open("spmp1", true, |_| {}).unwrap();
        let d2 = bdev::open("spmp2", true, |_| {}).unwrap();
        let base = bdev::open("spm", false, |_| {}).unwrap();
        let (c1, c2, cb) = (d1.channel(), d2.channel(), base.channel());
        let rec: Rc<dyn IoCallback> = Rc::new(Recorder::default());
        let oor = c1.submit(read(32, 2), &rec, 0).err().map(|(e, _)| e);
        assert_eq!(oor, Some(IoError::OutOfRange), "a part ends where it ends");
        run_all(&c1, vec![write(2, 2, 0xab)], move |w1| {
            run_all(
                &c2,
                vec![write(0, 1, 0xcd), write(32, 1, 0xef)],
                move |w2| {
                    run_all(&cb, vec![read(35, 2), read(66, 1), read(98, 2)], move |r| {
                        drop((d1, d2, base));
                        let mut st = statuses(&w1);
                        st.extend(statuses(&w2));
                        st.extend(statuses(&r));
                        let data: Vec<Vec<u8>> = r.iter().map(|(_, q)| bytes(&q.data)).collect();
                        tx.send((st, data, info)).unwrap();
                    });
                },
            );
        });
    });
    assert!(st.iter().all(|s| s.is_ok()), "{st:?}");
    assert!(all(&data[0], 0xab), "part 1 block 2 is base block 35");
    assert!(all(&data[1], 0xcd), "part 2 block 0 is base block 66");
    assert!(
        all(&data[2][..512], 0xef),
        "part 2 block 32 is base block 98"
    );
    assert!(all(&data[2][512..], 0), "the remainder block is unused");
    let (cfg, driver, claim) = info;
    assert_eq!(cfg["method"], "bdev_split_create");
    assert_eq!(
        cfg["params"],
        serde_json::json!({"base_bdev": "spm", "split_count": 3})
    );
    assert_eq!(driver["split"]["base_bdev"], "spm");
    assert_eq!(driver["split"]["offset_blocks"], 33);
    assert_eq!(claim.as_deref(), Some("split"));
}

#[test]
fn split_size_mb_sets_the_part_size() {
    let (sizes, cfg, too_big) = on_reactors(1, |tx| {
        malloc("sps", 4096, 512); // 2 MiB
        let too_big = split("sps", 3, Some(1)).unwrap_err();
        assert_eq!(
            bdev::get("sps").unwrap().claimed_by(),
            None,
            "failure released"
        );
        let names = split("sps", 2, Some(1)).unwrap();
        let sizes: Vec<u64> = names
            .iter()
            .map(|n| bdev::get(n).unwrap().num_blocks())
            .collect();
        let p0 = bdev::get("spsp0").unwrap();
        tx.send((sizes, p0.backend().config(&p0).unwrap(), too_big))
            .unwrap();
    });
    assert_eq!(sizes, [2048, 2048]);
    assert_eq!(cfg["params"]["split_size_mb"], 1);
    assert!(matches!(too_big, BdevError::Invalid(_)), "{too_big:?}");
}

#[test]
fn split_refuses_bad_requests_and_releases_the_base() {
    let errs = on_reactors(1, |tx| {
        malloc("spe", 16, 512);
        malloc("spep1", 16, 512); // takes the name of part 1
        let e = vec![
            split("spe_missing", 2, None).unwrap_err(),
            split("spe", 0, None).unwrap_err(),
            split("spe", 17, None).unwrap_err(),
            split("spe", 2, None).unwrap_err(),
        ];
        assert!(bdev::get("spep0").is_none(), "no part left behind");
        let base = bdev::get("spe").unwrap();
        assert_eq!(base.claimed_by(), None, "the claim went with the failure");
        assert_eq!(base.open_count(), 0);
        tx.send(e).unwrap();
    });
    assert!(matches!(errs[0], BdevError::NotFound(_)), "{:?}", errs[0]);
    assert!(matches!(errs[1], BdevError::Invalid(_)), "{:?}", errs[1]);
    assert!(matches!(errs[2], BdevError::Invalid(_)), "{:?}", errs[2]);
    assert!(matches!(errs[3], BdevError::Exists(_)), "{:?}", errs[3]);
}

#[test]
fn split_claims_its_base_until_deleted() {
    let (errs, after) = on_reactors(1, |tx| {
        malloc("spc", 64, 512);
        split("spc", 2, None).unwrap();
        let mut errs = vec![
            bdev::open("spc", true, |_| {}).err().unwrap(),
            split("spc", 4, None).unwrap_err(),
            delay("spc", "spc_delay", 1, 1).unwrap_err(),
            error::create(error::CreateParams {
                base_name: "spc".into(),
                uuid: None,
            })
            .unwrap_err(),
        ];
        // Deletes of another module's bdevs are refused.
        let (etx, erx) = mpsc::channel();
        for f in [malloc::delete, delay::delete, error::delete] {
            let etx = etx.clone();
            f("spcp0", move |r: Result<(), BdevError>| {
                etx.send(r.unwrap_err()).unwrap()
            });
        }
        split::delete("spcp0", move |r| etx.send(r.unwrap_err()).unwrap());
        errs.extend(erx.try_iter());
        assert!(bdev::get("spcp0").is_some());
        split::delete("spc", move |res| {
            res.unwrap();
            let gone = bdev::get("spcp0").is_none() && bdev::get("spcp1").is_none();
            let claim = bdev::get("spc").unwrap().claimed_by();
            let writer = bdev::open("spc", true, |_| {}).map(drop);
            malloc::delete("spc", move |res| {
                tx.send((errs, (gone, claim, writer, res, bdev::get("spc").is_none())))
                    .unwrap();
            });
        });
    });
    assert_eq!(errs.len(), 8);
    assert!(
        errs[..4].iter().all(|e| matches!(e, BdevError::Busy(_))),
        "{errs:?}"
    );
    assert!(
        errs[4..]
            .iter()
            .all(|e| matches!(e, BdevError::NotFound(_))),
        "{errs:?}"
    );
    let (gone, claim, writer, deleted, base_gone) = after;
    assert!(gone, "parts removed");
    assert_eq!(claim, None, "claim released");
    assert_eq!(writer, Ok(()), "the base opens for writing again");
    assert_eq!(deleted, Ok(()));
    assert!(base_gone);
}

#[test]
fn removing_a_base_removes_the_vbdevs_above_it_first() {
    let (refused, told, res, gone) = on_reactors(2, |tx| {
        malloc("hr", 64, 512);
        delay("hr", "hr_d", 0, 0).unwrap();
        split("hr_d", 2, None).unwrap();
        // A user of a part closes when told the part is going away.
        let holder: Rc<RefCell<Option<bdev::Desc>>> = Default::default();
        let told = Arc::new(Mutex::new(false));
        let (h2, t2) = (holder.clone(), told.clone());
        let d = bdev::open("hr_dp1", true, move |_| {
            *t2.lock().unwrap() = true;
            h2.borrow_mut().take();
        })
        .unwrap();
        let _ch = d.channel();
        *holder.borrow_mut() = Some(d);
        malloc::delete("hr", move |refused| {
            // The device itself goes away (hot-remove): everything above follows.
            bdev::unregister("hr", move |res| {
                let gone = ["hr_dp0", "hr_dp1", "hr_d", "hr"]
                    .iter()
                    .all(|n| bdev::get(n).is_none());
                let told = *told.lock().unwrap();
                tx.send((refused, told, res, gone)).unwrap();
            });
        });
    });
    assert!(matches!(refused, Err(BdevError::Busy(_))), "{refused:?}");
    assert!(told, "the part's user was told");
    assert_eq!(res, Ok(()));
    assert!(gone);
}

#[test]
fn compare_and_write_through_a_split_part() {
    let (st, data) = on_reactors(1, |tx| {
        malloc("spw", 64, 512);
        split("spw", 2, None).unwrap();
        let part = bdev::open("spwp1", true, |_| {}).unwrap();
        let base = bdev::open("spw", false, |_| {}).unwrap();
        let (ch, cb) = (part.channel(), base.channel());
        let ch2 = ch.clone();
        run_all(&ch, vec![write(4, 2, 7)], move |w| {
            assert!(w[0].0.is_ok());
            let mut good = filled(2048, 7);
            good.copy_from_slice(1024, &[1; 1024]);
            let mut bad = filled(2048, 7);
            bad.copy_from_slice(600, &[9]);
            run_all(
                &ch2,
                vec![
                    IoRequest::compare_and_write(4, 2, good, false),
                    IoRequest::compare_and_write(4, 2, bad, false),
                    IoRequest::compare(4, 2, filled(1024, 1)),
                ],
                move |r| {
                    let st = statuses(&r);
                    run_all(&cb, vec![read(36, 2)], move |rd| {
                        drop((part, base));
                        tx.send((st, bytes(&rd[0].1.data))).unwrap();
                    });
                },
            );
        });
    });
    assert_eq!(st[0], Ok(()));
    // The second compares against what the first wrote.
    assert_eq!(st[1], Err(IoError::Miscompare { offset: 0 }));
    assert_eq!(st[2], Ok(()));
    assert!(all(&data, 1), "written at base block 32 + 4");
}

// ---- delay ----

#[test]
fn delay_waits_at_least_its_latency_and_keeps_data() {
    let (w, r, r2, info) = on_reactors(1, |tx| {
        malloc("dl", 64, 512);
        assert_eq!(delay("dl", "dl_d", 2000, 2000).unwrap(), "dl_d");
        assert_eq!(
            bdev::get("dl").unwrap().claimed_by().as_deref(),
            Some("delay")
        );
        let d = bdev::open("dl_d", true, |_| {}).unwrap();
        let ch = d.channel();
        let (ch2, ch3) = (ch.clone(), ch.clone());
        run_timed(&ch, vec![write(8, 4, 0x42)], move |w| {
            let w = (w[0].0, w[0].2);
            run_timed(&ch2, vec![read(8, 4)], move |r| {
                let r = (r[0].0, bytes(&r[0].1.data), r[0].2);
                for t in ["avg_read", "p99_read"] {
                    delay::update_latency(delay::UpdateLatencyParams {
                        delay_bdev_name: "dl_d".into(),
                        latency_type: t.into(),
                        latency_us: 5000,
                    })
                    .unwrap();
                }
                run_timed(&ch3, vec![read(8, 1)], move |r2| {
                    let info = bdev::get("dl_d").unwrap().info()["driver_specific"].clone();
                    drop(d);
                    tx.send((w, r, (r2[0].0, r2[0].2), info)).unwrap();
                });
            });
        });
    });
    assert_eq!(w.0, Ok(()));
    assert!(ns(w.1) >= 2 * MS, "write took {} ns", ns(w.1));
    assert_eq!(r.0, Ok(()));
    assert!(all(&r.1, 0x42), "data came through");
    assert!(ns(r.2) >= 2 * MS, "read took {} ns", ns(r.2));
    assert_eq!(r2.0, Ok(()));
    assert!(
        ns(r2.1) >= 5 * MS,
        "read after the update took {} ns",
        ns(r2.1)
    );
    assert_eq!(info["delay"]["avg_read_latency"], 5000);
    assert_eq!(info["delay"]["p99_write_latency"], 2000);
    assert_eq!(info["delay"]["base_bdev_name"], "dl");
}

#[test]
fn delay_gives_one_read_in_a_hundred_the_p99_latency() {
    let took = on_reactors(1, |tx| {
        malloc("dp", 128, 512);
        delay::create(delay::CreateParams {
            base_bdev_name: "dp".into(),
            name: "dp_d".into(),
            avg_read_latency: 0,
            p99_read_latency: 3000,
            avg_write_latency: 0,
            p99_write_latency: 0,
            uuid: None,
        })
        .unwrap();
        let d = bdev::open("dp_d", false, |_| {}).unwrap();
        let reqs = (0..100).map(|i| read(i, 1)).collect();
        run_timed(&d.channel(), reqs, move |r| {
            assert!(r.iter().all(|(s, ..)| s.is_ok()));
            drop(d);
            tx.send(r.iter().map(|(.., t)| *t).collect::<Vec<u64>>())
                .unwrap();
        });
    });
    let slow = took[99];
    assert!(ns(slow) >= 3 * MS, "the 100th read took {} ns", ns(slow));
    assert!(took[..99].iter().all(|&t| t <= slow));
}

#[test]
fn delay_reset_aborts_queued_io_on_every_reactor() {
    // Latencies of 10 s: only the reset can end these I/Os in time.
    let (results, base_data) = on_reactors(2, |tx| {
        malloc("dr", 64, 512);
        delay("dr", "dr_d", 10_000_000, 10_000_000).unwrap();
        let done = Gather::new(5, move |v: Vec<(String, IoStatus)>| {
            let check = Box::new(move || {
                let base = bdev::open("dr", false, |_| {}).unwrap();
                run_all(&base.channel(), vec![read(0, 8)], move |r| {
                    drop(base);
                    tx.send((v, bytes(&r[0].1.data))).unwrap();
                });
            });
            ferrite_reactor::send(0, check).unwrap();
        });
        let g1 = done.clone();
        let on_one = Box::new(move || {
            let d = bdev::open("dr_d", true, |_| {}).unwrap();
            run_all(&d.channel(), vec![write(0, 1, 1)], move |r| {
                drop(d);
                g1.add([("r1 write".to_string(), r[0].0)]);
            });
            // Queued on reactor 1; now reset from reactor 0.
            let back = Box::new(move || {
                let d = bdev::open("dr_d", true, |_| {}).unwrap();
                let ch = d.channel();
                let g0 = done.clone();
                run_all(
                    &ch,
                    vec![write(1, 1, 2), write(2, 1, 3), read(3, 1)],
                    move |r| {
                        g0.add(
                            r.iter()
                                .enumerate()
                                .map(|(i, (s, _))| (format!("r0 io{i}"), *s)),
                        );
                    },
                );
                run_all(&ch, vec![IoRequest::reset()], move |r| {
                    drop(d);
                    done.add([("reset".to_string(), r[0].0)]);
                });
            });
            ferrite_reactor::send(0, back).unwrap();
        });
        ferrite_reactor::send(1, on_one).unwrap();
    });
    let expect: Vec<(String, IoStatus)> = vec![
        ("r0 io0".into(), Err(IoError::Aborted)),
        ("r0 io1".into(), Err(IoError::Aborted)),
        ("r0 io2".into(), Err(IoError::Aborted)),
        ("r1 write".into(), Err(IoError::Aborted)),
        ("reset".into(), Ok(())),
    ];
    assert_eq!(results, expect);
    assert!(all(&base_data, 0), "aborted writes wrote nothing");
}

#[test]
fn delay_refuses_bad_requests() {
    let errs = on_reactors(1, |tx| {
        malloc("dx", 16, 512);
        malloc("dx_taken", 16, 512);
        let mut e = vec![
            delay::create(delay::CreateParams {
                base_bdev_name: "dx".into(),
                name: "dx_d".into(),
                avg_read_latency: 10,
                p99_read_latency: 5,
                avg_write_latency: 1,
                p99_write_latency: 1,
                uuid: None,
            })
            .unwrap_err(),
            delay("dx_missing", "dx_d", 1, 1).unwrap_err(),
            delay("dx", "dx_taken", 1, 1).unwrap_err(),
        ];
        assert_eq!(bdev::get("dx").unwrap().claimed_by(), None);
        delay("dx", "dx_d", 1, 1).unwrap();
        e.push(delay("dx", "dx_d2", 1, 1).unwrap_err());
        e.push(
            delay::update_latency(delay::UpdateLatencyParams {
                delay_bdev_name: "dx_d".into(),
                latency_type: "median_read".into(),
                latency_us: 1,
            })
            .unwrap_err(),
        );
        e.push(
            delay::update_latency(delay::UpdateLatencyParams {
                delay_bdev_name: "dx".into(),
                latency_type: "avg_read".into(),
                latency_us: 1,
            })
            .unwrap_err(),
        );
        let cfg = {
            let b = bdev::get("dx_d").unwrap();
            b.backend().config(&b).unwrap()
        };
        delay::delete("dx_d", move |r| {
            r.unwrap();
            assert_eq!(bdev::get("dx").unwrap().claimed_by(), None);
            tx.send((e, cfg)).unwrap();
        });
    });
    let (e, cfg) = errs;
    assert!(
        matches!(e[0], BdevError::Invalid(_)),
        "p99 < avg: {:?}",
        e[0]
    );
    assert!(matches!(e[1], BdevError::NotFound(_)), "{:?}", e[1]);
    assert!(matches!(e[2], BdevError::Exists(_)), "{:?}", e[2]);
    assert!(matches!(e[3], BdevError::Busy(_)), "{:?}", e[3]);
    assert!(
        matches!(&e[4], BdevError::Invalid(m) if m.contains("median_read")),
        "{:?}",
        e[4]
    );
    assert!(matches!(e[5], BdevError::NotFound(_)), "{:?}", e[5]);
    assert_eq!(cfg["method"], "bdev_delay_create");
    let p = &cfg["params"];
    assert_eq!(
        (&p["name"], &p["base_bdev_name"]),
        (&"dx_d".into(), &"dx".into())
    );
    // What save_config writes is accepted back by create.
    serde_json::from_value::<delay::CreateParams>(p.clone()).unwrap();
}

// ---- error ----

#[test]
fn error_injection_fails_exactly_num_of_one_type() {
    let (first, second, third, info, cleared) = on_reactors(1, |tx| {
        malloc("er", 64, 512);
        let name = error::create(error::CreateParams {
            base_name: "er".into(),
            uuid: None,
        })
        .unwrap();
        assert_eq!(name, "EE_er");
        inject("EE_er", "write", "failure", 3).unwrap();
        let info = bdev::get("EE_er").unwrap().info()["driver_specific"].clone();
        let d = bdev::open("EE_er", true, |_| {}).unwrap();
        let ch = d.channel();
        let (ch2, ch3) = (ch.clone(), ch.clone());
        let mut batch: Vec<IoRequest> = (0..5).map(|i| write(i, 1, 0x11)).collect();
        batch.push(read(0, 1));
        batch.push(IoRequest::flush(0, 64));
        run_all(&ch, batch, move |r1| {
            let first = statuses(&r1);
            inject("EE_er", "read", "nomem", 1).unwrap();
            run_all(
                &ch2,
                vec![write(5, 1, 0x11), read(0, 1), read(1, 1)],
                move |r2| {
                    let second = statuses(&r2);
                    inject("EE_er", "all", "failure", 1).unwrap();
                    inject("EE_er", "unmap", "failure", 0).unwrap();
                    run_all(
                        &ch3,
                        vec![
                            read(0, 1),
                            write(0, 1, 1),
                            IoRequest::unmap(0, 1),
                            read(0, 1),
                        ],
                        move |r3| {
                            let third = statuses(&r3);
                            inject("EE_er", "clear", "failure", 1).unwrap();
                            let b = bdev::get("EE_er").unwrap();
                            let cleared =
                                b.info()["driver_specific"]["error"]["injections"].clone();
                            drop(d);
                            tx.send((first, second, third, info, cleared)).unwrap();
                        },
                    );
                },
            );
        });
    });
    let eio = Err(IoError::Device(libc::EIO));
    assert_eq!(first, [eio, eio, eio, Ok(()), Ok(()), Ok(()), Ok(())]);
    assert_eq!(second, [Ok(()), Err(IoError::NoResources), Ok(())]);
    // "all" arms every type once; unmap was disarmed again.
    assert_eq!(third, [eio, eio, Ok(()), Ok(())]);
    assert_eq!(
        info["error"]["injections"],
        serde_json::json!([{"io_type": "write", "error_type": "failure", "num": 3}])
    );
    assert_eq!(info["error"]["base_bdev"], "er");
    assert_eq!(cleared, serde_json::json!([]));
}

#[test]
fn error_injection_is_exact_across_reactors() {
    let results = on_reactors(2, |tx| {
        malloc("erx", 64, 512);
        error::create(error::CreateParams {
            base_name: "erx".into(),
            uuid: None,
        })
        .unwrap();
        inject("EE_erx", "write", "failure", 10).unwrap();
        let gather = Gather::new(2 * 16, move |v: Vec<(String, IoStatus)>| {
            tx.send(v).unwrap();
        });
        let submit = move |reactor: usize| {
            let g = gather.clone();
            Box::new(move || {
                let d = bdev::open("EE_erx", true, |_| {}).unwrap();
                let reqs = (0..16).map(|i| write(i, 1, 5)).collect();
                run_all(&d.channel(), reqs, move |r| {
                    drop(d);
                    g.add(
                        r.iter()
                            .enumerate()
                            .map(|(i, (s, _))| (format!("r{reactor} io{i:02}"), *s)),
                    );
                });
            })
        };
        ferrite_reactor::send(1, submit(1)).unwrap();
        ferrite_reactor::send(0, submit(0)).unwrap();
    });
    let failed = results
        .iter()
        .filter(|(_, s)| *s == Err(IoError::Device(libc::EIO)))
        .count();
    let ok = results.iter().filter(|(_, s)| s.is_ok()).count();
    assert_eq!((failed, ok), (10, 22), "{results:?}");
}

#[test]
fn error_refuses_bad_requests() {
    let e = on_reactors(1, |tx| {
        malloc("ex", 16, 512);
        let create = |base: &str| {
            error::create(error::CreateParams {
                base_name: base.into(),
                uuid: None,
            })
        };
        let mut e = vec![create("ex_missing").unwrap_err()];
        create("ex").unwrap();
        e.push(create("ex").unwrap_err());
        e.push(inject("EE_ex", "readv", "failure", 1).unwrap_err());
        e.push(inject("EE_ex", "read", "corrupt_data", 1).unwrap_err());
        e.push(inject("ex", "read", "failure", 1).unwrap_err());
        e.push(inject("EE_nope", "read", "failure", 1).unwrap_err());
        let cfg = {
            let b = bdev::get("EE_ex").unwrap();
            b.backend().config(&b).unwrap()
        };
        error::delete("EE_ex", move |r| {
            r.unwrap();
            // Released: the base can be deleted now.
            malloc::delete("ex", move |r| {
                r.unwrap();
                tx.send((e, cfg)).unwrap();
            });
        });
    });
    let (e, cfg) = e;
    assert!(matches!(e[0], BdevError::NotFound(_)), "{:?}", e[0]);
    assert!(matches!(e[1], BdevError::Exists(_)), "{:?}", e[1]);
    assert!(
        matches!(&e[2], BdevError::Invalid(m) if m.contains("readv")),
        "{:?}",
        e[2]
    );
    assert!(
        matches!(&e[3], BdevError::Invalid(m) if m.contains("corrupt_data")),
        "{:?}",
        e[3]
    );
    assert!(matches!(e[4], BdevError::NotFound(_)), "{:?}", e[4]);
    assert!(matches!(e[5], BdevError::NotFound(_)), "{:?}", e[5]);
    assert_eq!(cfg["method"], "bdev_error_create");
    assert_eq!(cfg["params"]["base_name"], "ex");
    serde_json::from_value::<error::CreateParams>(cfg["params"].clone()).unwrap();
}

// ---- stacks ----

#[test]
fn vbdevs_stack_and_come_apart_in_order() {
    let (st, data, gone) = on_reactors(2, |tx| {
        malloc("stk", 64, 512);
        delay("stk", "stk_d", 100, 100).unwrap();
        assert_eq!(split("stk_d", 2, None).unwrap(), ["stk_dp0", "stk_dp1"]);
        let ee = error::create(error::CreateParams {
            base_name: "stk_dp0".into(),
            uuid: None,
        })
        .unwrap();
        assert_eq!(ee, "EE_stk_dp0");
        let top1 = bdev::open("stk_dp1", true, |_| {}).unwrap();
        let top0 = bdev::open("EE_stk_dp0", true, |_| {}).unwrap();
        let (c1, c0) = (top1.channel(), top0.channel());
        run_all(&c1, vec![write(3, 1, 0x3c)], move |w1| {
            run_all(&c0, vec![write(1, 2, 0x1d)], move |w0| {
                drop((top0, top1));
                let mut st = statuses(&w1);
                st.extend(statuses(&w0));
                let base = bdev::open("stk", false, |_| {}).unwrap();
                run_all(&base.channel(), vec![read(35, 1), read(1, 2)], move |r| {
                    drop(base);
                    let data: Vec<Vec<u8>> = r.iter().map(|(_, q)| bytes(&q.data)).collect();
                    error::delete("EE_stk_dp0", move |r| {
                        r.unwrap();
                        split::delete("stk_d", move |r| {
                            r.unwrap();
                            delay::delete("stk_d", move |r| {
                                r.unwrap();
                                malloc::delete("stk", move |r| {
                                    r.unwrap();
                                    let gone = ["EE_stk_dp0", "stk_dp0", "stk_dp1", "stk_d", "stk"]
                                        .iter()
                                        .all(|n| bdev::get(n).is_none());
                                    tx.send((st, data, gone)).unwrap();
                                });
                            });
                        });
                    });
                });
            });
        });
    });
    assert!(st.iter().all(|s| s.is_ok()), "{st:?}");
    assert!(all(&data[0], 0x3c), "split part 1 block 3 is base block 35");
    assert!(
        all(&data[1], 0x1d),
        "error over part 0 block 1 is base block 1"
    );
    assert!(gone);
}
