//! Secrets never reach a log line, an error, the status document or `config`;
//! the state files are 0600; a state directory others can write is refused.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use sbps_marshal::agent::service::NoServices;
use sbps_marshal::agent::Agent;
use sbps_marshal::http::TlsOptions;
use sbps_marshal::inventory::s3::read_credentials;
use sbps_marshal::report::status::Status;
use sbps_testkit::ims::Ims;

use crate::support::*;

fn assert_clean(what: &str, text: &str) {
    for s in [S3_SECRET, JWT_SECRET, "SIGNATURE-hardening-b41d"] {
        assert!(!text.contains(s), "{what} leaks a secret ({s}):\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_logs_errors_status_or_files() {
    let cap = Capture::start();
    let rig = Rig::new();
    let mount = rig.images.path().to_path_buf();
    rig.image("PE/a.squashfs", 100);
    let s3 = Served::start(S3::memory([Object::new("PE/a.squashfs", "e", 100)]).router()).await;
    let ims = Served::start(ims_router("[]".into())).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let creds = cred_file(dir.path(), &format!("{ACCESS}:{S3_SECRET}\n"));
    let state = dir.path().join("state");
    let save = dir.path().join("saveconfig.json");
    let settings = config_settings(&[
        ("S3_PROTO", "http".into()),
        ("S3_HOST", s3.addr.to_string()),
        ("API_GATEWAY", ims.url().to_string()),
        ("S3_CREDENTIAL_FILE", creds.display().to_string()),
        ("SQUASHFS_S3FS_MOUNT", mount.display().to_string()),
        ("STATE_DIR", state.display().to_string()),
        ("LIO_SAVE_FILE", save.display().to_string()),
        ("TARGET_IQN", IQN.into()),
        ("NODE_LABEL", String::new()),
        ("TARGET_SERVICE", String::new()),
        ("REMOVAL_GRACE", "0".into()),
    ]);
    std::fs::create_dir_all(&state).unwrap();
    let src = sources(
        s3.url(),
        ims.url(),
        creds.clone(),
        TlsOptions::default(),
        Duration::from_secs(5),
    );
    let mut agent = Agent::with_parts(
        settings.clone(),
        src,
        Arc::new(rig.target()),
        Box::new(NoServices),
    )
    .unwrap();
    let report = agent.scan_and_publish().await;
    assert!(report.converged, "{:?}", report.problems());
    assert_eq!(report.desired.projections.len(), 1);
    let status = Status::build(&report, agent.ledger(), &settings);
    assert_clean("status JSON", &serde_json::to_string(&status).unwrap());
    assert_clean("status text", &status.to_text());
    assert_clean("scan report", &format!("{report:?}"));
    assert_clean("plan JSON", &serde_json::to_string(&report.plan).unwrap());
    for f in [settings.ledger_file(), save.clone()] {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
        assert_clean(
            &f.display().to_string(),
            &std::fs::read_to_string(&f).unwrap(),
        );
    }

    // Errors: credential files of every wrong shape carrying the secret.
    for text in [
        format!("{ACCESS}:{S3_SECRET}:x"),
        format!("{ACCESS}{S3_SECRET}"),
        format!("{ACCESS}:{S3_SECRET}\n{ACCESS}:{S3_SECRET}"),
        format!(":{S3_SECRET}"),
    ] {
        let p = cred_file(dir.path(), &text);
        let e = read_credentials(&p).unwrap_err();
        assert_clean("credential error", &e.to_string());
        assert_clean("credential error", &format!("{e:?}"));
    }
    // A broken credential file and an IMS that echoes the token, through a scan.
    cred_file(dir.path(), &format!("{ACCESS}:{S3_SECRET}:oops"));
    // An IMS that answers 401 and echoes the Authorization header, as a careless
    // gateway might.
    let echoing = Arc::new(Ims::default());
    echoing.echo_token(StatusCode::UNAUTHORIZED);
    let bad_ims = Served::start(echoing.router()).await;
    let mut ims_url = bad_ims.url();
    ims_url.set_username("admin").unwrap();
    ims_url
        .set_password(Some("SIGNATURE-hardening-b41d"))
        .unwrap();
    let src = sources(
        s3.url(),
        ims_url,
        creds,
        TlsOptions::default(),
        Duration::from_secs(5),
    );
    let mut agent = Agent::with_parts(
        settings.clone(),
        src,
        Arc::new(rig.target()),
        Box::new(NoServices),
    )
    .unwrap();
    let report = agent.scan_and_publish().await;
    let s3_err = report
        .desired
        .uncertainty
        .everything
        .clone()
        .expect("S3 unknown");
    assert!(s3_err.contains("':'"), "{s3_err}");
    let ims_err = report.stats.ims.error.clone().expect("IMS error");
    assert!(ims_err.contains("401"), "{ims_err}");
    assert_clean("IMS error", &ims_err);
    assert_clean("scan report", &format!("{report:?}"));
    let status = Status::build(&report, agent.ledger(), &settings);
    assert_clean("status JSON", &serde_json::to_string(&status).unwrap());
    drop(agent);
    // Transport errors name the URL without its presigned query or credentials.
    let closed: url::Url = format!(
        "http://admin:SIGNATURE-hardening-b41d@127.0.0.1:{}",
        crate::support::free_port()
    )
    .parse()
    .unwrap();
    let src = sources(
        closed.clone(),
        closed,
        cred_file(dir.path(), &format!("{ACCESS}:{S3_SECRET}\n")),
        TlsOptions::default(),
        Duration::from_secs(2),
    );
    let g = src
        .gather(&sbps_marshal::agent::wiring::desired_settings(&settings))
        .await;
    for e in [g.inventory.s3.unwrap_err(), g.inventory.ims.unwrap_err()] {
        assert_clean("transport error", &e);
        assert!(
            !e.contains("X-Amz-Signature") && !e.contains("X-Amz-Credential"),
            "{e}"
        );
    }
    let log = cap.text();
    assert!(
        !log.contains("X-Amz-Signature"),
        "a presigned URL reached the log"
    );
    assert_clean("log", &cap.text());
    assert!(
        cap.text().contains("IMS listing failed"),
        "the log was captured"
    );
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sbps-marshal"));
    c.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .arg("--config")
        .arg("/dev/null");
    c
}

#[test]
fn config_output_never_shows_a_secret() {
    let gw = format!("https://admin:{JWT_SECRET}@gw.local");
    let out = bin()
        .env("SBPS_MARSHAL_API_GATEWAY", &gw)
        .arg("config")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_clean("config", &String::from_utf8_lossy(&out.stdout));
    let out = bin()
        .env("SBPS_MARSHAL_API_GATEWAY", &gw)
        .args(["config", "--json"])
        .output()
        .unwrap();
    assert_clean("config --json", &String::from_utf8_lossy(&out.stdout));
    // An invalid value is reported without its secret part.
    let bad = format!("ftp://admin:{JWT_SECRET}@gw.local");
    let out = bin()
        .env("SBPS_MARSHAL_API_GATEWAY", &bad)
        .arg("config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("API_GATEWAY"), "{err}");
    assert_clean("config error", &err);
    // A value that passes validation but is no URL fails at start, without its secret.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let out = bin()
        .env(
            "SBPS_MARSHAL_API_GATEWAY",
            format!("https://admin:{JWT_SECRET}@gw .local"),
        )
        .env("SBPS_MARSHAL_STATE_DIR", &state)
        .env("SBPS_MARSHAL_LOCK_FILE", dir.path().join("lock"))
        .args(["scan", "--once"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("API_GATEWAY"), "{err}");
    assert_clean("start error", &err);
    assert_clean("start output", &String::from_utf8_lossy(&out.stdout));
}

#[test]
fn refuses_a_state_dir_others_can_write() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = bin()
        .env("SBPS_MARSHAL_STATE_DIR", &state)
        .env("SBPS_MARSHAL_LOCK_FILE", dir.path().join("lock"))
        .env("SBPS_MARSHAL_METRICS_LISTEN", "")
        .args(["scan", "--once"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("writable by others") && err.contains("refusing to start"),
        "{err}"
    );
    assert!(
        std::fs::read_dir(&state).unwrap().next().is_none(),
        "nothing written there"
    );
}
