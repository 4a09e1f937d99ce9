//! The crate's modules form layers: no module reaches, directly or through others,
//! back into one that uses it. The compiler allows such cycles inside a crate; this
//! test does not, so `telemetry` cannot start importing `agent` again (the scan's
//! report lives in `report`, below both).
//!
//! It reads the sources: every `crate::<module>` path, and the modules named in a
//! grouped `use crate::{…}`, is an edge from the file's top-level module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

#[test]
fn top_level_modules_form_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&src);
    assert!(
        graph.contains_key("agent") && graph.contains_key("report"),
        "expected the agent's modules, found {graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle between modules: {}", cycle.join(" -> "));
    }
    // The runner's order, spelled out: what reports is below what runs.
    for (low, high) in [
        ("report", "agent"),
        ("telemetry", "agent"),
        ("report", "telemetry"),
    ] {
        assert!(
            !graph[low].contains(high),
            "{low} must not import {high}: {:?}",
            graph[low]
        );
    }
}

#[test]
fn the_inventory_asks_its_judge_and_imports_no_rule() {
    // The gathering fetches what a decision needs through `inventory::gather::Judge`;
    // naming the core's rules itself would make data flow inventory → desired → inventory.
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/inventory"),
        &mut files,
    );
    assert!(
        files.len() > 3,
        "expected the inventory's sources, found {files:?}"
    );
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read a source file");
        for line in text.lines().map(|l| l.split("//").next().unwrap_or("")) {
            assert!(
                !line.contains("desired::") && !line.contains("plan::"),
                "{} names the core's rules: {line}",
                file.display()
            );
        }
    }
}

#[test]
fn a_cycle_is_found() {
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(find_cycle(&g).map(|c| c.len()), Some(4));
    if let Some(e) = g.get_mut("c") {
        e.clear();
    }
    assert_eq!(find_cycle(&g), None);
}

/// Top-level module → the other top-level modules its files name.
fn module_graph(src: &Path) -> Graph {
    let mut tops = BTreeMap::new();
    for entry in std::fs::read_dir(src).expect("list src") {
        let path = entry.expect("list src").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string();
        if name == "lib" || name == "main" {
            continue;
        }
        let mut files = Vec::new();
        rust_files(&path, &mut files);
        tops.insert(name, files);
    }
    let names: BTreeSet<String> = tops.keys().cloned().collect();
    let mut graph = Graph::new();
    for (top, files) in &tops {
        let edges = graph.entry(top.clone()).or_default();
        for file in files {
            let text = std::fs::read_to_string(file).expect("read a source file");
            let code: String = text
                .lines()
                .map(|l| l.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            for used in named_modules(&code) {
                if used != *top && names.contains(&used) {
                    edges.insert(used);
                }
            }
        }
    }
    graph
}

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("list a module directory") {
            rust_files(&entry.expect("list a module directory").path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// Module names after `crate::`, and the first names inside `use crate::{ … }`.
fn named_modules(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
                if depth == 1 && c == ',' {
                    out.push(first_ident(&item));
                    item.clear();
                } else {
                    item.push(c);
                }
            }
            out.push(first_ident(&item));
        } else {
            out.push(first_ident(rest));
        }
    }
    out
}

fn first_ident(s: &str) -> String {
    s.trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// A path that returns to its start, if the graph has one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}
