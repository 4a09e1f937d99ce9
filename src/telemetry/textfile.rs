//! The node-exporter textfile output (METRICS_TEXTFILE): CSM collects host metrics
//! with node-exporter, whose textfile collector reads every `*.prom` file of its
//! directory at each scrape. The file is replaced atomically (a temp file in the
//! same directory, whose name does not end in `.prom`, renamed over it), so the
//! collector never reads half a file.

use std::io;
use std::path::Path;

/// Replaces `path` with `text`, readable by node-exporter (0644).
pub(crate) fn write(path: &Path, text: &str) -> io::Result<()> {
    crate::atomic_file::write_mode(path, text.as_bytes(), 0o644)
}
