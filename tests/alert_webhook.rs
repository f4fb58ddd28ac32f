//! Webhook to an HTTP receiver: signed JSON, retried on 5xx with the same idempotency key, dead-lettered on 4xx.

#[path = "support/alert_peers.rs"]
mod peers;
#[path = "support/alert_util.rs"]
mod util;

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use peers::HookServer;
use sha2::Sha256;
use streetwatch::alert::{AlertConfig, AlertService};
use streetwatch::types::SystemClock;
use tempfile::TempDir;
use util::{opened, wait_deliveries};

const SECRET: &str = "city-integration-secret";

fn config(url: &str) -> AlertConfig {
    util::webhook_config(url, SECRET, "group_wait = \"0s\"")
}

#[test]
fn signed_json_is_retried_after_a_5xx_with_the_same_idempotency_key() {
    let hook = HookServer::start(vec![503, 200]);
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sw.db");
    let alert = AlertService::start(config(&hook.url()), &db, Arc::new(SystemClock)).unwrap();
    alert.submit(opened("d1-nh-03", "Bến Nghé", None));
    let rows = wait_deliveries(
        &db,
        Duration::from_secs(20),
        "accepted after one retry",
        |r| r.len() == 1 && r[0].state == "accepted",
    );
    assert_eq!(rows[0].attempts, 2);
    let reqs = hook.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 2);
    for r in &reqs {
        assert_eq!(r.path, "/hooks/streetwatch");
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.headers["idempotency-key"], rows[0].idempotency_key);
        let ts = &r.headers["x-streetwatch-timestamp"];
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(format!("{ts}.").as_bytes());
        mac.update(&r.body);
        let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(
            r.headers["x-streetwatch-signature"], want,
            "HMAC-SHA256 over timestamp.body"
        );
    }
    let doc: serde_json::Value = serde_json::from_slice(&reqs[1].body).unwrap();
    assert_eq!(doc["notice_id"], rows[0].notice_id);
    assert_eq!(doc["status"], "firing");
    assert_eq!(doc["alerts"][0]["camera"], "d1-nh-03");
    assert_eq!(doc["alerts"][0]["ward"], "Bến Nghé");
    assert_eq!(doc["alerts"][0]["kind"], "crowding");
    alert.shutdown();
}

#[test]
fn a_4xx_is_dead_lettered_after_one_attempt() {
    let hook = HookServer::start(vec![422]);
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sw.db");
    let alert = AlertService::start(config(&hook.url()), &db, Arc::new(SystemClock)).unwrap();
    alert.submit(opened("d1-nh-03", "Bến Nghé", None));
    let rows = wait_deliveries(&db, Duration::from_secs(20), "dead-lettered", |r| {
        r.len() == 1 && r[0].state == "dead"
    });
    // Outlasts the retry schedule (at most 300 ms between attempts) several times over.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(rows[0].attempts, 1);
    assert_eq!(rows[0].last_error.as_deref(), Some("HTTP 422: ok"));
    assert_eq!(hook.count(), 1, "no retry after a 4xx");
    alert.shutdown();
}
