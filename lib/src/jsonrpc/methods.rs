//! The method registry, the [`Responder`] a handler answers through, and the
//! helpers handlers use to read their parameters.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, RwLock};

use ferrite_reactor::{Handle, Message, SendError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::RpcError;

/// What a method runs: the request's params (absent when the request had none)
/// and the [`Responder`] to answer through, now or later.
pub type Handler = Box<dyn Fn(Option<Value>, Responder) + Send + Sync>;

type Reply = Box<dyn FnOnce(Result<Value, RpcError>) + Send>;

/// Answers one request, once. It may be moved to any reactor or thread and
/// answered there, so a handler can reply after a round of messages.
///
/// A responder dropped without an answer answers `-32603 internal error: no
/// response`, so no client waits forever on a handler that lost it.
pub struct Responder {
    reply: Option<Reply>,
}

impl Responder {
    /// A responder that hands the result to `reply` on whichever thread answers.
    pub fn new(reply: impl FnOnce(Result<Value, RpcError>) + Send + 'static) -> Responder {
        Responder {
            reply: Some(Box::new(reply)),
        }
    }

    /// A responder that hands the result to `reply` on the reactor creating it
    /// (by message, even when answered right away on that reactor, so `reply`
    /// never runs inside the handler). Off a reactor it behaves like [`new`].
    ///
    /// [`new`]: Responder::new
    pub fn on_this_reactor(
        reply: impl FnOnce(Result<Value, RpcError>) + Send + 'static,
    ) -> Responder {
        match ferrite_reactor::current_index() {
            Some(origin) => {
                let handle = ferrite_reactor::handle();
                Responder::new(move |result| {
                    send_to_reactor(&handle, origin, Box::new(move || reply(result)));
                })
            }
            None => Responder::new(reply),
        }
    }

    /// Answers with `result`, serialized to JSON.
    pub fn ok(self, result: impl Serialize) {
        let answer = serde_json::to_value(result)
            .map_err(|e| RpcError::internal(format!("internal error: cannot encode result: {e}")));
        self.answer(answer);
    }

    /// Answers with an error.
    pub fn err(self, error: RpcError) {
        self.answer(Err(error));
    }

    /// Answers with either, e.g. `resp.reply(create_bdev(params))`.
    pub fn reply(self, result: Result<impl Serialize, RpcError>) {
        match result {
            Ok(value) => self.ok(value),
            Err(e) => self.err(e),
        }
    }

    fn answer(mut self, result: Result<Value, RpcError>) {
        if let Some(reply) = self.reply.take() {
            reply(result);
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(reply) = self.reply.take() {
            reply(Err(RpcError::internal("internal error: no response")));
        }
    }
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("answered", &self.reply.is_none())
            .finish()
    }
}

/// Queues `msg` for reactor `target` from any thread. On a reactor this goes
/// through its outbox (never blocks); elsewhere it waits while the target's
/// queue is full, since losing the message would lose an RPC answer.
pub(crate) fn send_to_reactor(handle: &Handle, target: usize, msg: Message) {
    let result = if ferrite_reactor::on_reactor() {
        ferrite_reactor::send(target, msg)
    } else {
        let mut msg = msg;
        loop {
            match handle.try_send(target, msg) {
                Err(SendError::Full(back)) => {
                    msg = back;
                    std::thread::sleep(std::time::Duration::from_micros(100));
                }
                other => break other,
            }
        }
    };
    if let Err(e) = result {
        tracing::warn!("cannot reach reactor {target}: {e}");
    }
}

/// The names of the registered methods, shared so that a method (like
/// `rpc_get_methods`) can list methods registered after it.
#[derive(Clone, Default)]
pub struct MethodNames(Arc<RwLock<BTreeSet<String>>>);

impl MethodNames {
    /// The names, sorted.
    pub fn sorted(&self) -> Vec<String> {
        let names = self.0.read().unwrap_or_else(|e| e.into_inner());
        names.iter().cloned().collect()
    }

    fn insert(&self, name: &str) {
        let mut names = self.0.write().unwrap_or_else(|e| e.into_inner());
        names.insert(name.to_string());
    }
}

/// The JSON-RPC methods a target answers, by name. Filled at start-up, then
/// shared (`Arc<Methods>`) by the RPC server and the config replay.
#[derive(Default)]
pub struct Methods {
    handlers: HashMap<String, Handler>,
    names: MethodNames,
}

impl Methods {
    pub fn new() -> Methods {
        Methods::default()
    }

    /// Adds a method.
    ///
    /// # Panics
    /// If `name` is already registered: two modules claiming one name is a bug.
    pub fn register(
        &mut self,
        name: &str,
        handler: impl Fn(Option<Value>, Responder) + Send + Sync + 'static,
    ) {
        assert!(
            !self.handlers.contains_key(name),
            "RPC method {name} registered twice"
        );
        self.handlers.insert(name.to_string(), Box::new(handler));
        self.names.insert(name);
    }

    pub fn contains(&self, name: &str) -> bool {
        self.handlers.contains_key(name)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.names.sorted()
    }

    /// A live view of the names, for methods that list them.
    pub fn shared_names(&self) -> MethodNames {
        self.names.clone()
    }

    /// Runs method `name` in-process, as if a client had called it.
    ///
    /// Called on a reactor, `done` runs later on that same reactor, never inside
    /// this call, whichever reactor the handler answers on. Called elsewhere,
    /// `done` runs on whichever thread answers (possibly inside this call).
    pub fn call(
        &self,
        name: &str,
        params: Option<Value>,
        done: impl FnOnce(Result<Value, RpcError>) + Send + 'static,
    ) {
        self.dispatch(name, params, Responder::on_this_reactor(done));
    }

    /// Runs method `name`, answering through `resp`.
    pub fn dispatch(&self, name: &str, params: Option<Value>, resp: Responder) {
        match self.handlers.get(name) {
            Some(handler) => handler(params, resp),
            None => resp.err(RpcError::method_not_found(name)),
        }
    }
}

/// Reads a method's params into `T`, typically a `#[serde(deny_unknown_fields)]`
/// struct. Absent (or `null`) params read as `{}`, so a struct whose fields are
/// all optional accepts a request without params; params that are not an object
/// are refused. Errors are `-32602` with serde's message, which names the field.
pub fn parse_params<T: DeserializeOwned>(params: Option<Value>) -> Result<T, RpcError> {
    let object = match params {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(object @ Value::Object(_)) => object,
        Some(other) => {
            return Err(RpcError::invalid_params(format!(
                "params must be an object, not {}",
                json_kind(&other)
            )))
        }
    };
    serde_json::from_value(object).map_err(|e| RpcError::invalid_params(e.to_string()))
}

/// The params of a method that takes none: refuses any field.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// "an array", "a string", ...: for messages about a value of the wrong kind.
pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct CreateParams {
        name: String,
        #[serde(default)]
        block_size: Option<u64>,
    }

    #[test]
    fn parse_params_names_the_field_at_fault() {
        let ok = parse_params::<CreateParams>(Some(serde_json::json!({"name": "a"}))).unwrap();
        assert_eq!((ok.name.as_str(), ok.block_size), ("a", None));

        let missing = parse_params::<CreateParams>(None).unwrap_err();
        assert_eq!(missing.code, RpcError::INVALID_PARAMS);
        assert!(
            missing.message.contains("missing field `name`"),
            "{missing}"
        );

        let unknown =
            parse_params::<CreateParams>(Some(serde_json::json!({"name": "a", "foo": 1})))
                .unwrap_err();
        assert!(unknown.message.contains("unknown field `foo`"), "{unknown}");

        let wrong_type =
            parse_params::<CreateParams>(Some(serde_json::json!({"name": "a", "block_size": "x"})))
                .unwrap_err();
        assert!(
            wrong_type.message.contains("invalid type: string \"x\""),
            "{wrong_type}"
        );

        let not_object = parse_params::<CreateParams>(Some(serde_json::json!(["a"]))).unwrap_err();
        assert_eq!(not_object.code, RpcError::INVALID_PARAMS);
        assert!(not_object.message.contains("an array"), "{not_object}");

        parse_params::<NoParams>(None).unwrap();
        parse_params::<NoParams>(Some(serde_json::json!({}))).unwrap();
        assert!(parse_params::<NoParams>(Some(serde_json::json!({"x": 1}))).is_err());
    }

    #[test]
    fn call_answers_ok_err_and_method_not_found() {
        let mut methods = Methods::new();
        methods.register("echo", |params, resp: Responder| resp.ok(params));
        methods.register("fail", |_, resp: Responder| {
            resp.err(RpcError::from_errno(17, "exists"))
        });
        methods.register("forget", |_, resp: Responder| drop(resp));
        assert_eq!(methods.names(), ["echo", "fail", "forget"]);

        let (tx, rx) = mpsc::channel();
        for name in ["echo", "fail", "forget", "nope"] {
            let tx = tx.clone();
            methods.call(name, Some(serde_json::json!({"a": 1})), move |r| {
                tx.send(r).unwrap()
            });
        }
        assert_eq!(rx.recv().unwrap(), Ok(serde_json::json!({"a": 1})));
        assert_eq!(rx.recv().unwrap().unwrap_err().code, -17);
        let forgotten = rx.recv().unwrap().unwrap_err();
        assert_eq!(forgotten.code, RpcError::INTERNAL_ERROR);
        assert_eq!(forgotten.message, "internal error: no response");
        let missing = rx.recv().unwrap().unwrap_err();
        assert_eq!(missing.code, RpcError::METHOD_NOT_FOUND);
        assert!(missing.message.contains("nope"));
    }

    #[test]
    #[should_panic(expected = "registered twice")]
    fn duplicate_registration_panics() {
        let mut methods = Methods::new();
        methods.register("a", |_, r: Responder| r.ok(()));
        methods.register("a", |_, r: Responder| r.ok(()));
    }
}
