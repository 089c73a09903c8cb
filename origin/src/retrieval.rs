//! [`Retriever`]: candidate items for a query embedding, by FAISS inner-product search.
//!
//! The index is built over the bundle's item embeddings (an item's row in `items.emb` is its FAISS
//! label) or read from `items.faiss` written by `cascade index build`. The faiss crate's `search`
//! takes `&mut self`, so concurrent searches use a small pool of index copies, each behind a mutex,
//! on tokio's blocking threads.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use faiss::index::IndexImpl;
use faiss::index::TryClone;
use faiss::index::autotune::ParameterSpace;
use faiss::{Index, MetricType, index_factory};

/// FAISS settings (`[retrieval]`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrievalConfig {
    /// FAISS index factory string, or `auto` (exact `Flat` below 20,000 items, else
    /// `IVF{4·√n}_HNSW32,Flat`).
    pub factory: String,
    /// IVF lists probed per query.
    pub nprobe: usize,
    /// Candidates retrieved per request, before ranking.
    pub candidates: usize,
    /// Index copies searched in parallel (the faiss crate's search takes `&mut self`), each on
    /// its own thread.
    pub parallelism: usize,
    /// Searches waiting for a thread before new ones are refused (and fall back at once).
    pub queue_capacity: usize,
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        RetrievalConfig { factory: "auto".into(), nprobe: 16, candidates: 100, parallelism: 2, queue_capacity: 64 }
    }
}

/// A candidate: the item's row in the bundle and its inner product with the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Row in `items.emb` (the FAISS label).
    pub row: usize,
    /// Inner product with the query.
    pub similarity: f32,
}

/// A retrieval failure.
#[derive(Debug, thiserror::Error)]
pub enum RetrieveError {
    /// FAISS refused (bad factory string, training, I/O).
    #[error("faiss: {0}")]
    Faiss(String),
    /// The query has the wrong dimension.
    #[error("query has {got} dimensions, the index {expected}")]
    Dimension {
        /// The index's dimension.
        expected: usize,
        /// The query's.
        got: usize,
    },
}

fn faiss_error(e: faiss::error::Error) -> RetrieveError {
    RetrieveError::Faiss(e.to_string())
}

/// Candidate retrieval.
pub trait Retriever: Send + Sync {
    /// The `k` items with the largest inner product with `query`, best first.
    fn search(&self, query: &[f32], k: usize) -> Result<Vec<Candidate>, RetrieveError>;
    /// [`Retriever::search`] for each of the row-major `queries`, in order (offline jobs: one call
    /// for many users). One search per query unless the index answers a batch at once.
    fn search_batch(&self, queries: &[f32], dim: usize, k: usize) -> Result<Vec<Vec<Candidate>>, RetrieveError> {
        queries.chunks(dim.max(1)).map(|query| self.search(query, k)).collect()
    }
    /// One line for logs.
    fn describe(&self) -> String;
}

/// The factory string `auto` stands for: exact search for small catalogues (it is fast and has
/// recall 1), IVF with an HNSW coarse quantizer above.
pub fn auto_factory(items: usize) -> String {
    if items < 20_000 {
        "Flat".to_string()
    } else {
        let lists = ((items as f64).sqrt() * 4.0).round() as usize;
        format!("IVF{lists}_HNSW32,Flat")
    }
}

/// Builds an inner-product index over `vectors` (row-major, `dim` columns).
pub fn build_index(factory: &str, dim: usize, vectors: &[f32]) -> Result<IndexImpl, RetrieveError> {
    let count = vectors.len() / dim.max(1);
    let factory = if factory == "auto" { auto_factory(count) } else { factory.to_string() };
    let dim32 = u32::try_from(dim).map_err(|_| RetrieveError::Faiss("dimension too large".into()))?;
    let mut index = index_factory(dim32, factory.as_str(), MetricType::InnerProduct).map_err(faiss_error)?;
    if !index.is_trained() {
        index.train(vectors).map_err(faiss_error)?;
    }
    index.add(vectors).map_err(faiss_error)?;
    Ok(index)
}

/// FAISS search with a pool of index copies.
pub struct FaissRetriever {
    pool: Vec<Mutex<IndexImpl>>,
    next: AtomicUsize,
    dim: usize,
    description: String,
}

impl FaissRetriever {
    /// Wraps `index` with `parallelism` copies and `nprobe` set (ignored by indexes without lists).
    pub fn new(index: IndexImpl, parallelism: usize, nprobe: usize, description: &str) -> Result<Self, RetrieveError> {
        let dim = index.d() as usize;
        let mut pool = Vec::with_capacity(parallelism.max(1));
        for _ in 1..parallelism.max(1) {
            pool.push(index.try_clone().map_err(faiss_error)?);
        }
        pool.push(index);
        let params = ParameterSpace::new().map_err(faiss_error)?;
        for copy in &mut pool {
            // Flat indexes have no nprobe; that refusal is expected and harmless.
            let _ = params.set_index_parameter(copy, "nprobe", nprobe as f64);
        }
        let count = pool[0].ntotal();
        Ok(FaissRetriever {
            pool: pool.into_iter().map(Mutex::new).collect(),
            next: AtomicUsize::new(0),
            dim,
            description: format!("faiss {description} ({count} items, nprobe {nprobe})"),
        })
    }

    /// Reads an index written by [`write`].
    pub fn read(path: &Path) -> Result<IndexImpl, RetrieveError> {
        faiss::read_index(path.to_string_lossy()).map_err(faiss_error)
    }

