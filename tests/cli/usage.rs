//! The command line as a user meets it: every flag and argument explains itself,
//! `--version` names the revision, and a usage mistake exits 2.

use std::process::Command;

use clap::CommandFactory;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sbps-marshal"));
    c.env_clear().env("PATH", "/usr/bin:/bin");
    c
}

/// Every subcommand has a description, and every flag and argument of every
/// subcommand has help text (the man page and completions are generated from it).
#[test]
fn every_flag_and_argument_has_help() {
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        if cmd.get_about().is_none() {
            missing.push(format!("{path}: no description"));
        }
        for a in cmd.get_arguments() {
            if a.get_help().is_none() && a.get_long_help().is_none() {
                missing.push(format!("{path} {}", a.get_id()));
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut cmd = sbps_marshal::cli::Cli::command();
    cmd.build();
    let mut missing = Vec::new();
    walk(&cmd, "sbps-marshal", &mut missing);
    assert!(missing.is_empty(), "without help text: {missing:#?}");
}

#[test]
fn version_names_the_revision() {
    let out = bin().arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("sbps-marshal {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(
        text.contains(&format!("(revision {})", sbps_marshal::telemetry::REVISION)),
        "{text}"
    );
    // Built from this repository, the revision is a commit, not "unknown".
    assert!(
        sbps_marshal::telemetry::REVISION
            .bytes()
            .all(|b| b.is_ascii_hexdigit())
            && sbps_marshal::telemetry::REVISION.len() >= 7,
        "{text}"
    );
}

#[test]
fn usage_mistakes_exit_2() {
    for args in [&["scan"][..], &["no-such-command"], &["plan", "--bogus"]] {
        let out = bin()
            .args(["--config", "/dev/null"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
