//! Wire protocols and data movers: iSCSI, TCP, RDMA, iSER, SRP
pub mod iscsi;
pub mod iser;
pub mod rdma;
pub mod srp;
pub mod tcp;
