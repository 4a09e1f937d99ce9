//! Records the git revision the binary is built from, so `--version`, the start-up
//! log line and `sbps_marshal_build_info` name the exact source. A build from a
//! tarball (no git) takes `SBPS_MARSHAL_REVISION` from the environment, else
//! `unknown`.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=SBPS_MARSHAL_REVISION");
    let revision = std::env::var("SBPS_MARSHAL_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    // Rebuild when HEAD moves: HEAD itself, the branch it names, packed refs.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
    }
    if let (Some(common), Some(head)) = (
        git(&["rev-parse", "--git-common-dir"]),
        git(&["rev-parse", "--symbolic-full-name", "HEAD"]),
    ) {
        let reference = Path::new(&common).join(&head);
        if reference.exists() {
            println!("cargo:rerun-if-changed={}", reference.display());
        }
        println!("cargo:rerun-if-changed={common}/packed-refs");
    }
    println!("cargo:rustc-env=SBPS_MARSHAL_REVISION={revision}");
}
