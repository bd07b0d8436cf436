//! SCSI devices (one per target node), their logical units over bdevs, I_T
//! nexuses, and the per-session port through which a transport executes tasks.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ferrite_bdev::{self as bdev, Bdev, Desc, IoChannel};

use super::exec;
use super::mode::ModeState;
use super::state::{LunState, NexusLun};
use super::task::{Task, TaskCallback};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// An I_T nexus: one initiator port talking to one target port (for iSCSI, a
/// session). Reservations and unit attentions are kept per nexus.
#[derive(Debug)]
pub struct Nexus {
    pub id: u64,
    /// iSCSI: `<initiator name>,i,0x<isid>`.
    pub initiator_port: String,
    /// iSCSI: `<target name>,t,0x<tpgt>`.
    pub target_port: String,
    pub relative_target_port: u16,
    /// The initiator port's SPC-4 TransportID (persistent reservations use it).
    pub transport_id: Vec<u8>,
}

impl Nexus {
    pub fn new(
        initiator_port: String,
        target_port: String,
        relative_target_port: u16,
        transport_id: Vec<u8>,
    ) -> Nexus {
        Nexus {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            initiator_port,
            target_port,
            relative_target_port,
            transport_id,
        }
    }
}

/// A logical unit: a bdev exported under a LUN number. Shared by every session
/// of its device, on any reactor; what they share lives behind the LUN's state.
pub struct Lun {
    pub id: u64,
    bdev: Arc<Bdev>,
    pub(crate) desc: Desc,
    removed: AtomicBool,
    /// Reservations, unit attentions and copy results shared by its nexuses.
    pub(crate) state: Arc<LunState>,
    /// Mode parameters (write cache, sense format, write protection), shared
    /// by every I_T nexus.
    pub mode: ModeState,
}

impl Lun {
    pub fn bdev(&self) -> &Arc<Bdev> {
        &self.bdev
    }

    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }
}

impl std::fmt::Debug for Lun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lun({} -> {})", self.id, self.bdev.name())
    }
}

/// A SCSI target device: the LUNs one target node exports.
pub struct ScsiDev {
    pub id: u64,
    name: String,
    luns: Mutex<Vec<Arc<Lun>>>,
    /// Bumped when the LUN list changes; ports refresh their copy when it moves.
    generation: AtomicU64,
}

impl std::fmt::Debug for ScsiDev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ScsiDev({})", self.name)
    }
}

impl ScsiDev {
    /// A device named `name` (the target name) exporting `luns` (id, bdev name).
    /// Opens the bdevs; call on a reactor.
    pub fn new(name: &str, luns: &[(u64, String)]) -> Result<Arc<ScsiDev>, String> {
        let dev = Arc::new(ScsiDev {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            name: name.to_string(),
            luns: Mutex::new(Vec::new()),
            generation: AtomicU64::new(1),
        });
        for (id, bdev_name) in luns {
            dev.add_lun(*id, bdev_name)?;
        }
        Ok(dev)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Lun>>> {
        self.luns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Exports `bdev_name` as LUN `id`. Call on a reactor.
    pub fn add_lun(self: &Arc<Self>, id: u64, bdev_name: &str) -> Result<(), String> {
        if self.lock().iter().any(|l| l.id == id) {
            return Err(format!("LUN {id} already exists on {}", self.name));
        }
        let weak = Arc::downgrade(self);
        let desc = bdev::open(bdev_name, true, move |_event| {
            // The bdev is going away: stop serving it; sessions see the LUN
            // vanish (REPORTED LUNS DATA HAS CHANGED) on their next command.
            if let Some(dev) = weak.upgrade() {
                dev.remove_lun(id);
            }
        })
        .map_err(|e| e.to_string())?;
        let lun = Arc::new(Lun {
            id,
            state: LunState::new(desc.bdev()),
            bdev: desc.bdev().clone(),
            desc,
            removed: AtomicBool::new(false),
            mode: ModeState::default(),
        });
        super::xcopy::register_lun(&lun);
        let mut luns = self.lock();
        luns.push(lun);
        luns.sort_by_key(|l| l.id);
        drop(luns);
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Stops exporting LUN `id` (its bdev is closed once in-flight tasks finish).
    pub fn remove_lun(&self, id: u64) {
        let mut luns = self.lock();
        if let Some(i) = luns.iter().position(|l| l.id == id) {
            let lun = luns.remove(i);
            lun.removed.store(true, Ordering::Release);
        }
        drop(luns);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The LUNs now exported, by id.
    pub fn luns(&self) -> Vec<Arc<Lun>> {
        self.lock().clone()
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// A LUN as one port sees it on its reactor: the LUN and this reactor's channel.
pub(crate) struct LunView {
    pub(crate) lun: Arc<Lun>,
    pub(crate) ch: IoChannel,
    /// This nexus's standing with the LUN (unit attentions, identity).
    pub(crate) nx: Arc<NexusLun>,
}

/// One I_T nexus's access to a device, on the reactor the session lives on.
/// Transports execute tasks through it.
pub struct ScsiPort {
    dev: Arc<ScsiDev>,
    nexus: Arc<Nexus>,
    generation: u64,
    luns: Vec<Rc<LunView>>,
}

impl ScsiPort {
    /// Call on the reactor that will execute this port's tasks.
    pub fn new(dev: Arc<ScsiDev>, nexus: Arc<Nexus>) -> ScsiPort {
        let mut port = ScsiPort {
            dev,
            nexus,
            generation: 0,
            luns: Vec::new(),
        };
        port.refresh();
        port
    }

    pub fn dev(&self) -> &Arc<ScsiDev> {
        &self.dev
    }

    pub fn nexus(&self) -> &Arc<Nexus> {
        &self.nexus
    }

    fn refresh(&mut self) {
        let generation = self.dev.generation();
        if generation == self.generation {
            return;
        }
        let luns = self.dev.luns();
        // Keep channels we already have; open the new ones.
        let mut views = Vec::with_capacity(luns.len());
        for lun in luns {
            match self.luns.iter().find(|v| Arc::ptr_eq(&v.lun, &lun)) {
                Some(v) => views.push(v.clone()),
                None => {
                    let ch = lun.desc.channel();
                    let nx = super::state::attach(&lun.state, &self.nexus);
                    views.push(Rc::new(LunView { lun, ch, nx }));
                }
            }
        }
        if self.generation != 0 {
            super::ua::luns_changed(&views);
        }
        self.luns = views;
        self.generation = generation;
    }

    /// The view of LUN `id`, if exported.
    pub(crate) fn lun(&mut self, id: u64) -> Option<Rc<LunView>> {
        if self.dev.generation() != self.generation {
            self.refresh();
        }
        self.luns
            .iter()
            .find(|v| v.lun.id == id && !v.lun.is_removed())
            .cloned()
    }

    /// LUN ids exported now, ascending.
    pub fn lun_ids(&mut self) -> Vec<u64> {
        self.refresh();
        self.luns.iter().map(|v| v.lun.id).collect()
    }

    pub(crate) fn lun_count(&mut self) -> usize {
        self.refresh();
        self.luns.len()
    }

    pub(crate) fn lun_id_at(&self, i: usize) -> u64 {
        self.luns[i].lun.id
    }

    /// Executes `task`; `callback.task_done(tag, task)` runs when it ends, always
    /// later (never inside this call).
    pub fn execute(&mut self, task: Task, callback: &Rc<dyn TaskCallback>, tag: u64) {
        exec::execute(self, task, callback.clone(), tag);
    }
}
