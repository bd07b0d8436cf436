//! Persist through power loss (APTPL): a LUN's registrations and persistent
//! reservation kept in a file named by its bdev's UUID, so they survive a
//! restart of the target.
//!
//! Files live in one directory: [`set_pr_dir`], else `/var/lib/ferrite/pr`, else
//! (when that is not writable) `$TMPDIR/ferrite-pr`. They are written by one
//! background thread, never on a reactor: a temporary file, fsync, rename over
//! the old one, fsync of the directory. Each write carries a sequence number,
//! so a stale state never overwrites a newer one. The command that changed the
//! state completes only once its state is on disk.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};

const DEFAULT_DIR: &str = "/var/lib/ferrite/pr";

static DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Sets the directory APTPL state files are kept in (created when needed).
pub fn set_pr_dir(path: impl Into<PathBuf>) {
    *DIR.lock().unwrap_or_else(|e| e.into_inner()) = Some(path.into());
}

/// The directory in use: the one set, else the default when it can be written,
/// else a directory under the system's temporary directory.
pub fn pr_dir() -> PathBuf {
    let mut g = DIR.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(d) = g.as_ref() {
        return d.clone();
    }
    let default = PathBuf::from(DEFAULT_DIR);
    let chosen = if writable(&default) {
        default
    } else {
        let tmp = std::env::temp_dir().join("ferrite-pr");
        tracing::warn!(
            "{DEFAULT_DIR} is not writable; persistent reservations (APTPL) go to {}",
            tmp.display()
        );
        tmp
    };
    *g = Some(chosen.clone());
    chosen
}

fn writable(dir: &Path) -> bool {
    if fs::create_dir_all(dir).is_err() {
        return false;
    }
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    let ok = fs::write(&probe, b"").is_ok();
    let _ = fs::remove_file(&probe);
    ok
}

/// The state file of the LUN over the bdev with this UUID.
pub(crate) fn path_for(uuid: &[u8; 16]) -> PathBuf {
    pr_dir().join(format!("{}.json", hex(uuid)))
}

/// One registration as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct SavedReg {
    /// Reservation key, hex.
    pub key: String,
    /// TransportID of the initiator port, hex.
    pub transport_id: String,
    pub relative_target_port: u16,
    pub all_tg_pt: bool,
    /// Holds the (non all-registrants) reservation.
    pub holder: bool,
}

/// A LUN's persistent reservation state as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Saved {
    pub version: u32,
    pub generation: u32,
    pub registrations: Vec<SavedReg>,
    /// Reservation type, 0 for none.
    pub reservation_type: u8,
}

/// Where a state file may be, without creating anything: the directory set,
/// else the default and the fallback.
fn candidates(uuid: &[u8; 16]) -> Vec<PathBuf> {
    let name = format!("{}.json", hex(uuid));
    if let Some(d) = DIR.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return vec![d.join(name)];
    }
    vec![
        Path::new(DEFAULT_DIR).join(&name),
        std::env::temp_dir().join("ferrite-pr").join(name),
    ]
}

/// Reads the stored state for `uuid`, if any.
pub(crate) fn load(uuid: &[u8; 16]) -> Option<Saved> {
    let (path, text) = candidates(uuid)
        .into_iter()
        .find_map(|p| fs::read(&p).ok().map(|t| (p, t)))?;
    match serde_json::from_slice::<Saved>(&text) {
        Ok(s) if s.version == 1 => Some(s),
        Ok(_) | Err(_) => {
            tracing::error!("{}: unreadable APTPL state, ignored", path.display());
            None
        }
    }
}

static SEQ: AtomicU64 = AtomicU64::new(1);

/// The sequence number of the next write; take it under the LUN's lock, so
/// the writes of one file are numbered in the order of its states.
pub(crate) fn next_seq() -> u64 {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// A write (or, with `contents` None, a removal) of a state file.
pub(crate) struct Job {
    pub path: PathBuf,
    pub contents: Option<Vec<u8>>,
    /// Orders the writes of one file: older ones are skipped.
    pub seq: u64,
    /// Runs once the job is done (on the writer thread).
    pub done: Box<dyn FnOnce() + Send>,
}

fn writer() -> &'static Mutex<mpsc::Sender<Job>> {
    static W: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    W.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("ferrite-aptpl".into())
            .spawn(move || {
                let mut last: HashMap<PathBuf, u64> = HashMap::new();
                while let Ok(job) = rx.recv() {
                    let newest = match last.get(&job.path) {
                        Some(&s) => job.seq > s,
                        None => true,
                    };
                    if newest {
                        last.insert(job.path.clone(), job.seq);
                        if let Err(e) = apply(&job.path, job.contents.as_deref()) {
                            tracing::error!("APTPL state {} not saved: {e}", job.path.display());
                        }
                    }
                    (job.done)();
                }
            })
            .expect("spawn the APTPL writer thread");
        Mutex::new(tx)
    })
}

/// Queues `job` for the writer thread.
pub(crate) fn submit(job: Job) {
    let tx = writer().lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Err(mpsc::SendError(job)) = tx.send(job) {
        // The writer is gone (cannot happen while the process lives); do it here.
        let _ = apply(&job.path, job.contents.as_deref());
        (job.done)();
    }
}

/// Writes `contents` to `path` atomically, or removes `path`.
fn apply(path: &Path, contents: Option<&[u8]>) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    match contents {
        Some(bytes) => {
            fs::create_dir_all(dir)?;
            let tmp = path.with_extension("json.tmp");
            {
                let mut f = fs::File::create(&tmp)?;
                f.write_all(bytes)?;
                f.sync_all()?;
            }
            fs::rename(&tmp, path)?;
        }
        None => match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        },
    }
    // Make the rename (or removal) itself durable.
    fs::File::open(dir)?.sync_all()
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
