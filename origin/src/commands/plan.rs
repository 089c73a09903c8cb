//! `cascade plan`: memory and shard counts for a deployment (the reference design's table).
//!
//! Raw embedding memory is `(users + items) · dim · bytes per value`, as in the reference design
//! (float32: 4 bytes; `--f16`: 2). Redis adds its per-key overhead on top; the figure used here
//! (`REDIS_OVERHEAD_BYTES` per key: dict entry, robj, SDS headers for a ~30-byte key and the value,
//! jemalloc rounding) is an estimate to be replaced by the data-plane issue's measurement.

use std::fmt::Write;

/// Estimated Redis bytes per key beyond the value itself.
pub const REDIS_OVERHEAD_BYTES: u64 = 90;

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
}

/// A plan's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// `(users + items) · dim · bytes`.
    pub raw_bytes: u64,
    /// Raw plus per-key overhead.
    pub redis_bytes: u64,
    /// Shards needed at `node_memory` each, at most 70% full.
    pub shards: u64,
}

/// Computes a plan.
pub fn plan(input: PlanInput) -> Plan {
    let bytes_per_value = if input.f16 { 2 } else { 4 };
    let keys = input.users + input.items;
    let raw_bytes = keys * input.dim * bytes_per_value;
    let redis_bytes = raw_bytes + keys * REDIS_OVERHEAD_BYTES;
    let usable = (input.node_memory as f64 * 0.7) as u64;
    let shards = redis_bytes.div_ceil(usable.max(1)).max(1);
    Plan { raw_bytes, redis_bytes, shards }
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
        "{:<10} {:>14} {:>12} {:>5} {:>12} {:>14} {:>7}",
        "tier", "users", "items", "dim", "raw", "redis (est.)", "shards"
    );
    let rows = tiers
        .iter()
        .map(|&(name, users, items, dim)| (name, PlanInput { users, items, dim, ..input }))
        .chain([("this", input)]);
    for (name, tier) in rows {
        let p = plan(tier);
        let _ = writeln!(
            out,
            "{name:<10} {:>14} {:>12} {:>5} {:>12} {:>14} {:>7}",
            tier.users,
            tier.items,
            tier.dim,
            human(p.raw_bytes),
            human(p.redis_bytes),
            p.shards
        );
    }
    let _ = writeln!(
        out,
        "values: {}; Redis overhead estimate {REDIS_OVERHEAD_BYTES} B/key; shards at {} per node, 70% full",
        if input.f16 { "float16" } else { "float32" },
        human(input.node_memory)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(users: u64, items: u64, dim: u64) -> u64 {
        plan(PlanInput { users, items, dim, f16: false, node_memory: 64 << 30 }).raw_bytes
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
        let input = PlanInput { users: 100_000_000, items: 10_000_000, dim: 128, f16: false, node_memory: 16 << 30 };
        let half = plan(PlanInput { f16: true, ..input });
        assert_eq!(half.raw_bytes * 2, plan(input).raw_bytes);
        assert!(plan(input).shards > half.shards);
        assert!(render(input).contains("Massive"));
    }
}
