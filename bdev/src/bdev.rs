//! Bdevs, the registry that names them, and descriptors that open them.
//!
//! A module makes a bdev by [`register`]ing a [`BdevBackend`]. Users [`open`] it
//! (read-only or for writing), may claim it exclusively (a vbdev claims its base,
//! so nothing else can export the base too), and get a per-reactor
//! [`IoChannel`](crate::IoChannel) to submit I/O on. [`unregister`] tells every
//! open descriptor first and finishes once they have all closed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use uuid::Uuid;

use crate::channel::{ChannelBackend, LockedRange};
use crate::io::IoType;
use crate::stats::IoStatSlots;

/// What a module implements for each bdev it registers.
pub trait BdevBackend: Send + Sync + 'static {
    /// The module's name, as `bdev_get_bdevs` shows it (`malloc`, `null`, ...).
    fn module(&self) -> &'static str;

    /// Whether the backend handles this type itself. Compare and compare-and-write
    /// are emulated by the bdev layer (read and compare, under a range lock) when the
    /// backend does not.
    fn supports(&self, io_type: IoType) -> bool;

    /// Makes this reactor's channel. Called on the reactor that will use it.
    fn create_channel(&self, bdev: &Arc<Bdev>) -> Box<dyn ChannelBackend>;

    /// Whether unmapped blocks read back as zeros (SCSI's LBPRZ). Only meaningful
    /// when the backend supports unmap.
    fn unmap_reads_zeroes(&self) -> bool {
        false
    }

    /// Module-specific facts for `bdev_get_bdevs`' `driver_specific`.
    fn info(&self) -> Value {
        Value::Object(Default::default())
    }

    /// The RPC call that recreates this bdev, for `save_config`. `None` when another
    /// bdev's entry recreates it (a split part), or it cannot be saved.
    fn config(&self, bdev: &Bdev) -> Option<Value>;

    /// The backend itself, for its module's own calls (a rescan finds its file).
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }

    /// Called once when the bdev is gone: every descriptor closed and every
    /// channel destroyed. Release what the bdev holds (a vbdev closes its base).
    fn destruct(&self) {}
}

/// Why a bdev operation failed; maps onto an errno for JSON-RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BdevError {
    /// A bdev with this name exists (EEXIST).
    Exists(String),
    /// No such bdev (ENODEV).
    NotFound(String),
    /// Claimed, open for writing, or being removed (EBUSY / EPERM).
    Busy(String),
    /// A bad argument (EINVAL).
    Invalid(String),
    /// Out of memory in the arena (ENOMEM).
    NoMemory(String),
}

impl BdevError {
    /// The negative errno SPDK's RPCs answer with.
    pub fn errno(&self) -> i32 {
        match self {
            BdevError::Exists(_) => -libc::EEXIST,
            BdevError::NotFound(_) => -libc::ENODEV,
            BdevError::Busy(_) => -libc::EBUSY,
            BdevError::Invalid(_) => -libc::EINVAL,
            BdevError::NoMemory(_) => -libc::ENOMEM,
        }
    }
}

impl std::fmt::Display for BdevError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BdevError::Exists(m)
            | BdevError::NotFound(m)
            | BdevError::Busy(m)
            | BdevError::Invalid(m)
            | BdevError::NoMemory(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for BdevError {}

/// What a module says about a new bdev.
#[derive(Debug, Clone)]
pub struct BdevParams {
    pub name: String,
    pub uuid: Option<Uuid>,
    pub product_name: String,
    pub block_size: u32,
    pub num_blocks: u64,
}

/// Checks a block size: 512 to 4096 bytes, a power of two.
pub fn check_block_size(block_size: u32) -> Result<(), BdevError> {
    if !(512..=4096).contains(&block_size) || !block_size.is_power_of_two() {
        return Err(BdevError::Invalid(format!(
            "block_size {block_size} is not supported (use 512 or 4096)"
        )));
    }
    Ok(())
}

/// Events an open descriptor is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BdevEvent {
    /// The bdev is being removed: finish or fail outstanding I/O, then close.
    Remove,
}

