//! Captures every tracing event of the test binary (debug level and up, all
//! threads) into one buffer while at least one [`Capture`] is alive: what the leak
//! checks (no secret in any log line) and the warning checks read.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

static BUF: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
static INIT: OnceLock<()> = OnceLock::new();

struct W;

impl Write for W {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if ACTIVE.load(Ordering::SeqCst) > 0 {
            BUF.lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(b);
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// While alive, events are recorded; [`Capture::text`] returns all recorded so far
/// (also other tests' events: a superset is what a leak check wants).
pub struct Capture(());

impl Capture {
    pub fn start() -> Capture {
        INIT.get_or_init(|| {
            let sub = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_ansi(false)
                .with_writer(|| W)
                .finish();
            tracing::subscriber::set_global_default(sub).expect("one global subscriber");
        });
        ACTIVE.fetch_add(1, Ordering::SeqCst);
        Capture(())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&BUF.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
    }
}
