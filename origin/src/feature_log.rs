//! The feature log: every served list and every event, as JSON lines on disk, so the next model
//! learns from what the live system showed and what people did with it (docs/feature-log.md).
//!
//! Off the request path: the request hands an entry to a bounded channel and goes on; one thread
//! wakes when entries wait, gathers for 10 ms, writes them all and flushes, and starts a new file
//! when the current one passes `rotate_bytes`. When the channel is full the entry is dropped and counted
//! (`cascade_feature_log_entries_total{outcome="dropped"}`): the log never slows a request.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use cascade_shared::wire::{Event, RecItem, Source};
use prometheus::IntCounterVec;
use serde::{Deserialize, Serialize};

/// `[feature_log]` in the configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeatureLogConfig {
    /// Folder of the log files; off when absent.
    pub dir: Option<PathBuf>,
    /// Entries waiting to be written before new ones are dropped.
    pub capacity: usize,
    /// A new file once the current one has this many bytes.
    pub rotate_bytes: u64,
    /// Share of real-time lists logged with their query vector (the ranker's `user` block: with
    /// `items.emb` and the context it rebuilds every input row), 0 to 1.
    pub query_sample: f64,
}

impl Default for FeatureLogConfig {
    fn default() -> Self {
        FeatureLogConfig { dir: None, capacity: 10_000, rotate_bytes: 64 << 20, query_sample: 0.01 }
    }
}

/// One served list.
#[derive(Debug, Clone, Serialize)]
pub struct Served {
    /// Unix milliseconds.
    pub ts_ms: u64,
    /// The list's id (events cite it).
    pub rec_id: String,
    /// The user, for personal lists.
    pub user_id: Option<String>,
    /// The context (`page.device[.country]`).
    pub segment: String,
    /// Where the list came from.
    pub source: Source,
    /// The bundle that made it.
    pub bundle_id: String,
    /// The experiment arm, when there is one.
    pub variant: Option<String>,
    /// The items: id, position (from 1) and score.
    pub items: Vec<LoggedItem>,
    /// The query vector, on a sampled share of real-time lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<Vec<f32>>,
}

/// An item of a served list.
#[derive(Debug, Clone, Serialize)]
pub struct LoggedItem {
    /// Item id.
    pub id: String,
    /// Position, from 1.
    pub position: u32,
    /// The ranker's score.
    pub score: f32,
}

impl LoggedItem {
    /// The logged form of a list's items.
    pub fn from_items(items: &[RecItem]) -> Vec<LoggedItem> {
        items.iter().map(|i| LoggedItem { id: i.id.clone(), position: i.position, score: i.score }).collect()
    }
}

/// One log line.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Entry {
    /// A list the origin returned.
    Served(Served),
    /// An event the origin accepted (as sent, with its `rec_id` and position when it cites a list).
    Event {
        /// Unix milliseconds when it was received.
        received_ms: u64,
        /// The event.
        event: Event,
    },
}

/// The log's handle: cheap to call when off.
#[derive(Debug)]
pub struct FeatureLog {
    sender: Option<SyncSender<Entry>>,
    outcomes: Option<IntCounterVec>,
    query_sample: f64,
}

impl FeatureLog {
    /// No log.
    pub fn off() -> Self {
        FeatureLog { sender: None, outcomes: None, query_sample: 0.0 }
    }

    /// Starts the writer thread when `config.dir` is set (creating the folder); `outcomes` counts
    /// entries by `written` / `dropped`.
    pub fn start(config: &FeatureLogConfig, outcomes: IntCounterVec) -> std::io::Result<Self> {
        let Some(dir) = &config.dir else { return Ok(FeatureLog::off()) };
        std::fs::create_dir_all(dir)?;
        let (sender, receiver) = std::sync::mpsc::sync_channel(config.capacity.max(1));
        let writer = Writer { dir: dir.clone(), rotate_bytes: config.rotate_bytes.max(1), file: None, written: 0 };
        let counted = outcomes.clone();
        std::thread::Builder::new().name("feature-log".into()).spawn(move || writer.run(receiver, &counted))?;
        tracing::info!(dir = %dir.display(), "feature log on");
        Ok(FeatureLog { sender: Some(sender), outcomes: Some(outcomes), query_sample: config.query_sample })
    }

    /// Whether entries are written.
    pub fn is_on(&self) -> bool {
        self.sender.is_some()
    }

    /// Whether this real-time list should carry its query vector.
    pub fn sample_query(&self) -> bool {
        self.is_on() && rand::random::<f64>() < self.query_sample
    }

    /// Hands `entry` to the writer, or drops and counts it when the writer is behind.
    pub fn record(&self, entry: Entry) {
        let Some(sender) = &self.sender else { return };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = sender.try_send(entry)
            && let Some(outcomes) = &self.outcomes
        {
            outcomes.with_label_values(&["dropped"]).inc();
        }
    }
}

/// How long the writer gathers entries after waking: bounds how late an entry reaches the file.
const GATHER: std::time::Duration = std::time::Duration::from_millis(10);

struct Writer {
    dir: PathBuf,
    rotate_bytes: u64,
    file: Option<std::io::BufWriter<std::fs::File>>,
    written: u64,
}

