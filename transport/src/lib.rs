//! Wire protocols and data movers: iSCSI, TCP, RDMA, iSER, SRP
pub mod iscsi;
pub mod iser;
pub mod rdma;
pub mod srp;
pub mod tcp;

/// The RDMA queue sizes iSER and SRP share (call [`rdma::configure`] with it
/// before the first RDMA connection). Both protocols' connections of one
/// reactor take their receives from one shared receive queue, so one format
/// serves both: two-part receives of a 76-byte header (an iSER header and
/// BHS) and 8 KiB behind it. An iSER message is at most 8 KiB in all (its
/// link puts the two parts back together); an SRP IU may be 8 KiB of
/// immediate data behind a 68-byte SRP_CMD (Linux ib_srp asks for 8260-byte
/// IUs), which a single 8 KiB receive could not take.
pub fn rdma_config() -> rdma::RdmaConfig {
    rdma::RdmaConfig {
        recv_header_len: srp::driver::RECV_HEADER_LEN,
        recv_len: ferrite_reactor::mem::SMALL_BUF_SIZE,
        ..rdma::RdmaConfig::default()
    }
}
