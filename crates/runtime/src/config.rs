//! Host settings that are not part of a pipeline (paths, capacity).

use std::path::PathBuf;

/// Where callpipe keeps its state: the component cache, later the database
/// and the knowledge store.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("CALLPIPE_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("data"))
}
