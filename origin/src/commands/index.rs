//! `cascade index build`: train and write the FAISS index over a bundle's items, so `serve`
//! starts without building it. `cascade index eval`: recall and latency for each `nprobe`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use cascade_shared::stats::p50_p99;
use faiss::Index;

use crate::bundle::Bundle;
use crate::retrieval::{auto_factory, build_index, write};

/// FAISS index tools.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum IndexCommand {
    /// Train and write `items.faiss` into the bundle.
    Build(BuildArgs),
    /// Recall@K against exact search, and latency, for each nprobe (queries: the bundle's users).
    Eval(EvalArgs),
}

/// Arguments of `cascade index build`.
#[derive(Debug, Clone, clap::Args)]
pub struct BuildArgs {
    /// Bundle folder.
    #[arg(long, env = cascade_shared::config::BUNDLE, default_value = "data/bundle")]
    pub bundle: PathBuf,
    /// FAISS factory string, or `auto`.
    #[arg(long, default_value = "auto")]
    pub factory: String,
}

/// What `cascade index build` wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildReport {
    /// The index file.
    pub path: PathBuf,
    /// The factory string used.
    pub factory: String,
    /// Vectors indexed.
    pub items: u64,
    /// Seconds to train and add.
    pub build_secs: f64,
}

/// Builds the index with `factory` (or `auto`) and writes it to the bundle's `items.faiss`.
pub fn build(bundle_dir: &Path, factory: &str) -> anyhow::Result<BuildReport> {
    let bundle = Bundle::load(bundle_dir)?;
    let factory = if factory == "auto" { auto_factory(bundle.items.ids.len()) } else { factory.to_string() };
    let started = Instant::now();
    let index = build_index(&factory, bundle.metadata.dim, &bundle.items.values)?;
    write(&index, &bundle.index_path())?;
    eprintln!(
        "{}: {factory} over {} items, dim {}, built in {:.2} s",
        bundle.index_path().display(),
        index.ntotal(),
        bundle.metadata.dim,
        started.elapsed().as_secs_f64()
    );
    Ok(BuildReport {
        path: bundle.index_path(),
        factory,
        items: index.ntotal(),
        build_secs: started.elapsed().as_secs_f64(),
    })
}

/// What `cascade index eval` measures for one `nprobe`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalPoint {
    /// Lists probed.
    pub nprobe: usize,
    /// Mean fraction of the exact top K found.
    pub recall: f64,
    /// Median single-query latency, ms (one thread).
    pub p50_ms: f64,
    /// 99th percentile single-query latency, ms (one thread).
    pub p99_ms: f64,
    /// Queries per second with `threads` threads searching at once through the retriever's pool.
    pub qps: f64,
}

/// Arguments of `cascade index eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// Bundle folder (items to index, users as queries).
    #[arg(long, env = cascade_shared::config::BUNDLE, default_value = "data/bundle")]
    pub bundle: PathBuf,
    /// FAISS factory string, `auto`, or `file` (the bundle's items.faiss).
    #[arg(long, default_value = "auto")]
    pub factory: String,
    /// nprobe values to try.
    #[arg(long = "nprobe", value_delimiter = ',', default_value = "8,16,32,64")]
    pub nprobes: Vec<usize>,
    /// Number of queries (the first users of the bundle).
    #[arg(long, default_value_t = 2000)]
    pub queries: usize,
    /// K of recall@K.
    #[arg(long, default_value_t = 100)]
    pub k: usize,
    /// Threads searching at once for the throughput figure.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Also write the figures (the JSON printed on stdout) to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Index and query float16-rounded vectors (as `load --f16` stores them); recall is still
    /// against exact float32 search.
    #[arg(long)]
    pub f16: bool,
}

fn f16_round(values: &mut [f32]) {
    for v in values {
        *v = half::f16::from_f32(*v).to_f32();
    }
}

