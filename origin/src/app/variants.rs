//! A/B variants: several bundles served at once, each user assigned to one by a salted hash of
//! their id with configured weights: sticky without storage, the same on every origin process.
//!
//! The first variant is the control: it also answers segment lists (anonymous visitors at the
//! edge), `/readyz` and everything that is not a user's list. A variant's lists carry its name
//! (`variant` in the answer and in the feature log) and are counted under
//! `cascade_variant_lists_total{variant}`; cache keys carry the bundle id, so variants with
//! different bundles never share a cached list. `cascade report --feature-log DIR` reports
//! click-through per variant.

use std::sync::Arc;

use super::Serving;
use crate::experiment::assignment_point;

/// One variant being served.
pub struct Arm {
    /// Its name.
    pub name: String,
    /// Its weight.
    pub weight: f64,
    /// Its recommender (reloadable on its own).
    pub serving: Arc<Serving>,
}

/// The variants, or one unnamed arm when there is no experiment.
pub struct Variants {
    arms: Vec<Arm>,
    salt: String,
    total: f64,
}

impl Variants {
    /// No experiment: every user gets `serving`, and answers carry no variant.
    pub fn single(serving: Arc<Serving>) -> Self {
        Variants { arms: vec![Arm { name: String::new(), weight: 1.0, serving }], salt: String::new(), total: 1.0 }
    }

    /// An experiment over `arms` (at least one, positive weights), assigned with `salt`.
    pub fn new(arms: Vec<Arm>, salt: &str) -> Self {
        let total = arms.iter().map(|a| a.weight).sum();
        Variants { arms, salt: salt.to_string(), total }
    }

    /// Whether answers are named by variant.
    pub fn is_experiment(&self) -> bool {
        self.arms.len() > 1 || self.arms.first().is_some_and(|a| !a.name.is_empty())
    }

    /// The arms, control first.
    pub fn arms(&self) -> &[Arm] {
        &self.arms
    }

    /// The arm named `name`.
    pub fn get(&self, name: &str) -> Option<&Arm> {
        self.arms.iter().find(|a| a.name == name)
    }

    /// `user_id`'s arm: where `hash(salt, user_id)`, as a fraction of 2^64, falls among the
    /// cumulative weights.
    pub fn assign(&self, user_id: &str) -> &Arm {
        let point = assignment_point(&self.salt, user_id) * self.total;
        let mut cumulative = 0.0;
        for arm in &self.arms {
            cumulative += arm.weight;
            if point < cumulative {
                return arm;
            }
        }
        self.arms.last().unwrap_or_else(|| unreachable!("Variants always has an arm"))
    }
}
