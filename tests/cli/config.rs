//! `sbps-marshal config`: the effective settings, and exit status 2 on bad ones.

use std::process::Command;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sbps-marshal"));
    c.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .arg("--config")
        .arg("/dev/null");
    c
}

#[test]
fn bad_value_exits_2_naming_the_key() {
    let out = bin()
        .env("SBPS_MARSHAL_SCAN_FREQUENCY", "abc")
        .arg("config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SBPS_MARSHAL_SCAN_FREQUENCY"), "{err}");
    assert!(err.contains("abc"), "{err}");
    assert_eq!(err.lines().count(), 1, "one message: {err}");
}

#[test]
fn prints_every_key_with_its_source() {
    let out = bin()
        .env("SBPS_MARSHAL_S3_BUCKET", "other")
        .args(["config", "--set", "SCAN_FREQUENCY=60"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for k in sbps_marshal::config::KEYS {
        assert!(
            text.lines().any(|l| l.starts_with(k.name)),
            "{} missing:\n{text}",
            k.name
        );
    }
    assert!(
        text.lines().any(|l| l.starts_with("S3_BUCKET")
            && l.contains("other")
            && l.contains("env SBPS_MARSHAL_S3_BUCKET")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("SCAN_FREQUENCY") && l.contains("60") && l.contains("flag")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("IMS_TIMEOUT") && l.contains("(default)")),
        "{text}"
    );
}

/// `config --markdown` prints the README's table of settings, one row per key.
#[test]
fn markdown_is_the_table_of_settings() {
    let out = bin().args(["config", "--markdown"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text, sbps_marshal::config::markdown_table());
    for k in sbps_marshal::config::KEYS {
        let row = format!("| `{}` |", k.name);
        assert_eq!(
            text.lines().filter(|l| l.starts_with(&row)).count(),
            1,
            "{row}:\n{text}"
        );
    }
}

#[test]
fn original_debug_and_quiet_flags_are_accepted() {
    for f in ["-d", "--debug", "-q", "--quiet"] {
        let out = bin().args([f, "config"]).output().unwrap();
        assert!(
            out.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `sbps-marshal config | head -1`: the reader goes away; the command stops quietly
/// (status 0, nothing on stderr) instead of panicking on the broken pipe.
#[test]
fn a_reader_that_goes_away_is_no_panic() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills both descriptors on success, which is checked.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both are fresh descriptors owned by nobody else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read_end); // every write the command makes now fails with EPIPE
    for args in [
        &["config"][..],
        &["config", "--json"],
        &["config", "--default-file"],
        &["config", "--markdown"],
    ] {
        let out = bin()
            .args(args)
            .stdout(write_end.try_clone().unwrap())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }
}

/// A build without the SPIFFE Workload API client (`cargo test --no-default-features
/// --test cli -- config::`) refuses `SPIRE_PROVIDER=workload-api` at start with a
/// configuration error that says what is missing and what to do: exit 2, one line,
/// no panic, before any scan (and so before any token would be wanted).
#[cfg(not(feature = "spiffe"))]
#[test]
fn workload_api_provider_without_the_feature_is_a_configuration_error() {
    for cmd in [&["run"][..], &["scan", "--once"], &["config"]] {
        let out = bin()
            .env("SBPS_MARSHAL_SPIRE_PROVIDER", "workload-api")
            .args(cmd)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}: {err}");
        assert!(!err.contains("panicked"), "{cmd:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{cmd:?}: one message: {err}");
        for part in [
            "SBPS_MARSHAL_SPIRE_PROVIDER=\"workload-api\"",
            "env SBPS_MARSHAL_SPIRE_PROVIDER",
            "SPIFFE Workload API client",
            "`spiffe`",
            "SPIRE_PROVIDER=cli",
        ] {
            assert!(err.contains(part), "{cmd:?}: {part:?} missing: {err}");
        }
    }
    // The CLI provider needs nothing more.
    let out = bin()
        .env("SBPS_MARSHAL_SPIRE_PROVIDER", "cli")
        .arg("config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With the feature (the default build, the RPM) the same setting is accepted.
#[cfg(feature = "spiffe")]
#[test]
fn workload_api_provider_is_accepted_with_the_feature() {
    let out = bin()
        .env("SBPS_MARSHAL_SPIRE_PROVIDER", "workload-api")
        .arg("config")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("SPIRE_PROVIDER") && l.contains("workload-api")),
        "{text}"
    );
}
