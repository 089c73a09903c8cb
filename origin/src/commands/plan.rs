//! `cascade plan`: memory and shard counts for a deployment (the reference design's table).
//!
//! Raw embedding memory is `(users + items) · dim · bytes per value`, as in the reference design
//! (float32: 4 bytes; `--f16`: 2). Redis adds its per-key overhead on top: the figures here were
//! measured by `benches/scale.rs` (1M generated 128-dim users in 4 Redis 7 shards, `INFO memory`
//! before and after): 249 bytes per key beyond a 512-byte float32 value and 184 beyond a 256-byte
//! float16 one. They cover the ~55-byte key (`cascade:emb:u:<bundle id>:<user>`), the dict entry
//! and object headers, and jemalloc's size classes (a 515-byte string takes a 640-byte slot).
//!
//! FAISS: an IVF-Flat index holds every item vector as float32 plus an 8-byte id. Throughput per
//! core comes from `benches/retrieval.rs` (100K items, `IVF1265_HNSW32,Flat`, nprobe 16: about
//! 6,000 queries/s per core) and is scaled by `sqrt(100K / items)`, since with `4·sqrt(n)` lists and
//! a fixed nprobe a query scans vectors in proportion to `sqrt(n)`.
//!
//! The serving side, with `--qps` (requests/s at the edge), as the seed lesson's capacity plan
//! does it: the edge's segment cache answers `--edge-hit-rate` of them, the origin's L1/L2
//! `--cache-hit-rate` of the rest, and what remains are real-time lists (one FAISS query and
//! `--candidates` ranked rows each). Origin cores come from the rates measured here per core,
//! planned at 70% busy: `hit_path` for cache hits; for a real-time list, its ranking (from
//! `miss_path`'s highest open-loop rate at p99 <= 25 ms, which re-ranks 50 precomputed candidates,
//! scaled by `--candidates / 50`) plus its FAISS query (in process on the origin, at the FAISS
//! rate above). Checked against the Medium tier served (`benches/medium.rs`: 1M items, 100
//! candidates): the plan says 221 lists/s per core, 250/s were measured on 2 cores shared with the
//! load generator, so the plan is 77% optimistic there; before counting FAISS and the candidates
//! it was 300% optimistic. The ranker's capacity, should ranking move to its own machines
//! (`[ranker.remote]`), comes from `ranker` on CPU here and on an H200. Every rate is printed with
//! the benchmark it comes from.

use std::fmt::Write;

/// Measured Redis bytes per key beyond a float32 value (128 dims).
pub const REDIS_OVERHEAD_F32: u64 = 249;
/// Measured Redis bytes per key beyond a float16 value (128 dims).
pub const REDIS_OVERHEAD_F16: u64 = 184;
/// Measured FAISS queries/s per core at 100K items (nprobe 16, 128 dims).
pub const FAISS_QPS_PER_CORE_AT_100K: f64 = 6_000.0;
/// L1-hit answers/s per origin core: `hit_path`, 8,962/s on 2 cores shared with the client.
pub const HIT_LISTS_PER_CORE: f64 = 4_480.0;
/// Real-time lists/s per origin core at p99 <= 25 ms re-ranking [`MISS_PATH_CANDIDATES`]
/// precomputed candidates in process, with no FAISS query: `miss_path`'s `max_rate_p99_25ms`,
/// 1,000/s on 2 cores (Small tier).
pub const REALTIME_LISTS_PER_CORE: f64 = 500.0;
/// Candidates per list in `miss_path`.
pub const MISS_PATH_CANDIDATES: f64 = 50.0;
/// Ranker rows/s per CPU core: `ranker`, batched 100-row calls, 733,351 rows/s on 2 cores.
pub const RANKER_ROWS_PER_CORE: f64 = 366_675.0;
/// Ranker rows/s per GPU: `ranker` on an NVIDIA H200, batched 100-row calls (bound by the Rust
/// side, not the GPU: README "GPU").
pub const RANKER_ROWS_PER_H200: f64 = 2_104_153.0;
/// Share of a core or GPU the plan fills, leaving headroom for peaks and failover.
pub const BUSY: f64 = 0.7;

