//! streetwatch: cameras → ingest → pool/infer → analyse → alert → serve.
//!
//! Each stage is one module with one public entry; stages talk through the types in [`types`].

pub mod alert;
pub mod types;