/// Recall@K against exact inner-product search, and latency, for each `nprobe`.
pub fn eval(args: &EvalArgs) -> anyhow::Result<serde_json::Value> {
    use crate::retrieval::{FaissRetriever, Retriever};
    anyhow::ensure!(
        args.k >= 1 && args.queries >= 1 && args.threads >= 1,
        "--k, --queries and --threads must be positive"
    );
    anyhow::ensure!(
        !args.nprobes.is_empty() && args.nprobes.iter().all(|&n| n >= 1),
        "--nprobe values must be positive"
    );
    // Only the embeddings are needed (a generated folder without a model will do).
    let read = |name: &str| -> anyhow::Result<cascade_shared::embedding::EmbeddingTable> {
        let path = args.bundle.join(name);
        let bytes = std::fs::read(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        cascade_shared::embedding::decode_file(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    };
    let (items, users) = (read("items.emb")?, read("users.emb")?);
    let (mut stored_items, mut stored_users) = (items.values.clone(), users.values.clone());
    if args.f16 {
        f16_round(&mut stored_items);
        f16_round(&mut stored_users);
    }
    let dim = items.header.dim;
    anyhow::ensure!(users.header.dim == dim, "users.emb has dim {}, items.emb {dim}", users.header.dim);
    let bundle_id = items.header.bundle_id.clone();
    let queries: Vec<&[f32]> = (0..args.queries.min(users.ids.len())).map(|row| users.row(row)).collect();
    let stored_queries: Vec<&[f32]> = (0..queries.len()).map(|row| &stored_users[row * dim..(row + 1) * dim]).collect();
    let k = args.k.min(items.ids.len());
    let started = Instant::now();
    let (factory, index) = match args.factory.as_str() {
        "file" => ("items.faiss".to_string(), FaissRetriever::read(&args.bundle.join("items.faiss"))?),
        other => {
            let factory = if other == "auto" { auto_factory(items.ids.len()) } else { other.to_string() };
            let index = build_index(&factory, dim, &stored_items)?;
            (factory, index)
        }
    };
    let build_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{factory} over {} items (dim {dim}) ready in {build_secs:.2} s; {} queries, recall@{k}",
        items.ids.len(),
        queries.len()
    );
    let exact = FaissRetriever::new(build_index("Flat", dim, &items.values)?, 1, 1, "Flat")?;
    let truth: Vec<std::collections::HashSet<usize>> = queries
        .iter()
        .map(|q| exact.search(q, k).map(|c| c.iter().map(|c| c.row).collect()))
        .collect::<Result<_, _>>()?;
    let mut points = Vec::new();
    let mut index = Some(index);
    for &nprobe in &args.nprobes {
        // Each nprobe gets its own pool built from a copy of the trained index.
        let source = index.take().ok_or_else(|| anyhow::anyhow!("index consumed"))?;
        let copy = faiss::index::TryClone::try_clone(&source)?;
        index = Some(source);
        let retriever = FaissRetriever::new(copy, args.threads, nprobe, &factory)?;
        let mut latencies = Vec::with_capacity(queries.len());
        let mut found = 0usize;
        for (query, truth) in stored_queries.iter().zip(&truth) {
            let t = Instant::now();
            let got = retriever.search(query, k)?;
            latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            found += got.iter().filter(|c| truth.contains(&c.row)).count();
        }
        let (p50_ms, p99_ms) = p50_p99(&mut latencies);
        let t = Instant::now();
        std::thread::scope(|scope| {
            for worker in 0..args.threads {
                let (retriever, queries) = (&retriever, &stored_queries);
                scope.spawn(move || {
                    for query in queries.iter().skip(worker).step_by(args.threads) {
                        let _ = retriever.search(query, k);
                    }
                });
            }
        });
        let qps = queries.len() as f64 / t.elapsed().as_secs_f64();
        let point = EvalPoint { nprobe, recall: found as f64 / (queries.len() * k) as f64, p50_ms, p99_ms, qps };
        eprintln!(
            "nprobe {:>5}: recall@{k} {:.4}  p50 {:.3} ms  p99 {:.3} ms  {:.0} queries/s on {} threads",
            point.nprobe, point.recall, point.p50_ms, point.p99_ms, point.qps, args.threads
        );
        points.push(point);
    }
    Ok(serde_json::json!({
        "bundle_id": bundle_id,
        "items": items.ids.len(),
        "dim": dim,
        "factory": factory,
        "build_secs": build_secs,
        "queries": queries.len(),
        "k": k,
        "threads": args.threads,
        "f16": args.f16,
        "points": points,
    }))
}
