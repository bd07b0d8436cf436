//! What transports share: the JSON-RPC server, the subsystem registry and each
//! subsystem's RPC methods, and the iSCSI target model (later also SCSI emulation).

pub mod jsonrpc;
pub mod rpc;
pub mod scsi;
pub mod srp;
pub mod subsystem;
pub mod target;
