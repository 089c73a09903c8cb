//! A model bundle: the parts trained together under one version id (docs/bundle.md).
//!
//! `model.pt`, `items.emb`, `users.emb`, `metadata.json` and `reference.json` come from
//! `scripts/train.py`, and with a sequence model `context.emb` and `history.json` ([`query`]).
//! Loading checks that they belong together (same bundle id, same width, same items) and that the
//! context vocabulary is the one `cascade_shared::segment` defines; a mismatch is refused with an
//! error naming the part, never scored.

pub mod query;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cascade_shared::embedding::{EmbeddingTable, decode_file};
use cascade_shared::segment::{DEVICES, PAGES};
use serde::Deserialize;

use self::query::{SESSION_WEIGHT, SequenceQuery, session_query};
use crate::ranking::features;
pub use crate::ranking::{ModelSpec, ReferenceBatch};

/// Most items a sequence query may weigh.
pub const MAX_QUERY_LENGTH: usize = 200;

/// Why a bundle was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file is missing or unreadable.
    #[error("bundle {path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What happened.
        message: String,
    },
    /// A file is malformed.
    #[error("bundle {path}: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Parts disagree.
    #[error("bundle parts do not match: {0}")]
    Mismatch(String),
}

/// `metadata.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    /// The version id every part carries.
    pub bundle_id: String,
    /// Embedding dimensions.
    pub dim: usize,
    /// The ranker's input width.
    pub input_width: usize,
    /// Names of the input columns, in order.
    pub input_layout: Vec<String>,
    /// Page vocabulary (one-hot order).
    pub pages: Vec<String>,
    /// Device vocabulary (one-hot order).
    pub devices: Vec<String>,
    /// Most interacted-with items, most first: the last fallback.
    pub popular: Vec<String>,
    /// Item titles, where known.
    #[serde(default)]
    pub titles: HashMap<String, String>,
    /// What training measured (reported at `/readyz`).
    #[serde(default)]
    pub metrics: serde_json::Value,
    /// Item → categories (genres, clusters), for the category cap rule.
    #[serde(default)]
    pub categories: HashMap<String, Vec<String>>,
    /// How the real-time query is built; absent in older bundles (the session pulls the user).
    #[serde(default)]
    pub query: Option<QuerySpec>,
}

/// `metadata.json`'s `query`: a sequence model's weights and files.
#[derive(Debug, Clone, Deserialize)]
pub struct QuerySpec {
    /// `sequence` (the only kind).
    pub kind: String,
    /// Weight of the k-th newest item.
    pub weights: Vec<f32>,
    /// The items' context embeddings (a file in the bundle).
    pub context: String,
    /// Users' training histories (a file in the bundle).
    pub history: String,
}

/// `history.json`.
#[derive(Debug, Deserialize)]
struct HistoryFile {
    bundle_id: String,
    /// User → item ids, oldest first.
    users: HashMap<String, Vec<String>>,
}

/// `reference.json`: scores the training script computed, for self-checks.
#[derive(Debug, Clone, Deserialize)]
pub struct Reference {
    /// Bundle id.
    pub bundle_id: String,
    /// A fixed batch of input rows and their scores.
    pub batch: ReferenceBatch,
}

/// A loaded bundle (users are loaded separately: they may live in Redis).
#[derive(Debug)]
pub struct Bundle {
    /// The folder.
    pub dir: PathBuf,
    /// Its metadata.
    pub metadata: Metadata,
    /// Item embeddings; an item's row is its FAISS label.
    pub items: EmbeddingTable,
    /// Item id → row.
    pub item_index: HashMap<String, usize>,
    /// The self-check batch.
    pub reference: Reference,
    /// The sequence model, if the bundle has one.
    pub sequence: Option<SequenceQuery>,
}

fn read(path: &Path) -> Result<Vec<u8>, BundleError> {
    std::fs::read(path).map_err(|e| BundleError::Io { path: path.to_path_buf(), message: e.to_string() })
}

fn json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, BundleError> {
    serde_json::from_slice(&read(path)?)
        .map_err(|e| BundleError::Malformed { path: path.to_path_buf(), message: e.to_string() })
}

/// A file named in `metadata.json`: a plain name inside the bundle folder.
fn part(dir: &Path, name: &str) -> Result<PathBuf, BundleError> {
    let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !plain || name.starts_with('.') {
        return Err(BundleError::Malformed {
            path: dir.join("metadata.json"),
            message: format!("query file {name:?} is not a plain file name in the bundle"),
        });
    }
    Ok(dir.join(name))
}

