//! appmgr's signed bundle format (being written: see `payload` for the importer interface).
pub mod payload;
pub use payload::{PayloadSink, RelPath, SinkError};
