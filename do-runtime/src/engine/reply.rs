//! Where a call's reply goes: to a caller in this process, or to a
//! [`ReplySink`] (a served connection's outgoing frames: see
//! `net::transport::sink`).

use tokio::sync::oneshot;

use crate::base::error::Error;

/// What a call's reply carries: the encoded result, or an error on the way.
pub(crate) type Reply = Result<Vec<u8>, Error>;

/// A way back for one call's reply that is not a channel: the engine hands
/// it the reply from whichever thread answers, and it delivers it its own
/// way. Dropped unanswered (the instance was reset, the runtime shut down,
/// or the call could not be handed to its worker), it must answer with a
/// disconnected error itself, as a local caller's closed channel does.
pub(crate) trait ReplySink: Send {
    /// Delivers the reply; called at most once.
    fn answer(&mut self, reply: Reply);
    /// Reads the memory answering touches first (see `Envelope::warm_up`);
    /// the value means nothing.
    fn warm_up(&self) -> u64;
}

/// The way back for one call's reply. Sent exactly once; dropped unsent,
/// the caller learns the call was lost.
pub(crate) enum ReplyTo {
    /// A caller in this process awaits the reply on a channel.
    Caller(oneshot::Sender<Reply>),
    /// Someone else takes the reply (a served connection writes it as a
    /// frame): no channel, and no task woken per call.
    Sink(Box<dyn ReplySink>),
}

impl ReplyTo {
    /// Sends the reply; a caller that has gone away is no error.
    pub(crate) fn send(self, reply: Reply) {
        match self {
            ReplyTo::Caller(to) => {
                let _ = to.send(reply);
            }
            ReplyTo::Sink(mut sink) => sink.answer(reply),
        }
    }

    /// Reads the memory sending the reply touches first (see
    /// `Envelope::warm_up`); the value means nothing.
    pub(crate) fn warm_up(&self) -> u64 {
        match self {
            ReplyTo::Caller(to) => u64::from(to.is_closed()),
            ReplyTo::Sink(sink) => sink.warm_up(),
        }
    }

    /// Whether the reply goes to a caller in this process (whose thread
    /// may have a relay; see `relay`).
    pub(crate) fn is_caller(&self) -> bool {
        matches!(self, ReplyTo::Caller(_))
    }
}
