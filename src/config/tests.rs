//! The settings: defaults, layers and their precedence, refusals, the packaged file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

#[test]
fn the_spire_provider_is_named_as_spire_provider_spells_it() {
    for p in [SpireProvider::Cli, SpireProvider::WorkloadApi] {
        assert_eq!(p.as_str().parse::<SpireProvider>(), Ok(p));
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            format!("{:?}", p.as_str())
        );
    }
    assert!("workload_api".parse::<SpireProvider>().is_err());
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let l = Layers::load(Some(Path::new("/dev/null")), env(pairs), &[])?;
    Settings::from_layers(&l, "ncn-w001")
}

#[test]
fn defaults_are_the_originals() {
    let s = settings(&[]).unwrap();
    assert_eq!(s.scan_frequency, Duration::from_secs(180));
    assert_eq!(s.api_gateway, "https://api-gw-service-nmn.local");
    assert_eq!(s.ims_uri, "apis/ims/v3/images");
    assert!(s.ims_tagging);
    assert_eq!(s.ims_timeout, Duration::from_secs(10));
    assert_eq!(s.mount_timeout, Duration::from_secs(30));
    assert_eq!(s.gather_timeout, Duration::from_secs(300));
    assert_eq!(s.command_timeout, Duration::from_secs(300));
    assert_eq!(s.lock_timeout, Duration::from_secs(60));
    assert_eq!(s.lio_timeout, Duration::from_secs(120));
    assert_eq!(s.adoption_quarantine_above, 256);
    assert_eq!(s.s3_endpoint(), "https://rgw-vip.nmn");
    assert_eq!(s.s3_credential_file, PathBuf::from("/root/.ims.s3fs"));
    assert_eq!(s.s3_bucket, "boot-images");
    assert_eq!(s.mount, PathBuf::from("/var/lib/cps-local/boot-images"));
    assert_eq!(
        s.spire_agent_path,
        PathBuf::from("/opt/cray/cray-spire/sbps-marshal-spire-agent")
    );
    assert_eq!(s.spire_jwt_audience, "system-compute");
    assert_eq!(
        s.spire_agent_sock_path,
        PathBuf::from("/var/lib/spire/agent.sock")
    );
    assert_eq!(
        s.lio_save_file,
        PathBuf::from("/etc/target/saveconfig.json")
    );
    assert_eq!(s.targetcli_bin, PathBuf::from("/usr/bin/targetcli"));
    assert_eq!(s.target_iqn, "iqn.2023-06.csm.iscsi:ncn-w001");
    assert_eq!(s.node_label, Some(("iscsi".into(), "sbps".into())));
}

/// The rules after the table's parse, and the refusals a field's type makes, word
/// for word (operators and their scripts read them).
#[test]
fn the_rules_after_the_table_and_the_types_refusals() {
    let s = settings(&[("SBPS_MARSHAL_NODE_NAME", "w7")]).unwrap();
    assert_eq!(
        (s.node_name.as_str(), s.target_iqn.as_str()),
        ("w7", "iqn.2023-06.csm.iscsi:w7")
    );
    let s = settings(&[("SBPS_MARSHAL_TARGET_IQN", "iqn.x:y")]).unwrap();
    assert_eq!(
        (s.node_name.as_str(), s.target_iqn.as_str()),
        ("ncn-w001", "iqn.x:y")
    );
    let refusal = |k: &str, v: &str| settings(&[(k, v)]).unwrap_err().to_string();
    assert_eq!(
        refusal("SBPS_MARSHAL_METRICS_TEXTFILE", "/x/y.txt"),
        "invalid SBPS_MARSHAL_METRICS_TEXTFILE=\"/x/y.txt\" (from env SBPS_MARSHAL_METRICS_TEXTFILE): \
         expected an absolute path of a file ending in .prom (node-exporter reads only those), or empty"
    );
    assert_eq!(
        refusal("SBPS_MARSHAL_TPG_TAG", "4294967296"),
        "invalid SBPS_MARSHAL_TPG_TAG=\"4294967296\" (from env SBPS_MARSHAL_TPG_TAG): \
         expected a TPG tag below 2^32"
    );
    assert_eq!(
        refusal("SBPS_MARSHAL_TPG_TAG", "0"),
        "invalid SBPS_MARSHAL_TPG_TAG=\"0\" (from env SBPS_MARSHAL_TPG_TAG): \
         expected a whole number greater than 0"
    );
    assert_eq!(
        refusal("SBPS_MARSHAL_LIO_BACKEND", "rtslib"),
        "invalid SBPS_MARSHAL_LIO_BACKEND=\"rtslib\" (from env SBPS_MARSHAL_LIO_BACKEND): \
         expected one of configfs, targetcli"
    );
    let s = settings(&[
        ("SBPS_MARSHAL_TPG_TAG", "4294967295"),
        ("SBPS_MARSHAL_METRICS_TEXTFILE", "/x/y.prom"),
        ("SBPS_MARSHAL_METRICS_LISTEN", ""),
        ("SBPS_MARSHAL_TARGET_SERVICE", " "),
        ("SBPS_MARSHAL_NODE_LABEL", ""),
        ("SBPS_MARSHAL_LIO_BACKEND", "targetcli"),
        ("SBPS_MARSHAL_REMOVAL_GRACE", "0"),
    ])
    .unwrap();
    assert_eq!(s.tpg_tag, u32::MAX);
    assert_eq!(s.metrics_textfile, Some(PathBuf::from("/x/y.prom")));
    assert_eq!(
        (s.metrics_listen, s.target_service, s.node_label),
        (None, None, None)
    );
    assert_eq!(s.lio_backend, crate::paths::Backend::Targetcli);
    assert_eq!(s.removal_grace, Duration::ZERO);
    assert_eq!(s.ca_bundle, None);
}

