//! The JSON-RPC methods of each subsystem.

pub mod bdev;
