//! Where the log goes. Under systemd (stderr is the journal stream systemd names in
//! `JOURNAL_STREAM`) every event goes to journald's native socket, so it keeps its
//! priority (`journalctl -p warning` finds warnings and errors) and its fields
//! (`IMAGE_ID`, `SERIAL`, `LUN`, `OP`, …) become journal fields, without a second
//! timestamp. Elsewhere (a terminal, a pipe, a file) the lines are plain text on
//! stderr, with a timestamp and the level.

use std::fmt;
use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing::{Event, Level, Subscriber};
use tracing_journald::{Priority, PriorityMappings};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// The syslog identifier of every journal entry (`journalctl -t sbps-marshal`).
pub(crate) const SYSLOG_IDENTIFIER: &str = "sbps-marshal";

/// Where the log lines went, chosen once at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    /// journald's native protocol: priorities and structured fields.
    Journal,
    /// stderr is the journal stream but the native socket cannot be reached (a
    /// sandbox without it): one line per event with a `<N>` priority prefix,
    /// which journald's stream reader turns into the priority.
    JournalStream,
    /// Plain text lines on stderr.
    Stderr,
}

static OUTPUT: OnceLock<Output> = OnceLock::new();

/// Sets up logging: info by default, debug with `-d`, warnings only with `-q`;
/// `RUST_LOG` overrides. Returns where the lines go.
pub(crate) fn init_logging(debug: bool, quiet: bool) -> Output {
    let level = if debug {
        "debug"
    } else if quiet {
        "warn"
    } else {
        "info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("sbps_marshal={level},warn"))
    });
    let journal = if stderr_is_journal() {
        journald_layer().map_err(Some)
    } else {
        Err(None)
    };
    let unreachable = journal
        .as_ref()
        .err()
        .and_then(|e| e.as_ref().map(|e| e.to_string()));
    let (output, result) = match journal {
        Ok(layer) => (
            Output::Journal,
            tracing_subscriber::registry()
                .with(filter)
                .with(layer)
                .try_init(),
        ),
        Err(Some(_)) => (
            Output::JournalStream,
            tracing_subscriber::registry()
                .with(filter)
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::stderr)
                        .with_ansi(false)
                        .event_format(SyslogPrefix),
                )
                .try_init(),
        ),
        Err(None) => (
            Output::Stderr,
            tracing_subscriber::registry()
                .with(filter)
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::stderr)
                        .with_ansi(std::io::stderr().is_terminal())
                        .with_target(false),
                )
                .try_init(),
        ),
    };
    // A second call (tests) keeps the first subscriber and what it chose.
    if result.is_ok() {
        let _ = OUTPUT.set(output);
        if let Some(e) = unreachable {
            tracing::warn!("journald's socket cannot be reached ({e}): logging to the journal stream with priority prefixes");
        }
    }
    *OUTPUT.get().unwrap_or(&output)
}

/// Where the log goes, once [`init_logging`] ran.
pub(crate) fn output() -> Option<Output> {
    OUTPUT.get().copied()
}

/// Reports the error that ends the process, exactly once: through the journal
/// (priority 3) when logging goes there, else as one `sbps-marshal: …` line on
/// stderr (not also through the log, which writes to the same stderr).
pub(crate) fn fatal(message: &str) {
    match output() {
        Some(Output::Journal | Output::JournalStream) => tracing::error!("{message}"),
        Some(Output::Stderr) | None => eprintln!("sbps-marshal: {message}"),
    }
}

/// The mapping `journalctl -p` filters on: error 3, warning 4, info 6, debug 7
/// (tracing-journald's default would put info at 5, "notice").
pub(crate) fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

fn journald_layer() -> std::io::Result<tracing_journald::Layer> {
    Ok(tracing_journald::layer()?
        .with_syslog_identifier(SYSLOG_IDENTIFIER.to_string())
        // Fields keep their own names: OP, LUN, SERIAL, IMAGE_ID …
        .with_field_prefix(None)
        .with_priority_mappings(PriorityMappings {
            error: Priority::Error,
            warn: Priority::Warning,
            info: Priority::Informational,
            debug: Priority::Debug,
            trace: Priority::Debug,
        }))
}

/// Whether stderr is the journal stream systemd connected: `JOURNAL_STREAM` holds
/// its `device:inode`, and a stderr redirected elsewhere (`2>file` in a unit, a
/// child that inherited the variable) has another one (systemd.exec(5)).
fn stderr_is_journal() -> bool {
    let Some(var) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a full `stat` into the buffer when it returns 0.
    let st = unsafe {
        if libc::fstat(libc::STDERR_FILENO, st.as_mut_ptr()) != 0 {
            return false;
        }
        st.assume_init()
    };
    stream_matches(&var.to_string_lossy(), st.st_dev, st.st_ino)
}

/// `JOURNAL_STREAM` (`"<device>:<inode>"`, decimal) names this device and inode.
pub(crate) fn stream_matches(journal_stream: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = journal_stream.trim().split_once(':') else {
        return false;
    };
    matches!((d.parse::<u64>(), i.parse::<u64>()), (Ok(d), Ok(i)) if d == dev && i == ino)
}

/// `<N>message key=value …`: the stream fallback's line, no timestamp (journald
/// adds its own).
struct SyslogPrefix;

impl<S, N> FormatEvent<S, N> for SyslogPrefix
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_name_stderr_exactly() {
        assert!(stream_matches("8:1234", 8, 1234));
        assert!(stream_matches("8:1234\n", 8, 1234));
        assert!(!stream_matches("8:1235", 8, 1234));
        assert!(!stream_matches("9:1234", 8, 1234));
        for bad in ["", ":", "8", "8:", ":1234", "x:1", "8:1:2", "-8:1234"] {
            assert!(!stream_matches(bad, 8, 1234), "{bad:?}");
        }
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
        assert_eq!(priority(&Level::TRACE), 7);
    }
}
