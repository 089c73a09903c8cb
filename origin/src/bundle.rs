//! A model bundle: the parts trained together under one version id (docs/bundle.md).
//!
//! `model.pt`, `items.emb`, `users.emb`, `metadata.json` and `reference.json` come from
//! `scripts/train.py`. Loading checks that they belong together (same bundle id, same width) and
//! that the context vocabulary is the one `cascade_shared::segment` defines; a mismatch is refused
//! with an error naming the part, never scored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cascade_shared::embedding::{EmbeddingTable, decode_file};
use cascade_shared::segment::{DEVICES, PAGES};
use serde::Deserialize;

use crate::ranking::features;
pub use crate::ranking::{ModelSpec, ReferenceBatch};

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
}

fn read(path: &Path) -> Result<Vec<u8>, BundleError> {
    std::fs::read(path).map_err(|e| BundleError::Io { path: path.to_path_buf(), message: e.to_string() })
}

fn json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, BundleError> {
    serde_json::from_slice(&read(path)?)
        .map_err(|e| BundleError::Malformed { path: path.to_path_buf(), message: e.to_string() })
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
        let item_index = items.ids.iter().enumerate().map(|(row, id)| (id.clone(), row)).collect();
        Ok(Bundle { dir: dir.to_path_buf(), metadata, items, item_index, reference })
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
