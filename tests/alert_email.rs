//! E-mail through a real SMTP server (aiosmtpd) that requires STARTTLS and AUTH.

#[path = "support/alert_peers.rs"]
mod peers;
#[path = "support/alert_util.rs"]
mod util;

use std::sync::Arc;
use std::time::Duration;

use peers::{SMTP_PASS, SMTP_USER, Smtp};
use sha2::{Digest, Sha256};
use streetwatch::alert::{AlertConfig, AlertService, Store};
use streetwatch::types::SystemClock;
use tempfile::TempDir;
use util::{opened, snapshot_jpeg, wait_deliveries};

fn config(smtp: &Smtp, password: &str, ca: bool) -> AlertConfig {
    let ca_line = if ca {
        format!("ca_file = \"{}\"", smtp.ca_file.display())
    } else {
        String::new()
    };
    AlertConfig::from_toml(&format!(
        r#"
snapshot_base_url = "https://sw.q1.vn/s/"
[retry]
initial_backoff = "100ms"
max_backoff = "300ms"
[[receivers]]
name = "district-command"
[receivers.email]
smtp_host = "127.0.0.1"
smtp_port = {port}
tls_domain = "localhost"
username = "{SMTP_USER}"
password = "{password}"
{ca_line}
from = "streetwatch <{SMTP_USER}>"
to = ["truc-ban@q1.police.vn", "chi-huy@q1.police.vn"]
[route]
receiver = "district-command"
group_wait = "0s"
"#,
        port = smtp.port
    ))
    .unwrap()
}

#[test]
fn email_over_starttls_and_auth_has_both_bodies_and_the_snapshot() {
    let smtp = Smtp::start();
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sw.db");
    let snap = snapshot_jpeg(dir.path());
    let alert =
        AlertService::start(config(&smtp, SMTP_PASS, true), &db, Arc::new(SystemClock)).unwrap();
    alert.submit(opened("d1-nh-03", "Bến Nghé", Some(&snap)));
    let rows = wait_deliveries(&db, Duration::from_secs(20), "the e-mail accepted", |r| {
        r.len() == 1 && r[0].state == "accepted"
    });
    let d = &rows[0];
    assert!(
        d.gateway_reply.as_deref().unwrap().starts_with("250"),
        "{d:?}"
    );
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let m = &mails[0];
    let subject = m["subject"].as_str().unwrap();
    assert!(
        subject.contains("Tụ tập đông người")
            && subject.contains("Nguyễn Huệ / Lê Lợi (P. Bến Nghé)"),
        "{subject}"
    );
    assert!(subject.ends_with(&format!("#{}", d.notice_id)));
    assert_eq!(m["to"], "truc-ban@q1.police.vn, chi-huy@q1.police.vn");
    assert_eq!(
        m["message_id"],
        format!("<{}@streetwatch>", d.idempotency_key)
    );
    let text = m["text"].as_str().unwrap();
    assert!(
        text.contains("d1-nh-03")
            && text.contains("7 người trong vùng 45 giây")
            && text.contains("https://sw.q1.vn/s/"),
        "{text}"
    );
    let html = m["html"].as_str().unwrap();
    assert!(
        html.contains("<table") && html.contains("Nguyễn Huệ / Lê Lợi"),
        "{html}"
    );
    let att = &m["attachments"][0];
    assert_eq!(att["filename"], "snapshot-1.jpg");
    assert_eq!(att["content_type"], "image/jpeg");
    let want = hex::encode(Sha256::digest(std::fs::read(&snap).unwrap()));
    assert_eq!(
        att["sha256"], want,
        "the attachment is the snapshot, byte for byte"
    );
    alert.shutdown();
}

#[test]
fn a_wrong_password_is_dead_lettered_and_an_untrusted_certificate_is_not_sent_to() {
    let smtp = Smtp::start();
    let dir = TempDir::new().unwrap();

    let db = dir.path().join("wrong-pass.db");
    let alert =
        AlertService::start(config(&smtp, "wrong", true), &db, Arc::new(SystemClock)).unwrap();
    alert.submit(opened("d1-nh-03", "Bến Nghé", None));
    let rows = wait_deliveries(&db, Duration::from_secs(20), "dead-lettered", |r| {
        r.len() == 1 && r[0].state == "dead"
    });
    assert_eq!(rows[0].attempts, 1);
    assert!(
        rows[0].last_error.as_deref().unwrap().contains("535"),
        "{:?}",
        rows[0].last_error
    );
    alert.shutdown();

    // Without the CA file the server's certificate is not trusted: nothing is sent; it retries (the
    // certificate or the config may be fixed) rather than falling back to plain text.
    let db = dir.path().join("no-ca.db");
    let alert =
        AlertService::start(config(&smtp, SMTP_PASS, false), &db, Arc::new(SystemClock)).unwrap();
    alert.submit(opened("d1-nh-04", "Bến Nghé", None));
    let rows = wait_deliveries(&db, Duration::from_secs(20), "two failed attempts", |r| {
        r.len() == 1 && r[0].attempts >= 2
    });
    assert!(
        matches!(rows[0].state.as_str(), "pending" | "sending"),
        "{:?}",
        rows[0]
    );
    let events = Store::open(&db)
        .unwrap()
        .delivery_events(rows[0].id)
        .unwrap();
    let failed = events
        .iter()
        .find(|e| e.detail.as_deref().unwrap_or("").contains("failed"))
        .unwrap();
    assert!(
        failed
            .detail
            .as_deref()
            .unwrap()
            .to_lowercase()
            .contains("certificate"),
        "{failed:?}"
    );
    alert.shutdown();
    assert!(smtp.messages().is_empty());
}
