//! The behaviour tests, one module per group of SPEC rules.

mod admin;
mod alarms;
mod bindings;
mod calls;
mod chat;
mod cli;
mod crash;
mod e_order;
mod execution;
mod failures;
mod fetch;
mod gates;
mod gateway;
mod identity;
mod layers;
mod lifecycle;
mod listing;
mod macro_ui;
mod observability;
mod persistence;
mod remote;
mod storage_api;
mod storage_basics;
mod tasks;
mod transactions;
mod wire;