impl Writer {
    fn run(mut self, receiver: Receiver<Entry>, outcomes: &IntCounterVec) {
        // Asleep until an entry comes; then a short gathering window, so that under load the
        // thread wakes and writes about 100 times a second, not once per entry (a wake-up and a
        // write call per entry cost more CPU than the JSON itself).
        while let Ok(first) = receiver.recv() {
            std::thread::sleep(GATHER);
            let mut next = Some(first);
            while let Some(entry) = next {
                match self.write(&entry) {
                    Ok(()) => outcomes.with_label_values(&["written"]).inc(),
                    Err(error) => {
                        outcomes.with_label_values(&["dropped"]).inc();
                        tracing::warn!(%error, dir = %self.dir.display(), "feature log entry not written");
                        self.file = None;
                    }
                }
                next = receiver.try_recv().ok();
            }
            // The channel is empty: what was written reaches the file now.
            if let Some(file) = &mut self.file
                && let Err(error) = file.flush()
            {
                tracing::warn!(%error, "feature log flush failed");
                self.file = None;
            }
        }
    }

    fn write(&mut self, entry: &Entry) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        if self.file.is_none() || self.written >= self.rotate_bytes {
            if let Some(mut old) = self.file.take() {
                old.flush()?;
            }
            self.file = Some(std::io::BufWriter::with_capacity(1 << 20, new_file(&self.dir)?));
            self.written = 0;
        }
        if let Some(file) = &mut self.file {
            file.write_all(&line)?;
        }
        self.written += line.len() as u64;
        Ok(())
    }
}

/// A new file, named so that names sort by time: `cascade-<unix ms>-<pid>-<n>.jsonl`.
fn new_file(dir: &Path) -> std::io::Result<std::fs::File> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    for n in 0..1000 {
        let path = dir.join(format!("cascade-{now:013}-{}-{n:03}.jsonl", std::process::id()));
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok(file),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(error),
        }
    }
    Err(std::io::Error::other(format!("no free log file name in {}", dir.display())))
}

#[cfg(test)]
mod tests {
    use prometheus::Opts;

    use super::*;

    fn outcomes() -> IntCounterVec {
        IntCounterVec::new(Opts::new("t", "t"), &["outcome"]).unwrap()
    }

    fn served(n: u64) -> Entry {
        Entry::Served(Served {
            ts_ms: n,
            rec_id: format!("r{n}"),
            user_id: Some("u1".into()),
            segment: "home.desktop".into(),
            source: Source::Realtime,
            bundle_id: "b".into(),
            variant: None,
            items: vec![LoggedItem { id: "i1".into(), position: 1, score: 0.5 }],
            query: None,
        })
    }

    fn lines(dir: &Path) -> Vec<serde_json::Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        files
            .iter()
            .flat_map(|f| std::fs::read_to_string(f).unwrap().lines().map(str::to_string).collect::<Vec<_>>())
            .map(|l| serde_json::from_str(&l).unwrap())
            .collect()
    }

    fn wait_for(counter: &IntCounterVec, outcome: &str, n: u64) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while counter.with_label_values(&[outcome]).get() < n && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn entries_reach_rotating_files_as_json_lines_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let config = FeatureLogConfig { dir: Some(dir.path().join("log")), rotate_bytes: 500, ..Default::default() };
        let counts = outcomes();
        let log = FeatureLog::start(&config, counts.clone()).unwrap();
        for n in 0..20 {
            log.record(served(n));
        }
        wait_for(&counts, "written", 20);
        let entries = lines(&dir.path().join("log"));
        assert_eq!(entries.len(), 20);
        assert_eq!(entries[7]["type"], "served");
        assert_eq!(entries[7]["rec_id"], "r7");
        assert_eq!(entries[7]["source"], "realtime");
        assert_eq!(entries[7]["items"][0]["position"], 1);
        assert!(entries[7].get("query").is_none());
        let files = std::fs::read_dir(dir.path().join("log")).unwrap().count();
        assert!(files > 1, "rotated at 500 bytes: {files} file(s)");
    }

    #[test]
    fn a_full_channel_drops_and_counts_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        // Room for one entry: a burst of 10,000 outruns the writer, and the caller never waits.
        let config = FeatureLogConfig { dir: Some(dir.path().to_path_buf()), capacity: 1, ..Default::default() };
        let counts = outcomes();
        let log = FeatureLog::start(&config, counts.clone()).unwrap();
        let started = std::time::Instant::now();
        for n in 0..10_000 {
            log.record(served(n));
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        wait_for(&counts, "written", 1);
        let (written, dropped) =
            (counts.with_label_values(&["written"]).get(), counts.with_label_values(&["dropped"]).get());
        assert!(dropped > 0, "written {written}, dropped {dropped}");
        wait_for(&counts, "written", 10_000 - dropped);
        assert_eq!(counts.with_label_values(&["written"]).get() + dropped, 10_000);
    }

    #[test]
    fn off_is_a_no_op() {
        let log = FeatureLog::off();
        log.record(served(1));
        assert!(!log.is_on() && !log.sample_query());
    }
}
