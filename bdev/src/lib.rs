//! The block-device layer: a registry of bdevs, descriptors with claims, per-reactor
//! I/O channels, and the modules (malloc, null, split, delay, error).
//!
//! Modelled on SPDK's `bdev_module.h`: a module registers bdevs with a backend; the
//! generic layer validates, tracks, emulates what a module lacks and completes I/O
//! on the submitting reactor.

// A refused request is handed back by value in `Err` so that refusing allocates
// nothing; that makes the error variant large, on purpose.
#![allow(clippy::result_large_err)]

mod bdev;
mod channel;
mod io;
pub mod modules;
mod stats;

pub use bdev::{
    check_block_size, get, list, open, register, unregister, Bdev, BdevBackend, BdevError,
    BdevEvent, BdevParams, Desc,
};
pub use channel::{BdevIo, ChannelBackend, IoChannel, IoParams, MAX_OUTSTANDING};
pub use io::{
    IoCallback, IoData, IoError, IoRequest, IoStatus, IoType, MAX_IO_BYTES, MAX_SEGMENTS,
};
pub use stats::{IoStat, TypeStat};
