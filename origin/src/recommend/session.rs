//! The session query: a user's recent items (from `view`, `click`, … events) pull the real-time
//! query toward what they are looking at now.

/// How far the session pulls the query toward the user's recent items.
pub const SESSION_WEIGHT: f32 = 0.5;

/// The query for a user in session: `(1 - weight) · user + weight · mean(recent items)`, or the
/// user's own embedding when the session is empty.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_pulls_the_query_toward_recent_items() {
        let user = [1.0, 0.0];
        assert_eq!(session_query(&user, &[], 0.5), vec![1.0, 0.0]);
        let recent: [&[f32]; 2] = [&[0.0, 2.0], &[0.0, 4.0]];
        assert_eq!(session_query(&user, &recent, 0.5), vec![0.5, 1.5]);
    }
}
