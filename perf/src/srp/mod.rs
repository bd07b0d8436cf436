//! `ferrite-perf srp`: a closed-loop load generator with its own SRP
//! initiator over RDMA verbs (transport's `rdma` layer), on ferrite's reactors.
//!
//! One RDMA connection (one SRP channel) per reactor of the core mask, all of
//! one I_T nexus (one initiator port id, MULTICHAN_MULTI). Each connects with
//! an SRP_LOGIN_REQ in the CM private data (the 56-byte RDMA CM form Linux's
//! `ib_srp` sends), takes the request limit from the SRP_LOGIN_RSP (an
//! SRP_LOGIN_REJ fails the run with its reason), clears the unit attention
//! with TEST UNIT READY, reads the capacity, then keeps `depth` SRP_CMDs in
//! flight without ever exceeding the request limit (`req_lim_delta` of each
//! SRP_RSP and SRP_CRED_REQ gives credits back). Every command carries one
//! direct data descriptor of its slot's memory under the arena's remote key:
//! the target RDMA WRITEs read data into it and RDMA READs write data from
//! it. At the end each channel sends SRP_I_LOGOUT and disconnects.
//!
//! Slots' data spans are carved out of the arena's large-buffer pool, taken
//! whole at start (its buffers are contiguous), so one descriptor covers up
//! to 1 MiB.

mod initiator;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ferrite_reactor::mem::{self, Buffer, MemConfig, LARGE_BUF_SIZE};
use ferrite_reactor::{Runtime, RuntimeConfig};
use ferrite_transport::rdma;
use ferrite_transport::srp::iu::PortId;

use crate::rdma_run::{self, Failure, Report, Shape, SharedRef, Steps};
use crate::rng::mix64;
use crate::workload::Workload;
use initiator::{with_initiator, Initiator, Setup};

/// Most commands in flight per connection.
pub const MAX_DEPTH: usize = 1024;
/// Largest I/O: one direct descriptor of a contiguous span.
pub const MAX_IO_SIZE: usize = 1 << 20;
/// The initiator port id used unless `--initiator-id` says otherwise.
pub const DEFAULT_INITIATOR_ID: &str = "0xfe77017e00000000fe77017e00000001";

/// What `ferrite-perf srp` was asked to do.
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
    pub initiator_id: String,
}

/// Where an SRP target port is: `srp://IP:PORT/ID_EXT/IOC_GUID/LUN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrpUrl {
    pub addr: SocketAddr,
    pub target: PortId,
    pub lun: u16,
}

fn parse_hex64(what: &str, s: &str) -> Result<u64, String> {
    let h = s.strip_prefix("0x").unwrap_or(s);
    if h.is_empty() || h.len() > 16 {
        return Err(format!("{what} '{s}' is not 1 to 16 hex digits"));
    }
    u64::from_str_radix(h, 16).map_err(|_| format!("{what} '{s}' is not hexadecimal"))
}

/// `srp://IP:PORT/ID_EXT/IOC_GUID/LUN` (ID_EXT and IOC_GUID in hex, as
/// `ib_srp`'s `add_target` takes them; IP: the address of an RDMA interface).
pub fn parse_url(s: &str) -> Result<SrpUrl, String> {
    let usage = || format!("'{s}' is not an SRP URL (expected srp://IP:PORT/ID_EXT/IOC_GUID/LUN)");
    let rest = s.strip_prefix("srp://").ok_or_else(usage)?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [host, id_ext, guid, lun] = parts[..] else {
        return Err(usage());
    };
    let addr: SocketAddr = host.parse().or_else(|_| {
        // A bare IPv6 address with a port needs brackets; say what we want.
        host.parse::<IpAddr>()
            .map_err(|_| format!("'{host}' is not IP:PORT (RDMA CM needs an address and a port)"))
            .and_then(|_| Err(format!("'{host}' lacks a port (srp://IP:PORT/...)")))
    })?;
    Ok(SrpUrl {
        addr,
        target: PortId::new(
            parse_hex64("ID_EXT", id_ext)?,
            parse_hex64("IOC_GUID", guid)?,
        ),
        lun: lun
            .parse()
            .map_err(|_| format!("LUN '{lun}' is not a number up to 65535"))?,
    })
}

/// A port id as 32 hex digits (`0x` optional).
pub fn parse_port_id(s: &str) -> Result<PortId, String> {
    let h = s.strip_prefix("0x").unwrap_or(s);
    if h.len() != 32 {
        return Err(format!("initiator id '{s}' is not 32 hex digits"));
    }
    Ok(PortId::new(
        parse_hex64("initiator id", &h[..16])?,
        parse_hex64("initiator id", &h[16..])?,
    ))
}

pub fn main(opts: Options) -> i32 {
    let shape = Shape {
        tool: "srp",
        url: &opts.url,
        workload: opts.workload,
        io_size: opts.io_size,
        depth: opts.depth,
        connections: opts.cores.len(),
    };
    rdma_run::finish(run(&opts), &shape, opts.json)
}

