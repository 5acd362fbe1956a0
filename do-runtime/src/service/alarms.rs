//! The alarm scheduler's thread: scans the store's index of due times (no
//! task or timer per object), calls each due object's `alarm` handler and
//! arranges retries. It also refreshes, every 5 s, the metrics the hot path
//! does not keep (queued calls, cache counters).

use std::sync::Arc;
use std::time::Duration;

use do_storage::{Alarm, DueAlarm};
use tokio::sync::mpsc;

use crate::api::alarms::Fire;
use crate::api::stub::RawStub;
use crate::base::error::Error;
use crate::engine::class::Class;
use crate::engine::shared::Shared;

/// The most alarms run at once.
const MAX_RUNNING: usize = 1024;

/// Starts the scheduler thread.
pub(crate) fn spawn(shared: Arc<Shared>) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("do-alarms".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "the alarm scheduler cannot start");
                    return;
                }
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, schedule(shared));
        })
}

async fn schedule(shared: Arc<Shared>) {
    let scheduler = shared.alarms().clone();
    let (done, mut finished) = mpsc::unbounded_channel::<()>();
    // This thread also refreshes the metrics the hot path leaves alone.
    let mut refreshed = std::time::Instant::now();
    while !scheduler.stopped() {
        if refreshed.elapsed() >= Duration::from_secs(5) {
            refreshed = std::time::Instant::now();
            shared.refresh_gauges();
        }
        let Some(store) = shared.store() else {
            // Being reopened after a failure (at stop, `stopped` ends the loop).
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let clock = shared.clock();
        let now = clock.now_ms();
        let room = MAX_RUNNING.saturating_sub(scheduler.running().len());
        let due = if room > 0 {
            // In-flight alarms stay in the index until they finish: look
            // past them.
            let running = scheduler.running().len();
            store.due_alarms(now, room + running).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read the alarm index");
                Vec::new()
            })
        } else {
            Vec::new()
        };
        for alarm in due {
            if !scheduler.running().insert(*alarm.prefix.as_bytes()) {
                continue;
            }
            let (shared, done) = (shared.clone(), done.clone());
            tokio::task::spawn_local(async move {
                run(&shared, alarm).await;
                shared.alarms().running().remove(alarm.prefix.as_bytes());
                let _ = done.send(());
            });
        }
        let next = store.next_alarm_due().ok().flatten();
        drop(store);
        // Only an alarm not already running is worth waking for.
        let next = next.filter(|due| *due > now || scheduler.running().is_empty());
        tokio::select! {
            () = scheduler.wake.notified() => {}
            Some(()) = finished.recv() => {}
            () = clock.sleep_toward(next, Duration::from_millis(if matches!(clock, crate::base::clock::Clock::System) { 1000 } else { 50 })) => {}
        }
    }
}

/// The id of the object an alarm is for, with the name it was made from
/// when the registry of objects knows it: an instance the alarm builds sees
/// the same `ctx.id().name()` as one a call builds.
fn known_id(
    shared: &Shared,
    class: &Class,
    prefix: &do_storage::ObjectPrefix,
) -> crate::base::id::DurableObjectId {
    let id = class.key.id_from_base(prefix.id());
    let name = shared
        .store()
        .and_then(|store| store.known_name(prefix).ok().flatten());
    match name.map(|name| class.key.id_from_name(&name)) {
        Some(named) if named.base() == id.base() => named,
        _ => id,
    }
}

/// Runs one alarm, and arranges its retry if it fails.
async fn run(shared: &Arc<Shared>, due: DueAlarm) {
    let Some(class) = shared
        .classes()
        .iter()
        .find(|c| c.storage_namespace == due.prefix.namespace())
        .cloned()
    else {
        tracing::warn!(
            namespace = due.prefix.namespace(),
            "an alarm of a class this runtime does not register"
        );
        return;
    };
    let id = known_id(shared, &class, &due.prefix);
    let fire = Fire {
        due_ms: due.alarm.due_ms,
        retries: due.alarm.retries,
    };
    let Ok(args) = postcard::to_stdvec(&fire) else {
        return;
    };
    tracing::debug!(
        target: "do_runtime::lifecycle",
        class = %class.name,
        id = %crate::base::trace::ShortId(&id),
        retry = fire.retries,
        "alarm"
    );
    // Backoff counts from when this run started.
    let started = shared.clock().now_ms();
    let stub = RawStub::new(shared.clone(), class.clone(), id.clone());
    let result: Result<(), Error> = stub
        .call_system(
            crate::base::wire::method_id(crate::base::wire::ALARM.name),
            args,
            |_| Ok(()),
            Err,
        )
        .await;
    let policy = shared.alarm_policy();
    let next = match result {
        Ok(()) => return,
        Err(_) if shared.is_closing() => return,
        // The class lost its handler: drop the alarm.
        Err(Error::UnknownMethod { .. }) => None,
        Err(e) => {
            tracing::debug!(
                target: "do_runtime::lifecycle",
                class = %class.name,
                id = %crate::base::trace::ShortId(&id),
                error = %e,
                retry = fire.retries,
                "alarm failed"
            );
            (fire.retries < policy.max_retries).then(|| Alarm {
                due_ms: started.saturating_add(policy.backoff_ms(fire.retries)),
                retries: fire.retries + 1,
            })
        }
    };
    reschedule(shared, &class, id, fire.due_ms, next).await;
}

/// After a failed run: sets the retry (or, past the last, removes the
/// alarm), unless the handler set a new alarm before it failed.
async fn reschedule(
    shared: &Arc<Shared>,
    class: &Arc<Class>,
    id: crate::base::id::DurableObjectId,
    fired: u64,
    next: Option<Alarm>,
) {
    // While the store is being reopened after a failed write (see
    // `service::recovery`) the retry cannot be written, and the failed run
    // already removed the alarm: keep trying until the store is back.
    let mut wait = Duration::from_millis(50);
    loop {
        let outcome = crate::api::namespace::run_with_storage(
            shared,
            class,
            &id,
            move |storage| async move {
                storage.raw_alarm().and_then(|current| match current {
                    // Removed by the failed run (or never changed): retry.
                    None => storage.raw_set_alarm(next),
                    Some(a) if a.due_ms == fired => storage.raw_set_alarm(next),
                    // The handler set a new alarm before failing: keep it.
                    Some(_) => Ok(()),
                })
            },
        )
        .await;
        match outcome.and_then(|set| set) {
            Ok(()) => break,
            Err(e)
                if shared.storage_fault().is_some()
                    && !shared.alarms().stopped()
                    && !shared.is_closing() =>
            {
                tracing::debug!(error = %e, "the store is being reopened: rescheduling an alarm later");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot reschedule a failed alarm");
                break;
            }
        }
    }
    // The retry is on disk now: look again.
    shared.alarms().wake();
}