fn load_sequence(
    dir: &Path,
    metadata: &Metadata,
    spec: &QuerySpec,
    items: &EmbeddingTable,
    item_index: &HashMap<String, usize>,
) -> Result<SequenceQuery, BundleError> {
    let malformed = |message: String| BundleError::Malformed { path: dir.join("metadata.json"), message };
    if spec.kind != "sequence" {
        return Err(malformed(format!("query kind {:?} is not one this origin builds (sequence)", spec.kind)));
    }
    if spec.weights.is_empty() || spec.weights.len() > MAX_QUERY_LENGTH || !spec.weights.iter().all(|w| w.is_finite()) {
        return Err(malformed(format!("query weights must be 1..={MAX_QUERY_LENGTH} finite numbers")));
    }
    let context_path = part(dir, &spec.context)?;
    let context = read_embeddings(&context_path, &metadata.bundle_id, metadata.dim)?;
    if context.ids != items.ids {
        return Err(BundleError::Mismatch(format!(
            "{} does not list the items of items.emb in the same order",
            context_path.display()
        )));
    }
    let history_path = part(dir, &spec.history)?;
    let file: HistoryFile = json(&history_path)?;
    if file.bundle_id != metadata.bundle_id {
        return Err(BundleError::Mismatch(format!("{} belongs to {:?}", history_path.display(), file.bundle_id)));
    }
    let mut history = HashMap::with_capacity(file.users.len());
    for (user, ids) in file.users {
        let rows =
            ids.iter().map(|id| item_index.get(id).map(|&row| row as u32)).collect::<Option<Vec<u32>>>().ok_or_else(
                || BundleError::Malformed {
                    path: history_path.clone(),
                    message: format!("user {user:?} has an item that is not in items.emb"),
                },
            )?;
        history.insert(user, rows);
    }
    Ok(SequenceQuery::new(context, spec.weights.clone(), history))
}

/// Reads an embedding export file, checking it belongs to `bundle_id` and has `dim` columns.
pub fn read_embeddings(path: &Path, bundle_id: &str, dim: usize) -> Result<EmbeddingTable, BundleError> {
    let table = decode_file(&read(path)?)
        .map_err(|e| BundleError::Malformed { path: path.to_path_buf(), message: e.to_string() })?;
    if table.header.bundle_id != bundle_id {
        return Err(BundleError::Mismatch(format!(
            "{} belongs to bundle {:?}, metadata.json to {bundle_id:?}",
            path.display(),
            table.header.bundle_id
        )));
    }
    if table.header.dim != dim {
        return Err(BundleError::Mismatch(format!(
            "{} has dim {}, metadata.json says {dim}",
            path.display(),
            table.header.dim
        )));
    }
    Ok(table)
}

impl Bundle {
    /// Loads and cross-checks a bundle folder.
    pub fn load(dir: &Path) -> Result<Self, BundleError> {
        if !dir.join("metadata.json").exists() {
            return Err(BundleError::Io {
                path: dir.join("metadata.json"),
                message: "not found: make a bundle with `python scripts/train.py --out <dir>` (scripts/run.sh does it)"
                    .into(),
            });
        }
        let metadata: Metadata = json(&dir.join("metadata.json"))?;
        let expected_layout = features::input_layout(metadata.dim);
        if metadata.pages != PAGES || metadata.devices != DEVICES {
            return Err(BundleError::Mismatch(format!(
                "context vocabulary pages={:?} devices={:?}, Cascade's is pages={PAGES:?} devices={DEVICES:?}",
                metadata.pages, metadata.devices
            )));
        }
        if metadata.input_layout != expected_layout || metadata.input_width != features::input_width(metadata.dim) {
            return Err(BundleError::Mismatch(format!(
                "input layout {:?} (width {}) is not the layout this origin builds: {:?} (width {})",
                metadata.input_layout,
                metadata.input_width,
                expected_layout,
                features::input_width(metadata.dim)
            )));
        }
        let items = read_embeddings(&dir.join("items.emb"), &metadata.bundle_id, metadata.dim)?;
        if items.ids.is_empty() {
            return Err(BundleError::Malformed { path: dir.join("items.emb"), message: "has no items".into() });
        }
        let reference: Reference = json(&dir.join("reference.json"))?;
        if reference.bundle_id != metadata.bundle_id {
            return Err(BundleError::Mismatch(format!("reference.json belongs to {:?}", reference.bundle_id)));
        }
        let item_index: HashMap<String, usize> =
            items.ids.iter().enumerate().map(|(row, id)| (id.clone(), row)).collect();
        let sequence = match &metadata.query {
            Some(spec) => Some(load_sequence(dir, &metadata, spec, &items, &item_index)?),
            None => None,
        };
        Ok(Bundle { dir: dir.to_path_buf(), metadata, items, item_index, reference, sequence })
    }

