//! Task management: tasks kept in flight by a delay bdev, aborted by ABORT
//! TASK, ABORT TASK SET, CLEAR TASK SET, LUN reset, target reset and I_T nexus
//! loss.

mod harness;

use ferrite_lib::scsi::{status, tmf, TmfResponse};
use harness::*;

const BS: u32 = 512;
const BUS_DEVICE_RESET: u16 = 0x2903;
const POWER_ON: u16 = 0x2900;
const COMMANDS_CLEARED: u16 = 0x2f00;

/// LUN 0 over a delay bdev holding every I/O 150 ms; `ports` ports.
fn slow_lun(ports: usize) -> impl FnOnce() -> Env + Send + 'static {
    move || {
        let base = malloc_bdev(2048, BS);
        let slow = delay_bdev(&base, 150_000);
        env_one(&[(0, slow)], ports)
    }
}

fn clear_uas(ports: usize) -> Vec<Step> {
    (0..ports).map(|p| Step::Exec(p, tur(0))).collect()
}

#[test]
fn abort_task_waits_for_the_task_in_flight() {
    let r = run(slow_lun(1), |_| {
        let mut s = clear_uas(1);
        s.extend([
            Step::Start(0, tagged(write10(0, 0, &[9; 4096], BS), 0x77)), // 1
            Step::Tmf(0, Tmf::AbortTask { lun: 0, tag: 0x77 }),          // 2
            Step::Tmf(0, Tmf::AbortTask { lun: 0, tag: 0x99 }),          // 3
            Step::Tmf(0, Tmf::AbortTask { lun: 5, tag: 0x77 }),          // 4
            Step::Start(0, tagged(read10(0, 0, 8, BS), 1)),              // 5
            Step::Start(0, tagged(read10(0, 8, 8, BS), 2)),              // 6
            Step::Tmf(0, Tmf::AbortTaskSet { lun: 0 }),                  // 7
            Step::Exec(0, read10(0, 0, 1, BS)),                          // 8
        ]);
        s
    });
    let w = r.at(1);
    assert!(w.aborted && w.status == status::TASK_ABORTED, "{w:?}");
    assert_eq!(r.tmf(2), TmfResponse::Complete);
    assert!(
        r.position(1) < r.position(2),
        "the TMF ended before its task"
    );
    assert_eq!(r.tmf(3), TmfResponse::TaskNotFound);
    assert_eq!(r.tmf(4), TmfResponse::LunNotFound);
    for i in [5, 6] {
        assert!(r.at(i).aborted && r.at(i).data.is_empty());
        assert!(r.position(i) < r.position(7));
    }
    assert_eq!(r.tmf(7), TmfResponse::Complete);
    r.at(8).good();
}

#[test]
fn lun_reset_aborts_everything_and_releases_reserve6() {
    let r = run(slow_lun(2), |_| {
        let mut s = clear_uas(2);
        s.extend([
            Step::Exec(1, reserve6(0)),                                // 2
            Step::Start(1, tagged(write10(0, 16, &[1; 1024], BS), 5)), // 3
            Step::Start(0, tagged(read10(0, 0, 1, BS), 6)),            // 4: conflicts
            Step::Tmf(0, Tmf::LunReset { lun: 0 }),                    // 5
            Step::Exec(0, tur(0)),                                     // 6
            Step::Exec(1, tur(0)),                                     // 7
            Step::Exec(0, reserve6(0)),                                // 8
            Step::Exec(0, release6(0)),                                // 9
            Step::Exec(0, prout_register(0x42)),                       // 10
            Step::Tmf(1, Tmf::LunReset { lun: 0 }),                    // 11
            Step::Exec(0, tur(0)),                                     // 12
            Step::Exec(0, prin(0, 0, 64)),                             // 13
        ]);
        s
    });
    r.at(2).good();
    let w = r.at(3);
    assert!(w.aborted, "{w:?}");
    r.at(4).conflict();
    assert_eq!(r.tmf(5), TmfResponse::Complete);
    assert!(r.position(3) < r.position(5));
    r.at(6).ua(BUS_DEVICE_RESET);
    r.at(7).ua(BUS_DEVICE_RESET);
    r.at(8).good();
    r.at(9).good();
    r.at(10).good();
    assert_eq!(r.tmf(11), TmfResponse::Complete);
    r.at(12).ua(BUS_DEVICE_RESET);
    // Registrations survive a LUN reset.
    assert_eq!(keys(r.at(13).good()).1, vec![0x42]);
}

