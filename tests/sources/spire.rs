//! The SPIRE token provider every build has: the spire-agent CLI, run as the original
//! ran it, against a stand-in script. The Workload API client (cargo feature `spiffe`)
//! is tested against the test kit's gRPC double in `spiffe.rs`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sbps_marshal::inventory::spire::{
    spiffe_id_for, SpireBackend, SpireSettings, SpireTokens, TokenProvider,
};
use serde_json::json;

use crate::support::token_exp;

/// A stand-in spire-agent: logs its argv, prints `$OUT` or fails like the real one.
fn fake_agent(dir: &Path, stdout: &str, fail: bool) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let out = dir.join("out.json");
    std::fs::write(&out, stdout).unwrap();
    let log = dir.join("argv.log");
    let script = dir.join("spire-agent");
    let body = if fail {
        "echo 'rpc error: code = Unavailable desc = connection error' >&2\nexit 1".to_string()
    } else {
        format!("cat '{}'", out.display())
    };
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$@\" >> '{}'\n{body}\n", log.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn cli_config(agent: PathBuf, xname_file: &Path) -> SpireSettings {
    SpireSettings {
        backend: SpireBackend::Cli { agent },
        socket: "/var/lib/spire/agent.sock".into(),
        audience: "system-compute".into(),
        xname_file: xname_file.to_path_buf(),
        timeout: Duration::from_secs(10),
        refresh_before: Duration::from_secs(30),
    }
}

fn runs(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("argv.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn cli_runs_like_the_original_and_caches() {
    let dir = tempfile::tempdir().unwrap();
    let xname = dir.path().join("xname");
    std::fs::write(&xname, "x3000c0s7b0n0").unwrap();
    let tok = token_exp(3600);
    let out = json!([
        {"svids": [
            {"spiffe_id": "spiffe://shasta/ncn/workload/other", "svid": "nope", "hint": ""},
            {"spiffe_id": spiffe_id_for("x3000c0s7b0n0"), "svid": tok, "hint": ""}]},
        {"bundles": {"spiffe://shasta": "e30="}}
    ]);
    let agent = fake_agent(dir.path(), &out.to_string(), false);
    let p = SpireTokens::new(cli_config(agent, &xname));
    assert_eq!(p.token().await.unwrap().secret(), tok);
    assert_eq!(p.token().await.unwrap().secret(), tok);
    assert_eq!(
        runs(dir.path()),
        ["api fetch jwt -audience system-compute -socketPath /var/lib/spire/agent.sock -output json"]
    );
}

#[tokio::test]
async fn cli_failures_carry_stderr_not_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let nox = dir.path().join("none");
    let agent = fake_agent(dir.path(), "", true);
    let e = SpireTokens::new(cli_config(agent, &nox))
        .token()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("exit status: 1") && e.contains("code = Unavailable"),
        "{e}"
    );

    let dir = tempfile::tempdir().unwrap();
    let agent = fake_agent(dir.path(), "not json", false);
    let e = SpireTokens::new(cli_config(agent, &nox))
        .token()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not JSON"), "{e}");

    let e = SpireTokens::new(cli_config(dir.path().join("missing-agent"), &nox))
        .token()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("missing-agent"), "{e}");

    // The plain form only: an xname SVID for another node does not match.
    let dir = tempfile::tempdir().unwrap();
    let xname = dir.path().join("xname");
    std::fs::write(&xname, "x1").unwrap();
    let out =
        json!([{"svids": [{"spiffe_id": spiffe_id_for("x2"), "svid": "SECRETTOKEN", "hint": ""}]}]);
    let agent = fake_agent(dir.path(), &out.to_string(), false);
    let e = SpireTokens::new(cli_config(agent, &xname))
        .token()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no SVID") && !e.contains("SECRETTOKEN"), "{e}");
}
