//! Wire protocols and data movers: iSCSI, TCP, RDMA, iSER, SRP
pub mod tcp;
