//! The error object of a JSON-RPC response.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

/// An error answered to a JSON-RPC request.
///
/// Protocol errors use the codes of the JSON-RPC 2.0 specification; application
/// errors follow SPDK and use `-errno` (`-17` for a duplicate name, `-19` for a
/// missing device, ...), so clients written against SPDK read them the same way.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RpcError {
    pub code: i32,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    /// The bytes received are not JSON.
    pub const PARSE_ERROR: i32 = -32700;
    /// The JSON received is not a valid request object.
    pub const INVALID_REQUEST: i32 = -32600;
    /// No method of that name is registered.
    pub const METHOD_NOT_FOUND: i32 = -32601;
    /// The method's parameters are missing, unknown or of the wrong type.
    pub const INVALID_PARAMS: i32 = -32602;
    /// The server failed while handling the request.
    pub const INTERNAL_ERROR: i32 = -32603;

    pub fn new(code: i32, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    pub fn parse_error(detail: impl fmt::Display) -> RpcError {
        RpcError::new(Self::PARSE_ERROR, format!("Parse error: {detail}"))
    }

    pub fn invalid_request(detail: impl fmt::Display) -> RpcError {
        RpcError::new(Self::INVALID_REQUEST, format!("Invalid request: {detail}"))
    }

    pub fn method_not_found(method: &str) -> RpcError {
        RpcError::new(
            Self::METHOD_NOT_FOUND,
            format!("Method not found: {method}"),
        )
    }

    /// The message should name the parameter at fault; serde's messages do
    /// ("missing field `name`", "unknown field `foo`, expected ...").
    pub fn invalid_params(message: impl Into<String>) -> RpcError {
        RpcError::new(Self::INVALID_PARAMS, message)
    }

    pub fn internal(message: impl Into<String>) -> RpcError {
        RpcError::new(Self::INTERNAL_ERROR, message)
    }

    /// An application error in SPDK's style: the code is `-errno`
    /// (`RpcError::from_errno(libc::EEXIST, "bdev Malloc0 already exists")`).
    pub fn from_errno(errno: i32, message: impl Into<String>) -> RpcError {
        RpcError::new(-errno.abs(), message)
    }

    /// Attaches structured detail to the error.
    pub fn with_data(mut self, data: Value) -> RpcError {
        self.data = Some(data);
        self
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.message, self.code)
    }
}

impl std::error::Error for RpcError {}

impl From<std::io::Error> for RpcError {
    /// An OS error keeps its errno as the code; anything else is an internal error.
    fn from(e: std::io::Error) -> RpcError {
        match e.raw_os_error() {
            Some(errno) => RpcError::from_errno(errno, e.to_string()),
            None => RpcError::internal(e.to_string()),
        }
    }
}
