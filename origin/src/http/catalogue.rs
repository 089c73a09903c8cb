//! The catalogue routes (bearer key only): `PUT`, `PATCH` and `DELETE /v1/items/{item_id}`, and
//! `POST /v1/items` for a batch (bulk import). An item is in a bundle being served, or is added with
//! its embedding (a new item, retrieved by real-time lists at once); a change applies to the next
//! answer of every source.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use cascade_shared::validate::{FieldError, validate_id};
use cascade_shared::wire::ErrorBody;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use super::middleware::unix_now;
use crate::catalogue::{Edit, ItemChange, ItemState, NewItem, present, reason};

/// Most items in one `POST /v1/items`.
pub const MAX_ITEMS_PER_BATCH: usize = 500;
/// Longest title, characters.
const MAX_TITLE_CHARS: usize = 300;
/// Most categories per item.
const MAX_CATEGORIES: usize = 32;

/// A request body: the state fields, and for a new item its embedding and metadata.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"hidden": false, "expires_at_ms": 1767225600000_u64}))]
pub struct ItemBody {
    /// In a batch entry: the item (in a single item's body: absent, or the path's).
    item_id: Option<String>,
    /// Not served while true.
    hidden: Option<bool>,
    /// Not served from this Unix time, ms (`null`: no expiry).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>)]
    expires_at_ms: Option<Option<u64>>,
    /// A new item's embedding, in the bundle's space (as many numbers as its dimension): retrieved
    /// by real-time lists at once, until the next retrain includes it.
    embedding: Option<Vec<f32>>,
    /// A new item's title, at most 300 characters.
    title: Option<String>,
    /// A new item's categories (ids), at most 32.
    categories: Option<Vec<String>>,
    /// The bundle whose space the embedding is in (default: the control's).
    bundle_id: Option<String>,
}

/// `POST /v1/items`' body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"items": [{"item_id": "318", "hidden": true}]}))]
pub struct ItemBatch {
    /// 1 to 500 `PUT` bodies, each with its `item_id`.
    #[schema(min_items = 1, max_items = 500)]
    items: Vec<ItemBody>,
}

/// An item's state after a change.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemAnswer {
    /// The item.
    pub item_id: String,
    /// Hidden by the catalogue.
    pub hidden: bool,
    /// Deleted (never served again).
    pub deleted: bool,
    /// Not served from this Unix time, ms.
    pub expires_at_ms: Option<u64>,
    /// Whether lists may show it now.
    pub served: bool,
    /// Why not: `deleted`, `hidden` or `expired`.
    #[schema(value_type = Option<String>)]
    pub withheld: Option<&'static str>,
    /// A new item's bundle (an item added with its embedding).
    pub new_in_bundle: Option<String>,
}

/// What the single-item routes answer when they refuse (`ApiError` makes these; this describes
/// them once for the three routes' documentation).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // described, never built
enum ItemErrors {
    /// The id or body is wrong: `invalid_parameter`, `field` names it
    #[response(status = 400)]
    Invalid(ErrorBody),
    /// No bearer key, or an edge signature: `unauthorized`
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// Not in the bundle and not a new item (add it with its `embedding`): `not_found`
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// `item_deleted` (a deleted item stays deleted) or `catalogue_full` (`[catalogue] max_new_items`)
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// The catalogue's state could not be saved; nothing changed: `catalogue_unavailable`, or `overloaded`/`timeout`
    #[response(status = 503, headers(("retry-after" = u32, description = "Seconds")))]
    Unavailable(ErrorBody),
}

/// `POST /v1/items`' answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemsApplied {
    /// How many items changed (all of the batch).
    pub applied: usize,
    /// Their states, in the batch's order.
    pub items: Vec<ItemAnswer>,
}

const SHAPE: &str = "expected {\"hidden\": bool, \"expires_at_ms\": ms or null, and for a new item \
                     \"embedding\": [numbers], \"title\", \"categories\", \"bundle_id\"}";

fn parse(body: &Bytes) -> Result<ItemBody, ApiError> {
    let text = if body.is_empty() { &b"{}"[..] } else { body };
    serde_json::from_slice(text).map_err(|e| FieldError::new("body", format!("{SHAPE}: {e}")).into())
}

