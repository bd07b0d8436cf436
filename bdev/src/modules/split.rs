//! split: cuts a base bdev into `split_count` parts named `{base}p0`, `{base}p1`...
//! Each part forwards its I/O to the base with the offset shifted. The base is
//! opened for writing and claimed, so nothing else can write to it or export it.
//!
//! The parts share one descriptor of the base; it closes (releasing the claim)
//! when the last part is destructed. When the base is removed, the parts go first.

use std::sync::{Arc, Mutex, MutexGuard, Weak};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use super::vbdev;
use crate::{
    Bdev, BdevBackend, BdevError, BdevIo, BdevParams, ChannelBackend, Desc, IoChannel, IoType,
};

pub const MODULE: &str = "split";

/// `bdev_split_create` parameters.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateParams {
    pub base_bdev: String,
    pub split_count: u32,
    /// Size of each part in MiB; by default the base is divided evenly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_size_mb: Option<u64>,
}

/// `bdev_split_delete` parameters.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    pub base_bdev: String,
}

/// What the parts of one split share: the claimed descriptor of the base, closed
/// when the last part lets go of it.
struct SplitBase {
    desc: Desc,
    base_name: String,
    parts: Vec<String>,
}

/// Live splits, to find the parts of a base on delete.
static SPLITS: Mutex<Vec<Weak<SplitBase>>> = Mutex::new(Vec::new());

fn splits() -> MutexGuard<'static, Vec<Weak<SplitBase>>> {
    let mut s = SPLITS.lock().unwrap_or_else(|e| e.into_inner());
    s.retain(|w| w.strong_count() > 0);
    s
}

/// The part names of the split of `base`, if there is one.
fn parts_of(base: &str) -> Option<Vec<String>> {
    // Copy the names out and let the Arc go at once: holding it would keep the
    // base open past the last part's destruct.
    splits()
        .iter()
        .filter_map(Weak::upgrade)
        .find(|s| s.base_name == base)
        .map(|s| s.parts.clone())
}

struct SplitPart {
    /// Taken by `destruct`; the last part to drop it closes the base.
    shared: Mutex<Option<Arc<SplitBase>>>,
    base_name: String,
    offset_blocks: u64,
    supports: [bool; 8],
    /// Part 0 carries the call that recreates the whole split.
    create: Option<CreateParams>,
}

/// Splits `p.base_bdev`; returns the names of the parts.
pub fn create(p: CreateParams) -> Result<Vec<String>, BdevError> {
    if p.split_count == 0 {
        return Err(BdevError::Invalid("split_count must be at least 1".into()));
    }
    let base = crate::get(&p.base_bdev)
        .ok_or_else(|| BdevError::NotFound(format!("base bdev {} does not exist", p.base_bdev)))?;
    let base_name = base.name().to_string();
    let count = p.split_count as u64;
    let block_size = base.block_size() as u64;
    let part_blocks = match p.split_size_mb {
        Some(mb) => {
            let bytes = mb
                .checked_mul(1 << 20)
                .filter(|&b| b > 0)
                .ok_or_else(|| BdevError::Invalid(format!("split_size_mb {mb} is not usable")))?;
            let blocks = bytes / block_size;
            match blocks.checked_mul(count) {
                Some(total) if total <= base.num_blocks() => blocks,
                _ => {
                    return Err(BdevError::Invalid(format!(
                        "cannot split {base_name} ({} MiB) into {count} parts of {mb} MiB",
                        (base.num_blocks() * block_size) >> 20
                    )))
                }
            }
        }
        None => base.num_blocks() / count,
    };
    if part_blocks == 0 {
        return Err(BdevError::Invalid(format!(
            "cannot split {base_name} ({} blocks) into {count} parts",
            base.num_blocks()
        )));
    }
    let names: Vec<String> = (0..count).map(|i| format!("{base_name}p{i}")).collect();

    // Claim first, so a second split of the same base says so.
    let on_remove_names = names.clone();
    let desc = vbdev::open_claimed(&base_name, MODULE, move || {
        for n in &on_remove_names {
            vbdev::unregister_if_module(n, MODULE);
        }
    })?;
    if let Some(n) = names.iter().find(|n| crate::get(n).is_some()) {
        return Err(BdevError::Exists(format!("bdev {n} already exists")));
    }
    let shared = Arc::new(SplitBase {
        desc,
        base_name: base_name.clone(),
        parts: names.clone(),
    });
    splits().push(Arc::downgrade(&shared));

    let supports = vbdev::supported_types(&base);
    let saved = CreateParams {
        base_bdev: base_name.clone(),
        ..p
    };
    let mut made: Vec<String> = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let part = SplitPart {
            shared: Mutex::new(Some(shared.clone())),
            base_name: base_name.clone(),
            offset_blocks: i as u64 * part_blocks,
            supports,
            create: (i == 0).then(|| saved.clone()),
        };
        let registered = crate::register(
            BdevParams {
                name: name.clone(),
                uuid: Some(part_uuid(base.uuid(), name)),
                product_name: "Split Disk".into(),
                block_size: base.block_size(),
                num_blocks: part_blocks,
            },
            Box::new(part),
        );
        if let Err(e) = registered {
            // Nothing can have opened the new parts yet, so this is immediate
            // unless someone raced us; either way the last part closes the base.
            vbdev::unregister_all(made, |_| {});
            return Err(e);
        }
        made.push(name.clone());
    }
    tracing::info!("split {base_name} into {count} parts of {part_blocks} blocks");
    Ok(names)
}

