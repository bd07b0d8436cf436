//! The JSON-RPC server: a Unix socket served by a poller on the reactor that
//! starts it (reactor 0 by convention).
//!
//! Sockets are non-blocking and registered as interrupt sources, so the reactor
//! sleeps while no client talks and wakes when one does. The reactor's epoll is
//! level-triggered: the poller reads every readable socket until `EAGAIN`, and
//! stops watching a socket it does not want to read (peer closed, too much
//! unsent output), or the reactor could never sleep.
//!
//! Handlers answer through a [`Responder`](super::Responder), now or later, on any
//! reactor; answers come back to this reactor by message and queue in a
//! completion list the poller drains into the connections' output.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrite_reactor::{Poll, PollerId};
use serde_json::Value;

use super::lock::SocketLock;
use super::protocol::{error_response, handle_message};
use super::reader::{ReadError, RequestReader};
use super::{Methods, RpcError};

/// The largest request accepted; a client sending more is answered an error and
/// disconnected.
pub const MAX_REQUEST_BYTES: usize = 64 << 20;
/// Clients served at once (SPDK allows 64 too); more are refused.
const MAX_CONNECTIONS: usize = 64;
const READ_CHUNK: usize = 64 * 1024;
/// Most bytes read from one connection per poll, so one client cannot starve
/// the others (unread input keeps its socket readable, so the poller returns).
const READ_BUDGET: usize = 1 << 20;
/// A connection whose unsent responses exceed this is not read until the client
/// reads them: pipelining without reading must not grow memory without bound.
const OUTPUT_HIGH_WATER: usize = 16 << 20;
/// How often output blocked by a full socket is retried. The reactor can only
/// wait for readability, so a timer stands in for "writable" (see `update_write_retry`).
const WRITE_RETRY_PERIOD: Duration = Duration::from_millis(2);

/// A running JSON-RPC server. Stop it with [`stop`](RpcServer::stop) (or drop
/// it) on the reactor that started it: that closes every connection, removes
/// the socket file and releases the lock.
pub struct RpcServer {
    state: Rc<RefCell<Option<ServerState>>>,
    path: PathBuf,
}

impl RpcServer {
    /// Listens on `path`, answering with `methods`. Runs on a reactor, whose
    /// poller serves the socket.
    ///
    /// Fails with `AddrInUse` when another target holds `PATH.lock` (the message
    /// names its pid) or something else answers on `path`. A stale socket file
    /// left by a target that died is replaced.
    pub fn start(path: &Path, methods: Arc<Methods>) -> io::Result<RpcServer> {
        let lock = SocketLock::acquire(path)?;
        remove_stale_socket(path)?;
        let socket = BoundSocket::bind(path)?;
        ferrite_reactor::register_interrupt(socket.listener.as_raw_fd())?;
        let state = Rc::new(RefCell::new(Some(ServerState {
            socket,
            _lock: lock,
            methods,
            connections: Vec::new(),
            next_connection: 1,
            completions: Arc::new(Mutex::new(Vec::new())),
            scratch: vec![0; READ_CHUNK],
            poller: None,
            write_retry: None,
        })));
        let polled = state.clone();
        let poller = ferrite_reactor::register_poller("rpc", move || poll(&polled));
        if let Some(s) = state.borrow_mut().as_mut() {
            s.poller = Some(poller);
        }
        tracing::info!("JSON-RPC server listening on {}", path.display());
        Ok(RpcServer {
            state,
            path: path.to_path_buf(),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends the answers already made (best effort, without blocking), closes
    /// every connection, removes the socket file and releases the lock.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        let state = self.state.borrow_mut().take();
        if let Some(state) = state {
            state.close();
            tracing::info!("JSON-RPC server on {} stopped", self.path.display());
        }
    }
}

/// The listening socket; removes its file when dropped.
struct BoundSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl BoundSocket {
    fn bind(path: &Path) -> io::Result<BoundSocket> {
        let listener = UnixListener::bind(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot listen on RPC socket {}: {e}", path.display()),
            )
        })?;
        let socket = BoundSocket {
            listener,
            path: path.to_path_buf(),
        };
        socket.listener.set_nonblocking(true)?;
        Ok(socket)
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!("cannot remove RPC socket {}: {e}", self.path.display());
        }
    }
}

/// Makes way for our socket at `path`: removes a socket file nobody listens
/// on (left by a target that died), refuses anything else.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot check RPC socket {}: {e}", path.display()),
            ))
        }
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; not replacing it",
                path.display()
            ),
        ));
    }
    // We hold the lock, so no ferrite-tgt serves it; but another program might.
    if UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("RPC socket {} is in use by another process", path.display()),
        ));
    }
    tracing::info!("removing stale RPC socket {}", path.display());
    std::fs::remove_file(path)
}

