//! Business rules on the way out, after ranking (`[rules]`): what a user must not see again
//! (withheld by the catalogue, purchases, items shown in their last `seen_window` impressions,
//! blocked items) is dropped; a diversity re-rank ([`super::diversity`]) reorders what is left when
//! `diversity` is above 0; at most `max_per_category` items of one category are kept; the segment's
//! pins are placed; the list is cut to `n`. Applied to every answer a user gets, a cached one
//! included, so no cache is flushed when a rule's input changes. Removals (and items the re-rank
//! moved) are counted by rule (`cascade_rule_removals_total{rule}`). The rules can be replaced while
//! serving ([`ListRules::reload`]: `POST /admin/rules`, or SIGHUP); the impressions memory stays.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use cascade_shared::embedding::EmbeddingTable;
use cascade_shared::wire::RecItem;

use super::diversity::mmr_order;
use crate::catalogue::Catalogue;
use prometheus::IntCounterVec;
use serde::{Deserialize, Serialize};

/// `[rules]` in the configuration; every rule is off by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RulesConfig {
    /// Items shown to a user in their last this-many impressions are not shown again (0: off).
    /// Remembered in process, for up to `seen_users` users (least recently served forgotten first).
    pub seen_window: usize,
    /// Users whose recent impressions are remembered (read at start only).
    pub seen_users: u64,
    /// At most this many items of one category per list (0: off).
    pub max_per_category: usize,
    /// Items never shown.
    pub block: Vec<String>,
    /// Items placed at a fixed position in the lists of a context (`[[rules.pin]]`).
    pub pin: Vec<Pin>,
    /// The diversity re-rank's λ, 0..=1 (0: off; see [`super::diversity`]).
    pub diversity: f32,
}

/// An item pinned at `position` (from 1) in every list whose segment starts with `segment`
/// (`home.desktop` matches `home.desktop.us`; `*` matches every segment). A pinned item the user
/// must not see (withheld, purchased, blocked) is not placed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    /// The segment prefix, or `*`.
    pub segment: String,
    /// The item.
    pub item: String,
    /// Its position, from 1.
    pub position: usize,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            seen_window: 0,
            seen_users: 100_000,
            max_per_category: 0,
            block: Vec::new(),
            pin: Vec::new(),
            diversity: 0.0,
        }
    }
}

/// What the rules know of the bundle's items: their categories and embeddings (new items'
/// come from the catalogue).
#[derive(Clone, Copy)]
pub struct ItemFacts<'a> {
    /// Item → categories.
    pub categories: &'a HashMap<String, Vec<String>>,
    /// The embeddings and their row index, for the diversity re-rank.
    pub embeddings: Option<(&'a EmbeddingTable, &'a HashMap<String, usize>)>,
}

impl<'a> ItemFacts<'a> {
    /// Categories only (no re-rank possible).
    pub fn categories(categories: &'a HashMap<String, Vec<String>>) -> Self {
        ItemFacts { categories, embeddings: None }
    }
}

/// The rules in force (swapped whole by a reload).
struct Active {
    config: RulesConfig,
    block: HashSet<String>,
}

/// The rules, with the memory of recent impressions.
pub struct ListRules {
    active: ArcSwap<Active>,
    seen: moka::sync::Cache<String, Arc<Mutex<VecDeque<String>>>>,
    removals: Option<IntCounterVec>,
    catalogue: Arc<Catalogue>,
}

impl ListRules {
    /// Rules per `config`, counting removals in `removals`.
    pub fn new(config: &RulesConfig, removals: Option<IntCounterVec>) -> Self {
        let seen = moka::sync::Cache::builder()
            .max_capacity(config.seen_users.max(1))
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .build();
        let active =
            ArcSwap::from_pointee(Active { config: config.clone(), block: config.block.iter().cloned().collect() });
        ListRules { active, seen, removals, catalogue: Arc::new(Catalogue::default()) }
    }

    /// The same rules, withholding what `catalogue` hides, deletes or expires.
    pub fn with_catalogue(self, catalogue: Arc<Catalogue>) -> Self {
        ListRules { catalogue, ..self }
    }

    /// The catalogue whose withheld items the rules drop.
    pub fn catalogue(&self) -> &Arc<Catalogue> {
        &self.catalogue
    }

    /// No rules but the purchases filter.
    pub fn none() -> Self {
        ListRules::new(&RulesConfig::default(), None)
    }

    /// The rules in force.
    pub fn config(&self) -> RulesConfig {
        self.active.load().config.clone()
    }

    /// Puts `config` in force from the next list on (checked by the caller, as at start). The
    /// impressions memory is kept; `seen_users` only takes effect at the next start.
    pub fn reload(&self, config: &RulesConfig) {
        let block = config.block.iter().cloned().collect();
        self.active.store(Arc::new(Active { config: config.clone(), block }));
    }

    fn count(&self, rule: &str, by: u64) {
        if let Some(removals) = &self.removals {
            removals.with_label_values(&[rule]).inc_by(by);
        }
    }

