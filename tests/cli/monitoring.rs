//! What the monitoring side reads: the alert rules and the Grafana dashboard query
//! only metrics the agent exports (names taken from the agent's own registry, not
//! from a hand-written list), and the node-exporter textfile is valid Prometheus
//! text, replaced atomically, written by the binary after a scan.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sbps_marshal::config::{Layers, Settings};
use sbps_marshal::telemetry::metrics::Metrics;

use crate::support::IQN;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn settings(set: &[String]) -> Settings {
    let layers = Layers::load(Some(Path::new("/dev/null")), Vec::new(), set).unwrap();
    Settings::from_layers(&layers, "ncn-w001").unwrap()
}

/// Every sample name the agent can export, from its own registry.
fn exported() -> BTreeSet<String> {
    Metrics::new(&settings(&[]))
        .sample_names()
        .into_iter()
        .collect()
}

/// The metric names a PromQL expression reads: identifiers that are neither
/// functions, keywords, label names (inside `{}`, `by ()` …), durations, nor
/// Grafana variables.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Drop string literals, then label matchers and range selectors.
    let mut s = String::new();
    let mut quote = None;
    for c in expr.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None => s.push(c),
        }
    }
    let mut flat = String::new();
    let mut depth = 0;
    for c in s.chars() {
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            _ if depth == 0 => flat.push(c),
            _ => {}
        }
    }
    let chars: Vec<char> = flat.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Keywords, and aggregation operators (`sum by (x) (…)` has no parenthesis
    // right after the operator).
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    while i < chars.len() {
        let c = chars[i];
        if c == '$' {
            // a Grafana variable ($__rate_interval, $instance)
            i += 1;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            continue;
        }
        if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':') {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len()
            && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
        {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let mut j = i;
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        let call = j < chars.len() && chars[j] == '(';
        if GROUPING.contains(&word.as_str()) && call {
            // skip the label list
            while j < chars.len() && chars[j] != ')' {
                j += 1;
            }
            i = j + 1;
            continue;
        }
        if !call && !KEYWORDS.contains(&word.as_str()) {
            names.insert(word);
        }
    }
    names
}

#[test]
fn the_expression_reader_finds_metrics_only() {
    let got = metric_names(
        r#"histogram_quantile(0.9, sum by (le, instance) (rate(a_bucket{instance=~"$instance",x="b c"}[$__rate_interval]))) / on(instance) group_left(version) b_info offset 5m > bool 0.5 * c"#,
    );
    assert_eq!(
        got,
        ["a_bucket", "b_info", "c"]
            .into_iter()
            .map(String::from)
            .collect()
    );
}

#[test]
fn the_registry_exports_the_names_dashboards_and_runbooks_use() {
    let names = exported();
    for n in [
        "iscsi_read_mbytes",
        "iscsi_in_cmds",
        "iscsi_read_rate",
        "iscsi_rootfs_lun_cnt",
        "iscsi_pe_lun_cnt",
        "sbps_marshal_build_info",
        "sbps_marshal_source_errors_total",
        "sbps_marshal_scan_duration_seconds_bucket",
    ] {
        assert!(names.contains(n), "{n} not exported: {names:#?}");
    }
}

fn check_all_exported(what: &str, exprs: &[String]) {
    let names = exported();
    let mut unknown = Vec::new();
    for e in exprs {
        let found = metric_names(e);
        assert!(!found.is_empty(), "{what}: no metric in {e:?}");
        for n in found {
            if !names.contains(&n) {
                unknown.push(format!("{n} (in {e})"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "{what} queries metrics the agent does not export: {unknown:#?}"
    );
}

#[test]
fn alert_rules_query_only_exported_metrics() {
    let text =
        std::fs::read_to_string(repo("packaging/monitoring/sbps-marshal.rules.yml")).unwrap();
    let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let mut exprs = Vec::new();
    for g in doc["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            exprs.push(r["expr"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(
        exprs.len(),
        8,
        "one rule per alert: the issue's seven and the ledger's"
    );
    check_all_exported("alert rules", &exprs);
}

#[test]
fn the_dashboard_loads_and_queries_only_exported_metrics() {
    let text =
        std::fs::read_to_string(repo("packaging/monitoring/sbps-marshal.dashboard.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["uid"], "sbps-marshal");
    let mut exprs = Vec::new();
    for p in doc["panels"].as_array().unwrap() {
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    for v in doc["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            // label_values(<metric>, <label>)
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.split(',').next())
                .unwrap();
            exprs.push(inner.to_string());
        }
    }
    check_all_exported("dashboard", &exprs);
}

/// A configfs-shaped TPG with two LUNs, one backstore name holding characters a
/// label value must escape.
fn lun_tree(root: &Path) {
    let tpg = root.join(format!("iscsi/{IQN}/tpgt_1/lun"));
    for (lun, name, mb, cmds) in [
        (1, "0123456789abcde", 42, 1000),
        (2, "we\"ird\\name", 7, 10),
    ] {
        let dir = tpg.join(format!("lun_{lun}"));
        std::fs::create_dir_all(dir.join("statistics/scsi_tgt_port")).unwrap();
        std::fs::write(
            dir.join("statistics/scsi_tgt_port/read_mbytes"),
            format!("{mb}\n"),
        )
        .unwrap();
        std::fs::write(
            dir.join("statistics/scsi_tgt_port/in_cmds"),
            format!("{cmds}\n"),
        )
        .unwrap();
        let target = root.join("core/fileio_0").join(name);
        std::fs::create_dir_all(&target).unwrap();
        std::os::unix::fs::symlink(&target, dir.join("a1b2c3d4e5")).unwrap();
    }
}

fn promtool() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PROMTOOL") {
        return Some(p.into());
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join("promtool"))
        .find(|p| p.is_file())
}

#[test]
fn the_textfile_is_valid_prometheus_text_replaced_atomically() {
    let dir = tempfile::tempdir().unwrap();
    lun_tree(&dir.path().join("configfs"));
    let file = dir.path().join("collector/sbps_marshal.prom");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let m = Metrics::new(&settings(&[
        format!("CONFIGFS_ROOT={}", dir.path().join("configfs").display()),
        format!("METRICS_TEXTFILE={}", file.display()),
    ]));
    m.write_textfile().unwrap();
    let first = std::fs::metadata(&file).unwrap();
    assert_eq!(
        first.permissions().mode() & 0o777,
        0o644,
        "node-exporter must read it"
    );
    m.write_textfile().unwrap();
    let second = std::fs::metadata(&file).unwrap();
    // A new file renamed over the old one, not the old one truncated in place.
    assert_ne!(first.ino(), second.ino());
    let left: Vec<_> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("sbps_marshal.prom")]);

    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        !text.contains("# EOF"),
        "Prometheus text 0.0.4, not OpenMetrics"
    );
    assert!(
        text.contains(r#"iscsi_read_mbytes{lun="1",backstore="0123456789abcde"} 42"#),
        "{text}"
    );
    assert!(
        text.contains(r#"iscsi_in_cmds{lun="2",backstore="we\"ird\\name"} 10"#),
        "label values escaped: {text}"
    );
    assert!(text.contains("sbps_marshal_build_info{version="), "{text}");
    if let Some(p) = promtool() {
        let out = Command::new(&p)
            .args(["check", "metrics"])
            .stdin(std::fs::File::open(&file).unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("promtool not found (set PROMTOOL): checked without it");
    }
}

/// The binary writes the textfile after a scan (here one that cannot converge:
/// every source is down).
#[test]
fn the_agent_writes_the_textfile_after_a_scan() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    crate::support::scratch_node(p, &[], &["state"]);
    let file = p.join("sbps_marshal.prom");
    let d = |rel: &str| p.join(rel).display().to_string();
    let overrides = [
        ("LOCK_FILE", d("lock")),
        ("RTSLIB_LOCK_DIR", d("state")),
        ("METRICS_TEXTFILE", file.display().to_string()),
    ];
    let mut c = crate::support::agent(p, &["scan", "--once"], &overrides);
    let out = c.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("sbps_marshal_converged 0"), "{text}");
    assert!(
        text.contains(r#"sbps_marshal_source_errors_total{source="s3"} 1"#),
        "{text}"
    );
}

/// node-exporter reads only `*.prom` files: another name is a specific error, not
/// a file nobody reads.
#[test]
fn a_textfile_not_ending_in_prom_is_refused() {
    let layers = Layers::load(
        Some(Path::new("/dev/null")),
        Vec::new(),
        &["METRICS_TEXTFILE=/var/lib/node_exporter/sbps_marshal.txt".to_string()],
    )
    .unwrap();
    let e = Settings::from_layers(&layers, "ncn-w001")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("SBPS_MARSHAL_METRICS_TEXTFILE") && e.contains(".prom"),
        "{e}"
    );
}

/// Errors are counted by kind, not only as `result="error"`: an LIO operation by its
/// error's kind, a scan that stopped by what stopped it, so an alert or a dashboard can
/// tell a busy LUN from a denied write and a stuck kernel from an unwritable ledger.
#[test]
fn failures_are_counted_by_their_kind() {
    use sbps_marshal::lio::Op;
    use sbps_marshal::report::{FailureKind, OpOutcome, ScanReport};

    let m = Metrics::new(&settings(&[]));
    let report = ScanReport {
        outcomes: vec![
            OpOutcome {
                op: Op::EnableTpg,
                error: Some("enable TPG: busy".into()),
                error_kind: Some("busy"),
                millis: 1,
            },
            OpOutcome {
                op: Op::DisableTpg,
                error: None,
                error_kind: None,
                millis: 1,
            },
        ],
        failure: Some(FailureKind::Persistence.because("cannot write the ledger")),
        labelled: Some(true),
        ..ScanReport::empty(1)
    };
    m.record_scan(&report);
    let text = m.render();
    for want in [
        r#"sbps_marshal_operation_errors_total{op="enable-tpg",kind="busy"} 1"#,
        r#"sbps_marshal_operations_total{op="enable-tpg",result="error"} 1"#,
        r#"sbps_marshal_operations_total{op="disable-tpg",result="ok"} 1"#,
        r#"sbps_marshal_scan_failures_total{kind="persistence"} 1"#,
    ] {
        assert!(text.contains(want), "{want} not in:\n{text}");
    }
    assert!(!text.contains(r#"op="disable-tpg",kind="#), "{text}");
}
