//! Business rules on the way out, after ranking (`[rules]`): what a user must not see again
//! (purchases, items shown in their last `seen_window` impressions, blocked items) is dropped, and
//! at most `max_per_category` items of one category (the bundle's `categories`) are kept; the list
//! is then cut to `n`. Applied to every answer a user gets, a cached one included, so no cache is
//! flushed when a rule's input changes. Removals are counted by rule
//! (`cascade_rule_removals_total{rule}`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use cascade_shared::wire::RecItem;

use crate::catalogue::Catalogue;
use prometheus::IntCounterVec;
use serde::Deserialize;

/// `[rules]` in the configuration; every rule is off by default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulesConfig {
    /// Items shown to a user in their last this-many impressions are not shown again (0: off).
    /// Remembered in process, for up to `seen_users` users (least recently served forgotten first).
    pub seen_window: usize,
    /// Users whose recent impressions are remembered.
    pub seen_users: u64,
    /// At most this many items of one category per list (0: off).
    pub max_per_category: usize,
    /// Items never shown.
    pub block: Vec<String>,
    /// Items placed at a fixed position in the lists of a context (`[[rules.pin]]`).
    pub pin: Vec<Pin>,
}

/// An item pinned at `position` (from 1) in every list whose segment starts with `segment`
/// (`home.desktop` matches `home.desktop.us`; `*` matches every segment). A pinned item the user
/// must not see (withheld, purchased, blocked) is not placed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
        RulesConfig { seen_window: 0, seen_users: 100_000, max_per_category: 0, block: Vec::new(), pin: Vec::new() }
    }
}

/// The rules, with the memory of recent impressions.
pub struct ListRules {
    config: RulesConfig,
    block: HashSet<String>,
    seen: Option<moka::sync::Cache<String, Arc<Mutex<VecDeque<String>>>>>,
    removals: Option<IntCounterVec>,
    catalogue: Arc<Catalogue>,
}

