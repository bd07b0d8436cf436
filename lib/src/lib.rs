//! What transports share: the JSON-RPC server, the subsystem registry and each
//! subsystem's RPC methods (later also SCSI emulation and the target model).

pub mod jsonrpc;
pub mod rpc;
pub mod scsi;
pub mod subsystem;