/// A `OneOf` key's words are checked before its type parses them: every word must
/// parse, or a listed value would be refused (only `workload-api` may be, by a build
/// without the `spiffe` feature).
#[test]
fn every_word_of_a_one_of_key_parses() {
    for k in KEYS {
        let ValueKind::OneOf(words) = k.kind else {
            continue;
        };
        for w in words {
            let var = format!("{ENV_PREFIX}{}", k.name);
            match settings(&[(var.as_str(), w)]) {
                Ok(_) => {}
                Err(ConfigError::NotBuilt { .. })
                    if !crate::inventory::spire::WORKLOAD_API_BUILT => {}
                Err(e) => panic!("{}={w}: {e}", k.name),
            }
        }
    }
}

#[test]
fn env_overrides_and_bools() {
    for (v, want) in [("TRUE", true), ("no", false), ("0", false), ("Yes", true)] {
        let s = settings(&[("SBPS_MARSHAL_IMS_TAGGING", v)]).unwrap();
        assert_eq!(s.ims_tagging, want, "{v}");
    }
    let s = settings(&[("SBPS_MARSHAL_SCAN_FREQUENCY", "30")]).unwrap();
    assert_eq!(s.scan_frequency, Duration::from_secs(30));
}

#[test]
fn bad_values_name_key_value_and_origin() {
    let e = settings(&[("SBPS_MARSHAL_SCAN_FREQUENCY", "abc")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("SBPS_MARSHAL_SCAN_FREQUENCY"), "{e}");
    assert!(e.contains("\"abc\""), "{e}");
    assert!(e.contains("env SBPS_MARSHAL_SCAN_FREQUENCY"), "{e}");
    assert!(e.contains("greater than 0"), "{e}");
    for (k, v) in [
        ("SBPS_MARSHAL_SCAN_FREQUENCY", "0"),
        ("SBPS_MARSHAL_SCAN_FREQUENCY", "-5"),
        ("SBPS_MARSHAL_LIO_BACKEND", "rtslib"),
        ("SBPS_MARSHAL_SQUASHFS_S3FS_MOUNT", "relative/mount"),
        ("SBPS_MARSHAL_IMS_TAGGING", "maybe"),
        ("SBPS_MARSHAL_S3_PROTO", "ftp"),
        ("SBPS_MARSHAL_DELETION_BRAKE_RATIO", "1.5"),
    ] {
        let e = settings(&[(k, v)]).unwrap_err().to_string();
        assert!(e.contains(k), "{k}={v}: {e}");
    }
}

#[test]
fn precedence_flag_over_env_over_file_over_default() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    std::fs::write(
        &f,
        "scan_frequency = 60\nims_timeout = 5\nS3_BUCKET = \"file-bucket\"\n",
    )
    .unwrap();
    let l = Layers::load(
        Some(&f),
        env(&[
            ("SBPS_MARSHAL_IMS_TIMEOUT", "7"),
            ("SBPS_MARSHAL_S3_BUCKET", "env-bucket"),
        ]),
        &["s3_bucket=flag-bucket".to_string()],
    )
    .unwrap();
    let s = Settings::from_layers(&l, "h").unwrap();
    assert_eq!(s.scan_frequency, Duration::from_secs(60));
    assert_eq!(s.ims_timeout, Duration::from_secs(7));
    assert_eq!(s.s3_bucket, "flag-bucket");
    assert_eq!(l.get("SCAN_FREQUENCY").1, &Origin::File(f.clone()));
    assert_eq!(
        l.get("IMS_TIMEOUT").1,
        &Origin::Env("SBPS_MARSHAL_IMS_TIMEOUT".into())
    );
    assert_eq!(l.get("S3_BUCKET").1, &Origin::Flag);
    assert_eq!(l.get("IMS_URI").1, &Origin::Default);
}

