//! The runtime's error type.

use serde::{Deserialize, Serialize};

use do_storage::StorageError;

/// Everything the runtime can report: infrastructure failures on the way to an
/// object, storage failures, and panics in an object's code.
///
/// `Error` is serializable, so it can also be a method's own error type: a
/// method returning `Result<T, do_runtime::Error>` hands its errors to the
/// caller unchanged. Any error type `E` with `E: From<Error>` works the same
/// way; infrastructure failures then arrive through that conversion.
///
/// Ask an error what to do about it rather than matching on every variant:
///
/// ```
/// use do_runtime::Error;
/// use do_runtime::DisconnectReason;
/// let e = Error::disconnected(DisconnectReason::Reset, "the object was reset");
/// assert!(e.is_retryable());   // get a new stub and call again
/// assert!(!e.is_remote());     // not raised by the object's own code
/// assert_eq!(e.disconnect_reason(), Some(DisconnectReason::Reset));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Error {
    /// The stub lost its object: the instance was reset after a panic, the
    /// runtime shut down, or the connection broke. The stub stays broken; get
    /// a new one with `Namespace::get` and call again. Its
    /// [`reason`](Disconnect::reason) says which of these it was.
    #[error("disconnected from the object: {0}")]
    Disconnected(Disconnect),
    /// The object has more calls queued than its limits allow. Back off; the
    /// stub stays usable.
    #[error("the object is overloaded: {0}")]
    Overloaded(String),
    /// The object's code panicked. The instance was reset; committed writes
    /// are kept.
    #[error("the object panicked: {0}")]
    Panicked(String),
    /// An error raised by the object's own code with [`Error::app`].
    #[error("{0}")]
    App(String),
    /// A string is not an object id: ids are 64 lowercase hex characters.
    #[error("invalid object id: {0}")]
    InvalidId(String),
    /// The id is well formed but belongs to another namespace (or another
    /// deployment): use it with the namespace that made it.
    #[error("the id does not belong to namespace {class:?}")]
    WrongNamespace {
        /// The namespace the id was given to.
        class: String,
    },
    /// The class was not registered with the runtime; call
    /// `RuntimeBuilder::register` for it.
    #[error("class {0:?} is not registered with this runtime")]
    NotRegistered(String),
    /// The object has no method with this id: client and object were built
    /// from different definitions.
    #[error("class {class:?} has no method with id {method:#010x}")]
    UnknownMethod {
        /// The class called.
        class: String,
        /// The method id that was not found.
        method: u32,
    },
    /// A key is longer than the limit. Nothing was written.
    #[error("key of {len} bytes is too large: keys are at most {limit} bytes")]
    KeyTooLarge {
        /// The key's length in bytes.
        len: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// An encoded value is larger than the limit. Nothing was written.
    #[error(
        "value for key {key:?} is {len} bytes encoded, too large: values are at most {limit} bytes"
    )]
    ValueTooLarge {
        /// The key the value was meant for.
        key: String,
        /// The encoded length in bytes.
        len: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// A batch names more keys than the limit. Nothing was written.
    #[error("batch of {len} keys is too large: a batch holds at most {limit} keys")]
    BatchTooLarge {
        /// How many keys the batch named.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// `list` options that contradict each other.
    #[error("invalid list options: {0}")]
    InvalidListOptions(String),
    /// A stored value could not be read as the requested type.
    #[error("the value of key {key:?} cannot be read as {type_name}: {message}")]
    ValueType {
        /// The key read.
        key: String,
        /// The type asked for.
        type_name: String,
        /// What the decoder said.
        message: String,
    },
    /// A transaction kept conflicting with the object's other calls and was
    /// given up after this many attempts. Nothing it wrote was stored.
    #[error(
        "the transaction conflicted with other writes {attempts} times in a row and was given up"
    )]
    TransactionConflict {
        /// How many times it ran.
        attempts: u32,
    },
    /// The storage engine failed (I/O error, full disk) or is closed. Writes
    /// of the failing call did not become durable.
    #[error("storage failure: {0}")]
    Storage(String),
    /// Arguments or a result could not be encoded or decoded.
    #[error("encoding failure: {0}")]
    Codec(String),
    /// The server refused the connection: wrong token, unsupported protocol
    /// version, or too many connections. Fix the configuration; retrying as
    /// is will not help.
    #[error("the server refused the connection: {0}")]
    Refused(String),
    /// Client and server were built from different definitions of a class:
    /// rebuild them from the same code.
    #[error(
        "class {class:?} differs between client and server: client {client:?}, server {server:?}"
    )]
    SchemaMismatch {
        /// The class.
        class: String,
        /// The client's schema fingerprint.
        client: String,
        /// The server's, or what the server lacks.
        server: String,
    },
    /// The operation is not available here (say, through a remote client).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// The peer broke the wire protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The runtime could not be built or started (data directory, threads).
    #[error("runtime setup failed: {0}")]
    Setup(String),
    /// A request that cannot be served as given: a URL that does not parse,
    /// a WebSocket accept on a request that is no upgrade, a bad close code.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A WebSocket limit was hit: sockets per object, message size, tags,
    /// attachment size. The message says which and what the limit is.
    #[error("WebSocket limit: {0}")]
    WebSocketLimit(String),
    /// `Env` has no binding of this kind (`var`, `secret`, or `binding` for
    /// a typed one, whose `name` is then its type) and name: set it on the
    /// [`RuntimeBuilder`](crate::RuntimeBuilder).
    #[error("no {kind} named {name:?} is bound: set it with RuntimeBuilder::{kind}")]
    MissingBinding {
        /// `var`, `secret` or `binding`.
        kind: String,
        /// The name asked for (a typed binding's type name).
        name: String,
    },
}

