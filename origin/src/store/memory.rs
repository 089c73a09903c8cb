//! The in-process store of the embedded default: a hash map per entity kind.

use std::collections::HashMap;
use std::sync::RwLock;

use async_trait::async_trait;
use cascade_shared::embedding::EmbeddingTable;
use cascade_shared::keys::EntityKind;

use super::{ComponentHealth, EmbeddingStore, HealthState, Lookup, StoreError};

/// Embeddings in memory. Lookups never fail.
#[derive(Debug, Default)]
pub struct MemoryStore {
    users: RwLock<HashMap<String, Vec<f32>>>,
    items: RwLock<HashMap<String, Vec<f32>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding `users`.
    pub fn with_users(users: &EmbeddingTable) -> Self {
        let store = Self::new();
        let map = users.ids.iter().enumerate().map(|(row, id)| (id.clone(), users.row(row).to_vec())).collect();
        *store.users.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = map;
        store
    }

    fn table(&self, kind: EntityKind) -> &RwLock<HashMap<String, Vec<f32>>> {
        match kind {
            EntityKind::User => &self.users,
            EntityKind::Item => &self.items,
        }
    }
}

#[async_trait]
impl EmbeddingStore for MemoryStore {
    async fn get_batch(&self, kind: EntityKind, ids: &[String]) -> Vec<Lookup> {
        let table = self.table(kind).read().unwrap_or_else(|poisoned| poisoned.into_inner());
        ids.iter().map(|id| Ok(table.get(id).cloned())).collect()
    }

    async fn set_batch(&self, kind: EntityKind, entries: &[(String, Vec<f32>)]) -> Result<usize, StoreError> {
        let mut table = self.table(kind).write().unwrap_or_else(|poisoned| poisoned.into_inner());
        for (id, vector) in entries {
            table.insert(id.clone(), vector.clone());
        }
        Ok(entries.len())
    }

    async fn health(&self) -> Vec<ComponentHealth> {
        vec![ComponentHealth::new("memory_store", HealthState::Ok)]
    }

    fn describe(&self) -> String {
        "in-process".into()
    }
}
