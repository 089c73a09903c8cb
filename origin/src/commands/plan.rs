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

use std::fmt::Write;

/// Measured Redis bytes per key beyond a float32 value (128 dims).
pub const REDIS_OVERHEAD_F32: u64 = 249;
/// Measured Redis bytes per key beyond a float16 value (128 dims).
pub const REDIS_OVERHEAD_F16: u64 = 184;
/// Measured FAISS queries/s per core at 100K items (nprobe 16, 128 dims).
pub const FAISS_QPS_PER_CORE_AT_100K: f64 = 6_000.0;

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
}

impl PlanArgs {
    /// The plan's inputs, validated.
    pub fn input(&self) -> anyhow::Result<PlanInput> {
        anyhow::ensure!(
            self.dim > 0 && self.users + self.items > 0 && self.node_memory_gib > 0,
            "--users/--items, --dim and --node-memory-gib must be positive"
        );
        anyhow::ensure!(self.cores_per_node > 0, "--cores-per-node must be positive");
        Ok(PlanInput {
            users: self.users,
            items: self.items,
            dim: self.dim,
            f16: self.f16,
            node_memory: self.node_memory_gib << 30,
            qps: self.qps,
            cores_per_node: self.cores_per_node,
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
    /// Retrieval nodes for `qps` (each holding the whole index), at least 1.
    pub faiss_nodes: u64,
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
    let per_core = FAISS_QPS_PER_CORE_AT_100K * (100_000.0 / input.items.max(1) as f64).sqrt();
    let per_node = per_core * input.cores_per_node.max(1) as f64;
    let faiss_nodes = ((input.qps as f64 / per_node).ceil() as u64).max(1);
    Plan { raw_bytes, redis_bytes, shards, faiss_bytes, faiss_nodes }
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
        "faiss: IVF-Flat (float32 + 8-byte id per item); nodes for {} queries/s at {} cores each, \
         {FAISS_QPS_PER_CORE_AT_100K} q/s per core at 100K items (benches/retrieval.rs) scaled by sqrt(100K/items)",
        input.qps, input.cores_per_node
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(users: u64, items: u64, dim: u64) -> u64 {
        plan(PlanInput { users, items, dim, f16: false, node_memory: 64 << 30, qps: 0, cores_per_node: 16 }).raw_bytes
    }

    #[test]
    fn reproduces_the_reference_tiers() {
        assert_eq!(raw(1_000_000, 100_000, 128), 563_200_000); // ~560 MB
        assert_eq!(raw(10_000_000, 1_000_000, 128), 5_632_000_000); // ~5.6 GB
        assert_eq!(raw(100_000_000, 10_000_000, 128), 56_320_000_000); // ~56 GB
        assert_eq!(raw(1_000_000_000, 100_000_000, 256), 1_126_400_000_000); // ~1.1 TB
    }

    #[test]
    fn f16_halves_and_shards_scale() {
        let input = PlanInput {
            users: 100_000_000,
            items: 10_000_000,
            dim: 128,
            f16: false,
            node_memory: 16 << 30,
            qps: 100_000,
            cores_per_node: 16,
        };
        let half = plan(PlanInput { f16: true, ..input });
        assert_eq!(half.raw_bytes * 2, plan(input).raw_bytes);
        assert!(plan(input).shards > half.shards);
        assert!(render(input).contains("Massive"));
        // 110M keys at 512 + 249 bytes; IVF index of 10M items.
        assert_eq!(plan(input).redis_bytes, 110_000_000 * (512 + 249));
        assert_eq!(plan(input).faiss_bytes, 10_000_000 * 520);
        // 100K q/s at 6,000·sqrt(0.01) = 600 q/s per core, 16 cores: 11 nodes.
        assert_eq!(plan(input).faiss_nodes, 11);
    }

    #[test]
    fn measured_small_tier_matches_the_plan() {
        // benches/scale.rs: 1M float32 users took 760.8 MB of Redis; the plan says 761 MB.
        let users = plan(PlanInput {
            users: 1_000_000,
            items: 0,
            dim: 128,
            f16: false,
            node_memory: 64 << 30,
            qps: 0,
            cores_per_node: 16,
        });
        assert_eq!(users.redis_bytes, 761_000_000);
    }
}