/// Checks `body` for `item_id` and turns it into an edit: the state change, and the new item when
/// an embedding is given. `whole` (`PUT`): fields not given are reset.
fn edit(state: &AppState, item_id: &str, body: ItemBody, whole: bool) -> Result<Edit, ApiError> {
    validate_id("item_id", item_id)?;
    if body.item_id.as_ref().is_some_and(|id| id != item_id) {
        return Err(FieldError::new("item_id", "differs from the item in the path").into());
    }
    let control = state.serving.current();
    let in_bundle = control.bundle().item_index.contains_key(item_id);
    let change = ItemChange {
        hidden: if whole { Some(body.hidden.unwrap_or(false)) } else { body.hidden },
        expires_at_ms: if whole { Some(body.expires_at_ms.unwrap_or(None)) } else { body.expires_at_ms },
    };
    let Some(embedding) = body.embedding else {
        if body.title.is_some() || body.categories.is_some() || body.bundle_id.is_some() {
            return Err(FieldError::new(
                "embedding",
                "a new item's title, categories and bundle come with its embedding",
            )
            .into());
        }
        let known = in_bundle || state.serving.catalogue().new_item(item_id).is_some() || {
            let current = state.serving.catalogue().get(item_id);
            current != ItemState::default()
        };
        if !known {
            return Err(ApiError::NotFound(format!(
                "item {item_id:?} is not in the bundle being served; add it with its \"embedding\""
            )));
        }
        return Ok((item_id.to_string(), change, None));
    };
    if in_bundle {
        return Err(FieldError::new(
            "embedding",
            format!("item {item_id:?} is in the bundle: its embedding comes from training"),
        )
        .into());
    }
    let bundle_id = body.bundle_id.unwrap_or_else(|| control.bundle().id().to_string());
    let bundle = std::iter::once(&state.serving)
        .chain(state.variants.arms().iter().map(|arm| &arm.serving))
        .map(|serving| serving.current())
        .find(|recommender| recommender.bundle().id() == bundle_id)
        .ok_or_else(|| FieldError::new("bundle_id", format!("{bundle_id:?} is not a bundle being served")))?;
    let dim = bundle.bundle().metadata.dim;
    if embedding.len() != dim || !embedding.iter().all(|x| x.is_finite()) {
        return Err(FieldError::new(
            "embedding",
            format!("must be {dim} finite numbers (bundle {bundle_id}), got {}", embedding.len()),
        )
        .into());
    }
    if body.title.as_ref().is_some_and(|t| t.chars().count() > MAX_TITLE_CHARS) {
        return Err(FieldError::new("title", format!("at most {MAX_TITLE_CHARS} characters")).into());
    }
    let categories = body.categories.unwrap_or_default();
    if categories.len() > MAX_CATEGORIES {
        return Err(FieldError::new("categories", format!("at most {MAX_CATEGORIES}")).into());
    }
    for category in &categories {
        validate_id("categories", category)?;
    }
    let new = NewItem { bundle_id, embedding, title: body.title, categories };
    Ok((item_id.to_string(), change, Some(new)))
}

fn answer(item_id: &str, item: &ItemState) -> ItemAnswer {
    let withheld = reason(item, unix_now().as_millis() as u64);
    ItemAnswer {
        item_id: item_id.to_string(),
        hidden: item.hidden,
        deleted: item.deleted,
        expires_at_ms: item.expires_at_ms,
        served: withheld.is_none(),
        withheld,
        new_in_bundle: item.new.as_ref().map(|new| new.bundle_id.clone()),
    }
}

/// Purges the edge's segment lists that held `item_id` when it is no longer served.
fn purge_if_withheld(state: &AppState, item_id: &str, item: &ItemState) {
    if let Some(purger) = &state.edge_purge
        && reason(item, unix_now().as_millis() as u64).is_some()
    {
        purger.withheld(item_id);
    }
}

/// Applies checked edits (all or none) and answers the items' new states.
async fn apply(state: &AppState, edits: Vec<Edit>) -> Result<Vec<ItemAnswer>, ApiError> {
    let ids: Vec<String> = edits.iter().map(|(id, _, _)| id.clone()).collect();
    let states = state.serving.catalogue().apply(edits).await?;
    let answers = ids.iter().zip(&states).map(|(id, item)| answer(id, item)).collect();
    for (item_id, item) in ids.iter().zip(&states) {
        purge_if_withheld(state, item_id, item);
    }
    for (item_id, item) in ids.iter().zip(&states) {
        tracing::info!(
            item_id,
            hidden = item.hidden,
            expires_at_ms = item.expires_at_ms,
            new = item.new.is_some(),
            "catalogue item changed"
        );
    }
    Ok(answers)
}

async fn one(state: &AppState, edit: Edit) -> Result<Response, ApiError> {
    let mut answers = apply(state, vec![edit]).await?;
    Ok(Json(answers.remove(0)).into_response())
}

