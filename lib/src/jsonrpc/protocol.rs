//! JSON-RPC 2.0 message handling, independent of the socket: checks a request,
//! runs its method and builds the response; fans a batch out and gathers it.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::methods::json_kind;
use super::{Methods, RpcError};

/// Where a response goes once ready: `None` when there is nothing to send
/// (a notification, or a batch of only notifications).
pub(crate) type Respond = Box<dyn FnOnce(Option<Value>) + Send>;

/// A checked request.
struct Request {
    /// `None` for a notification, which gets no response.
    id: Option<Value>,
    method: String,
    params: Option<Value>,
}

/// Handles one JSON value read from a client (a request, a notification or a
/// batch) and calls `respond` exactly once with what to send back.
pub(crate) fn handle_message(methods: &Methods, message: Value, respond: Respond) {
    match message {
        Value::Array(batch) => handle_batch(methods, batch, respond),
        single => handle_request(methods, single, respond),
    }
}

fn handle_request(methods: &Methods, value: Value, respond: Respond) {
    match check_request(value) {
        Err((id, error)) => respond(Some(error_response(id, error))),
        Ok(Request { id, method, params }) => {
            methods.call(&method, params, move |result| {
                respond(id.map(|id| match result {
                    Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
                    Err(error) => error_response(id, error),
                }))
            });
        }
    }
}

/// The response to a request that failed, `id` being null when it is unknown.
pub(crate) fn error_response(id: Value, error: RpcError) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": error})
}

/// Checks the shape of a request. On error, returns the id to answer with
/// (the request's own when it had a valid one, else null) and the error.
fn check_request(value: Value) -> Result<Request, (Value, RpcError)> {
    let Value::Object(mut object) = value else {
        let error = RpcError::invalid_request(format!(
            "a request must be an object, not {}",
            json_kind(&value)
        ));
        return Err((Value::Null, error));
    };
    let id = match object.remove("id") {
        None => None,
        Some(id @ (Value::Null | Value::String(_) | Value::Number(_))) => Some(id),
        Some(other) => {
            let error = RpcError::invalid_request(format!(
                "\"id\" must be a string, a number or null, not {}",
                json_kind(&other)
            ));
            return Err((Value::Null, error));
        }
    };
    let answer_id = || id.clone().unwrap_or(Value::Null);
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        let error = RpcError::invalid_request("\"jsonrpc\" must be \"2.0\"");
        return Err((answer_id(), error));
    }
    let method = match object.remove("method") {
        Some(Value::String(method)) => method,
        Some(other) => {
            let error = RpcError::invalid_request(format!(
                "\"method\" must be a string, not {}",
                json_kind(&other)
            ));
            return Err((answer_id(), error));
        }
        None => {
            let error = RpcError::invalid_request("missing \"method\"");
            return Err((answer_id(), error));
        }
    };
    // Lenient about `"params": null`, which some clients send for "none".
    let params = match object.remove("params") {
        None | Some(Value::Null) => None,
        Some(params @ (Value::Object(_) | Value::Array(_))) => Some(params),
        Some(other) => {
            let error = RpcError::invalid_request(format!(
                "\"params\" must be an object or an array, not {}",
                json_kind(&other)
            ));
            return Err((answer_id(), error));
        }
    };
    Ok(Request { id, method, params })
}

/// Gathers the responses of a batch's requests, which may finish in any order
/// and on any thread, into one array in request order.
struct Batch {
    state: Mutex<BatchState>,
}

struct BatchState {
    responses: Vec<Option<Value>>,
    pending: usize,
    respond: Option<Respond>,
}

fn handle_batch(methods: &Methods, requests: Vec<Value>, respond: Respond) {
    if requests.is_empty() {
        let error = RpcError::invalid_request("empty batch");
        respond(Some(error_response(Value::Null, error)));
        return;
    }
    let batch = Arc::new(Batch {
        state: Mutex::new(BatchState {
            responses: vec![None; requests.len()],
            pending: requests.len(),
            respond: Some(respond),
        }),
    });
    for (slot, request) in requests.into_iter().enumerate() {
        let batch = batch.clone();
        handle_request(
            methods,
            request,
            Box::new(move |response| batch.complete(slot, response)),
        );
    }
}

