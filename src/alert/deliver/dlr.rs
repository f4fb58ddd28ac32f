//! Delivery reports: the HTTP endpoint the SMS gateway calls back (Kannel `dlr-url`), which moves a delivery
//! to `delivered` or `undelivered`. The URL carries the delivery id and the first half of its idempotency key,
//! so a report cannot be forged for a delivery without knowing its key.

use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use rusqlite::Connection;
use serde::Deserialize;
use tokio::sync::watch;

use crate::types::Clock;

use super::outbox;

#[derive(Deserialize)]
struct Report {
    /// Delivery id.
    d: i64,
    /// Idempotency key prefix.
    k: String,
    /// Kannel's report type (`%d`).
    s: i64,
    /// The SMSC's answer (`%A`), free text.
    #[serde(default)]
    a: String,
}

struct Ctx {
    db: Mutex<Connection>,
    clock: Arc<dyn Clock>,
}

async fn report(State(ctx): State<Arc<Ctx>>, Query(r): Query<Report>) -> StatusCode {
    let mut db = ctx.db.lock().unwrap_or_else(|p| p.into_inner());
    match outbox::apply_dlr(&mut db, r.d, &r.k, r.s, &r.a, ctx.clock.now()) {
        Ok(true) => StatusCode::OK,
        Ok(false) => {
            tracing::warn!(
                delivery = r.d,
                "delivery report for an unknown delivery or with a wrong key"
            );
            StatusCode::NOT_FOUND
        }
        Err(e) => {
            tracing::error!(delivery = r.d, error = %e, "cannot record a delivery report");
            // Kannel retries nothing, but a 5xx at least shows in its log.
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

pub(crate) async fn serve(
    listener: std::net::TcpListener,
    db: Connection,
    clock: Arc<dyn Clock>,
    mut stop: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "delivery-report listener");
            return;
        }
    };
    let ctx = Arc::new(Ctx {
        db: Mutex::new(db),
        clock,
    });
    let app = axum::Router::new()
        .route("/dlr", get(report))
        .with_state(ctx);
    let shutdown = async move {
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                break;
            }
        }
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "delivery-report listener stopped");
    }
}
