//! Where a call's reply goes: to a caller in this process, or into the
//! outgoing frames of the served connection the call came from.

use tokio::sync::oneshot;

use crate::api::stub::Reply;
use crate::net::transport::sink::FrameReply;

/// The way back for one call's reply. Sent exactly once; dropped unsent
/// (the instance was reset, the runtime shut down, or the call could not
/// be handed to its worker), the caller learns the call was lost: a local
/// caller's channel closes, and a served connection writes a disconnected
/// error.
pub(crate) enum ReplyTo {
    /// A caller in this process awaits the reply on a channel.
    Caller(oneshot::Sender<Reply>),
    /// A served connection writes the reply as a frame (see
    /// `transport::sink`): no channel, and no task woken per call.
    Frame(Box<FrameReply>),
}

impl ReplyTo {
    /// Sends the reply; a caller that has gone away is no error.
    pub(crate) fn send(self, reply: Reply) {
        match self {
            ReplyTo::Caller(to) => {
                let _ = to.send(reply);
            }
            ReplyTo::Frame(mut frame) => frame.answer(reply),
        }
    }

    /// Reads the memory sending the reply touches first (see
    /// `Envelope::warm_up`); the value means nothing.
    pub(crate) fn warm_up(&self) -> u64 {
        match self {
            ReplyTo::Caller(to) => u64::from(to.is_closed()),
            ReplyTo::Frame(frame) => frame.warm_up(),
        }
    }

    /// Whether the reply goes to a caller in this process (whose thread
    /// may have a relay; see `relay`).
    pub(crate) fn is_caller(&self) -> bool {
        matches!(self, ReplyTo::Caller(_))
    }
}
