//! The origin's HTTP interface: `fn router(state) -> Router`, its handlers and middleware.
//!
//! | route | |
//! |---|---|
//! | `GET /v1/users/{user_id}/recs?n=&page=&device=&country=` | a user's list (signed or bearer) |
//! | `GET /v1/segments/{segment}/recs?n=` | a segment's list (what the edge caches) |
//! | `POST /v1/events` | user actions, validated and deduplicated (bearer key only) |
//! | `PUT/PATCH/DELETE /v1/items/{item_id}` | hide, unhide, expire, delete or add an item (bearer key only) |
//! | `POST /v1/items` `{"items": […]}` | many `PUT`s, all or none (bearer key only) |
//! | `GET /healthz`, `/readyz`, `/metrics` | liveness, readiness with degraded components, Prometheus |
//! | `GET /openapi.json` | the OpenAPI 3.1 description of all of these ([`openapi`]) |
//! | `POST /admin/bundle` `{"path": …}` | load, check and swap in a model bundle (bearer key only) |
//! | `POST /admin/tokens` `{"user_id": …}` | a signed-in visitor token for the edge (bearer key only) |
//! | `POST /admin/faults` `{"search_slowdown": …}` | fault injection knobs (only with `serving.fault_injection`) |
//! | `POST /admin/rules` | re-read the configuration's `[rules]` (bearer key only) |
//!
//! | module | owns |
//! |---|---|
//! | [`handlers`] | the API's handlers |
//! | [`admin`] | the admin handlers |
//! | [`middleware`] | request id, span and metrics; admission; credentials |
//! | [`error`] | [`error::ApiError`]: the one map from domain errors to status, code and `Retry-After` |
//! | [`server_timing`] | the `Server-Timing` header |
//! | [`server`] | the accept loop: header-read timeout, connection cap, graceful stop |
//! | [`pacing`] | connections refused again and again are read only after a pause |
//! | [`openapi`] | the OpenAPI document, made from the same declarations as the router |
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
pub mod openapi;
pub mod pacing;
pub mod server;
pub mod server_timing;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::middleware::from_fn_with_state;
use tokio::sync::Semaphore;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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

/// What every handler shares, behind one `Arc`: axum clones the state for every request (once per
/// extractor and per `from_fn_with_state` middleware), and one reference count is cheaper than a
/// dozen (clone and drop of the unshared struct were 4% of an L1 hit's CPU in a profile). Fields
/// are read through `Deref`; the `with_*` builders set them before the state is shared.
#[derive(Clone)]
pub struct AppState(Arc<SharedState>);

impl std::ops::Deref for AppState {
    type Target = SharedState;
    fn deref(&self) -> &SharedState {
        &self.0
    }
}

/// The fields of [`AppState`].
#[derive(Clone)]
pub struct SharedState {
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
    /// Traces (`[tracing]`; `None`: off, nothing recorded).
    pub tracer: Option<Arc<crate::otel::Tracer>>,
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
        AppState(Arc::new(SharedState {
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
            tracer: None,
        }))
    }

    /// The same state with `change` made to its fields (a copy of them when already shared).
    fn with(self, change: impl FnOnce(&mut SharedState)) -> Self {
        let mut fields = Arc::unwrap_or_clone(self.0);
        change(&mut fields);
        AppState(Arc::new(fields))
    }

    /// The same state, purging the edge's segment lists through `purger`.
    pub fn with_edge_purge(self, purger: Option<Arc<crate::edge_purge::EdgePurge>>) -> Self {
        self.with(|state| state.edge_purge = purger)
    }

    /// The same state, recording traces through `tracer` (`None`: tracing off).
    pub fn with_tracer(self, tracer: Option<Arc<crate::otel::Tracer>>) -> Self {
        self.with(|state| state.tracer = tracer)
    }

    /// The same state, reloading its rules from `file`.
    pub fn with_config_file(self, file: Option<std::path::PathBuf>) -> Self {
        self.with(|state| state.config_file = file)
    }

    /// The same state, with users split between `variants`.
    pub fn with_variants(self, variants: Variants) -> Self {
        self.with(|state| state.variants = Arc::new(variants))
    }
}

/// Every route, registered from its handler's `#[utoipa::path]` annotation (so each is in the
/// OpenAPI document, [`openapi`]), in groups by the credentials they need; no middleware yet.
pub(crate) struct Routes {
    /// Lists and events: signed edge requests or bearer keys.
    reads: OpenApiRouter<AppState>,
    /// The catalogue: bearer keys only.
    writes: OpenApiRouter<AppState>,
    /// Admin routes: bearer keys only; they bypass admission.
    admin: OpenApiRouter<AppState>,
    /// Health, readiness, metrics and the document: open.
    operations: OpenApiRouter<AppState>,
}

impl Routes {
    fn new() -> Self {
        Routes {
            reads: OpenApiRouter::new()
                .routes(routes!(handlers::user_recs))
                .routes(routes!(handlers::segment_recs))
                .routes(routes!(handlers::events)),
            writes: OpenApiRouter::new()
                .routes(routes!(catalogue::put_item, catalogue::patch_item, catalogue::delete_item))
                .routes(routes!(catalogue::put_items)),
            admin: OpenApiRouter::new()
                .routes(routes!(admin::load_bundle))
                .routes(routes!(admin::issue_token))
                .routes(routes!(admin::set_faults))
                .routes(routes!(admin::reload_rules)),
            operations: OpenApiRouter::new()
                .routes(routes!(handlers::healthz))
                .routes(routes!(handlers::readyz))
                .routes(routes!(handlers::metrics))
                .routes(routes!(openapi::document_json)),
        }
    }
}

/// Every route with its documentation, for [`openapi::document`].
pub(crate) fn documented_routes() -> OpenApiRouter<AppState> {
    let Routes { reads, writes, admin, operations } = Routes::new();
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi()).merge(reads).merge(writes).merge(admin).merge(operations)
}

/// The router, with every middleware; tests drive it with `tower::ServiceExt::oneshot`.
pub fn router(state: AppState) -> Router {
    let Routes { reads, writes, admin, operations } = Routes::new();
    // Edge signatures cover method, path, query and time, not a body: signed callers read lists,
    // and post a visitor's events with the body's digest in the signed query (checked by the
    // handler); the other routes that take a body (catalogue, admin) need a bearer key.
    let reads = reads.route_layer(from_fn_with_state(state.clone(), middleware::authenticate));
    let writes = writes.route_layer(from_fn_with_state(state.clone(), middleware::authenticate_internal));
    let api = reads.merge(writes).route_layer(from_fn_with_state(state.clone(), middleware::time_limit));
    let admin = admin.route_layer(from_fn_with_state(state.clone(), middleware::authenticate_internal));
    // Admission control is the outermost layer, so a shed request costs no request id, span or
    // metric label; admin, health and metrics bypass it by path: an overloaded origin still
    // answers its load balancer (shedding requests is not being down) and its operator (a reload
    // or a fault switch is what an overload may need; found by the fault suite, whose knob could
    // not be turned off while the origin shed load).
    let (router, _document) = OpenApiRouter::new().merge(api).merge(admin).merge(operations).split_for_parts();
    router
        .fallback(handlers::not_found)
        .layer(from_fn_with_state(state.clone(), middleware::observe))
        .layer(from_fn_with_state(state.clone(), middleware::shed))
        .with_state(state)
}