    /// `items` (best first) as `user` may see them in `segment`: without withheld, purchased,
    /// recently shown or blocked items, re-ranked for diversity, at most `max_per_category` per
    /// category, the segment's pinned items in their places, cut to `n`.
    pub fn finish(
        &self,
        items: &[RecItem],
        user: Option<&str>,
        purchased: &HashSet<String>,
        facts: ItemFacts<'_>,
        segment: &str,
        n: usize,
    ) -> Vec<RecItem> {
        let active = self.active.load();
        let config = &active.config;
        let shown: HashSet<String> = match user.filter(|_| config.seen_window > 0) {
            Some(user) => self
                .seen
                .get(user)
                .and_then(|recent| {
                    let recent = recent.lock().ok()?;
                    Some(recent.iter().take(config.seen_window).cloned().collect())
                })
                .unwrap_or_default(),
            None => HashSet::new(),
        };
        let now_ms = (!self.catalogue.is_empty()).then(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
        });
        let mut eligible = items.iter().filter(|item| {
            let rule = if let Some(reason) = now_ms.and_then(|now| self.catalogue.withheld(&item.id, now)) {
                Some(reason)
            } else if purchased.contains(&item.id) {
                Some("purchased")
            } else if active.block.contains(&item.id) {
                Some("blocked")
            } else if shown.contains(&item.id) {
                Some("seen")
            } else {
                None
            };
            if let Some(rule) = rule {
                self.count(rule, 1);
            }
            rule.is_none()
        });
        let ordered: Vec<&RecItem> = if config.diversity > 0.0 {
            let pool: Vec<&RecItem> = eligible.by_ref().take(2 * n.max(10)).collect();
            let mut ordered = self.diversify(&pool, facts, config.diversity);
            ordered.extend(eligible);
            ordered
        } else {
            eligible.collect()
        };
        let mut per_category: HashMap<String, usize> = HashMap::new();
        let mut kept = Vec::with_capacity(n);
        for item in ordered {
            if kept.len() == n {
                break;
            }
            let categories = self.categories_of(&item.id, facts, config.max_per_category);
            let capped = config.max_per_category > 0
                && categories
                    .iter()
                    .any(|c| per_category.get(c.as_str()).copied().unwrap_or(0) >= config.max_per_category);
            if capped {
                self.count("category_cap", 1);
                continue;
            }
            for category in categories.iter() {
                *per_category.entry(category.clone()).or_default() += 1;
            }
            kept.push(item.clone());
        }
        self.place_pins(&active, kept, purchased, segment, n)
    }

    /// An item's categories: the bundle's (borrowed), else a new item's (only when a cap is set).
    fn categories_of<'f>(&self, id: &str, facts: ItemFacts<'f>, cap: usize) -> Cow<'f, [String]> {
        if cap == 0 {
            return Cow::Borrowed(&[]);
        }
        match facts.categories.get(id) {
            Some(categories) => Cow::Borrowed(categories.as_slice()),
            None => Cow::Owned(self.catalogue.new_item(id).map(|new| new.categories).unwrap_or_default()),
        }
    }

    /// The pool in the diversity re-rank's order; items it moved up are counted (rule=diversity).
    fn diversify<'i>(&self, pool: &[&'i RecItem], facts: ItemFacts<'_>, lambda: f32) -> Vec<&'i RecItem> {
        let vectors: Vec<Option<Vec<f32>>> = pool
            .iter()
            .map(|item| match facts.embeddings.and_then(|(table, index)| index.get(&item.id).map(|&r| table.row(r))) {
                Some(row) => Some(row.to_vec()),
                None => self.catalogue.new_item(&item.id).map(|new| new.embedding),
            })
            .collect();
        let scores: Vec<f32> = pool.iter().map(|item| item.score).collect();
        let order = mmr_order(&scores, &vectors, lambda.min(1.0));
        let moved = order.iter().enumerate().filter(|(place, index)| place < index).count();
        self.count("diversity", moved as u64);
        order.into_iter().map(|index| pool[index]).collect()
    }

    fn place_pins(
        &self,
        active: &Active,
        mut kept: Vec<RecItem>,
        purchased: &HashSet<String>,
        segment: &str,
        n: usize,
    ) -> Vec<RecItem> {
        let mut pins: Vec<&Pin> = active
            .config
            .pin
            .iter()
            .filter(|pin| {
                pin.segment == "*" || segment == pin.segment || segment.starts_with(&format!("{}.", pin.segment))
            })
            .collect();
        if pins.is_empty() {
            return kept;
        }
        pins.sort_by_key(|pin| pin.position);
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        for pin in pins {
            let barred = purchased.contains(&pin.item)
                || active.block.contains(&pin.item)
                || self.catalogue.withheld(&pin.item, now_ms).is_some();
            if barred {
                continue;
            }
            let item = match kept.iter().position(|i| i.id == pin.item) {
                Some(at) => kept.remove(at),
                None => RecItem { id: pin.item.clone(), score: 0.0, title: None, position: 0 },
            };
            kept.insert((pin.position - 1).min(kept.len()), item);
            self.count("pinned", 1);
        }
        kept.truncate(n);
        kept
    }

    /// Remembers that `user` was shown `items` (for `seen_window`).
    pub fn remember(&self, user: &str, items: &[RecItem]) {
        let window = self.active.load().config.seen_window;
        if window == 0 {
            return;
        }
        let recent = self.seen.get_with(user.to_string(), || Arc::new(Mutex::new(VecDeque::new())));
        if let Ok(mut recent) = recent.lock() {
            for item in items {
                recent.push_front(item.id.clone());
            }
            recent.truncate(window);
        }
    }
}

#[cfg(test)]
#[path = "list_rules_tests.rs"]
mod tests;