impl ListRules {
    /// Rules per `config`, counting removals in `removals`.
    pub fn new(config: &RulesConfig, removals: Option<IntCounterVec>) -> Self {
        let seen = (config.seen_window > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(config.seen_users.max(1))
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .build()
        });
        let block = config.block.iter().cloned().collect();
        ListRules { config: config.clone(), block, seen, removals, catalogue: Arc::new(Catalogue::default()) }
    }

    /// The same rules, withholding what `catalogue` hides, deletes or expires.
    pub fn with_catalogue(self, catalogue: Arc<Catalogue>) -> Self {
        ListRules { catalogue, ..self }
    }

    /// No rules but the purchases filter.
    pub fn none() -> Self {
        ListRules::new(&RulesConfig::default(), None)
    }

    /// `items` (best first) as `user` may see them in `segment`: without withheld, purchased,
    /// recently shown or blocked items, at most `max_per_category` per category, the segment's
    /// pinned items in their places, cut to `n`.
    pub fn finish(
        &self,
        items: &[RecItem],
        user: Option<&str>,
        purchased: &HashSet<String>,
        categories: &HashMap<String, Vec<String>>,
        segment: &str,
        n: usize,
    ) -> Vec<RecItem> {
        let shown: HashSet<String> = match (&self.seen, user) {
            (Some(seen), Some(user)) => seen
                .get(user)
                .map(|recent| recent.lock().map(|r| r.iter().cloned().collect()).unwrap_or_default())
                .unwrap_or_default(),
            _ => HashSet::new(),
        };
        let mut per_category: HashMap<&str, usize> = HashMap::new();
        let mut kept = Vec::with_capacity(n);
        let now_ms = (!self.catalogue.is_empty()).then(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
        });
        for item in items {
            if kept.len() == n {
                break;
            }
            let rule = if let Some(reason) = now_ms.and_then(|now| self.catalogue.withheld(&item.id, now)) {
                Some(reason)
            } else if purchased.contains(&item.id) {
                Some("purchased")
            } else if self.block.contains(&item.id) {
                Some("blocked")
            } else if shown.contains(&item.id) {
                Some("seen")
            } else if self.config.max_per_category > 0
                && categories.get(&item.id).is_some_and(|cats| {
                    cats.iter()
                        .any(|c| per_category.get(c.as_str()).copied().unwrap_or(0) >= self.config.max_per_category)
                })
            {
                Some("category_cap")
            } else {
                None
            };
            match rule {
                Some(rule) => {
                    if let Some(removals) = &self.removals {
                        removals.with_label_values(&[rule]).inc();
                    }
                }
                None => {
                    for category in categories.get(&item.id).into_iter().flatten() {
                        *per_category.entry(category.as_str()).or_default() += 1;
                    }
                    kept.push(item.clone());
                }
            }
        }
        self.place_pins(kept, purchased, segment, n)
    }

    fn place_pins(&self, mut kept: Vec<RecItem>, purchased: &HashSet<String>, segment: &str, n: usize) -> Vec<RecItem> {
        let mut pins: Vec<&Pin> = self
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
                || self.block.contains(&pin.item)
                || self.catalogue.withheld(&pin.item, now_ms).is_some();
            if barred {
                continue;
            }
            let item = match kept.iter().position(|i| i.id == pin.item) {
                Some(at) => kept.remove(at),
                None => RecItem { id: pin.item.clone(), score: 0.0, title: None, position: 0 },
            };
            kept.insert((pin.position - 1).min(kept.len()), item);
            if let Some(removals) = &self.removals {
                removals.with_label_values(&["pinned"]).inc();
            }
        }
        kept.truncate(n);
        kept
    }

    /// Remembers that `user` was shown `items` (for `seen_window`).
    pub fn remember(&self, user: &str, items: &[RecItem]) {
        let Some(seen) = &self.seen else { return };
        let recent = seen.get_with(user.to_string(), || Arc::new(Mutex::new(VecDeque::new())));
        if let Ok(mut recent) = recent.lock() {
            for item in items {
                recent.push_front(item.id.clone());
            }
            recent.truncate(self.config.seen_window);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(ids: &[&str]) -> Vec<RecItem> {
        ids.iter().map(|id| RecItem { id: id.to_string(), score: 0.0, title: None, position: 0 }).collect()
    }

    fn ids(items: &[RecItem]) -> Vec<&str> {
        items.iter().map(|i| i.id.as_str()).collect()
    }

    #[test]
    fn purchased_blocked_and_recently_shown_items_are_dropped_before_the_cut() {
        let config = RulesConfig { seen_window: 3, seen_users: 10, block: vec!["b".into()], ..Default::default() };
        let rules = ListRules::new(&config, None);
        let all = items(&["a", "b", "c", "d", "e", "f", "g"]);
        let bought = HashSet::from(["c".to_string()]);
        let none = HashMap::new();
        let first = rules.finish(&all, Some("u"), &bought, &none, "home.desktop.us", 2);
        assert_eq!(ids(&first), ["a", "d"]);
        rules.remember("u", &first);
        assert_eq!(ids(&rules.finish(&all, Some("u"), &bought, &none, "home.desktop.us", 2)), ["e", "f"]);
        rules.remember("u", &items(&["e", "f"]));
        // The window holds the last 3 impressions: f, e, d; a is back.
        assert_eq!(ids(&rules.finish(&all, Some("u"), &bought, &none, "home.desktop.us", 3)), ["a", "g"]);
        // Another user, and anonymous lists, are not affected.
        assert_eq!(ids(&rules.finish(&all, Some("v"), &HashSet::new(), &none, "home.desktop.us", 2)), ["a", "c"]);
        assert_eq!(ids(&rules.finish(&all, None, &HashSet::new(), &none, "home.desktop.us", 2)), ["a", "c"]);
    }

    #[test]
    fn at_most_k_items_per_category_each_item_counting_for_all_of_its_categories() {
        let rules = ListRules::new(&RulesConfig { max_per_category: 1, ..Default::default() }, None);
        let categories: HashMap<String, Vec<String>> = [
            ("a", vec!["drama"]),
            ("b", vec!["drama"]),
            ("c", vec!["comedy", "drama"]),
            ("d", vec!["comedy"]),
            ("e", vec![]),
            ("f", vec!["action"]),
        ]
        .into_iter()
        .map(|(id, cats)| (id.to_string(), cats.into_iter().map(String::from).collect()))
        .collect();
        let out = rules.finish(
            &items(&["a", "b", "c", "d", "e", "f"]),
            None,
            &HashSet::new(),
            &categories,
            "home.desktop.us",
            10,
        );
        assert_eq!(ids(&out), ["a", "d", "e", "f"]);
    }

    #[test]
    fn pinned_items_take_their_place_in_matching_segments_unless_barred() {
        let pin =
            |segment: &str, item: &str, position: usize| Pin { segment: segment.into(), item: item.into(), position };
        let config = RulesConfig {
            block: vec!["x".into()],
            pin: vec![pin("home", "e", 1), pin("home.desktop", "z", 3), pin("*", "x", 2), pin("search", "b", 1)],
            ..Default::default()
        };
        let rules = ListRules::new(&config, None);
        let all = items(&["a", "b", "c", "d", "e"]);
        let none = HashMap::new();
        // e moves up to 1; z (not in the list) is placed at 3; x is blocked; the search pin does not match.
        let home = rules.finish(&all, Some("u"), &HashSet::new(), &none, "home.desktop.us", 4);
        assert_eq!(ids(&home), ["e", "a", "z", "b"]);
        assert_eq!(ids(&rules.finish(&all, None, &HashSet::new(), &none, "browse.mobile.us", 3)), ["a", "b", "c"]);
        // A purchased pinned item is not placed.
        let bought = HashSet::from(["e".to_string()]);
        assert_eq!(ids(&rules.finish(&all, Some("u"), &bought, &none, "home.mobile.us", 3)), ["a", "b", "c"]);
    }

    #[test]
    fn removals_are_counted_by_rule() {
        let counter = IntCounterVec::new(prometheus::Opts::new("t", "t"), &["rule"]).unwrap();
        let config = RulesConfig { block: vec!["b".into()], ..Default::default() };
        let rules = ListRules::new(&config, Some(counter.clone()));
        rules.finish(
            &items(&["a", "b", "c"]),
            Some("u"),
            &HashSet::from(["c".into()]),
            &HashMap::new(),
            "home.desktop.us",
            3,
        );
        assert_eq!(counter.with_label_values(&["blocked"]).get(), 1);
        assert_eq!(counter.with_label_values(&["purchased"]).get(), 1);
    }
}