/// An answer ready for a connection; `None` for a notification (nothing to send,
/// but the request is no longer in flight).
struct Completion {
    connection: u64,
    response: Option<Value>,
}

struct ServerState {
    // Dropped in this order: the socket file goes before the lock is released.
    socket: BoundSocket,
    _lock: SocketLock,
    methods: Arc<Methods>,
    connections: Vec<Connection>,
    next_connection: u64,
    /// Filled by responders (on this reactor, by message), drained by the poller.
    completions: Arc<Mutex<Vec<Completion>>>,
    /// Read buffer, reused.
    scratch: Vec<u8>,
    poller: Option<PollerId>,
    write_retry: Option<PollerId>,
}

struct Connection {
    id: u64,
    stream: UnixStream,
    reader: RequestReader,
    /// Encoded responses; `output[written..]` is not sent yet.
    output: Vec<u8>,
    written: usize,
    /// Requests handed to handlers and not answered yet.
    in_flight: usize,
    /// The client shut down its side; answer what it sent, then close.
    peer_closed: bool,
    /// A protocol error: answer the requests before it, then close.
    closing: bool,
    /// The error response that ends a `closing` connection, sent after the
    /// answers to the requests that came before the error.
    farewell: Option<Value>,
    /// The socket failed: close at once.
    failed: bool,
    /// Registered as an interrupt source of the reactor.
    watched: bool,
}

impl Connection {
    fn unsent(&self) -> usize {
        self.output.len() - self.written
    }

    fn wants_input(&self) -> bool {
        !self.peer_closed && !self.closing && !self.failed && self.unsent() < OUTPUT_HIGH_WATER
    }

    fn finished(&self) -> bool {
        self.failed
            || ((self.peer_closed || self.closing)
                && self.in_flight == 0
                && self.farewell.is_none()
                && self.unsent() == 0)
    }

    fn queue(&mut self, response: &Value) {
        if serde_json::to_writer(&mut self.output, response).is_ok() {
            self.output.push(b'\n');
        }
    }

    /// Reads what the socket has (up to the budget). Returns whether bytes came.
    fn read_input(&mut self, scratch: &mut [u8]) -> bool {
        let mut total = 0;
        while total < READ_BUDGET {
            match self.stream.read(scratch) {
                Ok(0) => {
                    self.peer_closed = true;
                    if self.reader.buffered() > 0 {
                        tracing::debug!(
                            "RPC connection {}: client left {} bytes of an unfinished request",
                            self.id,
                            self.reader.buffered()
                        );
                    }
                    break;
                }
                Ok(n) => {
                    self.reader.extend(&scratch[..n]);
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!("RPC connection {}: read failed: {e}", self.id);
                    self.failed = true;
                    break;
                }
            }
        }
        total > 0
    }

    /// Writes pending output until the socket is full. Returns whether bytes went.
    fn write_output(&mut self) -> bool {
        if self.in_flight == 0 {
            if let Some(farewell) = self.farewell.take() {
                self.queue(&farewell);
            }
        }
        let mut wrote = false;
        while self.unsent() > 0 && !self.failed {
            match self.stream.write(&self.output[self.written..]) {
                Ok(n) => {
                    self.written += n;
                    wrote = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!("RPC connection {}: write failed: {e}", self.id);
                    self.failed = true;
                }
            }
        }
        if self.unsent() == 0 {
            self.output.clear();
            self.written = 0;
        } else if self.written >= READ_CHUNK {
            self.output.drain(..self.written);
            self.written = 0;
        }
        wrote
    }

    fn set_watched(&mut self, watched: bool) {
        if watched == self.watched {
            return;
        }
        let fd = self.stream.as_raw_fd();
        let result = if watched {
            ferrite_reactor::register_interrupt(fd)
        } else {
            ferrite_reactor::unregister_interrupt(fd)
        };
        match result {
            Ok(()) => self.watched = watched,
            Err(e) => {
                tracing::warn!("RPC connection {}: cannot (un)watch socket: {e}", self.id);
                self.failed = true;
            }
        }
    }
}

