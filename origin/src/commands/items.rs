//! `cascade items import FILE`: bulk import into a running origin's catalogue. The file holds one
//! JSON object per line, each a `PUT /v1/items/{id}` body with its `item_id` (new items with their
//! `embedding`, or state changes of existing ones); lines are sent as `POST /v1/items` batches,
//! each applied all or none, with a progress bar. A batch the origin refuses stops the import and
//! names the line; the batches before it stay applied, so a corrected file can be sent again
//! (`PUT` is idempotent).

use std::io::BufRead;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use super::load::progress;

/// Catalogue tools.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ItemsCommand {
    /// Send a JSON-lines file of items to a running origin, in batches, with a progress bar.
    Import(ImportArgs),
}

/// `cascade items import`.
#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    /// JSON lines: {"item_id": "…", "embedding": [...], "title": "…", "categories": [...]} or
    /// {"item_id": "…", "hidden": true} per line.
    pub file: PathBuf,
    /// The origin's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub origin: String,
    /// A bearer key of the origin (`CASCADE_API_KEYS`).
    #[arg(long, env = "CASCADE_API_KEY", hide_env_values = true)]
    pub key: String,
    /// Items per request (the origin takes at most 500).
    #[arg(long, default_value_t = 200)]
    pub batch: usize,
}

/// What an import did.
#[derive(Debug, Serialize)]
pub struct ImportReport {
    /// Items applied.
    pub applied: usize,
    /// Requests sent.
    pub batches: usize,
    /// Wall time.
    pub seconds: f64,
    /// Items per second.
    pub items_per_sec: f64,
}

/// Reads the file: one object per non-empty line, each with an `item_id` (errors name the line).
fn read_lines(path: &std::path::Path) -> anyhow::Result<Vec<(usize, serde_json::Value)>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut items = Vec::new();
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let number = index + 1;
        let line = line.with_context(|| format!("{}: reading line {number}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("{} line {number}: not JSON", path.display()))?;
        if !value.get("item_id").is_some_and(serde_json::Value::is_string) {
            bail!("{} line {number}: an object with a string \"item_id\" is expected", path.display());
        }
        items.push((number, value));
    }
    Ok(items)
}

/// Runs the import.
pub async fn import(args: ImportArgs) -> anyhow::Result<ImportReport> {
    if !(1..=500).contains(&args.batch) {
        bail!("--batch must be within 1..=500");
    }
    let items = read_lines(&args.file)?;
    let started = Instant::now();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let url = format!("{}/v1/items", args.origin.trim_end_matches('/'));
    let bar = progress(items.len() as u64, "items");
    let (mut applied, mut batches) = (0, 0);
    for chunk in items.chunks(args.batch) {
        let body = serde_json::json!({"items": chunk.iter().map(|(_, item)| item).collect::<Vec<_>>()});
        let mut attempt = 0;
        let response = loop {
            attempt += 1;
            let sent = client.post(&url).bearer_auth(&args.key).json(&body).send().await;
            match sent {
                Ok(response) if response.status().as_u16() != 503 || attempt == 3 => break response,
                Err(error) if attempt == 3 => bail!("{url}: {error} (after {applied} items applied)"),
                // Overloaded, a dependency down, or the connection failed: back off and retry.
                _ => tokio::time::sleep(Duration::from_millis(200 * attempt)).await,
            }
        };
        batches += 1;
        let status = response.status();
        let answer: serde_json::Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            bar.abandon();
            let error = &answer["error"];
            let field = error["field"].as_str().unwrap_or("");
            // `items[k].field`: the k-th item of this batch, i.e. its line in the file.
            let line = field
                .strip_prefix("items[")
                .and_then(|rest| rest.split(']').next())
                .and_then(|k| k.parse::<usize>().ok())
                .and_then(|k| chunk.get(k))
                .map_or(String::new(), |(line, _)| format!(" (line {line})"));
            bail!(
                "the origin refused a batch{line}: {status} {} {field}: {}; {applied} items applied before it",
                error["code"].as_str().unwrap_or(""),
                error["message"].as_str().unwrap_or("")
            );
        }
        applied += answer["applied"].as_u64().unwrap_or(0) as usize;
        bar.inc(chunk.len() as u64);
    }
    bar.finish();
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("imported {applied} items in {batches} requests, {seconds:.1} s");
    Ok(ImportReport { applied, batches, seconds, items_per_sec: applied as f64 / seconds.max(1e-9) })
}
