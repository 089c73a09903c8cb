//! Admin routes (bearer key only): bundle reloads and visitor tokens.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use cascade_shared::validate::{FieldError, validate_id};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::middleware::unix_now;

/// `POST /admin/bundle` `{"path": "/bundles/v2", "variant": "b"}`: load, check and swap in a
/// bundle (or roll back to an earlier one the same way), for one A/B variant when named (else the
/// control). A wrong bundle is 422; a dependency that is down, 503; an unknown variant, 404.
pub async fn load_bundle(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    #[derive(serde::Deserialize)]
    struct LoadBundle {
        path: String,
        #[serde(default)]
        variant: Option<String>,
    }
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
pub async fn issue_token(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    #[derive(serde::Deserialize)]
    struct IssueToken {
        user_id: String,
        ttl_secs: Option<u64>,
    }
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
    Ok(Json(json!({"token": token, "user_id": request.user_id, "expires_at": expires_at})).into_response())
}

/// `POST /admin/faults` `{"search_slowdown": 10, "rank_slowdown": 1, "rank_panics": 0}`: sets the
/// fault suite's knobs and answers them (404 unless `serving.fault_injection` is on).
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
pub async fn reload_rules(State(state): State<AppState>) -> Result<Response, ApiError> {
    let rules = reload_rules_from(state.config_file.as_deref(), &state)?;
    Ok(Json(json!({"rules": rules})).into_response())
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
