//! The subcommands that talk to the world.

use std::process::ExitCode;

use anyhow::{Context, Result};

use super::WorldCommand as Command;
use crate::agent::lock::InstanceLock;
use crate::agent::service::{NoServices, ServiceManager, Systemctl};
use crate::agent::{run, Agent, Mode};
use crate::config::Settings;
use crate::report::status::{explain, Status};

/// Runs one subcommand that talks to the world.
pub(crate) async fn dispatch(command: Command, settings: Settings) -> Result<ExitCode> {
    match command {
        Command::Run => {
            let _lock = single_instance(&settings)?;
            check_state_dir(&settings)?;
            let agent = Agent::new(settings, services())?;
            run::run(agent).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Scan {
            once,
            release_brake,
        } => {
            // clap requires --once: `scan` alone is a usage error (exit 2).
            debug_assert!(once);
            let _lock = single_instance(&settings)?;
            check_state_dir(&settings)?;
            let mut agent = Agent::new(settings, services())?;
            agent.release_brake = release_brake;
            let report = agent.scan_and_publish().await;
            if report.converged {
                out!(
                    "converged: {} projections",
                    report.desired.projections.len()
                );
                Ok(ExitCode::SUCCESS)
            } else {
                for p in report.problems() {
                    out!("not converged: {p}");
                }
                Ok(ExitCode::from(1))
            }
        }
        Command::Plan { json } => {
            let mut agent = Agent::new(settings, services())?;
            let report = agent.reconcile(Mode::DryRun).await;
            let plan = report.plan.as_ref().with_context(|| {
                report
                    .failure
                    .as_ref()
                    .map(|f| f.to_string())
                    .unwrap_or_default()
            })?;
            if json {
                out!("{}", serde_json::to_string_pretty(plan)?);
            } else if plan.ops.is_empty() {
                out!(
                    "nothing to do ({} projections)",
                    report.desired.projections.len()
                );
                for h in &plan.held {
                    out!("held: {} LUN {:?}: {}", h.at, h.luns, h.reason);
                }
            } else {
                out!("{:<8} OPERATION", "PHASE");
                for op in &plan.ops {
                    out!("{:<8} {op}", format!("{:?}", op.phase()).to_lowercase());
                }
                for h in &plan.held {
                    out!("held     {} LUN {:?}: {}", h.at, h.luns, h.reason);
                }
                for w in &plan.warnings {
                    out!("warning  {w}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json } => {
            let mut agent = Agent::new(settings, services())?;
            let report = agent.reconcile(Mode::DryRun).await;
            let st = Status::build(&report, agent.ledger(), &agent.settings);
            if json {
                out!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                out_raw!("{}", st.to_text());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain { query } => {
            let mut agent = Agent::new(settings, services())?;
            let report = agent.reconcile(Mode::DryRun).await;
            let found = explain(&report, agent.ledger(), &query);
            if found.is_empty() {
                out!("nothing in the inventory or in LIO matches {query:?}");
                return Ok(ExitCode::from(1));
            }
            for f in found {
                out!("{f}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Fleet { json } => super::fleet::run(&settings, json).await,
    }
}

fn services() -> Box<dyn ServiceManager> {
    if std::path::Path::new("/run/systemd/system").exists() {
        Box::new(Systemctl::default())
    } else {
        Box::new(NoServices)
    }
}

fn single_instance(s: &Settings) -> Result<InstanceLock> {
    Ok(InstanceLock::acquire(&s.lock_file)?)
}

/// The ledger decides which LUN numbers images get: a state directory others can
/// write is refused.
fn check_state_dir(s: &Settings) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::create_dir_all(&s.state_dir)
        .with_context(|| format!("cannot create STATE_DIR {}", s.state_dir.display()))?;
    let meta = std::fs::metadata(&s.state_dir)
        .with_context(|| format!("cannot stat STATE_DIR {}", s.state_dir.display()))?;
    let mode = meta.permissions().mode();
    if mode & 0o002 != 0 || (mode & 0o020 != 0 && meta.gid() != 0) {
        anyhow::bail!(
            "STATE_DIR {} is writable by others (mode {:o}); refusing to start: chmod o-w,g-w it",
            s.state_dir.display(),
            mode & 0o7777
        );
    }
    Ok(())
}
