//! Health of the origin's components, as `/readyz` reports them: a name and a state, never an
//! address or raw error text (the details go to the log).

use serde::Serialize;

/// Health of one component, for `/readyz`: a name and a state, never an address or raw error text
/// (`/readyz` is unauthenticated; the details go to the log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ComponentHealth {
    /// Name, e.g. `redis_shard_1`.
    pub name: String,
    /// What the last check found.
    pub state: HealthState,
}

impl ComponentHealth {
    /// A component in `state`.
    pub fn new(name: impl Into<String>, state: HealthState) -> Self {
        ComponentHealth { name: name.into(), state }
    }

    /// Whether it serves as it should.
    pub fn healthy(&self) -> bool {
        self.state == HealthState::Ok
    }
}

/// What a health check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// Answering, with the data it should hold.
    Ok,
    /// Not answering (down, or slower than its timeout).
    Unreachable,
    /// Answering, but it holds nothing: a Redis shard that restarted empty (refill it with
    /// `cascade load --shard i`).
    Empty,
    /// Answering, but it holds another bundle's data, not the one being served.
    WrongBundle,
    /// Answering but degraded (e.g. a cluster whose state is not `ok`, a ranker that recently panicked and was restarted).
    Degraded,
}