impl Batch {
    fn complete(&self, slot: usize, response: Option<Value>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.responses[slot] = response;
        state.pending -= 1;
        if state.pending > 0 {
            return;
        }
        let responses: Vec<Value> = state.responses.drain(..).flatten().collect();
        let respond = state.respond.take();
        drop(state);
        if let Some(respond) = respond {
            // A batch of notifications only gets no response at all.
            respond((!responses.is_empty()).then_some(Value::Array(responses)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::Responder;
    use std::sync::mpsc;

    fn methods() -> Methods {
        let mut m = Methods::new();
        m.register("echo", |params, resp: Responder| resp.ok(params));
        // Answers from another thread, after a while: batches must wait for it.
        m.register("later", |_, resp: Responder| {
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(20));
                resp.ok("late");
            });
        });
        m
    }

    fn run(message: Value) -> Option<Value> {
        let (tx, rx) = mpsc::channel();
        handle_message(&methods(), message, Box::new(move |r| tx.send(r).unwrap()));
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap()
    }

    fn error_code(response: &Value) -> i64 {
        response["error"]["code"].as_i64().unwrap()
    }

    #[test]
    fn request_gets_result_with_its_id() {
        let r = run(json!({"jsonrpc":"2.0","id":"x","method":"echo","params":{"a":1}})).unwrap();
        assert_eq!(r, json!({"jsonrpc":"2.0","id":"x","result":{"a":1}}));
    }

    #[test]
    fn notification_gets_no_response() {
        assert_eq!(run(json!({"jsonrpc":"2.0","method":"echo"})), None);
        assert_eq!(run(json!({"jsonrpc":"2.0","method":"nope"})), None);
    }

    #[test]
    fn invalid_requests() {
        let r = run(json!(1)).unwrap();
        assert_eq!(error_code(&r), -32600);
        assert_eq!(r["id"], Value::Null);
        let r = run(json!({"jsonrpc":"1.0","id":7,"method":"echo"})).unwrap();
        assert_eq!((error_code(&r), &r["id"]), (-32600, &json!(7)));
        let r = run(json!({"jsonrpc":"2.0","id":7})).unwrap();
        assert_eq!(error_code(&r), -32600);
        let r = run(json!({"jsonrpc":"2.0","id":7,"method":"echo","params":"x"})).unwrap();
        assert_eq!(error_code(&r), -32600);
        let r = run(json!({"jsonrpc":"2.0","id":[1],"method":"echo"})).unwrap();
        assert_eq!((error_code(&r), &r["id"]), (-32600, &Value::Null));
        let r = run(json!({"jsonrpc":"2.0","id":1,"method":"nope"})).unwrap();
        assert_eq!(error_code(&r), -32601);
        assert!(r["error"]["message"].as_str().unwrap().contains("nope"));
    }

    #[test]
    fn batches() {
        let r = run(json!([])).unwrap();
        assert_eq!(error_code(&r), -32600);

        // Responses in request order, notifications left out, a slow answer awaited.
        let r = run(json!([
            {"jsonrpc":"2.0","id":1,"method":"later"},
            {"jsonrpc":"2.0","method":"echo"},
            {"jsonrpc":"2.0","id":2,"method":"echo","params":[2]},
            3,
            {"jsonrpc":"2.0","id":4,"method":"nope"},
        ]))
        .unwrap();
        let r = r.as_array().unwrap();
        assert_eq!(r.len(), 4);
        assert_eq!(r[0]["result"], "late");
        assert_eq!(r[1]["result"], json!([2]));
        assert_eq!(error_code(&r[2]), -32600);
        assert_eq!((error_code(&r[3]), &r[3]["id"]), (-32601, &json!(4)));

        assert_eq!(run(json!([{"jsonrpc":"2.0","method":"echo"}])), None);
    }
}
