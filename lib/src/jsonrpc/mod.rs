//! JSON-RPC 2.0 control plane: a server on a Unix socket, the method registry
//! and the framework's own methods.
//!
//! Method names follow SPDK's `<subsystem>_<verb>_<object>` convention and
//! errors its `-errno` codes, so SPDK's rpc.py and its users feel at home.
//!
//! A module adds its methods with [`Methods::register`]; a handler reads its
//! params with [`parse_params`] and answers through its [`Responder`], at once or
//! later from any reactor:
//!
//! ```
//! use ferrite_lib::jsonrpc::{parse_params, Methods, Responder, RpcError};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct DeleteParams {
//!     name: String,
//! }
//!
//! let mut methods = Methods::new();
//! methods.register("bdev_example_delete", |params, resp: Responder| {
//!     let p: DeleteParams = match parse_params(params) {
//!         Ok(p) => p,
//!         Err(e) => return resp.err(e),
//!     };
//!     resp.err(RpcError::from_errno(19, format!("no bdev named {}", p.name)));
//! });
//! ```

mod error;
mod framework;
mod lock;
mod methods;
mod protocol;
mod reader;
mod server;
#[cfg(test)]
mod tests;

pub use error::RpcError;
pub use framework::{register_framework_methods, Framework};
pub use methods::{parse_params, Handler, MethodNames, Methods, NoParams, Responder};
pub use server::{RpcServer, MAX_REQUEST_BYTES};

pub(crate) use methods::send_to_reactor;
