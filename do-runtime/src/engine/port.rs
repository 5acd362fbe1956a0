//! Ports: the engine's end of a stub. A port knows its object (class, id,
//! worker, handle), binds to the instance its first call reaches, breaks
//! when that instance is reset, and checks, admits and hands each call to
//! the object's worker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::base::error::{DisconnectReason, Error};
use crate::base::id::DurableObjectId;
use crate::engine::class::Class;
use crate::engine::registry::ObjectHandle;
use crate::engine::reply::{Reply, ReplyTo};
use crate::engine::shared::Shared;
use crate::engine::worker::{Envelope, Kind};

/// The engine's end of a stub to an object of this runtime: the state every
/// clone of one stub shares, and the door its calls go through.
pub(crate) struct Port {
    pub(crate) runtime: Arc<Shared>,
    pub(crate) class: Arc<Class>,
    pub(crate) id: DurableObjectId,
    worker: usize,
    pub(crate) handle: Arc<ObjectHandle>,
    /// The instance generation the stub is bound to; 0 until its first call
    /// is delivered.
    bound: AtomicU64,
    broken: AtomicBool,
    /// Broken by its object's abort: later calls say `Aborted`.
    aborted: AtomicBool,
}

impl Port {
    /// A port to object `id` of `class`, bound to no instance yet.
    pub(crate) fn new(runtime: Arc<Shared>, class: Arc<Class>, id: DurableObjectId) -> Self {
        let worker = runtime.worker_for(class.index, &id);
        let handle = runtime.registry().handle(class.index, id.base());
        Port {
            runtime,
            class,
            id,
            worker,
            handle,
            bound: AtomicU64::new(0),
            broken: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
        }
    }

    /// Binds the stub to `generation` on its first delivered call; a stub
    /// bound to an older generation lost its instance and breaks.
    pub(crate) fn bind(&self, generation: u64) -> bool {
        // Bound already, the common case: a load, not a read-modify-write.
        if self.bound.load(Ordering::Acquire) == generation {
            return true;
        }
        match self
            .bound
            .compare_exchange(0, generation, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(bound) if bound == generation => true,
            Err(_) => {
                self.broken.store(true, Ordering::Release);
                false
            }
        }
    }

    /// Whether the stub is broken now: marked so, or bound to an instance
    /// that has since been reset.
    pub(crate) fn check_broken(&self) -> bool {
        if self.broken.load(Ordering::Acquire) {
            return true;
        }
        let bound = self.bound.load(Ordering::Acquire);
        if bound != 0 && bound != self.handle.generation.load(Ordering::Acquire) {
            self.mark_broken(self.handle.reset_reason() == DisconnectReason::Aborted);
            return true;
        }
        false
    }

    /// Breaks the stub; `aborted`: because its object aborted itself.
    pub(crate) fn mark_broken(&self, aborted: bool) {
        if aborted {
            self.aborted.store(true, Ordering::Release);
        }
        self.broken.store(true, Ordering::Release);
    }

    /// The object the stub calls.
    pub(crate) fn id(&self) -> &DurableObjectId {
        &self.id
    }

    /// The object's handle (its queue counters and generation).
    pub(crate) fn handle(&self) -> &Arc<ObjectHandle> {
        &self.handle
    }

    /// How long a caller may spin now for the reply to a call to this
    /// object, if at all (see `spin_for_reply`).
    pub(crate) fn reply_spin(&self) -> Option<Duration> {
        let base = self.runtime.caller_spin();
        // A worker's thread spins in its event loop instead (the object
        // called may be its own); on a single-threaded runtime the spin
        // would stall every other task.
        // Cheapest checks first: under load every call's first poll gets
        // here, and looking up the current tokio runtime clones its handle.
        if base.is_zero()
            || crate::engine::spin::on_worker()
            || !self.runtime.quiet()
            || tokio::runtime::Handle::try_current().is_ok_and(|h| {
                matches!(
                    h.runtime_flavor(),
                    tokio::runtime::RuntimeFlavor::CurrentThread
                )
            })
        {
            return None;
        }
        Some(self.handle.caller_spin(base))
    }
}

impl Port {
    /// Checks, admits and hands one call to the object's worker; returns
    /// where its reply will arrive.
    pub(crate) fn send(
        self: &Arc<Self>,
        method: u32,
        args: Vec<u8>,
        system: bool,
        trace: u128,
        span: tracing::Span,
    ) -> Result<oneshot::Receiver<Reply>, Error> {
        let (reply, rx) = oneshot::channel();
        self.send_to(method, args, system, trace, span, ReplyTo::Caller(reply))?;
        Ok(rx)
    }

    /// Checks, admits and hands one call to the object's worker, its reply
    /// to go to `reply`. A call refused here is answered through `reply`
    /// too when that is a served connection's (a caller in this process
    /// gets the error returned instead).
    pub(crate) fn send_to(
        self: &Arc<Self>,
        method: u32,
        args: Vec<u8>,
        system: bool,
        trace: u128,
        span: tracing::Span,
        reply: ReplyTo,
    ) -> Result<(), Error> {
        let refuse = |reply: ReplyTo, e: Error| {
            if !reply.is_caller() {
                reply.send(Err(e.clone()));
            }
            e
        };
        if self.check_broken() {
            let e = crate::base::error::broken_stub(self.aborted.load(Ordering::Acquire));
            return Err(refuse(reply, e));
        }
        if self.runtime.is_closing() {
            let e = Error::disconnected(DisconnectReason::Shutdown, "the runtime is shutting down");
            return Err(refuse(reply, e));
        }
        if self.id.namespace_tag() != self.class.key.tag() {
            let e = Error::WrongNamespace {
                class: self.class.name.clone(),
            };
            return Err(refuse(reply, e));
        }
        // In a cluster, an object this runtime no longer serves (its shard
        // moved, or its lease may have lapsed) takes no more calls here:
        // the stub breaks, and a new one reaches the object where it is.
        // (Compiled only with the feature: nothing on the embedded path.)
        #[cfg(feature = "cluster")]
        if let Some(placement) = self.runtime.placement.get()
            && !placement.serves(&self.id)
        {
            self.mark_broken(false);
            return Err(refuse(reply, crate::base::error::moved(&self.id)));
        }
        let slot = match self.handle.admit(args.len(), &self.runtime.queue_limits()) {
            Ok(slot) => slot,
            Err(why) => {
                let e = Error::Overloaded(format!("{} {}: {why}", self.class.name, self.id));
                return Err(refuse(reply, e));
            }
        };
        let envelope = Envelope {
            class: self.class.index,
            // A served connection's replies gather in its own sink.
            relay: if reply.is_caller() {
                crate::engine::relay::for_caller()
            } else {
                None
            },
            kind: Kind::Call {
                method,
                args,
                reply,
                port: self.clone(),
                slot,
                system,
                trace: trace.into(),
                span,
            },
        };
        // A caller on the object's own worker hands the call over directly.
        let envelope =
            match crate::engine::worker::deliver_here(&self.runtime, self.worker, envelope) {
                Ok(()) => return Ok(()),
                Err(envelope) => envelope,
            };
        // Not sent: the envelope, and with it the reply, is dropped, which
        // answers a served connection's call.
        if let Err(e) = self.runtime.send(self.worker, envelope) {
            self.mark_broken(false);
            return Err(e);
        }
        Ok(())
    }
}
