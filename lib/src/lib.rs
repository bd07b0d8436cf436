//! What transports share: JSON-RPC server, SCSI emulation, target model

pub mod jsonrpc;
pub mod subsystem;