fn prout_register(key: u64) -> ferrite_lib::scsi::Task {
    prout(0, 0, 0, 0, key, 0)
}

#[test]
fn clear_task_set_with_and_without_tas() {
    let r = run(slow_lun(2), |_| {
        let mut s = clear_uas(2);
        s.extend([
            Step::Do(Box::new(|env: &mut Env| {
                tmf::set_tas(&env.devs[0].luns()[0], true);
            })), // 2
            Step::Start(1, tagged(write10(0, 0, &[1; 512], BS), 1)), // 3
            Step::Start(0, tagged(write10(0, 1, &[1; 512], BS), 2)), // 4
            Step::Tmf(0, Tmf::ClearTaskSet { lun: 0 }),              // 5
            Step::Exec(1, tur(0)),                                   // 6
            Step::Do(Box::new(|env: &mut Env| {
                tmf::set_tas(&env.devs[0].luns()[0], false);
            })), // 7
            Step::Start(1, tagged(write10(0, 0, &[1; 512], BS), 3)), // 8
            Step::Tmf(0, Tmf::ClearTaskSet { lun: 0 }),              // 9
            Step::Exec(1, tur(0)),                                   // 10
            Step::Exec(0, tur(0)),                                   // 11
        ]);
        s
    });
    // TAS: the other nexus's task ends with TASK ABORTED, to be answered.
    let other = r.at(3);
    assert!(
        !other.aborted && other.status == status::TASK_ABORTED,
        "{other:?}"
    );
    // The requester's own task ends silently.
    assert!(r.at(4).aborted);
    assert_eq!(r.tmf(5), TmfResponse::Complete);
    r.at(6).good();
    // No TAS: silently, and COMMANDS CLEARED BY ANOTHER INITIATOR.
    assert!(r.at(8).aborted);
    assert_eq!(r.tmf(9), TmfResponse::Complete);
    r.at(10).ua(COMMANDS_CLEARED);
    r.at(11).good();
}

#[test]
fn target_reset_covers_every_lun() {
    let r = run(
        || {
            let a = malloc_bdev(256, BS);
            let b = malloc_bdev(256, BS);
            env_one(&[(0, a), (1, b)], 2)
        },
        |_| {
            vec![
                Step::Exec(0, tur(0)),          // 0
                Step::Exec(0, tur(1)),          // 1
                Step::Exec(1, tur(0)),          // 2
                Step::Exec(1, tur(1)),          // 3
                Step::Exec(0, reserve6(0)),     // 4
                Step::Exec(0, reserve6(1)),     // 5
                Step::Tmf(1, Tmf::TargetReset), // 6
                Step::Exec(1, tur(0)),          // 7
                Step::Exec(1, tur(1)),          // 8
                Step::Exec(1, reserve6(0)),     // 9
                Step::Exec(1, reserve6(1)),     // 10
                Step::Exec(0, tur(1)),          // 11
            ]
        },
    );
    r.at(4).good();
    r.at(5).good();
    assert_eq!(r.tmf(6), TmfResponse::Complete);
    r.at(7).ua(POWER_ON);
    r.at(8).ua(POWER_ON);
    r.at(9).good();
    r.at(10).good();
    r.at(11).ua(POWER_ON);
}

