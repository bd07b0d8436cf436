//! ferrite's runtime: per-core reactors that poll, sleep when idle and talk by
//! message, plus the hugepage buffer arena the data path draws from.
//!
//! Modelled on SPDK's `lib/thread` and `lib/event`: a reactor owns its pollers and
//! state; nothing on the I/O path takes a lock or crosses cores.

pub mod mem;
pub mod reactor;
pub mod runtime;
mod sys;

/// A set of fds polled together without blocking: a transport registers its
/// sockets in one per reactor, asks which are ready each poll (one syscall for
/// all of them), and registers the set itself as an interrupt so a sleeping
/// reactor wakes when any is.
pub use sys::Epoll as PollSet;
pub mod ticks;

pub use reactor::{
    current_index, for_each_reactor, handle, local_stats, modify_interrupt, on_reactor,
    register_interrupt, register_interrupt_for, register_poller, register_timed_poller, send,
    unregister_interrupt, unregister_poller, Interest, Poll, PollerId, PollerStats, ReactorStats,
};
pub use runtime::{
    available_cores, parse_core_mask, Handle, Message, Runtime, RuntimeConfig, SendError,
};
pub use ticks::{tick_rate, ticks, ticks_to_ns};
