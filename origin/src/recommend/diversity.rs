//! Diversity re-rank by maximal marginal relevance (Carbonell & Goldstein, 1998): the next item is
//! the one with the best `(1 - λ)·relevance - λ·(largest cosine similarity to an item already
//! placed)`, relevance being the ranker's score scaled to 0..1 over the pool. `λ = 0` keeps the
//! ranker's order; `λ = 1` ignores relevance. Pure: the rules stage gives it the items' vectors.

/// The pool's order after the re-rank, as indices into `scores` (and `vectors`). An item without a
/// vector is similar to nothing.
pub fn mmr_order(scores: &[f32], vectors: &[Option<Vec<f32>>], lambda: f32) -> Vec<usize> {
    let count = scores.len();
    let unit: Vec<Option<Vec<f32>>> = vectors
        .iter()
        .map(|v| {
            v.as_ref().and_then(|v| {
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                (norm > 0.0).then(|| v.iter().map(|x| x / norm).collect())
            })
        })
        .collect();
    let (low, high) = scores.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &s| (l.min(s), h.max(s)));
    let span = if high > low { high - low } else { 1.0 };
    let relevance: Vec<f32> = scores.iter().map(|s| (s - low) / span).collect();
    // The largest similarity of each item to the items placed so far.
    let mut closest = vec![0.0f32; count];
    let mut placed = vec![false; count];
    let mut order = Vec::with_capacity(count);
    for _ in 0..count {
        let gain = |i: usize| (1.0 - lambda) * relevance[i] - lambda * closest[i];
        let Some(next) =
            (0..count).filter(|&i| !placed[i]).max_by(|&a, &b| gain(a).total_cmp(&gain(b)).then(b.cmp(&a)))
        else {
            break;
        };
        placed[next] = true;
        order.push(next);
        if let Some(chosen) = &unit[next] {
            for (i, other) in unit.iter().enumerate() {
                if let (false, Some(other)) = (placed[i], other) {
                    let similarity: f32 = chosen.iter().zip(other).map(|(a, b)| a * b).sum();
                    closest[i] = closest[i].max(similarity);
                }
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_duplicates_make_way_for_a_different_item_as_lambda_grows() {
        let scores = [1.0, 0.9, 0.8, 0.1];
        let vectors = vec![Some(vec![1.0, 0.0]), Some(vec![0.99, 0.1]), Some(vec![0.0, 1.0]), None];
        assert_eq!(mmr_order(&scores, &vectors, 0.0), [0, 1, 2, 3], "λ = 0: the ranker's order");
        // λ = 0.3: item 1 is almost item 0; the orthogonal item 2 goes before it.
        assert_eq!(mmr_order(&scores, &vectors, 0.3), [0, 2, 1, 3]);
        // λ = 0.9: the item without a vector (similar to nothing) beats the near-duplicate.
        assert_eq!(mmr_order(&scores, &vectors, 0.9), [0, 2, 3, 1]);
        assert!(mmr_order(&[], &[], 0.5).is_empty());
        // Equal scores and no vectors: the given order.
        assert_eq!(mmr_order(&[0.5, 0.5, 0.5], &[None, None, None], 0.5), [0, 1, 2]);
    }
}
