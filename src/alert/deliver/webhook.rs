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
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?" — here as "{ts}.{body}".
        let s = signature(b"Jefe", 0, b"what do ya want for nothing?");
        assert!(s.starts_with("sha256=") && s.len() == 7 + 64);
        assert_ne!(s, signature(b"Jefe", 1, b"what do ya want for nothing?"));
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"0.what do ya want for nothing?");
        assert_eq!(
            s,
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        );
    }
}
