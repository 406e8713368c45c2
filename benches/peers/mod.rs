//! Comparison peers for the watchstore benchmarks, and the code the bench
//! binaries share. Each bench binary includes this module with
//! `#[path = "peers/mod.rs"] mod peers;` and uses only part of it.

pub mod bare_ring;
pub mod broadcast;
pub mod consul_style;
pub mod fixtures;
pub mod harness;
pub mod locked_btree;
pub mod settings;
