//! A short, stable-toolchain run of every fuzz target: first the corpus under `corpus/<target>/`
//! (the seeds, and every input a long run ever crashed on: regressions), then generated inputs
//! (random bytes and byte-level mutations of the seeds) for `FUZZ_SMOKE_SECS` seconds per target
//! (default 1). The long, coverage-guided runs are `scripts/fuzz.sh`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cascade_shared::stats::SplitMix64;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .map(|entries| entries.filter_map(|e| std::fs::read(e.ok()?.path()).ok()).collect())
        .unwrap_or_default();
    inputs.sort();
    inputs
}

/// One generated input: random bytes, or a seed with a few bytes changed, cut or repeated.
fn generate(rng: &mut SplitMix64, seeds: &[Vec<u8>]) -> Vec<u8> {
    if seeds.is_empty() || rng.below(4) == 0 {
        let len = rng.below(256);
        return (0..len).map(|_| rng.next_u64() as u8).collect();
    }
    let mut input = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        match rng.below(4) {
            0 if !input.is_empty() => {
                let at = rng.below(input.len());
                input[at] = rng.next_u64() as u8;
            }
            1 if !input.is_empty() => input.truncate(rng.below(input.len())),
            2 => {
                let at = rng.below(input.len() + 1);
                let specials = b"\n.:%\"\\{}[]0-9";
                input.insert(at, specials[rng.below(specials.len())]);
            }
            _ => {
                let tail = input[rng.below(input.len() + 1)..].to_vec();
                input.extend_from_slice(&tail);
            }
        }
    }
    input
}

#[test]
fn every_target_survives_its_corpus_and_generated_inputs() {
    let seconds: f64 = std::env::var("FUZZ_SMOKE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    for (name, target) in cascade_fuzz::TARGETS {
        let seeds = corpus(name);
        for input in &seeds {
            target(input);
        }
        let mut rng = SplitMix64::new(0x5eed ^ name.len() as u64);
        let until = Instant::now() + Duration::from_secs_f64(seconds);
        let mut runs = 0u64;
        while Instant::now() < until {
            target(&generate(&mut rng, &seeds));
            runs += 1;
        }
        eprintln!("{name}: {} corpus inputs, {runs} generated inputs in {seconds} s", seeds.len());
        assert!(runs > 0);
    }
}