    /// Number of indexed items.
    pub fn len(&self) -> usize {
        self.pool[0].lock().map(|index| index.ntotal() as usize).unwrap_or(0)
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The found rows of one query's result (FAISS marks missing ones with label -1).
fn candidates(labels: &[faiss::Idx], distances: &[f32]) -> Vec<Candidate> {
    labels
        .iter()
        .zip(distances)
        .filter_map(|(label, &similarity)| label.get().map(|row| Candidate { row: row as usize, similarity }))
        .collect()
}

/// Writes an index to `path`.
pub fn write(index: &IndexImpl, path: &Path) -> Result<(), RetrieveError> {
    faiss::write_index(index, path.to_string_lossy()).map_err(faiss_error)
}

impl Retriever for FaissRetriever {
    fn search(&self, query: &[f32], k: usize) -> Result<Vec<Candidate>, RetrieveError> {
        if query.len() != self.dim {
            return Err(RetrieveError::Dimension { expected: self.dim, got: query.len() });
        }
        // Take a free copy if one is free, else wait for the round-robin one.
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut guard = None;
        for offset in 0..self.pool.len() {
            if let Ok(index) = self.pool[(start + offset) % self.pool.len()].try_lock() {
                guard = Some(index);
                break;
            }
        }
        let mut index = match guard {
            Some(index) => index,
            None => self.pool[start % self.pool.len()].lock().unwrap_or_else(|poisoned| poisoned.into_inner()),
        };
        let result = index.search(query, k).map_err(faiss_error)?;
        Ok(candidates(&result.labels, &result.distances))
    }

    /// One FAISS call for every query: FAISS spreads a batch over its OpenMP threads and, for IVF,
    /// groups the queries by list, which a loop of single searches cannot.
    fn search_batch(&self, queries: &[f32], dim: usize, k: usize) -> Result<Vec<Vec<Candidate>>, RetrieveError> {
        if dim != self.dim || !queries.len().is_multiple_of(self.dim) {
            return Err(RetrieveError::Dimension { expected: self.dim, got: dim });
        }
        if queries.is_empty() || k == 0 {
            return Ok(vec![Vec::new(); queries.len() / self.dim]);
        }
        let mut index = self.pool[0].lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let result = index.search(queries, k).map_err(faiss_error)?;
        Ok(result.labels.chunks(k).zip(result.distances.chunks(k)).map(|(l, d)| candidates(l, d)).collect())
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_search_is_exact_inner_product() {
        let dim = 4;
        let vectors: Vec<f32> = (0..100).flat_map(|i| [i as f32, 1.0, 0.0, (i % 7) as f32]).collect();
        let retriever = FaissRetriever::new(build_index("auto", dim, &vectors).unwrap(), 2, 8, "Flat").unwrap();
        let top = retriever.search(&[1.0, 0.0, 0.0, 0.0], 3).unwrap();
        assert_eq!(top.iter().map(|c| c.row).collect::<Vec<_>>(), vec![99, 98, 97]);
        assert_eq!(top[0].similarity, 99.0);
        assert!(matches!(retriever.search(&[1.0], 3), Err(RetrieveError::Dimension { expected: 4, got: 1 })));
    }

    #[test]
    fn a_batch_search_answers_as_single_searches_do() {
        let dim = 8;
        let vectors: Vec<f32> =
            (0..2000).flat_map(|i| (0..dim).map(move |d| (((i * 31 + d * 17) % 97) as f32) / 97.0 - 0.5)).collect();
        let retriever =
            FaissRetriever::new(build_index("IVF16_HNSW32,Flat", dim, &vectors).unwrap(), 1, 4, "ivf").unwrap();
        let queries = &vectors[..20 * dim];
        let batch = retriever.search_batch(queries, dim, 10).unwrap();
        assert_eq!(batch.len(), 20);
        for (query, found) in queries.chunks(dim).zip(&batch) {
            let single = retriever.search(query, 10).unwrap();
            let rows = |c: &[Candidate]| c.iter().map(|c| c.row).collect::<Vec<_>>();
            assert_eq!(rows(found), rows(&single));
        }
        assert!(matches!(retriever.search_batch(&[1.0; 9], dim, 3), Err(RetrieveError::Dimension { .. })));
        assert_eq!(retriever.search_batch(&[], dim, 3).unwrap().len(), 0);
    }

    #[test]
    fn ivf_hnsw_finds_near_neighbours() {
        assert_eq!(auto_factory(100_000), "IVF1265_HNSW32,Flat");
        let dim = 8;
        let vectors: Vec<f32> =
            (0..2000).flat_map(|i| (0..dim).map(move |d| (((i * 31 + d * 17) % 97) as f32) / 97.0)).collect();
        let index = build_index("IVF16_HNSW32,Flat", dim, &vectors).unwrap();
        let retriever = FaissRetriever::new(index, 1, 16, "ivf").unwrap();
        let query = &vectors[5 * dim..6 * dim];
        let found = retriever.search(query, 10).unwrap();
        assert_eq!(found.len(), 10);
        // With every list probed, IVF is exact.
        let exact = FaissRetriever::new(build_index("Flat", dim, &vectors).unwrap(), 1, 1, "flat")
            .unwrap()
            .search(query, 10)
            .unwrap();
        assert_eq!(found[0].similarity, exact[0].similarity);
    }
}