#[test]
fn nexus_loss_aborts_its_tasks_and_releases_reserve6() {
    let r = run(slow_lun(2), |_| {
        let mut s = clear_uas(2);
        s.extend([
            Step::Exec(0, reserve6(0)),                              // 2
            Step::Start(0, tagged(write10(0, 0, &[1; 512], BS), 1)), // 3
            Step::Start(1, tagged(write10(0, 1, &[1; 512], BS), 2)), // 4: conflicts
            Step::Tmf(0, Tmf::NexusLoss),                            // 5
            Step::Exec(1, reserve6(0)),                              // 6
            Step::Exec(1, release6(0)),                              // 7
        ]);
        s
    });
    r.at(2).good();
    assert!(r.at(3).aborted);
    r.at(4).conflict();
    assert_eq!(r.tmf(5), TmfResponse::Complete);
    assert!(r.position(3) < r.position(5));
    r.at(6).good();
    r.at(7).good();
}

mod across_reactors {
    //! A LUN reset on reactor 0 aborting a task of a nexus on reactor 1, and a
    //! persistent reservation taken on one reactor conflicting on the other.

    use std::any::Any;
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    use ferrite_lib::scsi::{Nexus, ScsiDev, ScsiPort, Task, TaskCallback, TmfResponse};
    use ferrite_reactor::{Runtime, RuntimeConfig};

    use super::harness::{delay_bdev, malloc_bdev, nexus, port, prout, tagged, tur, write10};

    #[derive(Debug)]
    enum Msg {
        Task(&'static str, u8, bool),
        Tmf(TmfResponse),
        Dropped,
    }

    thread_local! {
        static KEEP: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
        static PORT: RefCell<Option<ScsiPort>> = const { RefCell::new(None) };
    }

    /// Reports each task on the channel, named in the order they end.
    struct Report {
        tx: mpsc::Sender<Msg>,
        names: RefCell<Vec<&'static str>>,
    }

    impl TaskCallback for Report {
        fn task_done(&self, _tag: u64, task: Task) {
            let name = self.names.borrow_mut().remove(0);
            let _ = self.tx.send(Msg::Task(name, task.status, task.aborted));
        }
    }

    fn exec(task: Task, cb: &Rc<dyn TaskCallback>) {
        PORT.with(|p| p.borrow_mut().as_mut().unwrap().execute(task, cb, 0));
    }

