//! Tests of `cascade plan`: the reference tiers, the measured overheads and rates.

use super::*;

fn base(users: u64, items: u64, dim: u64) -> PlanInput {
    PlanInput::memory(users, items, dim, false)
}

fn raw(users: u64, items: u64, dim: u64) -> u64 {
    plan(base(users, items, dim)).raw_bytes
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
    let input = PlanInput { node_memory: 16 << 30, qps: 100_000, ..base(100_000_000, 10_000_000, 128) };
    let half = plan(PlanInput { f16: true, ..input });
    assert_eq!(half.raw_bytes * 2, plan(input).raw_bytes);
    assert!(plan(input).shards > half.shards);
    assert!(render(input).contains("Massive"));
    // 110M keys at 512 + 249 bytes; IVF index of 10M items.
    assert_eq!(plan(input).redis_bytes, 110_000_000 * (512 + 249));
    assert_eq!(plan(input).faiss_bytes, 10_000_000 * 520);
    // Nothing cached: 100K real-time q/s at 6,000·sqrt(0.01) = 600 q/s per core, 16 cores: 11 nodes.
    assert_eq!(plan(input).faiss_nodes, 11);
}

#[test]
fn the_seed_lessons_deployment_sized_from_rates_measured_here() {
    // 100M users, 50K req/s, 30% answered at the edge, 60% of the rest by L1/L2.
    let input = PlanInput {
        qps: 50_000,
        edge_hit_rate: 0.3,
        cache_hit_rate: 0.6,
        f16: true,
        node_memory: 16 << 30,
        ..base(100_000_000, 10_000_000, 128)
    };
    let p = plan(input);
    assert!((p.origin_rps - 35_000.0).abs() < 1e-6 && (p.realtime_rps - 14_000.0).abs() < 1e-6);
    // 21,000 hits / 4,480 + 14,000 real-time · (100/50 / 500 + 1 / 600 FAISS) = 84.0
    // core-seconds; at 70% of 8 cores: 16 nodes.
    assert_eq!(p.origin_nodes, 16);
    // 1.4M rows/s: 6 CPU cores at 366,675 rows/s each, or 1 H200 at 2.1M (70% busy).
    assert_eq!((p.ranker_cpu_cores, p.ranker_gpus), (6, 1));
    // 14,000 queries/s at 9,600 per 16-core node: 2 FAISS nodes.
    assert_eq!(p.faiss_nodes, 2);
    let text = render(input);
    assert!(text.contains("16 nodes of 8 cores") && text.contains("1 H200"), "{text}");
    assert!(text.contains("benches/miss_path.rs") && text.contains("benches/ranker.rs"), "{text}");
    // No traffic: no serving lines.
    assert!(!render(PlanInput { qps: 0, ..input }).contains("origin:"));
}

#[test]
fn real_time_lists_per_core_against_the_medium_tier() {
    // miss_path's own case: 50 candidates, the Small tier's 100K items.
    let small = realtime_lists_per_core(100_000, 50);
    assert!((small - 1.0 / (1.0 / 500.0 + 1.0 / 6_000.0)).abs() < 1e-9);
    // benches/medium.rs measured 250/s on 2 cores (1M items, 100 candidates): the plan's 221
    // per core is 77% optimistic there.
    let medium = realtime_lists_per_core(1_000_000, 100);
    assert!((220.0..222.0).contains(&medium), "{medium}");
    assert!(((2.0 * medium - 250.0) / 250.0 * 100.0 - 77.0).abs() < 1.0);
}

#[test]
fn measured_small_tier_matches_the_plan() {
    // benches/scale.rs: 1M float32 users took 760.8 MB of Redis; the plan says 761 MB.
    assert_eq!(plan(base(1_000_000, 0, 128)).redis_bytes, 761_000_000);
}
