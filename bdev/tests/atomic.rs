//! Compare-and-write is atomic against I/O from other reactors: two reactors each
//! increment a counter in block 0 by read + compare-and-write, retrying on
//! miscompare, while plain writes hammer the neighbouring blocks. No increment may
//! be lost.

mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use common::on_reactors;
use ferrite_bdev::modules::malloc;
use ferrite_bdev::{self as bdev, IoCallback, IoChannel, IoData, IoError, IoRequest, IoStatus};

const BS: usize = 512;
const INCREMENTS: u64 = 3000;

/// Increments the u64 at the start of block 0 `INCREMENTS` times.
struct Incrementer {
    ch: IoChannel,
    me: std::cell::RefCell<Option<Rc<dyn IoCallback>>>,
    done: Cell<u64>,
    retries: Cell<u64>,
    finished: Box<dyn Fn(u64, u64)>,
}

const READ: u64 = 1;
const CAW: u64 = 2;
const NOISE: u64 = 3;

impl Incrementer {
    fn cb(&self) -> Rc<dyn IoCallback> {
        self.me.borrow().clone().unwrap()
    }

    fn read(&self) {
        let req = IoRequest::read(0, 1, IoData::alloc(BS).unwrap());
        self.ch.submit(req, &self.cb(), READ).unwrap();
        // Noise: plain writes to the blocks around the counter.
        let req = IoRequest::write(1, 2, IoData::alloc(2 * BS).unwrap(), false);
        self.ch.submit(req, &self.cb(), NOISE).unwrap();
    }
}

impl IoCallback for Incrementer {
    fn io_done(&self, tag: u64, status: IoStatus, req: IoRequest) {
        match tag {
            NOISE => status.unwrap(),
            READ => {
                status.unwrap();
                let mut v = [0u8; 8];
                req.data.copy_to_slice(0, &mut v);
                let old = u64::from_le_bytes(v);
                let mut data = IoData::alloc(2 * BS).unwrap();
                data.fill(0);
                let mut cur = vec![0u8; BS];
                req.data.copy_to_slice(0, &mut cur);
                data.copy_from_slice(0, &cur);
                data.copy_from_slice(BS, &(old + 1).to_le_bytes());
                let caw = IoRequest::compare_and_write(0, 1, data, false);
                self.ch.submit(caw, &self.cb(), CAW).unwrap();
            }
            CAW => match status {
                Ok(()) => {
                    self.done.set(self.done.get() + 1);
                    if self.done.get() == INCREMENTS {
                        (self.finished)(self.done.get(), self.retries.get());
                        self.me.borrow_mut().take();
                    } else {
                        self.read();
                    }
                }
                Err(IoError::Miscompare { .. }) => {
                    self.retries.set(self.retries.get() + 1);
                    self.read();
                }
                Err(e) => panic!("compare-and-write failed: {e}"),
            },
            _ => unreachable!(),
        }
    }
}

#[test]
fn compare_and_write_loses_no_increment_across_reactors() {
    let (final_value, retries) = on_reactors(2, |tx| {
        malloc::create(malloc::CreateParams {
            name: Some("caw0".into()),
            num_blocks: 8,
            block_size: BS as u32,
            uuid: None,
        })
        .unwrap();
        let finished = Arc::new(AtomicU64::new(0));
        let retries = Arc::new(AtomicU64::new(0));
        for r in 0..2 {
            let (tx, finished, retries) = (tx.clone(), finished.clone(), retries.clone());
            ferrite_reactor::send(
                r,
                Box::new(move || {
                    let desc = bdev::open("caw0", true, |_| {}).unwrap();
                    let ch = desc.channel();
                    let keep = std::cell::RefCell::new(Some(desc));
                    let inc = Rc::new(Incrementer {
                        ch,
                        me: Default::default(),
                        done: Cell::new(0),
                        retries: Cell::new(0),
                        finished: Box::new(move |_, r| {
                            keep.borrow_mut().take();
                            retries.fetch_add(r, Ordering::SeqCst);
                            if finished.fetch_add(1, Ordering::SeqCst) == 1 {
                                let (tx, retries) = (tx.clone(), retries.clone());
                                ferrite_reactor::send(
                                    0,
                                    Box::new(move || read_counter(tx, retries)),
                                )
                                .unwrap();
                            }
                        }),
                    });
                    *inc.me.borrow_mut() = Some(inc.clone());
                    inc.read();
                }),
            )
            .unwrap();
        }
    });
    eprintln!("retries: {retries}");
    assert_eq!(
        final_value,
        2 * INCREMENTS,
        "an increment was lost ({retries} retries)"
    );
}

fn read_counter(tx: mpsc::Sender<(u64, u64)>, retries: Arc<AtomicU64>) {
    let desc = bdev::open("caw0", false, |_| {}).unwrap();
    let ch = desc.channel();
    common::run_all(
        &ch,
        vec![IoRequest::read(0, 1, IoData::alloc(BS).unwrap())],
        move |r| {
            let _keep = desc;
            let mut v = [0u8; 8];
            r[0].1.data.copy_to_slice(0, &mut v);
            tx.send((u64::from_le_bytes(v), retries.load(Ordering::SeqCst)))
                .unwrap();
        },
    );
}
