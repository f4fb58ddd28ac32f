//! Webhook for the city's integration platform: the notice as JSON, POSTed with an HMAC-SHA256 signature.
//!
//! Headers: `X-Streetwatch-Timestamp` (Unix seconds), `X-Streetwatch-Signature: sha256=<hex>` over
//! `"{timestamp}.{body}"` (signing the time too lets the receiver refuse replays), and `Idempotency-Key`
//! (the same on every retry of one delivery, so the receiver can drop duplicates).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::types::Timestamp;

use super::Outcome;
use crate::alert::config::WebhookConfig;

fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub(crate) async fn send(
    client: &reqwest::Client,
    cfg: &WebhookConfig,
    body: &str,
    key: &str,
    now: Timestamp,
) -> Outcome {
    let ts = now.0.div_euclid(1000);
    let req = client
        .post(cfg.url.as_str())
        .timeout(cfg.timeout.std())
        .header("Content-Type", "application/json")
        .header("X-Streetwatch-Timestamp", ts.to_string())
        .header(
            "X-Streetwatch-Signature",
            signature(cfg.secret.expose().as_bytes(), ts, body.as_bytes()),
        )
        .header("Idempotency-Key", key)
        .body(body.to_string());
    match req.send().await {
        Ok(resp) => {
            let status = resp.status();
            let text: String = resp
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(500)
                .collect();
            let reply = format!("HTTP {}: {}", status.as_u16(), text.trim());
            if status.is_success() {
                Outcome::Accepted {
                    state: "accepted",
                    reply,
                }
            } else {
                Outcome::from_status(status, reply)
            }
        }
        Err(e) => Outcome::network(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_reference_vectors() {
        // Written down from outside this code: RFC 4231 test case 2 (key "Jefe") — the timestamp is empty
        // here only to reach the RFC's exact data — and Python's stdlib for the "{ts}.{body}" form:
        // hmac.new(b"Jefe", b'1700000000.{"kind":"alerts"}', hashlib.sha256).hexdigest()
        let rfc = {
            let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
            mac.update(b"what do ya want for nothing?");
            hex::encode(mac.finalize().into_bytes())
        };
        assert_eq!(
            rfc,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            signature(b"Jefe", 1_700_000_000, br#"{"kind":"alerts"}"#),
            "sha256=a2501206d51232f337e375fa343abc887391fe78a3a9d09180acf673fce4d042"
        );
        assert_ne!(
            signature(b"Jefe", 1_700_000_001, br#"{"kind":"alerts"}"#),
            signature(b"Jefe", 1_700_000_000, br#"{"kind":"alerts"}"#),
            "the timestamp is signed"
        );
    }
}
