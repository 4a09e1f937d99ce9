//! systemd units the agent touches (target.service), behind a small trait so tests
//! and machines without systemd can stand in.

use std::future::Future;
use std::pin::Pin;

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the agent asks of the service manager.
pub trait ServiceManager: Send + Sync {
    fn is_active<'a>(&'a self, unit: &'a str) -> BoxFut<'a, Result<bool, String>>;
    fn start<'a>(&'a self, unit: &'a str) -> BoxFut<'a, Result<(), String>>;
    fn restart<'a>(&'a self, unit: &'a str) -> BoxFut<'a, Result<(), String>>;
}

/// `systemctl`, as the original ran it. The agent bounds every call (COMMAND_TIMEOUT)
/// by dropping its future; the child is then killed, never left behind.
pub struct Systemctl {
    bin: std::path::PathBuf,
}

impl Default for Systemctl {
    fn default() -> Self {
        Systemctl::new("systemctl")
    }
}

impl Systemctl {
    /// `systemctl` at `bin` (a stand-in in tests).
    pub fn new(bin: impl Into<std::path::PathBuf>) -> Systemctl {
        Systemctl { bin: bin.into() }
    }

    async fn run(&self, args: &[&str]) -> Result<std::process::Output, String> {
        tokio::process::Command::new(&self.bin)
            .args(args)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))
    }
}

impl ServiceManager for Systemctl {
    fn is_active<'a>(&'a self, unit: &'a str) -> BoxFut<'a, Result<bool, String>> {
        Box::pin(async move {
            let out = self.run(&["is-active", unit]).await?;
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            match state.as_str() {
                "active" => Ok(true),
                "" => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
                _ => Ok(false),
            }
        })
    }

    fn start<'a>(&'a self, unit: &'a str) -> BoxFut<'a, Result<(), String>> {
        Box::pin(async move { checked(self.run(&["start", unit]).await?) })
    }

    fn restart<'a>(&'a self, unit: &'a str) -> BoxFut<'a, Result<(), String>> {
        Box::pin(async move { checked(self.run(&["restart", unit]).await?) })
    }
}

fn checked(out: std::process::Output) -> Result<(), String> {
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// No service manager (containers, tests): every unit counts as active.
pub struct NoServices;

impl ServiceManager for NoServices {
    fn is_active<'a>(&'a self, _unit: &'a str) -> BoxFut<'a, Result<bool, String>> {
        Box::pin(async { Ok(true) })
    }
    fn start<'a>(&'a self, _unit: &'a str) -> BoxFut<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    fn restart<'a>(&'a self, _unit: &'a str) -> BoxFut<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}
