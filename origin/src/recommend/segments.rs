//! Segment and popular lists, ranked once per bundle: the bundle's popular items, scored by the
//! model in each page/device context for a "typical visitor" (the mean embedding of the most
//! popular items). Country is part of the cache key but not of the model's context, so countries
//! share a list.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cascade_shared::segment::{DEVICES, Device, PAGES, Page};
use cascade_shared::validate::MAX_N;
use cascade_shared::wire::RecItem;

use super::Recommender;
use crate::bundle::Bundle;
use crate::ranking::features::build_rows;

/// The bundle's popular items that it has embeddings for, most popular first, scored `1/rank`:
/// the last list in the fallback chain.
pub fn popular_list(bundle: &Bundle) -> Vec<RecItem> {
    bundle
        .metadata
        .popular
        .iter()
        .filter(|id| bundle.item_index.contains_key(*id))
        .enumerate()
        .map(|(rank, id)| RecItem {
            id: id.clone(),
            score: 1.0 / (rank as f32 + 1.0),
            title: bundle.title(id),
            position: 0,
        })
        .collect()
}

impl Recommender {
    pub(super) async fn rank_segment_lists(&self) -> HashMap<(usize, usize), Vec<RecItem>> {
        let rows: Vec<usize> =
            self.popular.iter().filter_map(|item| self.bundle.item_index.get(&item.id).copied()).collect();
        let dim = self.bundle.metadata.dim;
        let typical = rows.iter().take(50).fold(vec![0.0f32; dim], |mut sum, &row| {
            sum.iter_mut().zip(self.bundle.items.row(row)).for_each(|(s, v)| *s += v);
            sum
        });
        let typical: Vec<f32> = typical.iter().map(|v| v / rows.len().clamp(1, 50) as f32).collect();
        let mut lists = HashMap::new();
        for page in PAGES.iter().filter_map(|p| Page::parse(p)) {
            for device in DEVICES.iter().filter_map(|d| Device::parse(d)) {
                let mut features = Vec::new();
                build_rows(&typical, rows.iter().map(|&r| self.bundle.items.row(r)), page, device, &mut features);
                let deadline = Instant::now() + Duration::from_secs(30);
                let list = match self.ranker.score(features, deadline).await {
                    Ok(scores) => self.top_items(rows.iter().copied().zip(scores), MAX_N),
                    Err(error) => {
                        tracing::warn!(%error, "segment lists fall back to popularity order");
                        self.popular.iter().take(MAX_N).cloned().collect()
                    }
                };
                lists.insert((page.index(), device.index()), list);
            }
        }
        lists
    }
}
