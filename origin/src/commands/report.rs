//! `cascade report --feature-log DIR`: click-through per variant, from the feature log
//! (docs/feature-log.md). A click counts for the list it cites (`rec_id`), once per idempotency
//! key; lists with no variant count under `default`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::BufRead;
use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Report click-through per A/B variant from a feature log folder.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// The feature log's folder (`[feature_log] dir`).
    #[arg(long)]
    pub feature_log: PathBuf,
}

/// One variant's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VariantFigures {
    /// Lists served.
    pub lists: u64,
    /// Items shown (the lists' lengths summed).
    pub impressions: u64,
    /// Clicks citing one of these lists.
    pub clicks: u64,
    /// Lists with at least one click.
    pub clicked_lists: u64,
    /// clicks / impressions.
    pub ctr: f64,
    /// clicked_lists / lists.
    pub list_ctr: f64,
}

/// The report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariantReport {
    /// Lines read.
    pub lines: u64,
    /// Lines that were not log entries (skipped).
    pub malformed: u64,
    /// Clicks whose list is not in the log.
    pub unmatched_clicks: u64,
    /// Per variant.
    pub variants: BTreeMap<String, VariantFigures>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line {
    Served {
        rec_id: String,
        #[serde(default)]
        variant: Option<String>,
        items: Vec<serde_json::Value>,
    },
    Event {
        event: LoggedEvent,
    },
}

#[derive(Deserialize)]
struct LoggedEvent {
    kind: String,
    #[serde(default)]
    rec_id: Option<String>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// Computes the report from log lines (pure: the command reads the files).
pub fn compute(lines: impl IntoIterator<Item = String>) -> VariantReport {
    let (mut served, mut clicks) = (HashMap::<String, (String, u64)>::new(), Vec::<String>::new());
    let (mut count, mut malformed, mut keys) = (0, 0, HashSet::new());
    for line in lines {
        count += 1;
        match serde_json::from_str::<Line>(&line) {
            Ok(Line::Served { rec_id, variant, items }) => {
                served.insert(rec_id, (variant.unwrap_or_else(|| "default".into()), items.len() as u64));
            }
            Ok(Line::Event { event }) => {
                let first = event.idempotency_key.is_none_or(|key| keys.insert(key));
                if let (true, "click", Some(rec_id)) = (first, event.kind.as_str(), event.rec_id) {
                    clicks.push(rec_id);
                }
            }
            Err(_) => malformed += 1,
        }
    }
    let mut variants: BTreeMap<String, VariantFigures> = BTreeMap::new();
    for (variant, items) in served.values() {
        let figures = variants.entry(variant.clone()).or_default();
        figures.lists += 1;
        figures.impressions += items;
    }
    let (mut unmatched, mut clicked) = (0, HashSet::new());
    for rec_id in clicks {
        match served.get(&rec_id) {
            Some((variant, _)) => {
                let figures = variants.entry(variant.clone()).or_default();
                figures.clicks += 1;
                if clicked.insert(rec_id) {
                    figures.clicked_lists += 1;
                }
            }
            None => unmatched += 1,
        }
    }
    for figures in variants.values_mut() {
        figures.ctr = figures.clicks as f64 / figures.impressions.max(1) as f64;
        figures.list_ctr = figures.clicked_lists as f64 / figures.lists.max(1) as f64;
    }
    VariantReport { lines: count, malformed, unmatched_clicks: unmatched, variants }
}

/// Reads every `*.jsonl` file of the folder and reports.
pub fn run(args: &ReportArgs) -> anyhow::Result<VariantReport> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(&args.feature_log)
        .with_context(|| format!("reading {}", args.feature_log.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    let mut lines = Vec::new();
    for path in &files {
        let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        for line in std::io::BufReader::new(file).lines() {
            lines.push(line.with_context(|| format!("reading {}", path.display()))?);
        }
    }
    let report = compute(lines);
    eprintln!("{} file(s), {} line(s), {} malformed", files.len(), report.lines, report.malformed);
    for (name, f) in &report.variants {
        eprintln!(
            "{name:>12}: {} lists, {} impressions, {} clicks: CTR {:.4} per item, {:.4} per list",
            f.lists, f.impressions, f.clicks, f.ctr, f.list_ctr
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clicks_count_for_the_variant_of_the_list_they_cite_once_per_key() {
        let served = |id: &str, variant: &str, n: usize| {
            let items: Vec<serde_json::Value> = (0..n).map(|k| serde_json::json!({"id": format!("i{k}")})).collect();
            serde_json::json!({"type": "served", "rec_id": id, "variant": variant, "items": items}).to_string()
        };
        let click = |rec: &str, key: &str| {
            serde_json::json!({"type": "event", "received_ms": 1,
                "event": {"user_id": "u", "kind": "click", "item_id": "i1", "rec_id": rec, "idempotency_key": key}})
            .to_string()
        };
        let lines = vec![
            served("r1", "a", 10),
            served("r2", "a", 10),
            served("r3", "b", 5),
            click("r1", "k1"),
            click("r1", "k1"), // a retried batch: counted once
            click("r1", "k2"),
            click("r3", "k3"),
            click("gone", "k4"),
            "not json".to_string(),
        ];
        let report = compute(lines);
        let a = &report.variants["a"];
        assert_eq!((a.lists, a.impressions, a.clicks, a.clicked_lists), (2, 20, 2, 1));
        assert!((a.ctr - 0.1).abs() < 1e-9 && (a.list_ctr - 0.5).abs() < 1e-9);
        let b = &report.variants["b"];
        assert_eq!((b.clicks, b.ctr), (1, 0.2));
        assert_eq!((report.lines, report.malformed, report.unmatched_clicks), (9, 1, 1));
    }
}
