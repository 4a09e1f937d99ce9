//! The command line: `run` (the default), `scan --once`, `plan`, `status`,
//! `explain`, `config`. Parsing and the settings layers live here; each
//! subcommand's work lives in the module it names.

#![warn(unreachable_pub)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{ConfigError, Layers, Settings};

/// `println!` for a command's report, through [`emit`].
macro_rules! out {
    ($($t:tt)*) => { $crate::cli::emit(format_args!("{}\n", format_args!($($t)*))) };
}

/// `print!` for a command's report, through [`emit`].
macro_rules! out_raw {
    ($($t:tt)*) => { $crate::cli::emit(format_args!($($t)*)) };
}

mod commands;
mod fleet;

/// Exit status for bad settings or usage.
pub(crate) const EXIT_USAGE: u8 = 2;

/// sbps-marshal: projects squashfs boot images over iSCSI (Linux LIO).
#[derive(Debug, Parser)]
#[command(
    name = "sbps-marshal",
    version = crate::telemetry::LONG_VERSION,
    about,
    long_about = "Keeps this worker node's Linux LIO iSCSI target exporting exactly the \
squashfs boot images S3 and IMS say it must (HPE Cray System Management's Scalable Boot \
Projection Service). Without a subcommand it runs the agent (`run`).",
    after_help = "Settings: --set KEY=VALUE > environment SBPS_MARSHAL_<KEY> > the --config file \
> defaults; `sbps-marshal config` lists every key with its value and origin. Exit status: 0 \
ok, 1 failure (or a scan that did not converge), 2 bad settings or usage."
)]
pub struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

/// Options every subcommand takes.
#[derive(Debug, Clone, Args)]
pub(crate) struct Global {
    /// Debug logging (as the original's -d).
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub(crate) debug: bool,
    /// Only warnings and errors (as the original's -q).
    #[arg(short, long, global = true)]
    pub(crate) quiet: bool,
    /// TOML settings file (default /etc/sbps-marshal/config.toml when it exists).
    #[arg(long, global = true, env = "SBPS_MARSHAL_CONFIG", value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    /// Override a setting: KEY=VALUE (e.g. --set SCAN_FREQUENCY=60). Repeatable; beats
    /// the environment and the file.
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub(crate) set: Vec<String>,
}

/// The subcommands. `config` only prints the settings layers; every other one works
/// on the node with settings that passed validation (`commands::dispatch`), so it is
/// kept apart and the dispatch has no `config` case to ignore.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    // Listed first: `--help` shows them before `config`.
    #[command(flatten)]
    World(WorldCommand),
    /// Print the effective settings, each with where it came from.
    Config {
        /// As JSON.
        #[arg(long)]
        json: bool,
        /// Print the packaged config.toml (every key, commented, at its default).
        #[arg(long, conflicts_with = "markdown")]
        default_file: bool,
        /// Print the README's table of settings (every key, its default and meaning).
        #[arg(long)]
        markdown: bool,
    },
}

/// The subcommands that talk to the world: the daemon, one scan, and the read-only
/// views of the inventory, LIO and the fleet.
#[derive(Debug, Subcommand)]
pub(crate) enum WorldCommand {
    /// Run the agent: a scan every SCAN_FREQUENCY seconds (the default).
    ///
    /// SIGHUP scans at once; SIGTERM and SIGINT let the running operation finish,
    /// persist and exit 0.
    Run,
    /// One scan now, then exit: 0 when it converged, 1 with the reasons otherwise.
    ///
    /// `--once` is required: the periodic scan is `sbps-marshal run`.
    Scan {
        /// Scan once and exit (required; the periodic scan is `sbps-marshal run`).
        #[arg(long, required = true)]
        once: bool,
        /// Let this scan remove what the deletion brake holds back.
        #[arg(long)]
        release_brake: bool,
    },
    /// Show what a scan would change, without changing anything.
    Plan {
        /// Print the plan as JSON (operations, held removals, warnings).
        #[arg(long)]
        json: bool,
    },
    /// Every projection with its LUN, held removals, unmanaged objects, the gate.
    Status {
        /// Print the status document as JSON (what `/status` serves).
        #[arg(long)]
        json: bool,
    },
    /// Why an image (id or name), S3 key, backstore name, serial or WWID is or is not projected.
    Explain {
        /// An IMS image id or name, an S3 key, a backstore name, a unit serial or a WWID.
        #[arg(value_name = "WHAT")]
        query: String,
    },
    /// Every worker's LUN map from the Kubernetes API, side by side; exit 1 when
    /// something is flagged (an image missing on a labelled node, LUN numbers or content
    /// that differ between nodes, an agent not converging).
    Fleet {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Loads and validates the settings from every layer.
pub(crate) fn load_settings(g: &Global) -> Result<(Layers, Settings), ConfigError> {
    let layers = Layers::load(g.config.as_deref(), std::env::vars(), &g.set)?;
    let host = hostname();
    let settings = Settings::from_layers(&layers, &host)?;
    Ok((layers, settings))
}

/// This host's short name, as the original's `socket.gethostname()`.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Runs the parsed command line.
pub fn main(cli: Cli) -> ExitCode {
    crate::telemetry::init_logging(cli.global.debug, cli.global.quiet);
    let (layers, settings) = match load_settings(&cli.global) {
        Ok(x) => x,
        Err(e) => {
            crate::telemetry::fatal(&e.to_string());
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let command = match cli.command.unwrap_or(Command::World(WorldCommand::Run)) {
        Command::Config {
            json,
            default_file,
            markdown,
        } => {
            if default_file {
                out_raw!("{}", crate::config::default_file());
            } else if markdown {
                out_raw!("{}", crate::config::markdown_table());
            } else {
                print_config(&layers, json);
            }
            return ExitCode::SUCCESS;
        }
        Command::World(command) => command,
    };
    if matches!(command, WorldCommand::Run | WorldCommand::Scan { .. }) {
        tracing::info!(
            version = crate::telemetry::VERSION,
            revision = crate::telemetry::REVISION,
            allocator = crate::allocator::describe().as_str(),
            "sbps-marshal {} starting",
            crate::telemetry::LONG_VERSION
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            crate::telemetry::fatal(&format!("cannot start the async runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    let code = match runtime.block_on(commands::dispatch(command, settings)) {
        Ok(code) => code,
        Err(e) => {
            crate::telemetry::fatal(&format!("{e:#}"));
            ExitCode::from(1)
        }
    };
    // A blocking call the kernel never answered (a hung configfs write) keeps its thread:
    // the process exits without waiting for it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

fn print_config(layers: &Layers, json: bool) {
    let rows = layers.describe();
    if json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(k, v, o)| serde_json::json!({"key": k, "value": v, "source": o.to_string()}))
            .collect();
        out!("{}", serde_json::Value::Array(v));
        return;
    }
    let w = rows.iter().map(|(k, _, _)| k.len()).max().unwrap_or(0);
    let vw = rows
        .iter()
        .map(|(_, v, _)| v.len())
        .max()
        .unwrap_or(0)
        .min(48);
    for (k, v, o) in rows {
        out!("{k:<w$}  {v:<vw$}  ({o})");
    }
}

/// Writes a command's report to stdout. A reader that went away (`sbps-marshal
/// status | head`) ends the command quietly with status 0, as for any Unix filter,
/// instead of the panic `println!` gives; another write error ends it with 1.
pub(crate) fn emit(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("sbps-marshal: cannot write to stdout: {e}");
            std::process::exit(1)
        }
    }
}
