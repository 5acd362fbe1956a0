#![allow(dead_code)] // the classes exist for their generated constants only

//! Methods are identified on the wire by their names, never by their order.

use do_runtime::{Ctx, DurableObject, durable_object};

pub struct Forward;

#[durable_object(name = "Same")]
impl Forward {
    pub fn new(_ctx: Ctx) -> Self {
        Forward
    }
    pub async fn alpha(&self, n: u32) -> u32 {
        n
    }
    pub async fn beta(&self, s: String) -> String {
        s
    }
}

pub struct Backward;

#[durable_object(name = "Same")]
impl Backward {
    pub async fn beta(&self, s: String) -> String {
        s
    }
    pub async fn alpha(&self, n: u32) -> u32 {
        n
    }
    pub fn new(_ctx: Ctx) -> Self {
        Backward
    }
}

#[test]
fn reordering_methods_keeps_the_schema_fingerprint() {
    assert_eq!(Forward::SCHEMA, Backward::SCHEMA);
    assert_eq!(
        Forward::SCHEMA,
        "Same{alpha(u32)->u32;beta(String)->String}"
    );
}

#[test]
fn method_ids_are_the_fnv1a_hash_of_the_name() {
    // FNV-1a 32 of "increment", computed independently of the crate.
    let expected = "increment".bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    });
    assert_eq!(do_runtime::__private::method_id("increment"), expected);
    assert_eq!(do_runtime::__private::method_id(""), 0x811c_9dc5);
    assert_eq!(do_runtime::__private::method_id("a"), 0xe40c_292c);
}

#[test]
fn the_class_name_can_be_chosen() {
    assert_eq!(Forward::CLASS, "Same");
    assert_eq!(do_tests::Counter::CLASS, "Counter");
}
