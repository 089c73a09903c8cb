//! Fault injection for the fault suite (`benches/faults.rs`, `tests/e2e/faults.rs`): FAISS and the
//! ranker made N times slower, the ranker made to panic. Off unless `serving.fault_injection` is
//! set (refused in production mode); when on, `POST /admin/faults` (bearer key) sets the knobs.
//!
//! Faults in Redis are injected from outside (a TCP proxy in the test fixtures); these two stages
//! run inside the process, so their faults are injected here, at the same points a real slowdown
//! or panic would hit: inside the search task and inside the inference thread's model call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::ranking::RankError;
use crate::ranking::batcher::{ScoreBackend, Scorer};

/// The knobs, as `POST /admin/faults` takes and returns them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct FaultSettings {
    /// FAISS searches take this many times as long (1 or 0: unchanged).
    pub search_slowdown: u32,
    /// Model calls take this many times as long (1 or 0: unchanged).
    pub rank_slowdown: u32,
    /// The next this-many model calls panic.
    pub rank_panics: u32,
}

/// The live knobs, shared by the search path and the inference threads.
#[derive(Debug, Default)]
pub struct Faults {
    search_slowdown: AtomicU32,
    rank_slowdown: AtomicU32,
    rank_panics: AtomicU32,
}

impl Faults {
    /// Sets every knob.
    pub fn set(&self, settings: FaultSettings) {
        self.search_slowdown.store(settings.search_slowdown, Ordering::Relaxed);
        self.rank_slowdown.store(settings.rank_slowdown, Ordering::Relaxed);
        self.rank_panics.store(settings.rank_panics, Ordering::Relaxed);
    }

    /// The knobs now.
    pub fn get(&self) -> FaultSettings {
        FaultSettings {
            search_slowdown: self.search_slowdown.load(Ordering::Relaxed),
            rank_slowdown: self.rank_slowdown.load(Ordering::Relaxed),
            rank_panics: self.rank_panics.load(Ordering::Relaxed),
        }
    }

    /// After a search that took `took`, sleeps so it took `search_slowdown` times as long.
    pub fn after_search(&self, took: Duration) {
        stretch(took, self.search_slowdown.load(Ordering::Relaxed));
    }

    /// Wraps an inference thread's backend with the ranker's knobs.
    pub fn wrap(self: &Arc<Self>, inner: Scorer) -> Scorer {
        Box::new(FaultyBackend { inner, faults: Arc::clone(self) })
    }
}

fn stretch(took: Duration, factor: u32) {
    if factor > 1 {
        std::thread::sleep(took * (factor - 1));
    }
}

struct FaultyBackend {
    inner: Scorer,
    faults: Arc<Faults>,
}

impl ScoreBackend for FaultyBackend {
    fn score_batch(&mut self, rows: &mut [f32]) -> Result<Vec<f32>, RankError> {
        let panics = &self.faults.rank_panics;
        if panics.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok() {
            panic!("injected ranker panic (fault injection)");
        }
        let started = Instant::now();
        let scores = self.inner.score_batch(rows);
        stretch(started.elapsed(), self.faults.rank_slowdown.load(Ordering::Relaxed));
        scores
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ranker_knobs_panic_on_count_and_stretch_calls() {
        let faults = Arc::new(Faults::default());
        let mut scorer = faults.wrap(Box::new(|rows: &[f32]| -> Result<Vec<f32>, RankError> {
            std::thread::sleep(Duration::from_millis(5));
            Ok(rows.to_vec())
        }));
        faults.set(FaultSettings { rank_panics: 1, rank_slowdown: 4, ..FaultSettings::default() });
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scorer.score_batch(&mut [1.0])));
        assert!(panicked.is_err(), "the first call panics");
        let started = Instant::now();
        assert_eq!(scorer.score_batch(&mut [2.0]), Ok(vec![2.0]), "then calls go through");
        assert!(started.elapsed() >= Duration::from_millis(20), "4x slower: {:?}", started.elapsed());
        assert_eq!(faults.get().rank_panics, 0);
    }
}