/// Removes every part of the split of `base_bdev`; `done` runs once they are all
/// gone and the base is released.
pub fn delete(base_bdev: &str, done: impl FnOnce(Result<(), BdevError>) + Send + 'static) {
    match parts_of(base_bdev) {
        Some(parts) => vbdev::unregister_all(parts, done),
        None => done(Err(BdevError::NotFound(format!(
            "bdev {base_bdev} is not split"
        )))),
    }
}

/// A stable uuid for a part, derived from the base's uuid and the part's name, so
/// a split recreated from a saved config shows the same identities.
fn part_uuid(base: Uuid, name: &str) -> Uuid {
    fn fnv1a(seed: u64, parts: &[&[u8]]) -> u64 {
        let mut h = seed;
        for p in parts {
            for &b in p.iter() {
                h ^= b as u64;
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        h
    }
    let input: [&[u8]; 3] = [base.as_bytes(), b"/split/", name.as_bytes()];
    let hi = fnv1a(0xcbf2_9ce4_8422_2325, &input);
    let lo = fnv1a(hi ^ 0x9e37_79b9_7f4a_7c15, &input);
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&hi.to_be_bytes());
    b[8..].copy_from_slice(&lo.to_be_bytes());
    b[6] = (b[6] & 0x0f) | 0x80; // version 8: custom
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    Uuid::from_bytes(b)
}

impl BdevBackend for SplitPart {
    fn module(&self) -> &'static str {
        MODULE
    }

    fn supports(&self, t: IoType) -> bool {
        self.supports[t as usize]
    }

    fn create_channel(&self, _bdev: &Arc<Bdev>) -> Box<dyn ChannelBackend> {
        let shared = self
            .shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match shared {
            Some(s) => Box::new(SplitChannel {
                base: s.desc.channel(),
                offset_blocks: self.offset_blocks,
            }),
            None => Box::new(vbdev::RemovedChannel),
        }
    }

    fn info(&self) -> Value {
        json!({
            "split": {
                "base_bdev": self.base_name,
                "offset_blocks": self.offset_blocks,
            }
        })
    }

    fn config(&self, _bdev: &Bdev) -> Option<Value> {
        let p = self.create.as_ref()?;
        Some(json!({
            "method": "bdev_split_create",
            "params": serde_json::to_value(p).ok()?,
        }))
    }

    fn destruct(&self) {
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner()).take();
        // Dropped outside the lock: the last part closes the base here.
        drop(shared);
    }
}

struct SplitChannel {
    base: IoChannel,
    offset_blocks: u64,
}

impl ChannelBackend for SplitChannel {
    #[inline]
    fn submit(&mut self, io: BdevIo) {
        let shift = self.offset_blocks;
        io.forward(&self.base, move |r| {
            if r.has_range() {
                r.offset_blocks += shift;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_uuids_are_stable_distinct_and_well_formed() {
        let base = Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0);
        let a = part_uuid(base, "Malloc0p0");
        assert_eq!(a, part_uuid(base, "Malloc0p0"));
        assert_ne!(a, part_uuid(base, "Malloc0p1"));
        assert_ne!(a, part_uuid(Uuid::from_u128(1), "Malloc0p0"));
        assert_eq!(a.get_version_num(), 8);
        assert_eq!(a.get_variant(), uuid::Variant::RFC4122);
    }

    #[test]
    fn params_are_spdk_shaped() {
        let p: CreateParams =
            serde_json::from_str(r#"{"base_bdev":"Malloc0","split_count":4}"#).unwrap();
        assert_eq!((p.split_count, p.split_size_mb), (4, None));
        assert!(serde_json::from_str::<CreateParams>(
            r#"{"base_bdev":"Malloc0","split_count":4,"bogus":1}"#
        )
        .is_err());
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v, json!({"base_bdev":"Malloc0","split_count":4}));
    }
}
