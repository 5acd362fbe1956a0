//! Tools for operators: reading and writing a data directory offline.
//! Imports `service` and the layers below it.

pub mod admin;
