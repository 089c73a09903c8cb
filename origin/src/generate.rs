//! Deterministic, clustered embeddings at any scale, for the capacity tiers and benchmarks.
//!
//! `users=N,items=M,dim=D[,clusters=K][,seed=S]`: K unit-norm cluster centres; item `i{n}` belongs
//! to a cluster picked by the stable hash of `(seed, n)` and is its centre plus noise; user `u{n}`
//! likes one or two clusters and is the mean of their centres plus noise. Every row is derived from
//! `(seed, kind, index)` alone, so rows can be produced in any order, in parallel, or again after an
//! interruption, and two runs with the same spec write identical bytes. Neighbours of a user are
//! the items of the clusters they like, so retrieval recall is meaningful (uniform random vectors
//! have no neighbours worth finding).

use cascade_shared::hashing::stable_hash64;
use cascade_shared::stats::SplitMix64;

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenSpec {
    /// Users (`u0`..).
    pub users: u64,
    /// Items (`i0`..).
    pub items: u64,
    /// Dimensions.
    pub dim: usize,
    /// Cluster centres.
    pub clusters: u64,
    /// Seed.
    pub seed: u64,
}

impl GenSpec {
    /// Parses `users=…,items=…,dim=…[,clusters=…][,seed=…]`; errors name the field.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (mut users, mut items, mut dim, mut clusters, mut seed) = (None, None, None, None, 7u64);
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').ok_or(format!("expected name=value, got {part:?}"))?;
            let number: u64 = value
                .replace('_', "")
                .parse()
                .map_err(|_| format!("{name} must be a non-negative integer, got {value:?}"))?;
            match name {
                "users" => users = Some(number),
                "items" => items = Some(number),
                "dim" => dim = Some(number),
                "clusters" => clusters = Some(number),
                "seed" => seed = number,
                other => return Err(format!("unknown field {other:?} (users, items, dim, clusters, seed)")),
            }
        }
        let users = users.ok_or("users is required")?;
        let items = items.ok_or("items is required")?;
        let dim = dim.ok_or("dim is required")?;
        if !(1..=4096).contains(&dim) {
            return Err(format!("dim must be 1..=4096, got {dim}"));
        }
        if items == 0 {
            return Err("items must be positive".into());
        }
        // About 400 items per cluster by default: tight enough that a user's top 100 lie in their clusters.
        let clusters = clusters.unwrap_or((items / 400).clamp(1, 4096));
        if clusters == 0 || clusters > items {
            return Err(format!("clusters must be 1..=items, got {clusters}"));
        }
        Ok(GenSpec { users, items, dim: dim as usize, clusters, seed })
    }

    /// The bundle id generated data is written under.
    pub fn bundle_id(&self) -> String {
        format!("gen-u{}-i{}-d{}-k{}-s{}", self.users, self.items, self.dim, self.clusters, self.seed)
    }
}

fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

/// The generator: holds the cluster centres.
pub struct Generator {
    spec: GenSpec,
    centres: Vec<f32>,
}

/// Noise added to a centre, relative to the unit-norm centre.
const NOISE: f32 = 0.45;

impl Generator {
    /// Builds the centres for `spec`.
    pub fn new(spec: GenSpec) -> Self {
        let mut centres = Vec::with_capacity(spec.clusters as usize * spec.dim);
        for k in 0..spec.clusters {
            let mut rng = SplitMix64::new(spec.seed ^ stable_hash64(format!("centre:{k}").as_bytes()));
            let mut centre: Vec<f32> = (0..spec.dim).map(|_| rng.normal()).collect();
            normalize(&mut centre);
            centres.extend(centre);
        }
        Generator { spec, centres }
    }

    /// The spec.
    pub fn spec(&self) -> GenSpec {
        self.spec
    }

    fn centre(&self, k: u64) -> &[f32] {
        let start = k as usize * self.spec.dim;
        &self.centres[start..start + self.spec.dim]
    }

    /// The cluster item `n` belongs to.
    pub fn item_cluster(&self, n: u64) -> u64 {
        stable_hash64(format!("{}:item:{n}", self.spec.seed).as_bytes()) % self.spec.clusters
    }

    /// Item `n`'s vector.
    pub fn item(&self, n: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(self.spec.seed ^ stable_hash64(format!("item:{n}").as_bytes()));
        let centre = self.centre(self.item_cluster(n));
        let scale = NOISE / (self.spec.dim as f32).sqrt();
        let mut v: Vec<f32> = centre.iter().map(|c| c + scale * rng.normal()).collect();
        normalize(&mut v);
        v
    }

    /// User `n`'s vector: one or two liked clusters, plus noise.
    pub fn user(&self, n: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(self.spec.seed ^ stable_hash64(format!("user:{n}").as_bytes()));
        let liked = 1 + (rng.next_u64() % 2);
        let mut v = vec![0f32; self.spec.dim];
        for _ in 0..liked {
            let centre = self.centre(rng.next_u64() % self.spec.clusters);
            v.iter_mut().zip(centre).for_each(|(x, c)| *x += c);
        }
        let scale = NOISE / (self.spec.dim as f32).sqrt();
        v.iter_mut().for_each(|x| *x += scale * rng.normal());
        normalize(&mut v);
        v
    }

    /// Rows `range` of `kind` as `(id, vector)` pairs.
    pub fn rows(&self, kind: cascade_shared::keys::EntityKind, range: std::ops::Range<u64>) -> Vec<(String, Vec<f32>)> {
        use cascade_shared::keys::EntityKind;
        range
            .map(|n| match kind {
                EntityKind::User => (format!("u{n}"), self.user(n)),
                EntityKind::Item => (format!("i{n}"), self.item(n)),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parsing_names_the_field() {
        let spec = GenSpec::parse("users=1_000_000,items=100000,dim=128").unwrap();
        assert_eq!((spec.users, spec.items, spec.dim, spec.clusters, spec.seed), (1_000_000, 100_000, 128, 250, 7));
        assert!(GenSpec::parse("users=1,dim=8").unwrap_err().contains("items"));
        assert!(GenSpec::parse("users=1,items=2,dim=0").unwrap_err().contains("dim"));
        assert!(GenSpec::parse("users=x,items=2,dim=4").unwrap_err().contains("users"));
        assert!(GenSpec::parse("users=1,items=2,dim=4,colour=3").unwrap_err().contains("colour"));
        assert!(GenSpec::parse("users=1,items=2,dim=4,clusters=3").unwrap_err().contains("clusters"));
    }

    #[test]
    fn deterministic_unit_norm_and_clustered() {
        let spec = GenSpec::parse("users=100,items=2000,dim=32,clusters=10,seed=3").unwrap();
        let (a, b) = (Generator::new(spec), Generator::new(spec));
        assert_eq!(a.item(17), b.item(17));
        assert_eq!(a.user(5), b.user(5));
        assert_ne!(a.item(17), Generator::new(GenSpec { seed: 4, ..spec }).item(17));
        let norm: f32 = a.item(3).iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4);
        // Items of one cluster are closer to each other than to other clusters' items.
        let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
        let (mut same, mut other) = (Vec::new(), Vec::new());
        for n in 1..400 {
            let d = dot(&a.item(0), &a.item(n));
            if a.item_cluster(n) == a.item_cluster(0) { same.push(d) } else { other.push(d) }
        }
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        assert!(mean(&same) > 0.6 && mean(&other).abs() < 0.2, "{} vs {}", mean(&same), mean(&other));
    }
}
