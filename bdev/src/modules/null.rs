//! null: a bdev that reads zeros and drops writes, for measuring the overhead of
//! everything above the device.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::{BdevBackend, BdevError, BdevIo, BdevParams, ChannelBackend, IoType};

pub const MODULE: &str = "null";

/// `bdev_null_create` parameters.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateParams {
    pub name: String,
    pub num_blocks: u64,
    pub block_size: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<Uuid>,
}

/// `bdev_null_delete` parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    pub name: String,
}

struct Null;

/// Makes a null bdev; returns its name.
pub fn create(p: CreateParams) -> Result<String, BdevError> {
    let bdev = crate::register(
        BdevParams {
            name: p.name,
            uuid: p.uuid,
            product_name: "Null disk".into(),
            block_size: p.block_size,
            num_blocks: p.num_blocks,
        },
        Box::new(Null),
    )?;
    Ok(bdev.name().to_string())
}

pub fn delete(name: &str, done: impl FnOnce(Result<(), BdevError>) + Send + 'static) {
    super::delete_of_module(name, MODULE, done)
}

impl BdevBackend for Null {
    fn module(&self) -> &'static str {
        MODULE
    }

    fn unmap_reads_zeroes(&self) -> bool {
        true // nothing is stored
    }

    fn supports(&self, t: IoType) -> bool {
        matches!(
            t,
            IoType::Read
                | IoType::Write
                | IoType::Flush
                | IoType::Unmap
                | IoType::WriteZeroes
                | IoType::Reset
        )
    }

    fn create_channel(&self, _bdev: &Arc<crate::Bdev>) -> Box<dyn ChannelBackend> {
        Box::new(NullChannel)
    }

    fn config(&self, bdev: &crate::Bdev) -> Option<Value> {
        Some(json!({
            "method": "bdev_null_create",
            "params": {
                "name": bdev.name(),
                "num_blocks": bdev.num_blocks(),
                "block_size": bdev.block_size(),
                "uuid": bdev.uuid().to_string(),
            }
        }))
    }
}

struct NullChannel;

impl ChannelBackend for NullChannel {
    #[inline]
    fn submit(&mut self, io: BdevIo) {
        if io.params().io_type == IoType::Read {
            io.with_request(|r| r.data.fill(0));
        }
        io.complete(Ok(()));
    }
}
