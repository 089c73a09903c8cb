//! The item catalogue's live state: items hidden, deleted or expiring, changed through
//! `PUT/PATCH/DELETE /v1/items/{id}` and applied on the way out of every answer
//! (`recommend::list_rules`), so no cache is flushed and no bundle retrained.
//!
//! Kept in memory and, with `[catalogue] file`, in a JSON file rewritten atomically (temporary
//! file, then rename) on every change and read at start: the state survives a restart. An item
//! that is not in the bundle can be added with its embedding ([`fresh`]): real-time lists retrieve
//! it at once, without a retrain.

pub mod fresh;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

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

/// The live state of every item that has one.
#[derive(Debug, Default)]
pub struct Catalogue {
    items: RwLock<HashMap<String, ItemState>>,
    fresh: RwLock<Arc<FreshIndex>>,
    file: Option<PathBuf>,
    max_new_items: usize,
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
        let fresh = RwLock::new(Arc::new(FreshIndex::build(&items)));
        Ok(Catalogue {
            items: RwLock::new(items),
            fresh,
            file: Some(file.clone()),
            max_new_items: config.max_new_items,
        })
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
    pub fn change(&self, id: &str, change: &ItemChange) -> Result<ItemState, CatalogueError> {
        self.apply(vec![(id.to_string(), change.clone(), None)]).map(|mut states| states.remove(0))
    }

    /// Deletes `id` for good (a new item's embedding is dropped).
    pub fn delete(&self, id: &str) -> Result<ItemState, CatalogueError> {
        let deleted = ItemState { deleted: true, ..ItemState::default() };
        self.update(vec![(id.to_string(), Box::new(move |_: &ItemState| Ok(deleted)) as Box<Change>)])
            .map(|mut states| states.remove(0))
    }

    /// Applies every edit, in order, or none of them (one write of the file); returns the items'
    /// new states. An edit with a [`NewItem`] adds or replaces that item's embedding and metadata.
    pub fn apply(&self, edits: Vec<Edit>) -> Result<Vec<ItemState>, CatalogueError> {
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
        self.update(changes)
    }

    fn update(&self, edits: Vec<(String, Box<Change>)>) -> Result<Vec<ItemState>, CatalogueError> {
        let mut items = self.items.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = items.clone();
        let mut states = Vec::with_capacity(edits.len());
        let mut fresh_changed = false;
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
            } else {
                next.insert(id, state.clone());
            }
            states.push(state);
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
        *items = next;
        Ok(states)
    }
}

/// One item's edit: its new state from its current one.
type Change = dyn FnOnce(&ItemState) -> Result<ItemState, CatalogueError> + Send;

#[cfg(test)]
mod tests {
    use super::*;

    fn change(json: &str) -> ItemChange {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn hidden_expired_and_deleted_items_are_withheld_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let config = CatalogueConfig { file: Some(dir.path().join("catalogue.json")), ..Default::default() };
        let catalogue = Catalogue::open(&config).unwrap();
        assert!(catalogue.is_empty());
        catalogue.change("a", &change(r#"{"hidden": true}"#)).unwrap();
        catalogue.change("b", &change(r#"{"expires_at_ms": 1000}"#)).unwrap();
        catalogue.delete("c").unwrap();
        assert_eq!(catalogue.withheld("a", 0), Some("hidden"));
        assert_eq!((catalogue.withheld("b", 999), catalogue.withheld("b", 1000)), (None, Some("expired")));
        assert_eq!(catalogue.withheld("c", 0), Some("deleted"));
        assert_eq!(catalogue.withheld("d", 0), None);

        let reopened = Catalogue::open(&config).unwrap();
        assert_eq!(reopened.withheld("a", 0), Some("hidden"));
        assert_eq!(reopened.withheld("c", 0), Some("deleted"));
        // Unhide; clear an expiry with null; a deleted item cannot come back.
        reopened.change("a", &change(r#"{"hidden": false}"#)).unwrap();
        reopened.change("b", &change(r#"{"expires_at_ms": null}"#)).unwrap();
        assert_eq!((reopened.withheld("a", 0), reopened.withheld("b", 5000)), (None, None));
        assert!(matches!(reopened.change("c", &change(r#"{"hidden": false}"#)), Err(CatalogueError::Deleted(_))));
        // Items back to the default state leave the file.
        let stored: HashMap<String, ItemState> =
            serde_json::from_slice(&std::fs::read(dir.path().join("catalogue.json")).unwrap()).unwrap();
        assert_eq!(stored.keys().collect::<Vec<_>>(), ["c"]);
    }

    #[test]
    fn new_items_are_searchable_at_once_bounded_in_number_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let config =
            CatalogueConfig { file: Some(dir.path().join("catalogue.json")), max_new_items: 2, ..Default::default() };
        let catalogue = Catalogue::open(&config).unwrap();
        let new = |x: f32| NewItem { bundle_id: "b".into(), embedding: vec![x, 0.0], title: None, categories: vec![] };
        let add = |id: &str, x: f32| (id.to_string(), ItemChange::default(), Some(new(x)));
        catalogue.apply(vec![add("n1", 1.0), add("n2", 2.0)]).unwrap();
        let top = |c: &Catalogue| c.fresh().top("b", &[1.0, 0.0], 5, 0).into_iter().map(|f| f.id).collect::<Vec<_>>();
        assert_eq!(top(&catalogue), ["n2", "n1"]);
        // A third is refused, and the whole batch with it; replacing an embedding is not an addition.
        assert!(matches!(catalogue.apply(vec![add("n1", 3.0), add("n3", 9.0)]), Err(CatalogueError::Full(2))));
        assert_eq!(top(&catalogue), ["n2", "n1"], "nothing of a refused batch is applied");
        catalogue.apply(vec![add("n1", 3.0)]).unwrap();
        assert_eq!(top(&Catalogue::open(&config).unwrap()), ["n1", "n2"], "read back at start");
        // Hidden: not retrieved; deleted: its embedding is dropped and the slot freed.
        catalogue.change("n1", &change(r#"{"hidden": true}"#)).unwrap();
        assert_eq!(top(&catalogue), ["n2"]);
        catalogue.delete("n2").unwrap();
        assert!(catalogue.new_item("n2").is_none() && catalogue.withheld("n2", 0) == Some("deleted"));
        catalogue.apply(vec![add("n3", 1.0)]).unwrap();
        assert_eq!(top(&catalogue), ["n3"]);
    }

    #[test]
    fn unknown_fields_in_a_change_are_refused() {
        assert!(serde_json::from_str::<ItemChange>(r#"{"hiden": true}"#).is_err());
        assert!(serde_json::from_str::<ItemChange>(r#"{"hidden": "yes"}"#).is_err());
        let none = change("{}");
        assert!(none.hidden.is_none() && none.expires_at_ms.is_none());
    }
}
