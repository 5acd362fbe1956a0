//! I1–I6: namespaces, ids and stubs.

use do_runtime::Error;
use do_tests::{Counter, Notes, runtime};

#[test]
fn id_text_is_64_lowercase_hex_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let ns = rt.namespace::<Counter>();
    for id in [ns.id_from_name("alice"), ns.new_unique_id()] {
        let text = id.to_string();
        assert_eq!(text.len(), 64);
        assert!(
            text.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
            "{text}"
        );
        let back = ns.id_from_string(&text).unwrap();
        assert_eq!(back, id);
        assert_eq!(back.to_string(), text);
    }
}

#[test]
fn id_from_string_rejects_malformed_text_with_invalid_id() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let ns = rt.namespace::<Counter>();
    let good = ns.id_from_name("alice").to_string();
    let upper = good.to_uppercase();
    let not_hex = format!("{}zz", &good[..62]);
    let non_ascii = format!("{}é", &good[..62]);
    for bad in [
        "",
        "abc",
        &good[..63],
        &format!("{good}0"),
        &upper,
        &not_hex,
        &non_ascii,
    ] {
        match ns.id_from_string(bad) {
            Err(Error::InvalidId(_)) => {}
            other => panic!("{bad:?} gave {other:?}"),
        }
    }
}

#[test]
fn id_from_string_rejects_an_id_of_another_namespace_with_wrong_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let notes_id = rt.namespace::<Notes>().id_from_name("alice").to_string();
    match rt.namespace::<Counter>().id_from_string(&notes_id) {
        Err(Error::WrongNamespace { class }) => assert_eq!(class, "Counter"),
        other => panic!("gave {other:?}"),
    }
    // A flipped bit in the MAC half is a forgery, not a malformed string.
    let mut forged = rt.namespace::<Counter>().id_from_name("alice").to_string();
    let last = if forged.ends_with('0') { "1" } else { "0" };
    forged.replace_range(63.., last);
    assert!(matches!(
        rt.namespace::<Counter>().id_from_string(&forged),
        Err(Error::WrongNamespace { .. })
    ));
}

#[test]
fn ids_of_another_deployment_are_rejected() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (rt_a, rt_b) = (runtime(a.path()), runtime(b.path()));
    let from_a = rt_a.namespace::<Counter>().id_from_name("alice");
    let from_b = rt_b.namespace::<Counter>().id_from_name("alice");
    assert_ne!(from_a, from_b, "each data directory has its own secret");
    assert!(matches!(
        rt_b.namespace::<Counter>()
            .id_from_string(&from_a.to_string()),
        Err(Error::WrongNamespace { .. })
    ));
}

#[test]
fn id_from_name_is_deterministic_and_differs_across_namespaces() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let counters = rt.namespace::<Counter>();
    assert_eq!(counters.id_from_name("x"), counters.id_from_name("x"));
    assert_ne!(counters.id_from_name("x"), counters.id_from_name("y"));
    assert_ne!(
        counters.id_from_name("x"),
        rt.namespace::<Notes>().id_from_name("x")
    );
    assert_ne!(
        counters.id_from_name("x").to_string(),
        rt.namespace::<Notes>().id_from_name("x").to_string()
    );
}

#[test]
fn unique_ids_differ() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let ns = rt.namespace::<Counter>();
    let ids: std::collections::HashSet<_> = (0..10_000).map(|_| ns.new_unique_id()).collect();
    assert_eq!(ids.len(), 10_000);
}

#[test]
fn name_is_known_only_for_ids_made_from_a_name() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let ns = rt.namespace::<Counter>();
    let named = ns.id_from_name("alice");
    assert_eq!(named.name(), Some("alice"));
    assert_eq!(ns.new_unique_id().name(), None);
    let parsed = ns.id_from_string(&named.to_string()).unwrap();
    assert_eq!(parsed.name(), None);
    assert_eq!(parsed, named, "equality is identity, not the name");
}

#[test]
fn stub_knows_its_id_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let ns = rt.namespace::<Counter>();
    let id = ns.new_unique_id();
    let stub = ns.get(id.clone());
    assert_eq!(stub.id(), &id);
    assert_eq!(stub.name(), None);
    let by_name = ns.get_by_name("alice");
    assert_eq!(by_name.name(), Some("alice"));
    assert_eq!(by_name.id(), &ns.id_from_name("alice"));
    assert_eq!(ns.get(ns.id_from_name("alice")).name(), Some("alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stub_for_an_id_of_another_namespace_fails_its_calls() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let foreign = rt.namespace::<Notes>().id_from_name("alice");
    let stub = rt.namespace::<Counter>().get(foreign);
    assert!(matches!(
        stub.increment(1).await,
        Err(Error::WrongNamespace { .. })
    ));
}

#[test]
fn namespaces_are_named_after_their_class() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    assert_eq!(rt.namespace::<Counter>().class_name(), "Counter");
    assert_eq!(
        rt.env().namespaces(),
        [
            "Counter",
            "Recorder",
            "Notes",
            "Cells",
            "Bank",
            "Kv",
            "Tally",
            "TxnLab",
            "Netter",
            "Gatekeeper",
            "Fragile",
            "Relay",
            "Slow",
            "Web",
            "Alarmed",
            "Configured",
            "Aborter",
            "Chores",
            "Passer",
            "Blobs",
            "Streamer"
        ]
    );
}
