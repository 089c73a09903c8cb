//! Admin routes (bearer key only): bundle reloads and visitor tokens.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use cascade_shared::validate::{FieldError, validate_id};
use cascade_shared::wire::ErrorBody;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use super::middleware::unix_now;
use crate::app::Swapped;
use crate::faults::FaultSettings;
use crate::recommend::list_rules::RulesConfig;

/// `POST /admin/bundle`'s body.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"path": "/var/lib/cascade/bundles/v2"}))]
pub struct LoadBundle {
    /// The bundle's folder on the origin's disk.
    path: String,
    /// The A/B variant to load it for (default: the control).
    #[serde(default)]
    variant: Option<String>,
}

/// `POST /admin/tokens`' body.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"user_id": "42", "ttl_secs": 3600}))]
pub struct IssueToken {
    /// The signed-in visitor.
    user_id: String,
    /// Lifetime, seconds, 1..=2,592,000 (30 days; default 3,600).
    #[schema(minimum = 1, maximum = 2_592_000)]
    ttl_secs: Option<u64>,
}

/// `POST /admin/tokens`' answer.
#[derive(Serialize, ToSchema)]
pub struct IssuedToken {
    /// The token the edge takes as `Authorization: Bearer` or `#token=`.
    pub token: String,
    /// Whose it is.
    pub user_id: String,
    /// When it expires, Unix seconds.
    pub expires_at: u64,
}

/// `POST /admin/rules`' answer.
#[derive(Serialize, ToSchema)]
pub struct RulesReloaded {
    /// The `[rules]` now in force.
    pub rules: RulesConfig,
}

/// `POST /admin/bundle` `{"path": "/bundles/v2", "variant": "b"}`: load, check and swap in a
/// bundle (or roll back to an earlier one the same way), for one A/B variant when named (else the
/// control). A wrong bundle is 422; a dependency that is down, 503; an unknown variant, 404.
#[utoipa::path(post, path = "/admin/bundle", tag = "admin", summary = "Load a model bundle",
    request_body(content = LoadBundle, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Loaded, checked and swapped in", body = Swapped),
        (status = 400, description = "The body is wrong: `invalid_parameter`", body = ErrorBody),
        (status = 401, description = "No bearer key, or an edge signature: `unauthorized`", body = ErrorBody),
        (status = 404, description = "No such variant: `not_found`", body = ErrorBody),
        (status = 409, description = "Another reload is running: `reload_in_progress`", body = ErrorBody,
            headers(("retry-after" = u32, description = "Seconds"))),
        (status = 422, description = "The bundle is wrong; the current one keeps serving: `bundle_rejected`", body = ErrorBody),
        (status = 503, description = "A store the bundle needs did not answer: `dependency_unavailable`", body = ErrorBody,
            headers(("retry-after" = u32, description = "Seconds"))),
    ))]
pub async fn load_bundle(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let request: LoadBundle = serde_json::from_slice(&body)
        .map_err(|e| FieldError::new("body", format!("expected {{\"path\": \"<bundle folder>\"}}: {e}")))?;
    if request.path.trim().is_empty() {
        return Err(FieldError::new("path", "must not be empty").into());
    }
    let serving = match &request.variant {
        None => &state.serving,
        Some(name) => match state.variants.get(name) {
            Some(arm) => &arm.serving,
            None => return Err(ApiError::NotFound(format!("no variant {name:?} (see [[variants]] in the config)"))),
        },
    };
    let swapped = serving.load(std::path::Path::new(&request.path)).await?;
    Ok(Json(swapped).into_response())
}

/// `POST /admin/tokens` `{"user_id": "42", "ttl_secs": 3600}`: a signed-in visitor token for the
/// edge (`cascade_shared::token`). The site's login service calls this, or mints tokens itself with
/// the same secret.
#[utoipa::path(post, path = "/admin/tokens", tag = "admin", summary = "Issue a visitor token",
    request_body(content = IssueToken, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The token", body = IssuedToken),
        (status = 400, description = "The body is wrong: `invalid_parameter`", body = ErrorBody),
        (status = 401, description = "No bearer key, or an edge signature: `unauthorized`", body = ErrorBody),
    ))]