type EventFn = Rc<dyn Fn(BdevEvent)>;
type Done = Box<dyn FnOnce(Result<(), BdevError>) + Send>;

struct DescInfo {
    id: u64,
    write: bool,
    /// The reactor that opened it, which keeps its event callback.
    reactor: usize,
}

thread_local! {
    /// Event callbacks of the descriptors opened on this reactor, by descriptor id.
    static EVENT_CALLBACKS: RefCell<HashMap<u64, EventFn>> = RefCell::new(HashMap::new());
}

fn deliver_event(desc_id: u64, event: BdevEvent) {
    let cb = EVENT_CALLBACKS.with(|m| m.borrow().get(&desc_id).cloned());
    if let Some(cb) = cb {
        cb(event);
    }
}

#[derive(Default)]
struct BdevState {
    descs: Vec<DescInfo>,
    claim: Option<(u64, String)>,
    removing: bool,
    on_removed: Vec<Done>,
    /// Reactors that hold a channel for this bdev.
    channel_reactors: Vec<usize>,
}

/// A registered block device.
pub struct Bdev {
    pub(crate) id: u64,
    name: String,
    uuid: Uuid,
    product_name: String,
    block_size: u32,
    /// Changes only when a module picks up a resized device (`bdev_uring_rescan`).
    num_blocks: AtomicU64,
    backend: Box<dyn BdevBackend>,
    state: Mutex<BdevState>,
    pub(crate) stats: IoStatSlots,
    /// Number of locked LBA ranges; the I/O path reads only this when it is zero.
    pub(crate) lock_count: AtomicUsize,
    pub(crate) locks: Mutex<Vec<LockedRange>>,
}

impl Bdev {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn uuid(&self) -> Uuid {
        self.uuid
    }
    pub fn product_name(&self) -> &str {
        &self.product_name
    }
    pub fn block_size(&self) -> u32 {
        self.block_size
    }
    pub fn num_blocks(&self) -> u64 {
        self.num_blocks.load(Ordering::Relaxed)
    }
    /// Takes a new size (a module's rescan); I/O validated from now on sees it.
    pub(crate) fn set_num_blocks(&self, num_blocks: u64) {
        self.num_blocks.store(num_blocks, Ordering::Relaxed);
        tracing::info!(
            "bdev {}: now {} x {} bytes",
            self.name,
            num_blocks,
            self.block_size
        );
    }
    pub fn module(&self) -> &'static str {
        self.backend.module()
    }
    pub fn backend(&self) -> &dyn BdevBackend {
        &*self.backend
    }
    /// Whether I/O of this type is accepted (natively or emulated).
    pub fn supports(&self, t: IoType) -> bool {
        match t {
            IoType::Compare | IoType::CompareAndWrite => {
                self.backend.supports(t) || self.backend.supports(IoType::Read)
            }
            _ => self.backend.supports(t),
        }
    }
    /// The module holding a claim, if any.
    pub fn claimed_by(&self) -> Option<String> {
        self.state().claim.as_ref().map(|(_, m)| m.clone())
    }
    pub fn is_removing(&self) -> bool {
        self.state().removing
    }
    pub fn open_count(&self) -> usize {
        self.state().descs.len()
    }

    fn state(&self) -> MutexGuard<'_, BdevState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn note_channel(&self, reactor: usize) {
        let mut st = self.state();
        if !st.channel_reactors.contains(&reactor) {
            st.channel_reactors.push(reactor);
        }
    }

    pub(crate) fn channel_reactors(&self) -> Vec<usize> {
        self.state().channel_reactors.clone()
    }

    /// The entry `bdev_get_bdevs` shows.
    pub fn info(&self) -> Value {
        let mut types = serde_json::Map::new();
        for t in IoType::ALL {
            types.insert(t.name().to_string(), Value::Bool(self.supports(t)));
        }
        let claim = self.claimed_by();
        serde_json::json!({
            "name": self.name,
            "aliases": [],
            "product_name": self.product_name,
            "block_size": self.block_size,
            "num_blocks": self.num_blocks(),
            "uuid": self.uuid.to_string(),
            "claimed": claim.is_some(),
            "claim_module": claim,
            "module": self.module(),
            "supported_io_types": types,
            "driver_specific": self.backend.info(),
        })
    }
}