/// `PATCH /v1/items/{item_id}` `{"hidden": true}`, `{"expires_at_ms": 1767225600000}` or
/// `{"expires_at_ms": null}`: changes the fields given (a new item's embedding too).
#[utoipa::path(patch, path = "/v1/items/{item_id}", tag = "catalogue", summary = "Change an item's state",
    params(("item_id" = String, Path, description = "1-64 characters of A-Z a-z 0-9 _ - .", example = "318")),
    request_body(content = ItemBody, content_type = "application/json"),
    security(("bearer" = [])),
    responses((status = 200, description = "The item's state now", body = ItemAnswer), ItemErrors))]
pub async fn patch_item(
    State(state): State<AppState>,
    Path(item_id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let edit = edit(&state, &item_id, parse(&body)?, false)?;
    one(&state, edit).await
}

/// `PUT /v1/items/{item_id}`: sets the whole state (fields not given: not hidden, no expiry); with
/// an `embedding`, adds (or replaces) a new item.
#[utoipa::path(put, path = "/v1/items/{item_id}", tag = "catalogue", summary = "Set an item's state, or add a new item",
    params(("item_id" = String, Path, description = "1-64 characters of A-Z a-z 0-9 _ - .", example = "318")),
    request_body(content = ItemBody, content_type = "application/json"),
    security(("bearer" = [])),
    responses((status = 200, description = "The item's state now", body = ItemAnswer), ItemErrors))]
pub async fn put_item(
    State(state): State<AppState>,
    Path(item_id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let edit = edit(&state, &item_id, parse(&body)?, true)?;
    one(&state, edit).await
}

/// `POST /v1/items` `{"items": [{"item_id": "…", …PUT body…}]}`: up to [`MAX_ITEMS_PER_BATCH`]
/// `PUT`s applied together, all or none (one write of the catalogue's file); `cascade items import`
/// sends a file in such batches.
#[utoipa::path(post, path = "/v1/items", tag = "catalogue", summary = "Set many items at once (all or none)",
    request_body(content = ItemBatch, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The items' states now", body = ItemsApplied),
        (status = 400, description = "An entry is wrong: `invalid_parameter`, `field` names it as `items[i].field`", body = ErrorBody),
        (status = 401, description = "No bearer key, or an edge signature: `unauthorized`", body = ErrorBody),
        (status = 409, description = "`item_deleted` (a deleted item stays deleted) or `catalogue_full` (`[catalogue] max_new_items`)", body = ErrorBody),
        (status = 503, description = "The catalogue's state could not be saved; nothing changed: `catalogue_unavailable`, \
                                      or `overloaded`/`timeout`", body = ErrorBody, headers(("retry-after" = u32, description = "Seconds"))),
    ))]
pub async fn put_items(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let batch: ItemBatch = serde_json::from_slice(&body)
        .map_err(|e| FieldError::new("body", format!("expected {{\"items\": [{{\"item_id\", …}}]}}: {e}")))?;
    if batch.items.is_empty() || batch.items.len() > MAX_ITEMS_PER_BATCH {
        return Err(FieldError::new("items", format!("must hold 1..={MAX_ITEMS_PER_BATCH} items")).into());
    }
    let edits = batch
        .items
        .into_iter()
        .enumerate()
        .map(|(index, entry)| {
            let item_id = entry.item_id.clone().unwrap_or_default();
            edit(&state, &item_id, entry, true).map_err(|error| match error {
                ApiError::Invalid(e) => FieldError::new(format!("items[{index}].{}", e.field), e.message).into(),
                ApiError::NotFound(message) => FieldError::new(format!("items[{index}]"), message).into(),
                other => other,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let applied = apply(&state, edits).await?;
    Ok(Json(ItemsApplied { applied: applied.len(), items: applied }).into_response())
}

/// `DELETE /v1/items/{item_id}`: never served again (a later `PUT`/`PATCH` is 409).
#[utoipa::path(delete, path = "/v1/items/{item_id}", tag = "catalogue", summary = "Delete an item",
    params(("item_id" = String, Path, description = "1-64 characters of A-Z a-z 0-9 _ - .", example = "318")),
    security(("bearer" = [])),
    responses((status = 200, description = "The item's state now", body = ItemAnswer), ItemErrors))]
pub async fn delete_item(State(state): State<AppState>, Path(item_id): Path<String>) -> Result<Response, ApiError> {
    edit(&state, &item_id, ItemBody::default(), false)?;
    let item = state.serving.catalogue().delete(&item_id).await?;
    tracing::info!(item_id, "catalogue item deleted");
    purge_if_withheld(&state, &item_id, &item);
    Ok(Json(answer(&item_id, &item)).into_response())
}
