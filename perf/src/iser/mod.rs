//! `ferrite-perf iser`: a closed-loop load generator with its own iSER
//! initiator over RDMA verbs (transport's `rdma` layer), on ferrite's reactors.
//!
//! One RDMA connection (one session) per reactor of the core mask. Each
//! connection logs in over RDMA SENDs (RDMAExtensions=Yes, ImmediateData=No,
//! InitialR2T=Yes, so every byte of write data is fetched by the target's RDMA
//! READ, and read data arrives by its RDMA WRITE), takes the new nexus's unit
//! attention, reads the LUN's capacity, then keeps `depth` commands in flight:
//! each slot owns one arena buffer, advertised in the iSER header under the
//! arena's remote key (registered once), and one small send buffer for its
//! command. The PDU encoders are `ferrite-perf iscsi`'s.
//!
//! The run (connect everywhere, measure, drain, log out, report) is
//! [`crate::rdma_run`]'s.

mod initiator;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ferrite_reactor::mem::{self, MemConfig, LARGE_BUF_SIZE};
use ferrite_reactor::{Runtime, RuntimeConfig};
use ferrite_transport::rdma;

use crate::iscsi::pdu::Lun;
use crate::iscsi::IscsiUrl;
use crate::rdma_run::{self, Failure, Report, Shape, SharedRef, Steps};
use crate::rng::mix64;
use crate::workload::Workload;
use initiator::{with_initiator, Initiator, Setup};

/// Most commands in flight per connection.
pub const MAX_DEPTH: usize = 1024;

/// What `ferrite-perf iser` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub url: String,
    pub workload: Workload,
    pub depth: usize,
    pub io_size: usize,
    pub read_pct: u32,
    pub seconds: f64,
    pub mask: String,
    pub cores: Vec<usize>,
    pub json: bool,
    pub poll_only: bool,
    pub initiator_name: String,
    /// A slot's ITT stays the same from command to command.
    pub reuse_itt: bool,
}

/// `iser://HOST[:PORT]/IQN/LUN` (libiscsi's spelling): the address and LUN.
pub fn parse_url(s: &str) -> Result<(SocketAddr, String, u16), String> {
    let rest = s
        .strip_prefix("iser://")
        .ok_or_else(|| format!("'{s}' is not an iSER URL (expected iser://HOST[:PORT]/IQN/LUN)"))?;
    let url = IscsiUrl::parse(&format!("iscsi://{rest}"))?;
    if url.chap.is_some() {
        return Err("ferrite-perf iser does not do CHAP".into());
    }
    let ip: IpAddr = url.host.parse().map_err(|_| {
        format!(
            "'{}' is not an IP address (RDMA CM needs the address of an RDMA interface)",
            url.host
        )
    })?;
    Ok((SocketAddr::new(ip, url.port), url.target, url.lun))
}

pub fn main(opts: Options) -> i32 {
    let shape = Shape {
        tool: "iser",
        url: &opts.url,
        workload: opts.workload,
        io_size: opts.io_size,
        depth: opts.depth,
        connections: opts.cores.len(),
    };
    rdma_run::finish(run(&opts), &shape, opts.json)
}

fn run(o: &Options) -> Result<Report, Failure> {
    let (addr, target, lun) = parse_url(&o.url).map_err(Failure::Usage)?;
    if o.depth == 0 || o.depth > MAX_DEPTH {
        return Err(Failure::Usage(format!(
            "queue depth (-q) must be 1 to {MAX_DEPTH}"
        )));
    }
    if o.io_size == 0 || o.io_size > LARGE_BUF_SIZE || !o.io_size.is_multiple_of(512) {
        return Err(Failure::Usage(format!(
            "I/O size (-o) must be a multiple of 512 up to {LARGE_BUF_SIZE} bytes"
        )));
    }
    if !matches!(
        o.workload,
        Workload::Read
            | Workload::RandRead
            | Workload::Write
            | Workload::RandWrite
            | Workload::Rw
            | Workload::RandRw
    ) {
        return Err(Failure::Usage(format!(
            "workload {} is not supported over iSER (read, randread, write, randwrite, rw, randrw)",
            o.workload.name()
        )));
    }
    if !(o.seconds > 0.0 && o.seconds < 1e6) {
        return Err(Failure::Usage("run time (-t) must be positive".into()));
    }
    let slots = o.depth * o.cores.len();
    mem::init(&MemConfig {
        heap_mb: 4,
        small_count: 2048 + slots,
        large_count: slots + 16,
        hugepages: true,
    })
    .map_err(|e| Failure::Run(format!("buffer arena: {e}")))?;
    rdma::configure(rdma::RdmaConfig {
        srq_depth: (slots as u32 * 2 + 64).min(16384),
        ..rdma::RdmaConfig::default()
    });
    let rt = Runtime::start(
        RuntimeConfig {
            cores: o.cores.clone(),
            poll_only: o.poll_only,
            idle_sleep: Duration::from_micros(200),
            msg_queue_depth: 256,
        },
        || {},
    )
    .map_err(|e| Failure::Run(format!("reactors: {e}")))?;
    let handle = rt.handle();
    let result = drive(o, &handle, addr, &target, lun);
    handle.stop();
    rt.wait();
    result
}

fn drive(
    o: &Options,
    handle: &ferrite_reactor::Handle,
    addr: SocketAddr,
    target: &str,
    lun: u16,
) -> Result<Report, Failure> {
    let connect = |r: usize, shared: SharedRef| -> ferrite_reactor::Message {
        let setup = Setup {
            shared,
            target: target.to_string(),
            initiator: o.initiator_name.clone(),
            lun: Lun::from_index(lun),
            isid: [0x80, 0x3f, 0, 0, (r >> 8) as u8, r as u8],
            workload: o.workload,
            read_pct: o.read_pct,
            depth: o.depth,
            io_size: o.io_size,
            seed: mix64(0x15e7 + r as u64),
            reuse_itt: o.reuse_itt,
        };
        Box::new(move || {
            if let Err(e) = Initiator::connect(addr, setup.clone()) {
                rdma_run::fail(&setup.shared, format!("connect to {addr}: {e}"));
            }
        })
    };
    let steps = Steps {
        start: || {
            with_initiator(|i| i.start());
        },
        stop: || {
            with_initiator(|i| i.stop());
        },
        busy: || with_initiator(|i| i.busy()),
        logout: || {
            with_initiator(|i| i.logout());
        },
        close: || {
            with_initiator(|i| i.close());
        },
    };
    rdma_run::drive(handle, o.cores.len(), o.seconds, connect, &steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iser_urls_parse_to_an_address_target_and_lun() {
        let (addr, iqn, lun) =
            parse_url("iser://169.254.77.1:3262/iqn.2026-11.io.ferrite:x/3").expect("a valid URL");
        assert_eq!(addr, "169.254.77.1:3262".parse().unwrap());
        assert_eq!((iqn.as_str(), lun), ("iqn.2026-11.io.ferrite:x", 3));
        let (addr, _, _) = parse_url("iser://10.0.0.1/iqn.x/0").expect("default port");
        assert_eq!(addr.port(), 3260);
        for bad in [
            "iscsi://10.0.0.1/iqn.x/0",
            "iser://target.example/iqn.x/0",
            "iser://u%s@10.0.0.1/iqn.x/0",
            "iser://10.0.0.1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad} is refused");
        }
    }
}
