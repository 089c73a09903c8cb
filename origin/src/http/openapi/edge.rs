//! The Worker's public API (`edge/src/route.rs`), described with the same wire types as the
//! origin's: `cascade openapi --edge`, checked in as `docs/edge-openapi.json`. The Worker is wasm
//! and carries no OpenAPI code; these functions exist only to be described. The edge's own tests
//! check that every operation here is one its router takes (`edge/src/route.rs`), and
//! `tests/e2e/edge.rs` that the Worker under `wrangler dev` answers only what is documented here.

#![allow(dead_code)] // described, never called

use cascade_shared::wire::{ErrorBody, EventsAccepted, RecList};
use serde::Serialize;
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::Health;

/// The Worker's document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Cascade edge (Cloudflare Worker)",
        description = "What browsers call. Anonymous visitors get their segment's list from the \
                       Workers Cache (`x-cache`: HIT, STALE, MISS); signed-in visitors (a token from the \
                       origin's `POST /admin/tokens`, as `Authorization: Bearer` or the `cascade_token` \
                       cookie) get their own list from the origin (`x-cache: BYPASS`). Errors are \
                       `{\"error\": {\"code\", \"message\", \"field\"?}}`; URLs over 2,048 bytes are 414.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(recs, events, purge, healthz, demo),
    modifiers(&Security),
)]
pub struct EdgeDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some(description)).build(),
            )
        };
        components
            .add_security_scheme("visitor_token", bearer("A signed-in visitor's token (v1.<user>.<expiry>.<mac>)"));
        components.add_security_scheme("admin_token", bearer("The Worker's ADMIN_TOKEN secret"));
    }
}

/// `GET /recs`' query.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecsParams {
    /// How many items, 1..=100 (default 20).
    #[param(minimum = 1, maximum = 100, example = 10)]
    n: Option<u32>,
    /// home, browse, detail or search (anything else: home).
    #[param(example = "browse")]
    page: Option<String>,
    /// desktop, mobile or tablet (absent: from `Sec-CH-UA-Mobile` or the User-Agent).
    #[param(example = "mobile")]
    device: Option<String>,
}

/// `POST /admin/purge`'s query.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PurgeParams {
    /// `page.device.country`, or `*` for every segment (needs the CASCADE_KV binding).
    #[param(example = "home.mobile.us")]
    segment: String,
}

/// One event a browser may report.
#[derive(ToSchema)]
#[schema(example = json!({"kind": "click", "item_id": "318", "rec_id": "01JD8Y3ZP6Q9W4XK2M7N5R3T1V", "position": 2}))]
pub struct VisitorEvent {
    /// view, click or add_to_cart (a purchase comes from the site's backend).
    kind: String,
    /// The item.
    item_id: String,
    /// The token's user (optional; another user's id is 400).
    user_id: Option<String>,
    /// The served list the action came from.
    rec_id: Option<String>,
    /// The item's position in it (from 1; only with `rec_id`).
    position: Option<u32>,
    /// Unix ms (default: when the origin receives it).
    timestamp_ms: Option<u64>,
    /// Deduplication key.
    idempotency_key: Option<String>,
}

/// `POST /events`' body: at most 20 events and 16 KiB.
#[derive(ToSchema)]
pub struct VisitorEvents {
    /// 1 to 20 events.
    #[schema(min_items = 1, max_items = 20)]
    events: Vec<VisitorEvent>,
}

/// `POST /admin/purge`'s answer.
#[derive(Serialize, ToSchema)]
pub struct Purged {
    /// The segment, or `*`.
    segment: String,
    /// Whether anything was purged (an entry here, or a new generation).
    purged: bool,
    /// Whether this data centre's entry was deleted.
    deleted_here: bool,
    /// The new purge generation written to KV (absent without the binding).
    generation: Option<u64>,
    /// Where the purge reaches.
    scope: String,
}

#[utoipa::path(get, path = "/recs", summary = "A visitor's list",
    description = "Anonymous: the segment's list (page, device, and the country Cloudflare reports), from \
                   the cache when stored. Signed in: the visitor's own list from the origin, never stored; \
                   their segment's list if the origin fails.",
    params(RecsParams),
    security((), ("visitor_token" = [])),
    responses(
        (status = 200, description = "The list", body = RecList, headers(
            ("x-cache" = String, description = "HIT, STALE, MISS, or BYPASS (signed in)"),
            ("cache-control" = String, description = "`public, max-age=…` or `private, no-store`"))),
        (status = 400, description = "`n` is wrong: `invalid_parameter`", body = ErrorBody),
        (status = 401, description = "A token that does not verify: `unauthorized`", body = ErrorBody),
        (status = 403, description = "A browser origin CORS does not allow: `forbidden`", body = ErrorBody),
        (status = 414, description = "URL over 2,048 bytes: `uri_too_long`", body = ErrorBody),
        (status = 429, description = "A signed-in visitor over the rate limit: `rate_limited`", body = ErrorBody,
            headers(("retry-after" = u32, description = "Seconds"))),
        (status = 503, description = "The origin failed and nothing is stored: `origin_timeout`, `origin_unavailable` \
                                      or `origin_error`", body = ErrorBody),
    ))]
fn recs() {}

#[utoipa::path(post, path = "/events", summary = "A signed-in visitor's events",
    description = "Checked at the edge (kinds view, click, add_to_cart; the token's user), then forwarded to \
                   the origin signed, with the body's SHA-256 in the signed query.",
    request_body(content = VisitorEvents, content_type = "application/json"),
    security(("visitor_token" = [])),
    responses(
        (status = 202, description = "The origin applied them", body = EventsAccepted),
        (status = 400, description = "An event or the body is wrong: `invalid_parameter`, `field` names it", body = ErrorBody),
        (status = 401, description = "No token, or one that does not verify: `unauthorized`", body = ErrorBody),
        (status = 403, description = "A browser origin CORS does not allow: `forbidden`", body = ErrorBody),
        (status = 429, description = "Over the signed-in rate limit: `rate_limited`", body = ErrorBody,
            headers(("retry-after" = u32, description = "Seconds"))),
        (status = 503, description = "The origin failed; nothing recorded", body = ErrorBody),
    ))]
fn events() {}

#[utoipa::path(post, path = "/admin/purge", summary = "Purge a segment's stored list",
    description = "A new purge generation in Workers KV, folded into every data centre's cache key, and \
                   this data centre's entry deleted.",
    params(PurgeParams),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Purged", body = Purged),
        (status = 400, description = "`segment` is missing or wrong: `invalid_parameter`", body = ErrorBody),
        (status = 401, description = "A wrong admin token: `unauthorized`", body = ErrorBody),
        (status = 403, description = "No ADMIN_TOKEN set: admin routes are off (`forbidden`)", body = ErrorBody),
        (status = 429, description = "Over the admin rate limit: `rate_limited`", body = ErrorBody,
            headers(("retry-after" = u32, description = "Seconds"))),
    ))]
fn purge() {}

#[utoipa::path(get, path = "/healthz", summary = "Liveness",
    responses((status = 200, description = "The Worker answers", body = Health)))]
fn healthz() {}

#[utoipa::path(get, path = "/", summary = "The demo page",
    responses((status = 200, description = "An HTML page that fetches `/recs`", content_type = "text/html")))]
fn demo() {}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    EdgeDoc::openapi()
}
