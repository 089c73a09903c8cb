//! A/B experiment settings and the users' assignment to variants: pure, so the configuration and
//! the serving side (`crate::app::variants`) share it.

use cascade_shared::hashing::stable_hash64;
use serde::Deserialize;

/// `[[variants]]` in the configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantConfig {
    /// Its name (an id: `A-Za-z0-9_.-`).
    pub name: String,
    /// Its share of users, relative to the other variants' weights.
    pub weight: f64,
    /// Its bundle folder; absent: the configured `bundle`.
    #[serde(default)]
    pub bundle: Option<std::path::PathBuf>,
}

/// `user_id`'s place in [0, 1) for `salt`.
pub fn assignment_point(salt: &str, user_id: &str) -> f64 {
    let hash = stable_hash64(format!("{salt}\u{0}{user_id}").as_bytes());
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// Checks the variants' configuration: unique valid names, positive finite weights.
pub fn validate(variants: &[VariantConfig]) -> Result<(), (String, String)> {
    for (index, variant) in variants.iter().enumerate() {
        let field = format!("variants[{index}]");
        cascade_shared::validate::validate_id("name", &variant.name)
            .map_err(|e| (format!("{field}.name"), e.message))?;
        if !(variant.weight.is_finite() && variant.weight > 0.0) {
            return Err((format!("{field}.weight"), "must be a positive number".into()));
        }
        if variants[..index].iter().any(|v| v.name == variant.name) {
            return Err((format!("{field}.name"), format!("{:?} is used twice", variant.name)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(weights: &[f64], salt: &str, users: usize) -> Vec<usize> {
        let total: f64 = weights.iter().sum();
        let mut counts = vec![0; weights.len()];
        for u in 0..users {
            let point = assignment_point(salt, &format!("user-{u}")) * total;
            let mut cumulative = 0.0;
            let arm = weights.iter().position(|w| {
                cumulative += w;
                point < cumulative
            });
            counts[arm.unwrap_or(weights.len() - 1)] += 1;
        }
        counts
    }

    #[test]
    fn ten_thousand_users_split_within_two_percent_of_the_weights() {
        for (weights, salt) in [(vec![0.5, 0.5], "exp-1"), (vec![0.7, 0.3], "exp-2"), (vec![1.0, 1.0, 2.0], "x")] {
            let counts = split(&weights, salt, 10_000);
            let total: f64 = weights.iter().sum();
            for (count, weight) in counts.iter().zip(&weights) {
                let (share, want) = (*count as f64 / 10_000.0, weight / total);
                assert!((share - want).abs() < 0.02, "{weights:?} {salt}: {counts:?}");
            }
        }
    }

    #[test]
    fn assignment_is_sticky_and_the_salt_reshuffles_it() {
        assert_eq!(assignment_point("s", "u1"), assignment_point("s", "u1"));
        let moved = (0..1000).filter(|u| {
            let id = format!("u{u}");
            (assignment_point("a", &id) < 0.5) != (assignment_point("b", &id) < 0.5)
        });
        let moved = moved.count();
        assert!((400..600).contains(&moved), "a new salt reassigns about half: {moved}");
        assert!((0..1000).all(|u| (0.0..1.0).contains(&assignment_point("a", &format!("u{u}")))));
    }

    #[test]
    fn bad_variant_configs_name_the_field() {
        let variant = |name: &str, weight: f64| VariantConfig { name: name.into(), weight, bundle: None };
        assert!(validate(&[variant("a", 1.0), variant("b", 2.0)]).is_ok());
        assert_eq!(validate(&[variant("a", 0.0)]).unwrap_err().0, "variants[0].weight");
        assert_eq!(validate(&[variant("a", 1.0), variant("a", 1.0)]).unwrap_err().0, "variants[1].name");
        assert_eq!(validate(&[variant("bad name", 1.0)]).unwrap_err().0, "variants[0].name");
        assert_eq!(validate(&[variant("a", f64::NAN)]).unwrap_err().0, "variants[0].weight");
    }
}
