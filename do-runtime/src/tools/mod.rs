//! Tools for operators: reading and writing a data directory offline.
//! Imports every layer below `net`.

pub mod admin;