impl std::fmt::Debug for Bdev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bdev")
            .field("name", &self.name)
            .field("block_size", &self.block_size)
            .field("num_blocks", &self.num_blocks())
            .finish()
    }
}

struct Registry {
    bdevs: Vec<Arc<Bdev>>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry { bdevs: Vec::new() });
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Adds a bdev. Names are unique; block sizes 512 to 4096.
pub fn register(params: BdevParams, backend: Box<dyn BdevBackend>) -> Result<Arc<Bdev>, BdevError> {
    if params.name.is_empty() {
        return Err(BdevError::Invalid("bdev name must not be empty".into()));
    }
    check_block_size(params.block_size)?;
    if params.num_blocks == 0 {
        return Err(BdevError::Invalid(format!(
            "bdev {} would have no blocks",
            params.name
        )));
    }
    let mut reg = registry();
    if reg.bdevs.iter().any(|b| b.name == params.name) {
        return Err(BdevError::Exists(format!(
            "bdev {} already exists",
            params.name
        )));
    }
    let uuid = params.uuid.unwrap_or_else(Uuid::new_v4);
    if reg.bdevs.iter().any(|b| b.uuid == uuid) {
        return Err(BdevError::Exists(format!(
            "a bdev with uuid {uuid} already exists"
        )));
    }
    let bdev = Arc::new(Bdev {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        name: params.name,
        uuid,
        product_name: params.product_name,
        block_size: params.block_size,
        num_blocks: AtomicU64::new(params.num_blocks),
        backend,
        state: Mutex::new(BdevState::default()),
        stats: IoStatSlots::new(),
        lock_count: AtomicUsize::new(0),
        locks: Mutex::new(Vec::new()),
    });
    reg.bdevs.push(bdev.clone());
    tracing::info!(
        "bdev {} registered ({} x {} bytes, {})",
        bdev.name,
        bdev.num_blocks(),
        bdev.block_size,
        bdev.module()
    );
    Ok(bdev)
}

/// Looks a bdev up by name (or uuid).
pub fn get(name: &str) -> Option<Arc<Bdev>> {
    registry()
        .bdevs
        .iter()
        .find(|b| b.name == name || b.uuid.to_string() == name)
        .cloned()
}

/// Every registered bdev, oldest first.
pub fn list() -> Vec<Arc<Bdev>> {
    registry().bdevs.clone()
}

/// An open bdev. Closing is dropping it; drop it on a reactor thread.
pub struct Desc {
    bdev: Arc<Bdev>,
    id: u64,
    write: bool,
    reactor: usize,
}

/// Opens `name`; call on a reactor. `on_event` is called on this reactor when the
/// bdev is about to go away; the holder should then finish its I/O and drop the
/// `Desc` (dropping it inside the callback is fine).
pub fn open(
    name: &str,
    write: bool,
    on_event: impl Fn(BdevEvent) + 'static,
) -> Result<Desc, BdevError> {
    let Some(reactor) = ferrite_reactor::current_index() else {
        return Err(BdevError::Invalid(
            "bdevs are opened on a reactor thread".into(),
        ));
    };
    let bdev =
        get(name).ok_or_else(|| BdevError::NotFound(format!("bdev {name} does not exist")))?;
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut st = bdev.state();
    if st.removing {
        return Err(BdevError::Busy(format!("bdev {name} is being removed")));
    }
    if write {
        if let Some((_, module)) = &st.claim {
            return Err(BdevError::Busy(format!(
                "bdev {name} is claimed by {module} and cannot be opened for writing"
            )));
        }
    }
    st.descs.push(DescInfo { id, write, reactor });
    drop(st);
    EVENT_CALLBACKS.with(|m| m.borrow_mut().insert(id, Rc::new(on_event)));
    Ok(Desc {
        bdev,
        id,
        write,
        reactor,
    })
}

