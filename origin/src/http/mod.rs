//! The origin's HTTP interface: `fn router(state) -> Router`, its handlers and middleware.
//!
//! | route | |
//! |---|---|
//! | `GET /v1/users/{user_id}/recs?n=&page=&device=&country=` | a user's list (signed or bearer) |
//! | `GET /v1/segments/{segment}/recs?n=` | a segment's list (what the edge caches) |
//! | `POST /v1/events` | user actions, validated and deduplicated (bearer key only) |
//! | `PUT/PATCH/DELETE /v1/items/{item_id}` | hide, unhide, expire or delete an item (bearer key only) |
//! | `GET /healthz`, `/readyz`, `/metrics` | liveness, readiness with degraded components, Prometheus |
//! | `POST /admin/bundle` `{"path": …}` | load, check and swap in a model bundle (bearer key only) |
//! | `POST /admin/tokens` `{"user_id": …}` | a signed-in visitor token for the edge (bearer key only) |
//! | `POST /admin/faults` `{"search_slowdown": …}` | fault injection knobs (only with `serving.fault_injection`) |
//!
//! | module | owns |
//! |---|---|
//! | [`handlers`] | the API's handlers |
//! | [`admin`] | the admin handlers |
//! | [`middleware`] | request id, span and metrics; admission; credentials |
//! | [`error`] | [`error::ApiError`]: the one map from domain errors to status, code and `Retry-After` |
//! | [`server_timing`] | the `Server-Timing` header |
//! | [`server`] | the accept loop: header-read timeout, connection cap, graceful stop |
//!
//! Every response carries `x-request-id` (the caller's, or a new one) and the recs responses a
//! `Server-Timing` header. Admission control answers 503 at once when more than
//! `serving.max_in_flight` requests are being served; `/healthz`, `/readyz`, `/metrics` and the
//! admin routes bypass it. `/readyz` names components and their state, never an address or a raw error. The router is tested in process with
//! `tower::ServiceExt::oneshot` (`http/tests.rs`).

pub mod admin;
pub mod catalogue;
pub mod error;
pub mod handlers;
pub mod middleware;
pub mod server;
pub mod server_timing;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use tokio::sync::Semaphore;

use crate::app::Serving;
use crate::app::variants::Variants;
use crate::auth::Auth;
use crate::cache::UserCaches;
use crate::metrics::Metrics;
use crate::recommend::ServingConfig;

pub use middleware::REQUEST_ID;

/// Largest request body accepted, bytes: axum's default limit for body extractors, which applies
/// without a `DefaultBodyLimit` layer (a layer would insert an extension into every request, the
/// cheapest ones included). A full events batch of `cascade_shared::wire::MAX_EVENTS_PER_BATCH`
/// events is a few hundred KB. `tests.rs` checks that one byte more is a 413.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The request path (swapped by bundle reloads): the control, which also answers segment
    /// lists and `/readyz`.
    pub serving: Arc<Serving>,
    /// Users' A/B variants (one unnamed arm, `serving`, when there is no experiment).
    pub variants: Arc<Variants>,
    /// Credentials.
    pub auth: Arc<Auth>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Admission control: one permit per request in flight.
    pub admission: Arc<Semaphore>,
    /// Per-user caches and state (survive bundle reloads; keys carry the bundle id).
    pub caches: Arc<UserCaches>,
    /// Budget for one events batch.
    pub events_budget: Duration,
    /// Longest an API request may run.
    pub request_timeout: Duration,
    /// The configuration file `cascade serve` read (re-read by `POST /admin/rules`).
    pub config_file: Option<std::path::PathBuf>,
    /// Purges the edge's segment lists that held an item the catalogue withholds (`[edge]`).
    pub edge_purge: Option<Arc<crate::edge_purge::EdgePurge>>,
}

impl AppState {
    /// State admitting at most `settings.max_in_flight` requests at once.
    pub fn new(
        serving: Arc<Serving>,
        caches: Arc<UserCaches>,
        auth: Arc<Auth>,
        metrics: Arc<Metrics>,
        settings: &ServingConfig,
    ) -> Self {
        AppState {
            variants: Arc::new(Variants::single(Arc::clone(&serving))),
            serving,
            caches,
            auth,
            metrics,
            admission: Arc::new(Semaphore::new(settings.max_in_flight)),
            events_budget: Duration::from_millis(settings.events_deadline_ms),
            request_timeout: Duration::from_millis(settings.request_timeout_ms),
            config_file: None,
            edge_purge: None,
        }
    }

    /// The same state, purging the edge's segment lists through `purger`.
    pub fn with_edge_purge(self, purger: Option<Arc<crate::edge_purge::EdgePurge>>) -> Self {
        AppState { edge_purge: purger, ..self }
    }

    /// The same state, reloading its rules from `file`.
    pub fn with_config_file(self, file: Option<std::path::PathBuf>) -> Self {
        AppState { config_file: file, ..self }
    }

    /// The same state, with users split between `variants`.
    pub fn with_variants(self, variants: Variants) -> Self {
        AppState { variants: Arc::new(variants), ..self }
    }
}

/// The router, with every middleware; tests drive it with `tower::ServiceExt::oneshot`.
pub fn router(state: AppState) -> Router {
    // Edge signatures cover method, path, query and time, not a body: signed callers read lists,
    // and post a visitor's events with the body's digest in the signed query (checked by the
    // handler); the other routes that take a body (catalogue, admin) need a bearer key.
    let reads = Router::new()
        .route("/v1/users/{user_id}/recs", get(handlers::user_recs))
        .route("/v1/segments/{segment}/recs", get(handlers::segment_recs))
        .route("/v1/events", post(handlers::events))
        .route_layer(from_fn_with_state(state.clone(), middleware::authenticate));
    let writes = Router::new()
        .route(
            "/v1/items/{item_id}",
            axum::routing::put(catalogue::put_item).patch(catalogue::patch_item).delete(catalogue::delete_item),
        )
        .route("/v1/items", post(catalogue::put_items))
        .route_layer(from_fn_with_state(state.clone(), middleware::authenticate_internal));
    let api = reads.merge(writes).route_layer(from_fn_with_state(state.clone(), middleware::time_limit));
    let admin = Router::new()
        .route("/admin/bundle", post(admin::load_bundle))
        .route("/admin/tokens", post(admin::issue_token))
        .route("/admin/faults", post(admin::set_faults))
        .route("/admin/rules", post(admin::reload_rules))
        .route_layer(from_fn_with_state(state.clone(), middleware::authenticate_internal));
    // Admission control is the outermost layer, so a shed request costs no request id, span or
    // metric label; admin, health and metrics bypass it by path: an overloaded origin still
    // answers its load balancer (shedding requests is not being down) and its operator (a reload
    // or a fault switch is what an overload may need; found by the fault suite, whose knob could
    // not be turned off while the origin shed load).
    Router::new()
        .merge(api)
        .fallback(handlers::not_found)
        .merge(admin)
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
        .layer(from_fn_with_state(state.clone(), middleware::observe))
        .layer(from_fn_with_state(state.clone(), middleware::shed))
        .with_state(state)
}
