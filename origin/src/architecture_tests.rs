//! The origin's architecture, checked: the layers in `lib.rs` hold (no dependency cycle between
//! top-level modules), only the HTTP layer and the commands know HTTP types, and no source file
//! grows past the size a reader can hold. These read the source, so they fail the moment a change
//! breaks a rule, not at the next review.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest source file allowed, in lines (tests included).
const MAX_LINES: usize = 400;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Each file's top-level module (`app`, `http`, …) and its code: comments and test modules removed.
fn modules() -> Vec<(String, PathBuf, String)> {
    // Run time first: a test binary built in another checkout sharing the target folder would
    // read that checkout's sources (see `cascade_e2e::repo_root`).
    let root = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    let src = Path::new(&root).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files
        .into_iter()
        .map(|path| {
            let relative = path.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
            let top = relative.split('/').next().unwrap().trim_end_matches(".rs").to_string();
            let text = std::fs::read_to_string(&path).unwrap();
            let code: String = text
                .split("#[cfg(test)]")
                .next()
                .unwrap()
                .lines()
                .map(|line| line.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            (top, path, code)
        })
        .collect()
}

/// `from → {to}` for every `crate::to` a module's code names.
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (top, _, code) in modules() {
        if top == "lib" || top == "main" || top == "architecture_tests" {
            continue;
        }
        for used in code.split("crate::").skip(1) {
            let target: String = used.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            if !target.is_empty() && target != top {
                graph.entry(top.clone()).or_default().insert(target);
            }
        }
    }
    graph
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>, node: &str, path: &mut Vec<String>) -> Option<Vec<String>> {
    if let Some(start) = path.iter().position(|n| n == node) {
        let mut cycle = path[start..].to_vec();
        cycle.push(node.to_string());
        return Some(cycle);
    }
    path.push(node.to_string());
    for next in graph.get(node).into_iter().flatten() {
        if let Some(cycle) = find_cycle(graph, next, path) {
            return Some(cycle);
        }
    }
    path.pop();
    None
}

#[test]
fn no_dependency_cycle_between_modules() {
    let graph = dependencies();
    assert!(graph.contains_key("app") && graph["app"].contains("recommend"), "the scan sees the code: {graph:?}");
    for node in graph.keys() {
        if let Some(cycle) = find_cycle(&graph, node, &mut Vec::new()) {
            panic!("dependency cycle: {}\n{graph:#?}", cycle.join(" -> "));
        }
    }
}

#[test]
fn only_the_http_layer_and_the_commands_know_http_types() {
    for (top, path, code) in modules() {
        if matches!(top.as_str(), "http" | "commands" | "architecture_tests") {
            continue;
        }
        assert!(!code.contains("axum::"), "{} uses axum: domain code returns its own errors", path.display());
    }
}

#[test]
fn no_source_file_is_too_long_to_read() {
    for (_, path, _) in modules() {
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines <= MAX_LINES, "{} has {lines} lines (at most {MAX_LINES}): split it", path.display());
    }
}

#[test]
fn every_route_is_registered_from_its_documentation() {
    // `utoipa_axum::routes!` registers a handler from its `#[utoipa::path]`; a plain `.route(`
    // would add a route that `/openapi.json` does not describe.
    for (top, path, code) in modules() {
        if top == "http" {
            assert!(!code.contains(".route("), "{} adds a route without documenting it: use routes!", path.display());
        }
    }
}

#[test]
fn the_dashboard_and_the_alerts_use_only_metrics_the_origin_defines() {
    let root = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    let names = |text: &str, quoted: bool| -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        let mut rest = text;
        while let Some(at) = rest.find("cascade_") {
            let start = &rest[at..];
            let end = start.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(start.len());
            let name = &start[..end];
            let opened = rest[..at].ends_with('"');
            if !quoted || (opened && start[end..].starts_with('"')) {
                found.insert(name.to_string());
            }
            rest = &start[end..];
        }
        found
    };
    let defined: BTreeSet<String> = modules().iter().flat_map(|(_, _, code)| names(code, true)).collect();
    assert!(defined.contains("cascade_http_requests_total"), "{defined:?}");
    let deploy = Path::new(&root).join("../deploy");
    for file in ["prometheus/alerts.yml", "grafana/dashboards/cascade.json"] {
        let text = std::fs::read_to_string(deploy.join(file)).unwrap();
        for used in names(&text, false) {
            let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| used.strip_suffix(s)).unwrap_or(&used);
            assert!(
                defined.contains(&used) || defined.contains(base),
                "deploy/{file} uses {used}, which the origin does not define"
            );
        }
    }
}
