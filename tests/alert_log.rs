//! The log receiver through the real alert service: a notice is written to the streetwatch log and
//! appended to a JSON Lines file, its delivery ends `delivered`; a file that cannot be written is retried.

#[path = "support/alert_util.rs"]
mod util;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use streetwatch::alert::{AlertConfig, AlertService};
use streetwatch::types::{Clock, ManualClock, SystemClock};
use tempfile::TempDir;
use util::{opened, wait_deliveries};

/// Everything logged in this test process, without colour.
fn captured() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let buf = buf.clone();
            move || Capture(buf.clone())
        };
        tracing::subscriber::set_global_default(
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(writer)
                .finish(),
        )
        .unwrap();
        buf
    })
    .clone()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn config(file: &str) -> AlertConfig {
    AlertConfig::from_toml(&format!(
        r#"
[retry]
initial_backoff = "1s"
max_backoff = "1s"
jitter = 0.0
[[receivers]]
name = "duty-log"
log = {{ file = "{file}" }}
[route]
receiver = "duty-log"
group_wait = "0s"
"#
    ))
    .unwrap()
}

#[test]
fn a_notice_is_logged_and_appended_as_one_json_line_and_its_delivery_is_delivered() {
    let log = captured();
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sw.db");
    let clock = Arc::new(ManualClock::at(SystemClock.now()));
    // Relative: taken inside the data directory (the database's folder), not the working directory.
    let alert = AlertService::start(config("notices.jsonl"), &db, clock.clone()).unwrap();
    alert.submit(opened("d1-log-01", "Bến Nghé", None));
    let rows = wait_deliveries(&db, Duration::from_secs(30), "delivered", |r| {
        r.len() == 1 && r[0].state == "delivered"
    });
    alert.shutdown();
    let file = dir.path().join("notices.jsonl");
    let d = &rows[0];
    assert_eq!(
        (d.channel.as_str(), d.target.as_str(), d.attempts),
        ("log", file.display().to_string().as_str(), 1)
    );
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one line per notice: {text:?}");
    assert!(text.ends_with('\n'));
    assert!(text.starts_with(r#"{"text":""#), "the words first: {text}");
    let line: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    // The webhook's document, with the notice in words beside it.
    assert_eq!(line["notice"]["notice_id"], d.notice_id);
    assert_eq!(line["notice"]["status"], "firing");
    let a = &line["notice"]["alerts"][0];
    assert_eq!(
        (&a["camera"], &a["ward"], &a["kind"]),
        (
            &serde_json::json!("d1-log-01"),
            &serde_json::json!("Bến Nghé"),
            &serde_json::json!("crowding")
        )
    );
    let words = line["text"].as_str().unwrap();
    for part in [
        "Nguyễn Huệ / Lê Lợi",
        "Bến Nghé",
        "7 người trong vùng 45 giây",
    ] {
        assert!(words.contains(part), "{part:?} not in {words:?}");
    }
    assert!(!words.contains('\n'), "{words:?}");
    assert!(!d.body.contains('\n'));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&d.body).unwrap(),
        line
    );
    let logged = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    let entry = logged
        .lines()
        .find(|l| l.contains("streetwatch::notice") && l.contains(words))
        .unwrap_or_else(|| panic!("no streetwatch::notice line with {words:?} in:\n{logged}"));
    assert!(entry.contains(" INFO "), "{entry}");
}

#[test]
fn a_file_that_cannot_be_written_is_retried_with_its_reason_and_then_delivered() {
    let log = captured();
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sw.db");
    let file = dir.path().join("notices.jsonl");
    let clock = Arc::new(ManualClock::at(SystemClock.now()));
    let alert = AlertService::start(
        config(&file.display().to_string()),
        &db,
        clock.clone() as Arc<dyn Clock>,
    )
    .unwrap();
    // A folder where the file should be, made after start-up (which refuses one): no user, root
    // included, can append to it.
    std::fs::create_dir(&file).unwrap();
    let incident = opened("d1-log-02", "Đa Kao", None);
    alert.submit(incident);
    let rows = wait_deliveries(&db, Duration::from_secs(30), "a failed attempt", |r| {
        r.len() == 1 && r[0].attempts == 1 && r[0].state == "pending"
    });
    let error = rows[0].last_error.clone().unwrap_or_default();
    assert!(
        error.contains(&file.display().to_string()) && error.contains("directory"),
        "{error}"
    );
    // Nothing was said to be sent while the file could not take it.
    let logged = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    assert!(
        !logged
            .lines()
            .any(|l| l.contains("streetwatch::notice") && l.contains("Đa Kao")),
        "{logged}"
    );
    std::fs::remove_dir(&file).unwrap();
    // The retry is due a second later on the router's clock.
    clock.advance_ms(1_500);
    let rows = wait_deliveries(&db, Duration::from_secs(30), "delivered on retry", |r| {
        r.len() == 1 && r[0].state == "delivered"
    });
    alert.shutdown();
    assert_eq!(rows[0].attempts, 2);
    assert_eq!(rows[0].last_error, None);
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 1, "{text:?}");
    assert!(text.contains("Đa Kao"));
}