pub async fn issue_token(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let request: IssueToken = serde_json::from_slice(&body)
        .map_err(|e| FieldError::new("body", format!("expected {{\"user_id\": \"…\", \"ttl_secs\": 3600}}: {e}")))?;
    validate_id("user_id", &request.user_id)?;
    let ttl = request.ttl_secs.unwrap_or(3_600);
    if !(1..=cascade_shared::token::MAX_TOKEN_TTL_SECS).contains(&ttl) {
        return Err(FieldError::new(
            "ttl_secs",
            format!("must be 1..={}, got {ttl}", cascade_shared::token::MAX_TOKEN_TTL_SECS),
        )
        .into());
    }
    let expires_at = unix_now().as_secs() + ttl;
    let token = state.auth.issue_user_token(&request.user_id, expires_at);
    Ok(Json(IssuedToken { token, user_id: request.user_id, expires_at }).into_response())
}

/// `POST /admin/faults` `{"search_slowdown": 10, "rank_slowdown": 1, "rank_panics": 0}`: sets the
/// fault suite's knobs and answers them (404 unless `serving.fault_injection` is on).
#[utoipa::path(post, path = "/admin/faults", tag = "admin", summary = "Set the fault-injection knobs",
    request_body(content = FaultSettings, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The knobs now in force", body = FaultSettings),
        (status = 400, description = "The body is wrong: `invalid_parameter`", body = ErrorBody),
        (status = 401, description = "No bearer key, or an edge signature: `unauthorized`", body = ErrorBody),
        (status = 404, description = "Fault injection is off (`serving.fault_injection`): `not_found`", body = ErrorBody),
    ))]
pub async fn set_faults(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let Some(faults) = state.serving.faults() else {
        return Err(ApiError::NotFound("fault injection is off (serving.fault_injection)".into()));
    };
    let settings: crate::faults::FaultSettings = serde_json::from_slice(&body).map_err(|e| {
        FieldError::new("body", format!("expected {{\"search_slowdown\", \"rank_slowdown\", \"rank_panics\"}}: {e}"))
    })?;
    if settings.search_slowdown > 1000 || settings.rank_slowdown > 1000 {
        return Err(FieldError::new("body", "slowdowns must be at most 1000").into());
    }
    faults.set(settings);
    tracing::warn!(?settings, "fault injection settings changed");
    Ok(Json(faults.get()).into_response())
}

/// `POST /admin/rules` (no body): re-reads the configuration file `cascade serve` was started with
/// and puts its `[rules]` in force from the next list on (SIGHUP does the same). A file that does
/// not validate is 422 and changes nothing; other sections need a restart to change.
#[utoipa::path(post, path = "/admin/rules", tag = "admin", summary = "Reload the rules",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The rules now in force", body = RulesReloaded),
        (status = 401, description = "No bearer key, or an edge signature: `unauthorized`", body = ErrorBody),
        (status = 422, description = "The file does not validate; the rules in force stay: `config_rejected`", body = ErrorBody),
    ))]
pub async fn reload_rules(State(state): State<AppState>) -> Result<Response, ApiError> {
    let rules = reload_rules_from(state.config_file.as_deref(), &state)?;
    Ok(Json(RulesReloaded { rules }).into_response())
}

/// Reads, checks and applies the rules of the configuration (`file`, else `$CASCADE_CONFIG`).
pub fn reload_rules_from(
    file: Option<&std::path::Path>,
    state: &AppState,
) -> Result<crate::recommend::list_rules::RulesConfig, ApiError> {
    let config = crate::config::Config::load(file, &|name| std::env::var(name).ok())?;
    let rules = state.serving.rules();
    rules.reload(&config.rules);
    tracing::info!(rules = ?config.rules, "rules reloaded");
    Ok(config.rules)
}
