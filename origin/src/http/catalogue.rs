//! The catalogue routes (bearer key only): `PUT`, `PATCH` and `DELETE /v1/items/{item_id}`. An item
//! must be in the bundle being served; the change applies to the next answer of every source.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use cascade_shared::validate::{FieldError, validate_id};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::middleware::unix_now;
use crate::catalogue::{ItemChange, ItemState, reason};

/// The item, checked against the bundle.
fn known(state: &AppState, item_id: &str) -> Result<(), ApiError> {
    validate_id("item_id", item_id)?;
    if !state.serving.current().bundle().item_index.contains_key(item_id) {
        return Err(ApiError::NotFound(format!(
            "item {item_id:?} is not in the bundle being served (adding new items is not built yet)"
        )));
    }
    Ok(())
}

fn answer(item_id: &str, item: &ItemState) -> Response {
    let withheld = reason(item, unix_now().as_millis() as u64);
    Json(json!({"item_id": item_id, "hidden": item.hidden, "deleted": item.deleted,
                "expires_at_ms": item.expires_at_ms, "served": withheld.is_none(), "withheld": withheld}))
    .into_response()
}

fn parse(body: &Bytes) -> Result<ItemChange, ApiError> {
    let text = if body.is_empty() { &b"{}"[..] } else { body };
    serde_json::from_slice(text).map_err(|e| {
        FieldError::new("body", format!("expected {{\"hidden\": bool, \"expires_at_ms\": ms or null}}: {e}")).into()
    })
}

/// `PATCH /v1/items/{item_id}` `{"hidden": true}`, `{"expires_at_ms": 1767225600000}` or
/// `{"expires_at_ms": null}`: changes the fields given.
pub async fn patch_item(
    State(state): State<AppState>,
    Path(item_id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    known(&state, &item_id)?;
    apply(&state, &item_id, &parse(&body)?)
}

/// Applies a checked change and answers the item's new state.
fn apply(state: &AppState, item_id: &str, change: &ItemChange) -> Result<Response, ApiError> {
    let item = state.serving.catalogue().change(item_id, change)?;
    tracing::info!(item_id, hidden = item.hidden, expires_at_ms = item.expires_at_ms, "catalogue item changed");
    Ok(answer(item_id, &item))
}

/// `PUT /v1/items/{item_id}` `{"hidden": false, "expires_at_ms": null}`: sets the whole state
/// (fields not given: not hidden, no expiry).
pub async fn put_item(
    State(state): State<AppState>,
    Path(item_id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    known(&state, &item_id)?;
    let given = parse(&body)?;
    let change = ItemChange {
        hidden: Some(given.hidden.unwrap_or(false)),
        expires_at_ms: Some(given.expires_at_ms.unwrap_or(None)),
    };
    apply(&state, &item_id, &change)
}

/// `DELETE /v1/items/{item_id}`: never served again (a later `PUT`/`PATCH` is 409).
pub async fn delete_item(State(state): State<AppState>, Path(item_id): Path<String>) -> Result<Response, ApiError> {
    known(&state, &item_id)?;
    let item = state.serving.catalogue().delete(&item_id)?;
    tracing::info!(item_id, "catalogue item deleted");
    Ok(answer(&item_id, &item))
}