impl Desc {
    pub fn bdev(&self) -> &Arc<Bdev> {
        &self.bdev
    }

    pub fn is_write(&self) -> bool {
        self.write
    }

    /// Claims the bdev for `module` exclusively: no other descriptor may write to it
    /// or claim it while this one is open.
    pub fn claim(&self, module: &str) -> Result<(), BdevError> {
        let mut st = self.bdev.state();
        if let Some((_, m)) = &st.claim {
            return Err(BdevError::Busy(format!(
                "bdev {} is already claimed by {m}",
                self.bdev.name
            )));
        }
        if st.descs.iter().any(|d| d.id != self.id && d.write) {
            return Err(BdevError::Busy(format!(
                "bdev {} is open for writing elsewhere and cannot be claimed",
                self.bdev.name
            )));
        }
        st.claim = Some((self.id, module.to_string()));
        Ok(())
    }

    /// This reactor's channel for the bdev (made on first use).
    pub fn channel(&self) -> crate::IoChannel {
        crate::channel::get_channel(&self.bdev)
    }
}

impl Drop for Desc {
    fn drop(&mut self) {
        let id = self.id;
        if ferrite_reactor::current_index() == Some(self.reactor) {
            EVENT_CALLBACKS.with(|m| m.borrow_mut().remove(&id));
        } else if ferrite_reactor::on_reactor() {
            let forget = Box::new(move || {
                EVENT_CALLBACKS.with(|m| m.borrow_mut().remove(&id));
            });
            let _ = ferrite_reactor::send(self.reactor, forget);
        }
        let finish = {
            let mut st = self.bdev.state();
            st.descs.retain(|d| d.id != self.id);
            if matches!(st.claim, Some((id, _)) if id == self.id) {
                st.claim = None;
            }
            st.removing && st.descs.is_empty()
        };
        if finish {
            finish_unregister(self.bdev.clone());
        }
    }
}

/// Removes a bdev: tells every open descriptor, waits for them to close, destroys
/// the channels, calls the backend's `destruct` and then `done`. Call on a reactor.
pub fn unregister(name: &str, done: impl FnOnce(Result<(), BdevError>) + Send + 'static) {
    let Some(bdev) = get(name) else {
        done(Err(BdevError::NotFound(format!(
            "bdev {name} does not exist"
        ))));
        return;
    };
    let (events, finish) = {
        let mut st = bdev.state();
        st.on_removed.push(Box::new(done));
        if st.removing {
            return;
        }
        st.removing = true;
        let events: Vec<(usize, u64)> = st.descs.iter().map(|d| (d.reactor, d.id)).collect();
        (events, st.descs.is_empty())
    };
    tracing::info!("bdev {name}: removing ({} open)", events.len());
    for (reactor, desc_id) in events {
        // Always by message, even to this reactor: the caller may hold borrows.
        let sent = ferrite_reactor::send(
            reactor,
            Box::new(move || deliver_event(desc_id, BdevEvent::Remove)),
        );
        if let Err(e) = sent {
            tracing::error!("bdev {name}: cannot deliver the remove event: {e}");
        }
    }
    if finish {
        finish_unregister(bdev);
    }
}

/// The last descriptor closed: drop every reactor's channel, then destruct.
fn finish_unregister(bdev: Arc<Bdev>) {
    let reactors = bdev.channel_reactors();
    if reactors.is_empty() || !ferrite_reactor::on_reactor() {
        complete_unregister(bdev);
        return;
    }
    let id = bdev.id;
    let b = bdev.clone();
    ferrite_reactor::for_each_reactor(
        move || crate::channel::drop_channel(id),
        move |_| complete_unregister(b),
    );
}

fn complete_unregister(bdev: Arc<Bdev>) {
    registry().bdevs.retain(|b| !Arc::ptr_eq(b, &bdev));
    bdev.backend.destruct();
    tracing::info!("bdev {} removed", bdev.name);
    let waiters = std::mem::take(&mut bdev.state().on_removed);
    for done in waiters {
        done(Ok(()));
    }
}
