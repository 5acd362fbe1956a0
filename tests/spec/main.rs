//! The behaviour tests, one module per group of SPEC rules.

mod admin;
mod alarms;
mod bindings;
mod calls;
mod chat;
mod cli;
mod cluster;

mod cluster_membership;
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
mod lifecycle_controls;
mod listing;
mod macro_ui;
mod observability;
mod passing;
mod persistence;
mod raw_values;
mod relayed_websockets;
mod remote;
mod replication;
mod storage_api;
mod storage_basics;
mod streaming;
mod tasks;
mod transactions;
mod wire;
