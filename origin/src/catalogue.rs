//! The item catalogue's live state: items hidden, deleted or expiring, changed through
//! `PUT/PATCH/DELETE /v1/items/{id}` and applied on the way out of every answer
//! (`recommend::list_rules`), so no cache is flushed and no bundle retrained.
//!
//! Kept in memory and, with `[catalogue] file`, in a JSON file rewritten atomically (temporary
//! file, then rename) on every change and read at start: the state survives a restart. Items must
//! be in the bundle; adding new items (with their embeddings) is not built yet.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

/// `[catalogue]` in the configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogueConfig {
    /// Where the state is kept across restarts; absent: in memory only.
    pub file: Option<PathBuf>,
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
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Option<u64>>, D::Error> {
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
    file: Option<PathBuf>,
}

impl Catalogue {
    /// The state in `config.file` (none yet: empty), or in memory only.
    pub fn open(config: &CatalogueConfig) -> Result<Self, CatalogueError> {
        let Some(file) = &config.file else { return Ok(Catalogue::default()) };
        let items = match std::fs::read(file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| CatalogueError::Persist { path: file.clone(), message: e.to_string() })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(error) => return Err(CatalogueError::Persist { path: file.clone(), message: error.to_string() }),
        };
        Ok(Catalogue { items: RwLock::new(items), file: Some(file.clone()) })
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
        self.update(id, |state| {
            if state.deleted {
                return Err(CatalogueError::Deleted(id.to_string()));
            }
            if let Some(hidden) = change.hidden {
                state.hidden = hidden;
            }
            if let Some(expires) = change.expires_at_ms {
                state.expires_at_ms = expires;
            }
            Ok(())
        })
    }

    /// Deletes `id` for good.
    pub fn delete(&self, id: &str) -> Result<ItemState, CatalogueError> {
        self.update(id, |state| {
            state.deleted = true;
            Ok(())
        })
    }

    fn update(
        &self,
        id: &str,
        edit: impl FnOnce(&mut ItemState) -> Result<(), CatalogueError>,
    ) -> Result<ItemState, CatalogueError> {
        let mut items = self.items.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut state = items.get(id).cloned().unwrap_or_default();
        edit(&mut state)?;
        let mut next = items.clone();
        if state == ItemState::default() {
            next.remove(id);
        } else {
            next.insert(id.to_string(), state.clone());
        }
        if let Some(file) = &self.file {
            let persist = |e: std::io::Error| CatalogueError::Persist { path: file.clone(), message: e.to_string() };
            let partial = file.with_extension("partial");
            let bytes = serde_json::to_vec_pretty(&next).map_err(|e| persist(std::io::Error::other(e)))?;
            std::fs::write(&partial, bytes).map_err(persist)?;
            std::fs::rename(&partial, file).map_err(persist)?;
        }
        *items = next;
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(json: &str) -> ItemChange {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn hidden_expired_and_deleted_items_are_withheld_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let config = CatalogueConfig { file: Some(dir.path().join("catalogue.json")) };
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
    fn unknown_fields_in_a_change_are_refused() {
        assert!(serde_json::from_str::<ItemChange>(r#"{"hiden": true}"#).is_err());
        assert!(serde_json::from_str::<ItemChange>(r#"{"hidden": "yes"}"#).is_err());
        let none = change("{}");
        assert!(none.hidden.is_none() && none.expires_at_ms.is_none());
    }
}
