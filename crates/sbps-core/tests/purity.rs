//! The core stays pure: what decides takes values and returns values.
//!
//! The crate boundary already keeps the agent's adapters out (they live in another
//! crate), but nothing in the compiler stops someone from reaching for `std::fs` or the
//! clock inside a rule. These checks do: a rule that reads the time or a file cannot be
//! property-tested, and a plan that depends on when it ran cannot be explained.

use std::path::{Path, PathBuf};

/// Names that would put I/O, a clock or an environment inside a decision.
const FORBIDDEN: &[&str] = &[
    "std::fs",
    "std::net",
    "std::process",
    "std::env",
    "std::thread",
    "SystemTime",
    "Instant::now",
    "tokio",
    "reqwest",
    "hyper",
    "kube",
    "tracing",
];

/// The only crates the core may depend on: value types, hashing, serialisation.
const ALLOWED_DEPENDENCIES: &[&str] = &["hex", "rustc-hash", "serde", "serde_json", "sha2"];

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read the core's src directory") {
        let path = entry.expect("list the core's src directory").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_source_file_touches_the_world() {
    let mut files = Vec::new();
    rust_files(&crate_dir().join("src"), &mut files);
    assert!(
        files.len() >= 8,
        "expected the core's modules, found {files:?}"
    );
    let mut offences = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read a core source file");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for name in FORBIDDEN {
                if code.contains(name) {
                    offences.push(format!(
                        "{}:{}: {name}: {}",
                        file.display(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "the core must stay pure:\n{}",
        offences.join("\n")
    );
}

#[test]
fn dependencies_are_only_value_crates() {
    let manifest =
        std::fs::read_to_string(crate_dir().join("Cargo.toml")).expect("read Cargo.toml");
    let mut section = String::new();
    let mut deps = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_string();
        } else if section == "[dependencies]" && !line.is_empty() && !line.starts_with('#') {
            let name = line.split('=').next().unwrap_or("").trim().to_string();
            deps.push(name);
        }
    }
    assert!(
        !deps.is_empty(),
        "found no [dependencies] in the core's Cargo.toml"
    );
    let extra: Vec<_> = deps
        .iter()
        .filter(|d| !ALLOWED_DEPENDENCIES.contains(&d.as_str()))
        .collect();
    assert!(
        extra.is_empty(),
        "the core may depend only on {ALLOWED_DEPENDENCIES:?}; it names {extra:?}"
    );
    assert!(
        !manifest.contains("[target."),
        "no platform-specific dependencies in the core"
    );
}
