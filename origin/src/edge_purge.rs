//! Purging the edge's stored segment lists when an item is withheld (`[edge]`): the catalogue
//! filters a hidden or deleted item from every answer the origin gives at once, but a segment list
//! the edge stored before keeps it until the edge refreshes the entry. With `purge_url` set, the
//! origin remembers which items each segment list it served to the edge held, and when an item is
//! hidden, deleted or expired it calls the Worker's `POST /admin/purge?segment=…` for each segment
//! whose list held it, in the background (never on the request path), so the next visitor there
//! gets a fresh list. Counted as `cascade_edge_purges_total{outcome}` (`purged`, `not_cached`,
//! `failed`).
//!
//! Scope: with its `CASCADE_KV` binding the Worker's purge writes a purge generation that every
//! data centre folds into its cache key (`edge/src/generations.rs`); without it, the purge deletes
//! the entry in the data centre that answers the call. Either way the edge's stored lists also drop
//! the item on their next refresh.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cascade_shared::wire::RecItem;
use prometheus::IntCounterVec;
use serde::Deserialize;

/// Segments remembered (pages × devices × countries is a few thousand).
const MAX_SEGMENTS: usize = 8_192;
/// Purge calls in flight at once.
const PARALLEL_PURGES: usize = 8;

/// `[edge]` in the configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// The Worker's base URL (absent: no purges).
    pub purge_url: Option<String>,
    /// The Worker's `ADMIN_TOKEN` (better in `CASCADE_EDGE_PURGE_TOKEN`).
    pub purge_token: Option<String>,
}

/// The purger: which items each segment's served list held, and the client that purges.
pub struct EdgePurge {
    client: reqwest::Client,
    url: String,
    token: String,
    served: Mutex<HashMap<String, HashSet<String>>>,
    outcomes: IntCounterVec,
}

impl EdgePurge {
    /// The purger for `config`, or none when no `purge_url` is set.
    pub fn new(config: &EdgeConfig, outcomes: IntCounterVec) -> Option<Arc<Self>> {
        let url = config.purge_url.as_ref()?.trim_end_matches('/').to_string();
        let client = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().ok()?;
        let token = config.purge_token.clone().unwrap_or_default();
        Some(Arc::new(EdgePurge { client, url, token, served: Mutex::default(), outcomes }))
    }

    /// Remembers that `segment`'s list, as served, held `items` (the latest list replaces the last).
    pub fn served(&self, segment: &str, items: &[RecItem]) {
        let Ok(mut served) = self.served.lock() else { return };
        if served.len() >= MAX_SEGMENTS && !served.contains_key(segment) {
            return;
        }
        served.insert(segment.to_string(), items.iter().map(|item| item.id.clone()).collect());
    }

    /// The segments whose served list held `item_id` (forgotten: the next list will not hold it).
    pub fn segments_holding(&self, item_id: &str) -> Vec<String> {
        let Ok(mut served) = self.served.lock() else { return Vec::new() };
        let holding: Vec<String> =
            served.iter().filter(|(_, items)| items.contains(item_id)).map(|(segment, _)| segment.clone()).collect();
        for segment in &holding {
            served.remove(segment);
        }
        holding
    }

    /// Purges, in the background, every segment whose served list held `item_id`.
    pub fn withheld(self: &Arc<Self>, item_id: &str) {
        let segments = self.segments_holding(item_id);
        if segments.is_empty() {
            return;
        }
        tracing::info!(item_id, segments = segments.len(), "purging the edge's segment lists that held the item");
        let purger = Arc::clone(self);
        tokio::spawn(async move {
            use futures::StreamExt;
            futures::stream::iter(segments)
                .for_each_concurrent(PARALLEL_PURGES, |segment| {
                    let purger = Arc::clone(&purger);
                    async move { purger.purge(&segment).await }
                })
                .await;
        });
    }

    async fn purge(&self, segment: &str) {
        let url = format!("{}/admin/purge?segment={segment}", self.url);
        let sent = self.client.post(&url).bearer_auth(&self.token).send().await;
        let outcome = match sent {
            Ok(response) if response.status().is_success() => {
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                if body["purged"] == true { "purged" } else { "not_cached" }
            }
            Ok(response) => {
                tracing::warn!(segment, status = response.status().as_u16(), "edge purge refused");
                "failed"
            }
            Err(error) => {
                tracing::warn!(segment, %error, "edge purge failed");
                "failed"
            }
        };
        self.outcomes.with_label_values(&[outcome]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(ids: &[&str]) -> Vec<RecItem> {
        ids.iter().map(|id| RecItem { id: id.to_string(), score: 0.0, title: None, position: 0 }).collect()
    }

    #[test]
    fn only_segments_whose_served_list_held_the_item_are_purged_once() {
        let counter = IntCounterVec::new(prometheus::Opts::new("t", "t"), &["outcome"]).unwrap();
        let config = EdgeConfig { purge_url: Some("http://127.0.0.1:9/".into()), purge_token: None };
        let purger = EdgePurge::new(&config, counter).unwrap();
        assert_eq!(purger.url, "http://127.0.0.1:9");
        assert!(
            EdgePurge::new(
                &EdgeConfig::default(),
                IntCounterVec::new(prometheus::Opts::new("u", "u"), &["o"]).unwrap()
            )
            .is_none()
        );
        purger.served("home.desktop.us", &items(&["a", "b"]));
        purger.served("home.mobile.us", &items(&["b", "c"]));
        purger.served("home.desktop.us", &items(&["c", "d"]));
        let mut holding = purger.segments_holding("c");
        holding.sort();
        assert_eq!(holding, ["home.desktop.us", "home.mobile.us"]);
        assert!(purger.segments_holding("c").is_empty(), "forgotten once purged");
        assert!(purger.segments_holding("a").is_empty(), "a left home.desktop.us's list before");
    }
}