/// What a call on a broken stub gets: `Broken`, or `Aborted` when what
/// broke it was its object's abort (so every later call says so too).
pub(crate) fn broken_stub(aborted: bool) -> Error {
    if aborted {
        Error::disconnected(
            DisconnectReason::Aborted,
            "the object aborted itself; get a new stub from the namespace",
        )
    } else {
        Error::disconnected(
            DisconnectReason::Broken,
            "the stub is broken; get a new stub from the namespace",
        )
    }
}

/// The error of a call to an object this runtime does not serve (now): a
/// cluster moved its shard.
pub(crate) fn moved(id: &impl std::fmt::Display) -> Error {
    Error::disconnected(
        DisconnectReason::Moved,
        format!(
            "the object {id} is not served here now (its shard moved, or is moving): get a new stub and retry"
        ),
    )
}

/// Why a stub lost its object (see [`Error::Disconnected`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The instance was reset (a panic in one of its methods or in a
    /// `block_concurrency_while` future) since the stub's first call, or
    /// while the call ran: its writes not yet committed were dropped.
    Reset,
    /// The stub was broken by an earlier call that lost its instance (or
    /// its connection): every later call fails the same way.
    Broken,
    /// The runtime is shutting down or has stopped.
    Shutdown,
    /// The connection to a remote runtime could not be made, or was lost.
    ConnectionLost,
    /// The WebSocket is closed, or gone.
    SocketClosed,
    /// Not said: made from a bare message.
    Other,
    /// The object reset itself on purpose (`Ctx::abort`): its writes not
    /// yet committed were dropped; a new stub gets a new instance.
    Aborted,
    /// The instance was reset because a `block_concurrency_while` future
    /// held its input gate past
    /// [`RuntimeBuilder::block_concurrency_limit`](crate::RuntimeBuilder::block_concurrency_limit):
    /// its writes not yet committed were dropped; a new stub gets a new
    /// instance.
    TimedOut,
    /// With replication on, the replicated log did not take the instance's
    /// writes (it could not be reached in time, or refused them because a
    /// newer epoch holds the object's shard): they were not applied, and
    /// the instance was reset. The failure is certain: a write whose
    /// acknowledgement was lost is looked for in the log before its call is
    /// answered.
    Unreplicated,
    /// In a cluster, the object's shard moved to another runtime (or is
    /// moving; or this runtime's lease may have lapsed): a new stub reaches
    /// it where it is served now.
    Moved,
}

/// A disconnected error: why, and what happened, in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disconnect {
    /// Why the stub lost its object.
    pub reason: DisconnectReason,
    /// What happened.
    pub message: String,
}

impl Disconnect {
    /// A disconnect for `reason`, saying `message`.
    pub fn new(reason: DisconnectReason, message: impl Into<String>) -> Self {
        Disconnect {
            reason,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Disconnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A bare message: the reason is [`DisconnectReason::Other`].
impl From<String> for Disconnect {
    fn from(message: String) -> Self {
        Disconnect::new(DisconnectReason::Other, message)
    }
}

/// A bare message: the reason is [`DisconnectReason::Other`].
impl From<&str> for Disconnect {
    fn from(message: &str) -> Self {
        Disconnect::new(DisconnectReason::Other, message)
    }
}

impl Error {
    /// A disconnected error for `reason`, saying `message`.
    pub fn disconnected(reason: DisconnectReason, message: impl Into<String>) -> Self {
        Error::Disconnected(Disconnect::new(reason, message))
    }

    /// Why the stub lost its object, for a disconnected error.
    pub fn disconnect_reason(&self) -> Option<DisconnectReason> {
        match self {
            Error::Disconnected(d) => Some(d.reason),
            _ => None,
        }
    }

    /// An error raised by an object's own code, carried to the caller as is.
    ///
    /// ```
    /// let e = do_runtime::Error::app("no such room");
    /// assert_eq!(e.to_string(), "no such room");
    /// assert!(e.is_remote());
    /// ```
    pub fn app(message: impl Into<String>) -> Self {
        Error::App(message.into())
    }

    /// Whether calling again (with a new stub) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Disconnected(_) | Error::TransactionConflict { .. }
        )
    }

    /// Whether the object refused the call because its queue was full.
    pub fn is_overloaded(&self) -> bool {
        matches!(self, Error::Overloaded(_))
    }

    /// Whether the error was raised by the object's own code (a panic or
    /// [`Error::app`]) rather than on the way to it.
    pub fn is_remote(&self) -> bool {
        matches!(self, Error::Panicked(_) | Error::App(_))
    }
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::KeyTooLarge { len, limit } => Error::KeyTooLarge { len, limit },
            StorageError::ValueTooLarge { key, len, limit } => {
                Error::ValueTooLarge { key, len, limit }
            }
            StorageError::BatchTooLarge { len, limit } => Error::BatchTooLarge { len, limit },
            StorageError::InvalidListOptions(m) => Error::InvalidListOptions(m.to_owned()),
            StorageError::Unreplicated(why) => {
                Error::disconnected(DisconnectReason::Unreplicated, why.message)
            }
            other => Error::Storage(other.to_string()),
        }
    }
}

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
