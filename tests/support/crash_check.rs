//! The checker of the crash tests: what a runtime holds after the crash
//! writer (`tests/bin/child.rs crash-writer`) was killed, against what the
//! writer acknowledged before.

use do_runtime::{ListOptions, Runtime};

use crate::{Counter, Kv};

/// Checks `rt` after a kill in `round`: the writer's batch holds all ten
/// keys with one round's value (never torn), the last acknowledged round
/// (`acked`) or the one in flight; each counter holds every increment
/// acknowledged since the last check (`acked - stored_before` of them on
/// top of `counters`) and at most `extra` more (tries that were not
/// acknowledged). Returns the stored round; `counters` becomes the values.
pub async fn check_after_crash(
    rt: &Runtime,
    round: u64,
    acked: u64,
    stored_before: u64,
    counters: &mut [i64; 4],
    extra: i64,
) -> u64 {
    assert!(acked > stored_before, "round {round}: acks go forward");
    let batch = rt.namespace::<Kv>().get_by_name("batch");
    let values: Vec<String> = batch
        .get_many((0..10).map(|k| format!("k{k}")).collect())
        .await
        .expect("the batch reads")
        .into_values()
        .collect();
    assert_eq!(
        values.len(),
        10,
        "round {round}: the batch has all ten keys"
    );
    assert!(
        values.iter().all(|v| *v == values[0]),
        "round {round}: torn batch {values:?}"
    );
    let stored: u64 = values[0].parse().expect("a round number");
    assert!(
        stored == acked || stored == acked + 1,
        "round {round}: acknowledged {acked}, stored {stored}"
    );
    assert_eq!(
        batch.keys(ListOptions::new()).await.expect("keys").len(),
        10
    );
    let acks_now = (acked - stored_before) as i64;
    for (i, name) in ["c0", "c1", "c2", "c3"].iter().enumerate() {
        let v = rt
            .namespace::<Counter>()
            .get_by_name(name)
            .value()
            .await
            .expect("the counter reads");
        let floor = counters[i] + acks_now;
        assert!(
            v >= floor && v <= floor + extra,
            "round {round}: counter {name} is {v}; acknowledged floor {floor}, at most {extra} more"
        );
        counters[i] = v;
    }
    stored
}