/// A plan's inputs.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput {
    /// Users.
    pub users: u64,
    /// Items.
    pub items: u64,
    /// Dimensions.
    pub dim: u64,
    /// Half-precision values.
    pub f16: bool,
    /// Usable memory per Redis node, bytes.
    pub node_memory: u64,
    /// Peak retrieval queries per second (0: not planned).
    pub qps: u64,
    /// Cores per retrieval node.
    pub cores_per_node: u64,
    /// Share of requests the edge's segment cache answers.
    pub edge_hit_rate: f64,
    /// Share of the origin's requests its L1/L2 answers.
    pub cache_hit_rate: f64,
    /// Candidates ranked per real-time list.
    pub candidates: u64,
    /// Cores per origin node.
    pub origin_cores: u64,
}

impl PlanInput {
    /// Memory only: no traffic, nothing cached, 64 GiB Redis nodes, 16-core retrieval nodes,
    /// 8-core origin nodes, 100 candidates.
    pub fn memory(users: u64, items: u64, dim: u64, f16: bool) -> Self {
        PlanInput {
            users,
            items,
            dim,
            f16,
            node_memory: 64 << 30,
            qps: 0,
            cores_per_node: 16,
            edge_hit_rate: 0.0,
            cache_hit_rate: 0.0,
            candidates: 100,
            origin_cores: 8,
        }
    }
}

/// Memory and shard counts for a deployment.
#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    /// Users.
    #[arg(long)]
    pub users: u64,
    /// Items.
    #[arg(long)]
    pub items: u64,
    /// Embedding dimensions.
    #[arg(long, default_value_t = 128)]
    pub dim: u64,
    /// Store values as float16.
    #[arg(long)]
    pub f16: bool,
    /// Usable memory per Redis node, GiB.
    #[arg(long, default_value_t = 64)]
    pub node_memory_gib: u64,
    /// Peak retrieval queries per second, for the FAISS node count.
    #[arg(long, default_value_t = 0)]
    pub qps: u64,
    /// Cores per retrieval node.
    #[arg(long, default_value_t = 16)]
    pub cores_per_node: u64,
    /// Share of --qps the edge's segment cache answers (the seed lesson's CDN: 0.3).
    #[arg(long, default_value_t = 0.3)]
    pub edge_hit_rate: f64,
    /// Share of the origin's requests its L1/L2 caches answer (the seed lesson's: 0.6).
    #[arg(long, default_value_t = 0.6)]
    pub cache_hit_rate: f64,
    /// Candidates ranked per real-time list (`retrieval.candidates`).
    #[arg(long, default_value_t = 100)]
    pub candidates: u64,
    /// Cores per origin node.
    #[arg(long, default_value_t = 8)]
    pub origin_cores: u64,
}

impl PlanArgs {
    /// The plan's inputs, validated.
    pub fn input(&self) -> anyhow::Result<PlanInput> {
        anyhow::ensure!(
            self.dim > 0 && self.users + self.items > 0 && self.node_memory_gib > 0,
            "--users/--items, --dim and --node-memory-gib must be positive"
        );
        anyhow::ensure!(self.cores_per_node > 0, "--cores-per-node must be positive");
        anyhow::ensure!(self.origin_cores > 0, "--origin-cores must be positive");
        for (name, rate) in [("--edge-hit-rate", self.edge_hit_rate), ("--cache-hit-rate", self.cache_hit_rate)] {
            anyhow::ensure!((0.0..=1.0).contains(&rate), "{name} must be within 0..=1 (a share)");
        }
        anyhow::ensure!((1..=10_000).contains(&self.candidates), "--candidates must be within 1..=10000");
        Ok(PlanInput {
            users: self.users,
            items: self.items,
            dim: self.dim,
            f16: self.f16,
            node_memory: self.node_memory_gib << 30,
            qps: self.qps,
            cores_per_node: self.cores_per_node,
            edge_hit_rate: self.edge_hit_rate,
            cache_hit_rate: self.cache_hit_rate,
            candidates: self.candidates,
            origin_cores: self.origin_cores,
        })
    }
}

