//! `/v1/webhooks`: register, list, read, delete webhooks, rotate a secret, list a webhook's
//! deliveries and send one again. What is delivered, how, and from which process:
//! `otter_core::webhooks`.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use otter_core::db::Page;
use otter_core::db::webhooks::{self, Delivery, NewWebhook, Webhook};
use otter_core::model::{DeliveryId, ProjectId, WebhookId};
use otter_core::webhooks::{Refused, check_events, check_url, new_secret};
use serde::{Deserialize, Serialize};

use super::PageQuery;
use crate::error::{AppError, AppJson, AppPath, AppQuery, Result};
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/webhooks", get(list_webhooks).post(create_webhook))
        .route("/v1/webhooks/{id}", get(get_webhook).delete(delete_webhook))
        .route("/v1/webhooks/{id}/rotate-secret", post(rotate_secret))
        .route("/v1/webhooks/{id}/deliveries", get(list_deliveries))
        .route(
            "/v1/webhooks/{id}/deliveries/{delivery}/redeliver",
            post(redeliver),
        )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateWebhook {
    url: String,
    events: Vec<String>,
    project_id: Option<ProjectId>,
    description: Option<String>,
}

/// A webhook with its secret: the answer of create and rotate-secret, the only two.
#[derive(Debug, Serialize)]
struct WithSecret {
    #[serde(flatten)]
    webhook: Webhook,
    secret: String,
}

impl From<Refused> for AppError {
    fn from(Refused(why): Refused) -> Self {
        AppError::Validation(why)
    }
}

async fn create_webhook(
    State(state): State<AppState>,
    AppJson(body): AppJson<CreateWebhook>,
) -> Result<(StatusCode, AppJson<WithSecret>)> {
    check_url(&body.url, state.config.webhook_allow_private)?;
    check_events(&body.events)?;
    if let Some(description) = &body.description
        && (description.chars().count() > 1000 || description.contains('\0'))
    {
        return Err(AppError::Validation(
            "description must be at most 1000 characters, without NUL".to_owned(),
        ));
    }
    let secret = new_secret();
    let webhook = webhooks::insert(
        &state.db,
        &NewWebhook {
            url: &body.url,
            events: &body.events,
            project_id: body.project_id,
            description: body.description.as_deref(),
            secret: &secret,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, AppJson(WithSecret { webhook, secret })))
}

async fn list_webhooks(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<PageQuery>,
) -> Result<AppJson<Page<Webhook>>> {
    Ok(AppJson(webhooks::list(&state.db, q.page()?).await?))
}

async fn get_webhook(
    State(state): State<AppState>,
    AppPath(id): AppPath<WebhookId>,
) -> Result<AppJson<Webhook>> {
    Ok(AppJson(webhooks::get(&state.db, id).await?))
}

async fn delete_webhook(
    State(state): State<AppState>,
    AppPath(id): AppPath<WebhookId>,
) -> Result<StatusCode> {
    webhooks::delete(&state.db, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn rotate_secret(
    State(state): State<AppState>,
    AppPath(id): AppPath<WebhookId>,
) -> Result<AppJson<WithSecret>> {
    let secret = new_secret();
    let webhook = webhooks::set_secret(&state.db, id, &secret).await?;
    Ok(AppJson(WithSecret { webhook, secret }))
}

async fn list_deliveries(
    State(state): State<AppState>,
    AppPath(id): AppPath<WebhookId>,
    AppQuery(q): AppQuery<PageQuery>,
) -> Result<AppJson<Page<Delivery>>> {
    Ok(AppJson(
        webhooks::deliveries(&state.db, id, q.page()?).await?,
    ))
}

async fn redeliver(
    State(state): State<AppState>,
    AppPath((id, delivery)): AppPath<(WebhookId, DeliveryId)>,
) -> Result<(StatusCode, AppJson<Delivery>)> {
    let delivery = webhooks::redeliver(&state.db, id, delivery).await?;
    state.webhooks.wake();
    Ok((StatusCode::ACCEPTED, AppJson(delivery)))
}
