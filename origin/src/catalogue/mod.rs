//! The item catalogue's live state: items hidden, deleted or expiring, changed through
//! `PUT/PATCH/DELETE /v1/items/{id}` and applied on the way out of every answer
//! (`recommend::list_rules`), so no cache is flushed and no bundle retrained.
//!
//! Kept in memory, and persisted: with `[catalogue] file`, in a JSON file rewritten atomically
//! (temporary file, then rename) on every change and read at start; else, when the origin has Redis
//! shards, in Redis ([`redis_store`]), where every origin process sees every change within a
//! second ([`Catalogue::refresh`], polled by `cascade serve`); else in memory only. An item
//! that is not in the bundle can be added with its embedding ([`fresh`]): real-time lists retrieve
//! it at once, without a retrain.

pub mod fresh;
pub mod redis_store;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use serde::{Deserialize, Serialize};

pub use self::fresh::{FreshCandidate, FreshIndex, NewItem};

/// `[catalogue]` in the configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogueConfig {
    /// Where the state is kept across restarts; absent: in memory only.
    pub file: Option<PathBuf>,
    /// Most new items (added with an embedding) kept; more are refused (409).
    pub max_new_items: usize,
    /// New items ranked with the FAISS candidates of each real-time list (0: new items are not
    /// retrieved).
    pub fresh_candidates: usize,
}

impl Default for CatalogueConfig {
    fn default() -> Self {
        CatalogueConfig { file: None, max_new_items: 2_000, fresh_candidates: 20 }
    }
}

/// One item's live state (absent fields: not set).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemState {
    /// Not served while true.
    #[serde(default)]
    pub hidden: bool,
    /// Never served again.
    #[serde(default)]
    pub deleted: bool,
    /// Not served from this Unix time (milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    /// A new item's embedding and metadata (absent: the item is in the bundle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<NewItem>,
}

/// A change (`PATCH`): only the fields given change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemChange {
    /// Hide (true) or unhide (false).
    pub hidden: Option<bool>,
    /// Set an expiry (Unix ms), or clear it with `null`.
    #[serde(default, deserialize_with = "present")]
    pub expires_at_ms: Option<Option<u64>>,
}

/// A field that may be given as `null` (to clear it), told apart from a field not given.
pub fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(deserializer).map(Some)
}

/// Why a catalogue change failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    /// The state could not be written; the change is not applied.
    #[error("catalogue file {path}: {message}")]
    Persist {
        /// The file.
        path: PathBuf,
        /// What happened.
        message: String,
    },
    /// A deleted item cannot be changed.
    #[error("item {0:?} is deleted")]
    Deleted(String),
    /// The shared store (Redis) did not answer; the change is not applied.
    #[error("catalogue store: {0}")]
    Unavailable(String),
    /// Adding the item would pass `max_new_items`.
    #[error("the catalogue holds its most new items ({0}, [catalogue] max_new_items); delete some or retrain")]
    Full(usize),
}

/// Why an item is not served, as the rule's metric label.
pub fn reason(state: &ItemState, now_ms: u64) -> Option<&'static str> {
    if state.deleted {
        Some("deleted")
    } else if state.hidden {
        Some("hidden")
    } else if state.expires_at_ms.is_some_and(|at| at <= now_ms) {
        Some("expired")
    } else {
        None
    }
}

/// Where the catalogue is shared between origin processes (Redis): every item's state, and a
/// version that every change bumps.
#[async_trait]
pub trait CatalogueStore: Send + Sync {
    /// The version and every item's state.
    async fn load(&self) -> Result<(u64, HashMap<String, ItemState>), CatalogueError>;
    /// The version (cheap: polled).
    async fn version(&self) -> Result<u64, CatalogueError>;
    /// Writes the changed items (`None`: back to the default state, removed), bumping the version,
    /// all or nothing.
    async fn save(&self, changed: &[(String, Option<ItemState>)]) -> Result<(), CatalogueError>;
}

