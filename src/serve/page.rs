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

#[cfg(test)]
mod tests {
    use super::*;

    fn status(asset: &Asset, if_none_match: Option<&str>) -> (StatusCode, HeaderMap) {
        let mut h = HeaderMap::new();
        if let Some(v) = if_none_match {
            h.insert(header::IF_NONE_MATCH, HeaderValue::from_str(v).unwrap());
        }
        let r = asset.respond(&h);
        (r.status(), r.headers().clone())
    }

    #[test]
    fn a_browser_revalidates_and_gets_304_only_for_the_same_bytes() {
        let (s, h) = status(&APP_JS, None);
        assert_eq!(s, StatusCode::OK);
        assert_eq!(h[header::CACHE_CONTROL], "no-cache");
        assert_eq!(h[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        let etag = h[header::ETAG].to_str().unwrap().to_string();
        assert_eq!(status(&APP_JS, Some(&etag)).0, StatusCode::NOT_MODIFIED);
        assert_eq!(
            status(&APP_JS, Some(&format!("\"x\", W/{etag}"))).0,
            StatusCode::NOT_MODIFIED
        );
        assert_eq!(status(&APP_JS, Some("\"other\"")).0, StatusCode::OK);
        // Another file's tag is not this one's.
        let css_tag = status(&APP_CSS, None).1[header::ETAG].clone();
        assert_ne!(css_tag.to_str().unwrap(), etag);
        assert_eq!(
            status(&APP_JS, Some(css_tag.to_str().unwrap())).0,
            StatusCode::OK
        );
        assert_eq!(
            status(&INDEX, None).1[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY
        );
    }

    /// The policy allows no inline script or style, so the page must have none (the browser would refuse
    /// it silently); and alert text comes from citizens, so the script never parses strings as HTML.
    #[test]
    fn the_page_needs_nothing_the_policy_forbids_and_never_parses_text_as_html() {
        let html = std::str::from_utf8(INDEX.bytes).unwrap();
        for (i, _) in html.match_indices("<script") {
            let tag = &html[i..i + html[i..].find('>').unwrap()];
            assert!(tag.contains(" src=\"/static/"), "inline script: {tag}");
        }
        assert!(!html.contains("<style"), "inline stylesheet");
        assert!(!html.contains(" style="), "style attribute");
        for word in html.split(|c: char| c.is_whitespace() || c == '<') {
            let attr = word.split('=').next().unwrap_or("");
            assert!(
                !(attr.starts_with("on") && attr.len() > 2 && word.contains('=')),
                "inline event handler: {word}"
            );
        }
        let js = std::str::from_utf8(APP_JS.bytes).unwrap();
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ] {
            assert!(!js.contains(sink), "app.js uses {sink}");
        }
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
    }
}