#[test]
fn file_errors_are_specific() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    std::fs::write(&f, "no_such_key = 1\n").unwrap();
    let e = Layers::load(Some(&f), env(&[]), &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("no_such_key"), "{e}");
    std::fs::write(&f, "scan_frequency = [1]\n").unwrap();
    let e = Layers::load(Some(&f), env(&[]), &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("SCAN_FREQUENCY"), "{e}");
    let e = Layers::load(Some(&dir.path().join("missing.toml")), env(&[]), &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.toml"), "{e}");
    let e = Layers::load(None, env(&[]), &["nonsense".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("KEY=VALUE"), "{e}");
}

#[test]
fn packaged_default_file_lists_every_key_and_parses() {
    let text = default_file();
    let packaged = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/config.toml"
    ))
    .unwrap_or_default();
    assert_eq!(packaged, text, "packaging/config.toml is stale: run `sbps-marshal config --default-file > packaging/config.toml`");
    // Uncommented, it is a valid file giving the defaults.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    let uncommented: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|x| {
            x.split_once(" = ").is_some_and(|(k, _)| {
                k.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            })
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&f, uncommented).unwrap();
    let l = Layers::load(Some(&f), env(&[]), &[]).unwrap();
    assert!(Settings::from_layers(&l, "h").is_ok());
    assert_eq!(l.get("SCAN_FREQUENCY").1, &Origin::File(f.clone()));
}

/// The README's table of settings is `config --markdown`, so it says what the table
/// says: its rows are the lines starting with `|` from its header on.
#[test]
fn the_readme_table_of_settings_is_the_table() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .unwrap_or_default();
    let table = markdown_table();
    let header = table.lines().next().unwrap_or_default();
    let in_readme: String = readme
        .lines()
        .skip_while(|l| *l != header)
        .take_while(|l| l.starts_with('|'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        in_readme, table,
        "README.md's table of settings is stale: replace it with `sbps-marshal config --markdown`"
    );
    assert_eq!(table.lines().count(), KEYS.len() + 2);
}

#[test]
fn urls_with_credentials_are_redacted() {
    let l = Layers::load(
        Some(Path::new("/dev/null")),
        env(&[("SBPS_MARSHAL_API_GATEWAY", "https://admin:hunter2@gw.local")]),
        &[],
    )
    .unwrap();
    let printed: Vec<String> = l
        .describe()
        .iter()
        .map(|(k, v, o)| format!("{k} {v} {o}"))
        .collect();
    assert!(printed.iter().all(|l| !l.contains("hunter2")));
    assert!(printed
        .iter()
        .any(|l| l.contains("https://<redacted>@gw.local")));
    assert_eq!(printed.len(), KEYS.len());
}

/// Regression: an invalid URL was echoed whole, password included, in the error.
#[test]
fn invalid_urls_with_credentials_are_redacted_in_errors() {
    let e = settings(&[("SBPS_MARSHAL_API_GATEWAY", "ftp://admin:hunter2@gw.local")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("SBPS_MARSHAL_API_GATEWAY"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
}