/// A plan's figures.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Plan {
    /// `(users + items) · dim · bytes`.
    pub raw_bytes: u64,
    /// Raw plus per-key overhead.
    pub redis_bytes: u64,
    /// Shards needed at `node_memory` each, at most 70% full.
    pub shards: u64,
    /// FAISS IVF-Flat index size.
    pub faiss_bytes: u64,
    /// Retrieval nodes for the real-time lists' queries (each holding the whole index), at least 1.
    pub faiss_nodes: u64,
    /// Requests/s reaching the origin (edge misses and signed-in users).
    pub origin_rps: f64,
    /// Real-time lists/s (origin cache misses).
    pub realtime_rps: f64,
    /// Origin nodes (at `origin_cores` each, 70% busy, ranking in process), at least 1.
    pub origin_nodes: u64,
    /// Rows/s the ranker scores.
    pub ranker_rows_per_s: f64,
    /// CPU cores to rank them on machines of their own (70% busy).
    pub ranker_cpu_cores: u64,
    /// H200 GPUs to rank them (70% busy).
    pub ranker_gpus: u64,
}

/// FAISS queries/s per core over `items` (IVF with about `4·sqrt(n)` lists, nprobe 16).
pub fn faiss_qps_per_core(items: u64) -> f64 {
    FAISS_QPS_PER_CORE_AT_100K * (100_000.0 / items.max(1) as f64).sqrt()
}

/// Real-time lists/s per origin core: ranking `candidates` rows in process plus one FAISS query
/// over `items`.
pub fn realtime_lists_per_core(items: u64, candidates: u64) -> f64 {
    let ranking = candidates as f64 / MISS_PATH_CANDIDATES / REALTIME_LISTS_PER_CORE;
    1.0 / (ranking + 1.0 / faiss_qps_per_core(items))
}

/// Computes a plan.
pub fn plan(input: PlanInput) -> Plan {
    let bytes_per_value = if input.f16 { 2 } else { 4 };
    let keys = input.users + input.items;
    let raw_bytes = keys * input.dim * bytes_per_value;
    let overhead = if input.f16 { REDIS_OVERHEAD_F16 } else { REDIS_OVERHEAD_F32 };
    let redis_bytes = raw_bytes + keys * overhead;
    let usable = (input.node_memory as f64 * 0.7) as u64;
    let shards = redis_bytes.div_ceil(usable.max(1)).max(1);
    let faiss_bytes = input.items * (input.dim * 4 + 8);
    let per_core = faiss_qps_per_core(input.items);
    let per_node = per_core * input.cores_per_node.max(1) as f64;
    let origin_rps = input.qps as f64 * (1.0 - input.edge_hit_rate);
    let realtime_rps = origin_rps * (1.0 - input.cache_hit_rate);
    let faiss_nodes = ((realtime_rps / per_node).ceil() as u64).max(1);
    let realtime_per_core = realtime_lists_per_core(input.items, input.candidates);
    let origin_core_seconds = (origin_rps - realtime_rps) / HIT_LISTS_PER_CORE + realtime_rps / realtime_per_core;
    let origin_nodes = ((origin_core_seconds / BUSY / input.origin_cores.max(1) as f64).ceil() as u64).max(1);
    let ranker_rows_per_s = realtime_rps * input.candidates as f64;
    let ranker_cpu_cores = (ranker_rows_per_s / RANKER_ROWS_PER_CORE / BUSY).ceil() as u64;
    let ranker_gpus = (ranker_rows_per_s / RANKER_ROWS_PER_H200 / BUSY).ceil() as u64;
    Plan {
        raw_bytes,
        redis_bytes,
        shards,
        faiss_bytes,
        faiss_nodes,
        origin_rps,
        realtime_rps,
        origin_nodes,
        ranker_rows_per_s,
        ranker_cpu_cores,
        ranker_gpus,
    }
}

