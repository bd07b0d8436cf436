//! The pieces of the `ferrite-tgt` binary that other tools (perf, tests) can
//! reuse: the start and stop sequence of a target.

pub mod rdma_rpc;
pub mod target;
