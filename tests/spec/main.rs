//! The behaviour tests, one module per group of SPEC rules.

mod calls;
mod e_order;
mod execution;
mod identity;
mod persistence;
mod storage_basics;
mod wire;
