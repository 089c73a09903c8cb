//! The real-time query: the vector FAISS searches with and the ranker's `user` block.
//!
//! A bundle with a sequence model (`metadata.json` `query.kind = "sequence"`, docs/bundle.md)
//! builds it from what the user did last:
//! `query = user + Σ_k weight[k] · context[recent_k]`, where `recent` is the user's session (their
//! events, newest first) followed by their training history (newest first), and never shows a
//! history item again. An older bundle has no such model: its session (recent items) pulls the
//! user's embedding toward the items' own embeddings ([`session_query`]).
//!
//! `scripts/train.py`'s `Served` computes the same thing in the same order of float operations; the
//! end-to-end agreement test compares the two.

use std::collections::HashMap;

use cascade_shared::embedding::EmbeddingTable;

/// How far an older bundle's session pulls the query toward the user's recent items.
pub const SESSION_WEIGHT: f32 = 0.5;

/// The query for a user in session with an older bundle: `(1 - weight) · user + weight ·
/// mean(recent items)`, or the user's own embedding when the session is empty.
pub fn session_query(user: &[f32], recent: &[&[f32]], weight: f32) -> Vec<f32> {
    if recent.is_empty() {
        return user.to_vec();
    }
    let scale = weight / recent.len() as f32;
    let mut query: Vec<f32> = user.iter().map(|v| v * (1.0 - weight)).collect();
    for item in recent {
        query.iter_mut().zip(item.iter()).for_each(|(q, v)| *q += v * scale);
    }
    query
}

/// One user's training history.
#[derive(Debug)]
struct History {
    /// Item rows, oldest first.
    order: Box<[u32]>,
    /// The same rows, sorted (for membership).
    sorted: Box<[u32]>,
}

/// A bundle's sequence model: item context embeddings, position weights, and each user's history.
#[derive(Debug)]
pub struct SequenceQuery {
    context: EmbeddingTable,
    weights: Vec<f32>,
    history: HashMap<String, History>,
}

impl SequenceQuery {
    /// `context` has one row per item (the rows of `items.emb`); `history` maps a user to their
    /// item rows, oldest first.
    pub fn new(context: EmbeddingTable, weights: Vec<f32>, history: HashMap<String, Vec<u32>>) -> Self {
        let history = history
            .into_iter()
            .map(|(user, order)| {
                let mut sorted = order.clone();
                sorted.sort_unstable();
                sorted.dedup();
                (user, History { order: order.into(), sorted: sorted.into() })
            })
            .collect();
        SequenceQuery { context, weights, history }
    }

    /// Items in the query, newest first.
    pub fn length(&self) -> usize {
        self.weights.len()
    }

    /// Users with a training history.
    pub fn users(&self) -> usize {
        self.history.len()
    }

    /// The query: `user` plus each of the newest [`Self::length`] items of `session` (item rows,
    /// newest first) and then of the user's history (newest first), weighted by position.
    pub fn query(&self, user: &[f32], user_id: &str, session: &[usize]) -> Vec<f32> {
        let history = self.history.get(user_id).map_or(&[][..], |h| &h.order[..]);
        let recent = session.iter().copied().chain(history.iter().rev().map(|&row| row as usize));
        let mut query = user.to_vec();
        for (&weight, row) in self.weights.iter().zip(recent) {
            // The same float operations, in the same order, as train.py's `Served.query`.
            query.iter_mut().zip(self.context.row(row)).for_each(|(q, v)| *q += weight * v);
        }
        query
    }

    /// The rows of the user's history, sorted: never shown again.
    pub fn seen(&self, user_id: &str) -> &[u32] {
        self.history.get(user_id).map_or(&[], |h| &h.sorted)
    }
}

#[cfg(test)]
mod tests {
    use cascade_shared::embedding::Header;

    use super::*;

    #[test]
    fn the_session_pulls_the_query_toward_recent_items() {
        let user = [1.0, 0.0];
        assert_eq!(session_query(&user, &[], 0.5), vec![1.0, 0.0]);
        let recent: [&[f32]; 2] = [&[0.0, 2.0], &[0.0, 4.0]];
        assert_eq!(session_query(&user, &recent, 0.5), vec![0.5, 1.5]);
    }

    fn model() -> SequenceQuery {
        // Four items; item k's context vector is (k, 10k).
        let context = EmbeddingTable {
            header: Header { dim: 2, count: 4, bundle_id: "b".into() },
            ids: (0..4).map(|k| format!("i{k}")).collect(),
            values: (0..4).flat_map(|k| [k as f32, 10.0 * k as f32]).collect(),
        };
        SequenceQuery::new(context, vec![1.0, 0.5], HashMap::from([("u".to_string(), vec![3, 1, 2])]))
    }

    #[test]
    fn the_query_weights_the_newest_items_of_the_session_then_the_history() {
        let model = model();
        // History only: newest is item 2 (weight 1), then item 1 (0.5).
        assert_eq!(model.query(&[1.0, 1.0], "u", &[]), vec![1.0 + 2.0 + 0.5, 1.0 + 20.0 + 5.0]);
        // A session item comes first and pushes the history's older item out.
        assert_eq!(model.query(&[0.0, 0.0], "u", &[3]), vec![3.0 + 1.0, 30.0 + 10.0]);
        // A user with no history: the session alone, or the user's vector.
        assert_eq!(model.query(&[1.0, 2.0], "other", &[]), vec![1.0, 2.0]);
        assert_eq!(model.query(&[0.0, 0.0], "other", &[1, 2]), vec![1.0 + 1.0, 10.0 + 10.0]);
    }

    #[test]
    fn a_users_history_is_what_is_not_shown_again() {
        let model = model();
        assert_eq!(model.seen("u"), &[1, 2, 3]);
        assert!(model.seen("other").is_empty());
        assert_eq!((model.length(), model.users()), (2, 1));
    }
}