fn run(o: &Options) -> Result<Report, Failure> {
    let url = parse_url(&o.url).map_err(Failure::Usage)?;
    let initiator_id = parse_port_id(&o.initiator_id).map_err(Failure::Usage)?;
    if o.depth == 0 || o.depth > MAX_DEPTH {
        return Err(Failure::Usage(format!(
            "queue depth (-q) must be 1 to {MAX_DEPTH}"
        )));
    }
    if o.io_size == 0 || o.io_size > MAX_IO_SIZE || !o.io_size.is_multiple_of(512) {
        return Err(Failure::Usage(format!(
            "I/O size (-o) must be a multiple of 512 up to {MAX_IO_SIZE} bytes"
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
            "workload {} is not supported over SRP (read, randread, write, randwrite, rw, randrw)",
            o.workload.name()
        )));
    }
    if !(o.seconds > 0.0 && o.seconds < 1e6) {
        return Err(Failure::Usage("run time (-t) must be positive".into()));
    }
    let slots = o.depth * o.cores.len();
    let srq_depth = (o.depth as u32 * 2 + 64).min(16384);
    mem::init(&MemConfig {
        heap_mb: 4,
        small_count: 1024 + o.cores.len() * (srq_depth as usize + 2 * o.depth),
        large_count: (slots * o.io_size).div_ceil(LARGE_BUF_SIZE),
        hugepages: true,
    })
    .map_err(|e| Failure::Run(format!("buffer arena: {e}")))?;
    // Held until the end: the slots' data lives in these.
    let (_pool, base) = take_large_pool(slots * o.io_size)?;
    rdma::configure(rdma::RdmaConfig {
        srq_depth,
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
    let result = drive(o, &handle, url, initiator_id, base);
    handle.stop();
    rt.wait();
    result
}

/// Takes every buffer of the arena's large pool (nothing else uses that pool
/// here) and checks they form one contiguous span of at least `len` bytes:
/// the buffers and the span's start address.
fn take_large_pool(len: usize) -> Result<(Vec<Buffer>, u64), Failure> {
    let mut pool = Vec::new();
    while let Some(b) = Buffer::alloc(LARGE_BUF_SIZE) {
        pool.push(b);
    }
    pool.sort_by_key(|b| b.as_ptr() as usize);
    let contiguous = pool
        .windows(2)
        .all(|w| w[1].as_ptr() as usize == w[0].as_ptr() as usize + LARGE_BUF_SIZE);
    if !contiguous || pool.len() * LARGE_BUF_SIZE < len {
        return Err(Failure::Run(format!(
            "the arena's large buffers are not one span of {len} bytes ({} buffers)",
            pool.len()
        )));
    }
    let base = pool.first().map_or(0, |b| b.as_ptr() as u64);
    Ok((pool, base))
}

fn drive(
    o: &Options,
    handle: &ferrite_reactor::Handle,
    url: SrpUrl,
    initiator_id: PortId,
    base: u64,
) -> Result<Report, Failure> {
    let connect = |r: usize, shared: SharedRef| -> ferrite_reactor::Message {
        let setup = Setup {
            shared,
            target: url.target,
            initiator: initiator_id,
            lun: url.lun,
            tag: 0x5e7_0000 + r as u64,
            workload: o.workload,
            read_pct: o.read_pct,
            depth: o.depth,
            io_size: o.io_size,
            data: base + (r * o.depth * o.io_size) as u64,
            seed: mix64(0x5e9 + r as u64),
        };
        let addr = url.addr;
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
    fn srp_urls_parse_to_an_address_port_id_and_lun() {
        let u = parse_url("srp://169.254.77.1:5555/0002c90300a1b2c3/0x0002c90300d4e5f6/3")
            .expect("a valid URL");
        assert_eq!(u.addr, "169.254.77.1:5555".parse().unwrap());
        assert_eq!(u.target.id_ext(), 0x0002_c903_00a1_b2c3);
        assert_eq!(u.target.guid(), 0x0002_c903_00d4_e5f6);
        assert_eq!(u.lun, 3);
        for bad in [
            "iser://10.0.0.1:5555/1/2/0",
            "srp://10.0.0.1/1/2/0",
            "srp://host.example:5555/1/2/0",
            "srp://10.0.0.1:5555/1/2",
            "srp://10.0.0.1:5555/xyz/2/0",
            "srp://10.0.0.1:5555/1/00000000000000001/0",
            "srp://10.0.0.1:5555/1/2/70000",
        ] {
            assert!(parse_url(bad).is_err(), "{bad} is refused");
        }
    }

    #[test]
    fn initiator_ids_are_32_hex_digits() {
        let id = parse_port_id(DEFAULT_INITIATOR_ID).expect("the default parses");
        assert_eq!(id.to_string(), DEFAULT_INITIATOR_ID);
        assert!(parse_port_id("0x1234").is_err());
        assert!(parse_port_id(&"g".repeat(32)).is_err());
    }
}