/// The live state of every item that has one.
#[derive(Default)]
pub struct Catalogue {
    items: RwLock<HashMap<String, ItemState>>,
    fresh: RwLock<Arc<FreshIndex>>,
    file: Option<PathBuf>,
    store: Option<Arc<dyn CatalogueStore>>,
    /// The store's version the items were loaded at (0: never).
    version: AtomicU64,
    /// One change (or reload) at a time in this process.
    writer: tokio::sync::Mutex<()>,
    max_new_items: usize,
}

impl std::fmt::Debug for Catalogue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalogue").field("file", &self.file).field("shared", &self.store.is_some()).finish()
    }
}

/// One item's change in a batch: the change, and the new item's facts when it is added.
pub type Edit = (String, ItemChange, Option<NewItem>);

impl Catalogue {
    /// The state in `config.file` (none yet: empty), or in memory only.
    pub fn open(config: &CatalogueConfig) -> Result<Self, CatalogueError> {
        let Some(file) = &config.file else {
            return Ok(Catalogue { max_new_items: config.max_new_items, ..Catalogue::default() });
        };
        let items: HashMap<String, ItemState> = match std::fs::read(file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| CatalogueError::Persist { path: file.clone(), message: e.to_string() })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(error) => return Err(CatalogueError::Persist { path: file.clone(), message: error.to_string() }),
        };
        let catalogue =
            Catalogue { file: Some(file.clone()), max_new_items: config.max_new_items, ..Catalogue::default() };
        catalogue.replace(items);
        Ok(catalogue)
    }

    /// The state shared in `store`, empty until the first [`Catalogue::refresh`] (`cascade serve`
    /// refreshes before it listens).
    pub fn shared(config: &CatalogueConfig, store: Arc<dyn CatalogueStore>) -> Self {
        Catalogue { store: Some(store), max_new_items: config.max_new_items, ..Catalogue::default() }
    }

    /// Whether the state is shared between processes (and should be watched).
    pub fn is_shared(&self) -> bool {
        self.store.is_some()
    }

    /// Reloads the shared state when another process changed it (the store's version moved).
    /// Returns whether it reloaded.
    pub async fn refresh(&self) -> Result<bool, CatalogueError> {
        let Some(store) = &self.store else { return Ok(false) };
        let _writer = self.writer.lock().await;
        let version = store.version().await?;
        if version == self.version.load(Ordering::Acquire) && version != 0 {
            return Ok(false);
        }
        let (version, items) = store.load().await?;
        self.replace(items);
        self.version.store(version, Ordering::Release);
        Ok(true)
    }

    /// Polls the shared store every `every` (`cascade serve` runs this).
    pub async fn watch(self: Arc<Self>, every: std::time::Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(error) = self.refresh().await {
                tracing::warn!(%error, "catalogue store unreachable; serving the last state loaded");
            }
        }
    }

    fn replace(&self, items: HashMap<String, ItemState>) {
        let index = Arc::new(FreshIndex::build(&items));
        *self.fresh.write().unwrap_or_else(std::sync::PoisonError::into_inner) = index;
        *self.items.write().unwrap_or_else(std::sync::PoisonError::into_inner) = items;
    }

    /// The new items, as the real-time path searches them.
    pub fn fresh(&self) -> Arc<FreshIndex> {
        self.fresh.read().map_or_else(|_| Arc::default(), |fresh| Arc::clone(&fresh))
    }

    /// A new item's facts (title, categories, embedding), if `id` is one.
    pub fn new_item(&self, id: &str) -> Option<NewItem> {
        self.items.read().ok()?.get(id)?.new.clone()
    }

    /// Whether anything is hidden, deleted or expiring (the rules skip the lookup when not).
    pub fn is_empty(&self) -> bool {
        self.items.read().map_or(true, |items| items.is_empty())
    }

    /// Why `id` is not served now, if it is not.
    pub fn withheld(&self, id: &str, now_ms: u64) -> Option<&'static str> {
        let items = self.items.read().ok()?;
        items.get(id).and_then(|state| reason(state, now_ms))
    }

    /// The item's state.
    pub fn get(&self, id: &str) -> ItemState {
        self.items.read().ok().and_then(|items| items.get(id).cloned()).unwrap_or_default()
    }

    /// Applies `change` to `id` (persisted first when there is a file); returns the new state.
    pub async fn change(&self, id: &str, change: &ItemChange) -> Result<ItemState, CatalogueError> {
        self.apply(vec![(id.to_string(), change.clone(), None)]).await.map(|mut states| states.remove(0))
    }

    /// Deletes `id` for good (a new item's embedding is dropped).
    pub async fn delete(&self, id: &str) -> Result<ItemState, CatalogueError> {
        let deleted = ItemState { deleted: true, ..ItemState::default() };
        self.update(vec![(id.to_string(), Box::new(move |_: &ItemState| Ok(deleted)) as Box<Change>)])
            .await
            .map(|mut states| states.remove(0))
    }

    /// Applies every edit, in order, or none of them (one write of the file); returns the items'
    /// new states. An edit with a [`NewItem`] adds or replaces that item's embedding and metadata.
    pub async fn apply(&self, edits: Vec<Edit>) -> Result<Vec<ItemState>, CatalogueError> {
        let changes = edits
            .into_iter()
            .map(|(id, change, new)| {
                let edit = Box::new(move |state: &ItemState| {
                    if state.deleted {
                        return Err(CatalogueError::Deleted(String::new()));
                    }
                    let mut next = state.clone();
                    if let Some(hidden) = change.hidden {
                        next.hidden = hidden;
                    }
                    if let Some(expires) = change.expires_at_ms {
                        next.expires_at_ms = expires;
                    }
                    if new.is_some() {
                        next.new = new;
                    }
                    Ok(next)
                }) as Box<Change>;
                (id, edit)
            })
            .collect();
        self.update(changes).await
    }

    /// Plans the edits on a copy, persists the copy (file or store), then swaps it in: readers
    /// never wait for the write, and a failed write changes nothing.
    async fn update(&self, edits: Vec<(String, Box<Change>)>) -> Result<Vec<ItemState>, CatalogueError> {
        let _writer = self.writer.lock().await;
        let mut next = self.items.read().map(|items| items.clone()).unwrap_or_default();
        let mut states = Vec::with_capacity(edits.len());
        let mut fresh_changed = false;
        let mut changed: Vec<(String, Option<ItemState>)> = Vec::new();
        for (id, edit) in edits {
            let before = next.get(&id).cloned().unwrap_or_default();
            let state = edit(&before).map_err(|error| match error {
                CatalogueError::Deleted(_) => CatalogueError::Deleted(id.clone()),
                other => other,
            })?;
            fresh_changed |= before.new.is_some() || state.new.is_some();
            if before.new.is_none() && state.new.is_some() {
                let held = next.values().filter(|s| s.new.is_some()).count();
                if held >= self.max_new_items {
                    return Err(CatalogueError::Full(self.max_new_items));
                }
            }
            if state == ItemState::default() {
                next.remove(&id);
                changed.push((id, None));
            } else {
                next.insert(id.clone(), state.clone());
                changed.push((id, Some(state.clone())));
            }
            states.push(state);
        }
        if let Some(store) = &self.store {
            // Reloaded by the next refresh (this process's own change included): the version
            // cannot be taken as this change's, another process may have written in between.
            store.save(&changed).await?;
        }
        if let Some(file) = &self.file {
            let persist = |e: std::io::Error| CatalogueError::Persist { path: file.clone(), message: e.to_string() };
            let partial = file.with_extension("partial");
            let bytes = serde_json::to_vec_pretty(&next).map_err(|e| persist(std::io::Error::other(e)))?;
            std::fs::write(&partial, bytes).map_err(persist)?;
            std::fs::rename(&partial, file).map_err(persist)?;
        }
        if fresh_changed {
            let index = Arc::new(FreshIndex::build(&next));
            *self.fresh.write().unwrap_or_else(std::sync::PoisonError::into_inner) = index;
        }
        *self.items.write().unwrap_or_else(std::sync::PoisonError::into_inner) = next;
        Ok(states)
    }
}

/// One item's edit: its new state from its current one.
type Change = dyn FnOnce(&ItemState) -> Result<ItemState, CatalogueError> + Send;

#[cfg(test)]
mod tests;