    #[test]
    fn lun_reset_reaches_a_task_on_another_reactor() {
        let cores = ferrite_reactor::available_cores();
        if cores.len() < 2 {
            eprintln!("one core only: skipped");
            return;
        }
        let config = RuntimeConfig {
            cores: cores[..2].to_vec(),
            ..RuntimeConfig::default()
        };
        let (tx, rx) = mpsc::channel::<Msg>();
        let rt = Runtime::start(config, move || {
            let base = malloc_bdev(1024, 512);
            let slow = delay_bdev(&base, 200_000);
            let dev: Arc<ScsiDev> = ScsiDev::new("iqn.2026-01.test:xr", &[(0, slow)]).unwrap();
            PORT.with(|p| *p.borrow_mut() = Some(port(&dev, 0)));
            let tx1 = tx.clone();
            let dev1 = dev.clone();
            // Reactor 1: nexus 1 clears its unit attention, registers a key,
            // reserves Write Exclusive and starts a slow write; then reactor
            // 0 checks the conflict and resets the LUN.
            let go = move || {
                PORT.with(|p| *p.borrow_mut() = Some(port(&dev1, 1)));
                let tx_back = tx1.clone();
                let cb: Rc<dyn TaskCallback> = Rc::new(Report {
                    tx: tx1.clone(),
                    names: RefCell::new(vec!["tur1"]),
                });
                exec(tur(0), &cb);
                let cb2: Rc<dyn TaskCallback> = Rc::new(Report {
                    tx: tx1,
                    names: RefCell::new(vec!["register1", "reserve1", "write1"]),
                });
                exec(prout(0, 0, 0, 0, 7, 0), &cb2);
                exec(prout(0, 1, 1, 7, 0, 0), &cb2);
                exec(write10(0, 0, &[1; 512], 512), &cb2);
                KEEP.with(|k| {
                    k.borrow_mut().push(Box::new(cb));
                    k.borrow_mut().push(Box::new(cb2));
                });
                let back = move || {
                    let cb: Rc<dyn TaskCallback> = Rc::new(Report {
                        tx: tx_back.clone(),
                        names: RefCell::new(vec!["tur0", "write0"]),
                    });
                    exec(tur(0), &cb);
                    exec(write10(0, 1, &[2; 512], 512), &cb);
                    KEEP.with(|k| k.borrow_mut().push(Box::new(cb)));
                    let tx_t = tx_back.clone();
                    PORT.with(|p| {
                        p.borrow_mut().as_mut().unwrap().lun_reset(0, move |r| {
                            let _ = tx_t.send(Msg::Tmf(r));
                        })
                    });
                };
                // Everything above was admitted synchronously: the write is
                // at the (slow) bdev when reactor 0 resets the LUN.
                ferrite_reactor::send(0, Box::new(back)).unwrap();
            };
            ferrite_reactor::send(1, Box::new(go)).unwrap();
        })
        .unwrap();
        let mut got = Vec::new();
        while got.iter().filter(|m| matches!(m, Msg::Tmf(_))).count() == 0
            || got.iter().filter(|m| matches!(m, Msg::Task(..))).count() < 6
        {
            got.push(rx.recv_timeout(Duration::from_secs(10)).expect("no answer"));
        }
        // Drop the ports on their reactors.
        let h = rt.handle();
        for r in 0..2 {
            let (dtx, drx) = mpsc::channel::<Msg>();
            h.try_send(
                r,
                Box::new(move || {
                    PORT.with(|p| p.borrow_mut().take());
                    KEEP.with(|k| k.borrow_mut().clear());
                    let _ = dtx.send(Msg::Dropped);
                }),
            )
            .ok()
            .unwrap();
            assert!(matches!(
                drx.recv_timeout(Duration::from_secs(10)),
                Ok(Msg::Dropped)
            ));
        }
        h.stop();
        rt.wait();
        let task = |name: &str| {
            got.iter()
                .find_map(|m| match m {
                    Msg::Task(n, s, a) if *n == name => Some((*s, *a)),
                    _ => None,
                })
                .unwrap()
        };
        assert_eq!(task("tur1"), (0x02, false)); // POWER ON
        assert_eq!(task("register1"), (0x00, false));
        assert_eq!(task("reserve1"), (0x00, false));
        assert_eq!(task("tur0"), (0x02, false)); // POWER ON
                                                 // Write Exclusive held on reactor 1 stops a write on reactor 0.
        assert_eq!(task("write0"), (0x18, false));
        // The reset on reactor 0 aborted the write on reactor 1.
        assert_eq!(task("write1"), (0x40, true));
        assert!(got
            .iter()
            .any(|m| matches!(m, Msg::Tmf(TmfResponse::Complete))));
    }

