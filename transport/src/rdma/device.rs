//! RDMA devices as the layer sees them: one protection domain per device and
//! the buffer arena's I/O region registered once in it, so every pool
//! [`Buffer`] has an lkey without any per-I/O registration.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use ferrite_reactor::mem::{self, Buffer};

use super::sys::{DeviceAttr, Mr, Pd, Sge, Verbs};

/// No reactor polls the device's async events yet.
const NO_OWNER: usize = usize::MAX;

/// One RDMA device (an `ibv_context` librdmacm opened), shared by all reactors.
pub struct Device {
    verbs: Verbs,
    name: String,
    attr: DeviceAttr,
    pd: Arc<Pd>,
    /// The I/O region with local access only: what a target posts from.
    local: Mr,
    /// The same region with remote read/write, made only when an initiator asks
    /// for an rkey (a target never exposes its memory).
    remote: OnceLock<Mr>,
    io_base: usize,
    io_len: usize,
    /// The reactor that reads the device's async events.
    async_owner: AtomicUsize,
}

static DEVICES: Mutex<Vec<Arc<Device>>> = Mutex::new(Vec::new());
static PINNED: OnceLock<usize> = OnceLock::new();

/// Opens every RDMA device for the life of the process (librdmacm's contexts
/// then never close under the layer). Returns how many exist.
pub fn pin_devices() -> io::Result<usize> {
    if let Some(n) = PINNED.get() {
        return Ok(*n);
    }
    let n = Verbs::pin_all()?;
    Ok(*PINNED.get_or_init(|| n))
}

/// The device behind `verbs`, made (PD, arena registered) on first use.
pub(crate) fn device_for(verbs: Verbs) -> io::Result<Arc<Device>> {
    pin_devices()?;
    let mut devices = DEVICES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(d) = devices.iter().find(|d| d.verbs == verbs) {
        return Ok(d.clone());
    }
    let attr = verbs.query()?;
    let pd = Arc::new(verbs.alloc_pd()?);
    let (base, len) = mem::arena().io_region();
    let local = pd.register(base, len, false)?;
    let d = Arc::new(Device {
        verbs,
        name: verbs.name(),
        attr,
        pd,
        local,
        remote: OnceLock::new(),
        io_base: base as usize,
        io_len: len,
        async_owner: AtomicUsize::new(NO_OWNER),
    });
    tracing::info!(
        "RDMA device {}: buffer arena registered ({} MiB, lkey {:#x}), max_qp_wr {}, max_sge {}, max_cqe {}, max_srq_wr {}",
        d.name,
        len >> 20,
        d.local.lkey,
        attr.max_qp_wr,
        attr.max_sge,
        attr.max_cqe,
        attr.max_srq_wr
    );
    devices.push(d.clone());
    Ok(d)
}

/// Every device the layer has set up.
pub fn devices() -> Vec<Arc<Device>> {
    DEVICES.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

impl Device {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn verbs(&self) -> Verbs {
        self.verbs
    }

    pub fn attr(&self) -> &DeviceAttr {
        &self.attr
    }

    pub(crate) fn pd(&self) -> &Arc<Pd> {
        &self.pd
    }

    /// The local key of the arena's I/O region (every pool buffer).
    pub fn lkey(&self) -> u32 {
        self.local.lkey
    }

    /// A remote key for the arena's I/O region, registering it with remote
    /// read/write on first use. For initiators (load generators, tests) that
    /// let the peer RDMA into their buffers; a target never calls this.
    pub fn rkey(&self) -> io::Result<u32> {
        if let Some(mr) = self.remote.get() {
            return Ok(mr.rkey);
        }
        let mr = self
            .pd
            .register(self.io_base as *mut u8, self.io_len, true)?;
        Ok(self.remote.get_or_init(|| mr).rkey)
    }

    /// The entry for a buffer's first `buf.len()` bytes.
    pub fn sge(&self, buf: &Buffer) -> Sge {
        Sge {
            addr: buf.as_ptr() as u64,
            len: buf.len() as u32,
            lkey: self.local.lkey,
        }
    }

    /// The entry for `len` bytes at `offset` in a buffer (within its capacity).
    pub fn sge_range(&self, buf: &Buffer, offset: usize, len: usize) -> Sge {
        assert!(
            offset + len <= buf.capacity(),
            "scatter/gather entry beyond the buffer"
        );
        Sge {
            addr: buf.as_ptr() as u64 + offset as u64,
            len: len as u32,
            lkey: self.local.lkey,
        }
    }

    /// The entry for bytes inside the arena's I/O region, `None` elsewhere
    /// (memory outside the region is not registered).
    pub fn sge_bytes(&self, bytes: &[u8]) -> Option<Sge> {
        let p = bytes.as_ptr() as usize;
        (p >= self.io_base && p + bytes.len() <= self.io_base + self.io_len).then_some(Sge {
            addr: p as u64,
            len: bytes.len() as u32,
            lkey: self.local.lkey,
        })
    }

    /// Claims the reading of async events for `reactor` if nobody has.
    pub(crate) fn claim_async(&self, reactor: usize) -> bool {
        self.async_owner
            .compare_exchange(NO_OWNER, reactor, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}
