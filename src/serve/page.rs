//! The operations-centre page: three static files compiled into the binary (no build step, nothing from a
//! CDN: the control room is offline), served at `/` and `/static/…` under a strict Content-Security-Policy,
//! and `GET /api/me`, which tells the page whose token it holds.
//!
//! Caching: every file carries a strong `ETag` (a hash of its bytes) with `Cache-Control: no-cache`, so a
//! browser revalidates and gets a `304` until a new binary ships different bytes: never a stale script
//! beside a new page.

use std::sync::LazyLock;

use axum::Json;
use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use super::auth::Caller;
use super::state::AppState;

/// Scripts and styles only from this origin (no inline script or style attribute), images from here
/// (snapshots at `/s/…`), fetches (the API and the live feed) to here; no plugins, frames, forms or base URL.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

struct Asset {
    bytes: &'static [u8],
    content_type: &'static str,
    etag: HeaderValue,
}

impl Asset {
    fn new(bytes: &'static [u8], content_type: &'static str) -> Self {
        let digest = Sha256::digest(bytes);
        let etag = format!("\"{}\"", hex::encode(&digest[..12]));
        Self {
            bytes,
            content_type,
            etag: HeaderValue::from_str(&etag).expect("hex is a valid header value"),
        }
    }

    fn respond(&self, request: &HeaderMap) -> Response {
        let mut headers = HeaderMap::new();
        headers.insert(header::ETAG, self.etag.clone());
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        // Snapshot links are capabilities: they must not leak to another site through a Referer.
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        let fresh = request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|tag| {
                let tag = tag.trim();
                tag == "*" || tag.trim_start_matches("W/") == self.etag.to_str().unwrap_or("")
            });
        if fresh {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        (StatusCode::OK, headers, self.bytes).into_response()
    }
}

static INDEX: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_bytes!("page/index.html"),
        "text/html; charset=utf-8",
    )
});
static APP_JS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_bytes!("page/app.js"),
        "text/javascript; charset=utf-8",
    )
});
static APP_CSS: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_bytes!("page/app.css"), "text/css; charset=utf-8"));

/// Who holds the token the page was given: the page shows it and offers what the role allows.
#[derive(serde::Serialize)]
struct Me {
    name: String,
    role: &'static str,
}

async fn me(caller: Caller) -> Json<Me> {
    Json(Me {
        name: caller.name,
        role: caller.role.as_str(),
    })
}

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|h: HeaderMap| async move { INDEX.respond(&h) }))
        .route(
            "/static/app.js",
            get(|h: HeaderMap| async move { APP_JS.respond(&h) }),
        )
        .route(
            "/static/app.css",
            get(|h: HeaderMap| async move { APP_CSS.respond(&h) }),
        )
        .route("/api/me", get(me))
}
