//! streetwatch: cameras → ingest → pool/infer → analyse → alert → serve.
//!
//! Each stage is one module with one public entry; stages talk through the types in [`types`] and
//! [`frame`], and report health through [`health`].

pub mod alert;
pub mod analyse;
pub mod app;
pub mod bench;
pub mod cluster;
pub mod config;
pub mod eval;
pub mod frame;
pub mod health;
pub mod histogram;
pub mod home;
pub mod infer;
pub mod ingest;
pub mod pool;
pub mod retention;
pub mod scenegen;
pub mod secret;
pub mod serve;
pub mod store;
pub mod types;
