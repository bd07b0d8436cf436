//! What transports share: JSON-RPC server, SCSI emulation, target model