    /// The real-time query for `user_id` (whose embedding is `user`, whose session is `session`:
    /// item rows, newest first), and the item rows not to show them (sorted).
    pub fn query(&self, user: &[f32], user_id: &str, session: &[usize]) -> (Vec<f32>, &[u32]) {
        match &self.sequence {
            Some(sequence) => (sequence.query(user, user_id, session), sequence.seen(user_id)),
            None => {
                let recent: Vec<&[f32]> = session.iter().map(|&row| self.items.row(row)).collect();
                (session_query(user, &recent, SESSION_WEIGHT), &[])
            }
        }
    }

    /// The version id.
    pub fn id(&self) -> &str {
        &self.metadata.bundle_id
    }

    /// Path of the TorchScript model.
    pub fn model_path(&self) -> PathBuf {
        self.dir.join("model.pt")
    }

    /// The model and what it must reproduce, for the ranker.
    pub fn model(&self) -> ModelSpec<'_> {
        ModelSpec { path: self.model_path(), input_width: self.metadata.input_width, reference: &self.reference.batch }
    }

    /// Path of the user embeddings.
    pub fn users_path(&self) -> PathBuf {
        self.dir.join("users.emb")
    }

    /// Path of the persisted FAISS index (`cascade index build` writes it).
    pub fn index_path(&self) -> PathBuf {
        self.dir.join("items.faiss")
    }

    /// An item's title, if the bundle has one.
    pub fn title(&self, item_id: &str) -> Option<String> {
        self.metadata.titles.get(item_id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use cascade_shared::embedding::encode_file;
    use serde_json::json;

    use super::*;

    const DIM: usize = 2;

    /// A bundle of three items with a sequence model; `edit` changes it before it is loaded.
    fn load_with(edit: impl FnOnce(&Path)) -> Result<Bundle, BundleError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        let values = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        std::fs::write(path.join("items.emb"), encode_file("b", DIM, &["a", "b", "c"], &values)).unwrap();
        std::fs::write(path.join("context.emb"), encode_file("b", DIM, &["a", "b", "c"], &values)).unwrap();
        let metadata = json!({
            "bundle_id": "b", "dim": DIM, "input_width": features::input_width(DIM),
            "input_layout": features::input_layout(DIM), "pages": PAGES, "devices": DEVICES, "popular": ["a"],
            "query": {"kind": "sequence", "weights": [1.0, 0.5], "context": "context.emb", "history": "history.json"},
        });
        std::fs::write(path.join("metadata.json"), metadata.to_string()).unwrap();
        let history = json!({"bundle_id": "b", "users": {"u1": ["c", "a"]}});
        std::fs::write(path.join("history.json"), history.to_string()).unwrap();
        let reference = json!({"bundle_id": "b", "batch": {"inputs": [], "scores": []}});
        std::fs::write(path.join("reference.json"), reference.to_string()).unwrap();
        edit(path);
        Bundle::load(path)
    }

    fn set_query(path: &Path, field: &str, value: serde_json::Value) {
        let file = path.join("metadata.json");
        let mut metadata: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        metadata["query"][field] = value;
        std::fs::write(file, metadata.to_string()).unwrap();
    }

    #[test]
    fn a_sequence_bundle_builds_queries_from_its_history() {
        let bundle = load_with(|_| {}).unwrap();
        // u1's newest item is a (weight 1), then c (0.5); neither is shown again.
        let (query, seen) = bundle.query(&[0.0, 0.0], "u1", &[]);
        assert_eq!((query, seen), (vec![1.5, 0.5], &[0, 2][..]));
        // A session item (b) comes before the history.
        assert_eq!(bundle.query(&[0.0, 0.0], "u1", &[1]).0, vec![0.5, 1.0]);
    }

    #[test]
    fn mismatched_or_malformed_sequence_parts_are_refused_by_name() {
        let error = |edit: fn(&Path)| load_with(edit).err().map(|e| e.to_string()).unwrap_or_default();
        let reordered = error(|p| {
            let values = [0.0; 6];
            std::fs::write(p.join("context.emb"), encode_file("b", DIM, &["b", "a", "c"], &values)).unwrap();
        });
        assert!(reordered.contains("context.emb does not list the items"), "{reordered}");
        let unknown = error(|p| {
            std::fs::write(p.join("history.json"), r#"{"bundle_id": "b", "users": {"u1": ["zz"]}}"#).unwrap();
        });
        assert!(unknown.contains("history.json") && unknown.contains("not in items.emb"), "{unknown}");
        let other = error(|p| std::fs::write(p.join("history.json"), r#"{"bundle_id": "x", "users": {}}"#).unwrap());
        assert!(other.contains("belongs to \"x\""), "{other}");
        let escape = error(|p| set_query(p, "history", json!("../history.json")));
        assert!(escape.contains("not a plain file name"), "{escape}");
        let empty = error(|p| set_query(p, "weights", json!([])));
        assert!(empty.contains("query weights"), "{empty}");
        let kind = error(|p| set_query(p, "kind", json!("transformer")));
        assert!(kind.contains("\"transformer\""), "{kind}");
    }
}