    /// One I_T nexus with a port on each reactor, as an SRP nexus with a channel
    /// on each (or an iSCSI session with a connection on each): ABORT TASK,
    /// ABORT TASK SET and I_T nexus loss issued on reactor 0 reach the nexus's
    /// slow writes on reactor 1, and wait for them.
    #[test]
    fn one_nexus_on_two_reactors() {
        #[derive(Clone, Copy, Debug)]
        enum Fn {
            AbortTask,
            AbortTaskSet,
            NexusLoss,
        }
        for f in [Fn::AbortTask, Fn::AbortTaskSet, Fn::NexusLoss] {
            let cores = ferrite_reactor::available_cores();
            assert!(cores.len() >= 2, "this test needs two cores");
            let config = RuntimeConfig {
                cores: cores[..2].to_vec(),
                ..RuntimeConfig::default()
            };
            let (tx, rx) = mpsc::channel::<Msg>();
            let rt = Runtime::start(config, move || {
                let base = malloc_bdev(1024, 512);
                let slow = delay_bdev(&base, 200_000);
                let dev: Arc<ScsiDev> =
                    ScsiDev::new("iqn.2026-01.test:one-nexus", &[(0, slow)]).unwrap();
                let nx: Arc<Nexus> = nexus(&dev, 0);
                PORT.with(|p| *p.borrow_mut() = Some(ScsiPort::new(dev.clone(), nx.clone())));
                let tx1 = tx.clone();
                // Reactor 1: the nexus's other port clears its unit attention
                // and starts two slow writes, tags 0x51 and 0x52; then reactor
                // 0 runs the function.
                let go = move || {
                    PORT.with(|p| *p.borrow_mut() = Some(ScsiPort::new(dev, nx)));
                    let cb: Rc<dyn TaskCallback> = Rc::new(Report {
                        tx: tx1.clone(),
                        names: RefCell::new(vec!["tur", "write51", "write52"]),
                    });
                    exec(tur(0), &cb);
                    exec(tagged(write10(0, 0, &[1; 512], 512), 0x51), &cb);
                    exec(tagged(write10(0, 1, &[2; 512], 512), 0x52), &cb);
                    KEEP.with(|k| k.borrow_mut().push(Box::new(cb)));
                    let back = move || {
                        let tx_t = tx1.clone();
                        let done = move |r| {
                            let _ = tx_t.send(Msg::Tmf(r));
                        };
                        PORT.with(|p| {
                            let mut p = p.borrow_mut();
                            let p = p.as_mut().unwrap();
                            match f {
                                Fn::AbortTask => p.abort_task(0, 0x52, done),
                                Fn::AbortTaskSet => p.abort_task_set(0, done),
                                Fn::NexusLoss => p.nexus_loss(done),
                            }
                        });
                    };
                    ferrite_reactor::send(0, Box::new(back)).unwrap();
                };
                ferrite_reactor::send(1, Box::new(go)).unwrap();
            })
            .unwrap();
            // The order things end in: the TMF must not end before a task it
            // aborted.
            let mut got = Vec::new();
            while got.len() < 4 {
                got.push(rx.recv_timeout(Duration::from_secs(10)).expect("no answer"));
            }
            let h = rt.handle();
            for r in 0..2 {
                let (dtx, drx) = mpsc::channel::<Msg>();
                h.try_send(
                    r,
                    Box::new(move || {
                        PORT.with(|p| p.borrow_mut().take());
                        KEEP.with(|k| k.borrow_mut().clear());
                        let _ = dtx.send(Msg::Dropped);
                    }),
                )
                .ok()
                .unwrap();
                assert!(matches!(
                    drx.recv_timeout(Duration::from_secs(10)),
                    Ok(Msg::Dropped)
                ));
            }
            h.stop();
            rt.wait();
            let pos = |name: &str| {
                got.iter()
                    .position(|m| matches!(m, Msg::Task(n, ..) if *n == name))
                    .unwrap_or_else(|| panic!("{f:?}: {name} never ended: {got:?}"))
            };
            let task = |name: &str| match got[pos(name)] {
                Msg::Task(_, s, a) => (s, a),
                _ => unreachable!(),
            };
            let tmf = got
                .iter()
                .position(|m| matches!(m, Msg::Tmf(TmfResponse::Complete)))
                .unwrap_or_else(|| panic!("{f:?}: no Complete: {got:?}"));
            assert_eq!(task("tur"), (0x02, false), "{f:?}"); // POWER ON
            assert_eq!(task("write52"), (0x40, true), "{f:?}");
            assert!(pos("write52") < tmf, "{f:?}: the TMF ended first: {got:?}");
            match f {
                // ABORT TASK names one task: the other ends GOOD.
                Fn::AbortTask => assert_eq!(task("write51"), (0x00, false), "{f:?}"),
                _ => {
                    assert_eq!(task("write51"), (0x40, true), "{f:?}");
                    assert!(pos("write51") < tmf, "{f:?}: the TMF ended first: {got:?}");
                }
            }
        }
    }
}