fn human(bytes: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", units[unit])
}

/// The table `cascade plan` prints: the reference tiers, then the caller's deployment.
pub fn render(input: PlanInput) -> String {
    let mut out = String::new();
    let tiers = [
        ("Small", 1_000_000, 100_000, 128),
        ("Medium", 10_000_000, 1_000_000, 128),
        ("Large", 100_000_000, 10_000_000, 128),
        ("Massive", 1_000_000_000, 100_000_000, 256),
    ];
    let _ = writeln!(
        out,
        "{:<10} {:>14} {:>12} {:>5} {:>12} {:>12} {:>7} {:>11} {:>11}",
        "tier", "users", "items", "dim", "raw", "redis", "shards", "faiss", "faiss nodes"
    );
    let rows = tiers
        .iter()
        .map(|&(name, users, items, dim)| (name, PlanInput { users, items, dim, ..input }))
        .chain([("this", input)]);
    for (name, tier) in rows {
        let p = plan(tier);
        let _ = writeln!(
            out,
            "{name:<10} {:>14} {:>12} {:>5} {:>12} {:>12} {:>7} {:>11} {:>11}",
            tier.users,
            tier.items,
            tier.dim,
            human(p.raw_bytes),
            human(p.redis_bytes),
            p.shards,
            human(p.faiss_bytes),
            p.faiss_nodes
        );
    }
    let _ = writeln!(
        out,
        "values: {}; Redis overhead {} B/key (measured: benches/scale.rs); shards at {} per node, 70% full",
        if input.f16 { "float16" } else { "float32" },
        if input.f16 { REDIS_OVERHEAD_F16 } else { REDIS_OVERHEAD_F32 },
        human(input.node_memory)
    );
    let _ = writeln!(
        out,
        "faiss: IVF-Flat (float32 + 8-byte id per item); nodes for the real-time lists' queries at {} cores each, \
         {FAISS_QPS_PER_CORE_AT_100K} q/s per core at 100K items (benches/retrieval.rs) scaled by sqrt(100K/items)",
        input.cores_per_node
    );
    if input.qps > 0 {
        let p = plan(input);
        let _ = writeln!(
            out,
            "serving {} req/s: the edge answers {:.0}%, the origin gets {:.0}/s; its L1/L2 answer {:.0}%, \
             leaving {:.0} real-time lists/s ({} candidates each)",
            input.qps,
            input.edge_hit_rate * 100.0,
            p.origin_rps,
            input.cache_hit_rate * 100.0,
            p.realtime_rps,
            input.candidates
        );
        let _ = writeln!(
            out,
            "  origin: {} nodes of {} cores (cache hits at {HIT_LISTS_PER_CORE}/s per core, benches/hit_path.rs; \
             real-time lists at {:.0}/s per core: ranking {} candidates in process, {REALTIME_LISTS_PER_CORE}/s per core \
             at {MISS_PATH_CANDIDATES}, benches/miss_path.rs, and the FAISS query in process; {:.0}% busy)",
            p.origin_nodes,
            input.origin_cores,
            realtime_lists_per_core(input.items, input.candidates),
            input.candidates,
            BUSY * 100.0
        );
        let _ = writeln!(
            out,
            "  ranker on its own machines: {:.0} rows/s = {} CPU cores ({RANKER_ROWS_PER_CORE} rows/s per core) \
             or {} H200 GPUs ({RANKER_ROWS_PER_H200} rows/s each, batched 100-row calls), benches/ranker.rs",
            p.ranker_rows_per_s, p.ranker_cpu_cores, p.ranker_gpus
        );
        let _ = writeln!(
            out,
            "  faiss, should retrieval run apart: {} nodes, each with the whole index; redis: {} shards",
            p.faiss_nodes, p.shards
        );
    }
    out
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