/// One run of the server's poller.
fn poll(shared: &Rc<RefCell<Option<ServerState>>>) -> Poll {
    let mut requests = Vec::new();
    let (methods, completions, mut did_work) = {
        let mut guard = shared.borrow_mut();
        let Some(state) = guard.as_mut() else {
            return Poll::Idle;
        };
        let accepted = state.accept_connections();
        let read = state.read_requests(&mut requests);
        (
            state.methods.clone(),
            state.completions.clone(),
            accepted | read,
        )
    };
    // Handlers run with no borrow held: one might stop this server.
    for (connection, message) in requests {
        let completions = completions.clone();
        handle_message(
            &methods,
            message,
            Box::new(move |response| {
                let completion = Completion {
                    connection,
                    response,
                };
                lock(&completions).push(completion);
            }),
        );
    }
    let mut guard = shared.borrow_mut();
    let Some(state) = guard.as_mut() else {
        return Poll::Idle;
    };
    did_work |= state.collect_completions();
    did_work |= state.write_output();
    state.close_finished_connections();
    for connection in &mut state.connections {
        let wants_input = connection.wants_input();
        connection.set_watched(wants_input);
    }
    state.update_write_retry();
    Poll::from_work(did_work)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl ServerState {
    fn accept_connections(&mut self) -> bool {
        let mut accepted = false;
        loop {
            let stream = match self.socket.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("RPC socket: accept failed: {e}");
                    break;
                }
            };
            accepted = true;
            if self.connections.len() >= MAX_CONNECTIONS {
                tracing::warn!(
                    "RPC socket: refusing a client, {MAX_CONNECTIONS} already connected"
                );
                continue;
            }
            if let Err(e) = stream.set_nonblocking(true) {
                tracing::warn!("RPC socket: cannot make a client non-blocking: {e}");
                continue;
            }
            let id = self.next_connection;
            self.next_connection += 1;
            let mut connection = Connection {
                id,
                stream,
                reader: RequestReader::new(MAX_REQUEST_BYTES),
                output: Vec::new(),
                written: 0,
                in_flight: 0,
                peer_closed: false,
                closing: false,
                farewell: None,
                failed: false,
                watched: false,
            };
            connection.set_watched(true);
            tracing::debug!("RPC connection {id} opened");
            self.connections.push(connection);
        }
        accepted
    }

    /// Reads every connection that has input and collects the complete requests.
    fn read_requests(&mut self, requests: &mut Vec<(u64, Value)>) -> bool {
        let mut did_work = false;
        for connection in &mut self.connections {
            if !connection.wants_input() || !connection.read_input(&mut self.scratch) {
                continue;
            }
            did_work = true;
            let mut values = Vec::new();
            let outcome = connection.reader.read_values(&mut values);
            connection.in_flight += values.len();
            requests.extend(values.into_iter().map(|v| (connection.id, v)));
            if let Err(e) = outcome {
                let error = match e {
                    ReadError::Syntax(detail) => RpcError::parse_error(detail),
                    ReadError::TooLarge(limit) => RpcError::invalid_request(format!(
                        "request larger than {} MiB",
                        limit >> 20
                    )),
                };
                tracing::debug!(
                    "RPC connection {}: {}; closing it",
                    connection.id,
                    error.message
                );
                connection.farewell = Some(error_response(Value::Null, error));
                connection.closing = true;
            }
        }
        did_work
    }

    /// Moves ready answers into their connections' output.
    fn collect_completions(&mut self) -> bool {
        let completions = std::mem::take(&mut *lock(&self.completions));
        let did_work = !completions.is_empty();
        for Completion {
            connection,
            response,
        } in completions
        {
            // The client may have gone; its answers go nowhere.
            let Some(connection) = self.connections.iter_mut().find(|c| c.id == connection) else {
                continue;
            };
            connection.in_flight -= 1;
            if let Some(response) = response {
                connection.queue(&response);
            }
        }
        did_work
    }

    fn write_output(&mut self) -> bool {
        let mut did_work = false;
        for connection in &mut self.connections {
            did_work |= connection.write_output();
        }
        did_work
    }

    fn close_finished_connections(&mut self) {
        self.connections.retain_mut(|connection| {
            if !connection.finished() {
                return true;
            }
            connection.set_watched(false);
            tracing::debug!("RPC connection {} closed", connection.id);
            false
        });
    }

    /// Keeps a timer running while some output waits for a full socket to drain.
    /// The reactor's interrupts only report readability; with "writable" events
    /// (EPOLLOUT) this timer would go.
    fn update_write_retry(&mut self) {
        let blocked = self.connections.iter().any(|c| c.unsent() > 0);
        match (blocked, self.write_retry) {
            (true, None) => {
                // The timer only wakes the reactor; the "rpc" poller does the writing.
                let id = ferrite_reactor::register_timed_poller(
                    "rpc_write_retry",
                    WRITE_RETRY_PERIOD,
                    || Poll::Idle,
                );
                self.write_retry = Some(id);
            }
            (false, Some(id)) => {
                ferrite_reactor::unregister_poller(id);
                self.write_retry = None;
            }
            _ => {}
        }
    }

    fn close(mut self) {
        // Send the answers already made, such as the one to framework_shutdown.
        self.collect_completions();
        self.write_output();
        for connection in &mut self.connections {
            connection.set_watched(false);
        }
        let _ = ferrite_reactor::unregister_interrupt(self.socket.listener.as_raw_fd());
        for poller in [self.poller.take(), self.write_retry.take()]
            .into_iter()
            .flatten()
        {
            ferrite_reactor::unregister_poller(poller);
        }
        // Dropping `self` closes the sockets, removes the socket file, then the lock.
    }
}
