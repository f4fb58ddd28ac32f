//! SMS through a real Kannel (bearerbox + smsbox + fakesmsc): what the phone would get, its segment count,
//! delivery reports, and the gateway's refusals.

#[path = "support/alert_peers.rs"]
mod peers;
#[path = "support/alert_util.rs"]
mod util;

use std::sync::Arc;
use std::time::Duration;

use peers::{KANNEL_PASS, KANNEL_USER, Kannel};
use streetwatch::alert::{AlertConfig, AlertService, Store};
use streetwatch::types::SystemClock;
use tempfile::TempDir;
use util::{opened, settled, snapshot_jpeg, wait_deliveries};

fn sms_receiver(name: &str, url: &str, password: &str, numbers: &[&str], strip: bool) -> String {
    format!(
        r#"
[[receivers]]
name = "{name}"
[receivers.sms]
url = "{url}"
username = "{KANNEL_USER}"
password = "{password}"
numbers = {numbers:?}
sender = "CAQ1"
strip_diacritics = {strip}
max_segments = 4
"#
    )
}

const FAST: &str = r#"
snapshot_base_url = "https://sw.q1.vn/s/"
[dlr]
listen = "127.0.0.1:0"
[retry]
initial_backoff = "100ms"
max_backoff = "400ms"
"#;

#[test]
fn vietnamese_sms_arrives_whole_with_its_segment_count_and_delivery_report() {
    let kannel = Kannel::start();
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sw.db");
    let url = kannel.sendsms_url();
    let cfg = format!(
        "{FAST}{}{}\n[route]\nreceiver = \"post-ucs2\"\ngroup_wait = \"0s\"\n[[route.routes]]\nreceiver = \"post-ucs2\"\ncontinue = true\n[[route.routes]]\nreceiver = \"post-plain\"\n",
        sms_receiver("post-ucs2", &url, KANNEL_PASS, &["0901 234 567"], false),
        // Kannel's query-string interface, still there for gateways that take nothing else.
        sms_receiver("post-plain", &url, KANNEL_PASS, &["0912345678"], true)
            .replace("[receivers.sms]\n", "[receivers.sms]\nmethod = \"get\"\n"),
    );
    let alert = AlertService::start(
        AlertConfig::from_toml(&cfg).unwrap(),
        &db,
        Arc::new(SystemClock),
    )
    .unwrap();
    assert!(alert.dlr_addr().is_some_and(|a| a.ip().is_loopback()));
    alert.submit(opened(
        "d1-nh-03",
        "Bến Nghé",
        Some(&snapshot_jpeg(dir.path())),
    ));

    let got = kannel.wait_received(2, Duration::from_secs(20));
    let rows = wait_deliveries(
        &db,
        Duration::from_secs(20),
        "both SMS delivered (report 1)",
        |r| {
            r.len() == 2
                && r.iter()
                    .all(|d| d.state == "delivered" && d.gateway_reply.is_some())
        },
    );
    for d in &rows {
        let sms = got
            .iter()
            .find(|s| s.to == d.target)
            .unwrap_or_else(|| panic!("no SMS to {}: {got:?}", d.target));
        assert_eq!(
            sms.text(),
            d.body,
            "the phone gets exactly the text decided"
        );
        assert_eq!(
            sms.parts,
            parts_by_spec(&sms.text(), sms.ucs2),
            "Kannel split it as GSM 03.40 says"
        );
        assert_eq!(
            Some(sms.parts as i64),
            d.segments,
            "the cost recorded is what went on the air"
        );
        let non_gsm = d
            .body
            .chars()
            .any(|c| !GSM7_BASIC.contains(c) && !GSM7_EXTENSION.contains(c));
        assert_eq!(sms.ucs2, non_gsm, "UCS-2 exactly when the text needs it");
        assert_eq!(sms.from, "CAQ1");
        assert!(
            d.body.contains("https://sw.q1.vn/s/"),
            "short link to the snapshot: {}",
            d.body
        );
        assert!(d.body.ends_with(&format!("#{}", d.notice_id)), "{}", d.body);
    }
    let ucs2 = rows.iter().find(|d| d.target == "+84901234567").unwrap();
    assert!(
        ucs2.body
            .starts_with("[CẢNH BÁO] Tụ tập đông người: Nguyễn Huệ / Lê Lợi (P. Bến Nghé)"),
        "{}",
        ucs2.body
    );
    assert!(
        parts_by_spec(&ucs2.body, true) > 1,
        "Vietnamese with diacritics needs UCS-2 and several parts"
    );
    let plain = rows.iter().find(|d| d.target == "+84912345678").unwrap();
    assert!(
        plain
            .body
            .starts_with("[CANH BAO] Tu tap dong nguoi: Nguyen Hue / Le Loi (P. Ben Nghe)"),
        "{}",
        plain.body
    );
    assert_eq!(
        (parts_by_spec(&plain.body, false), plain.segments),
        (1, Some(1))
    );

    let events = Store::open(&db).unwrap().delivery_events(ucs2.id).unwrap();
    let states: Vec<&str> = events.iter().map(|e| e.state.as_str()).collect();
    assert_eq!(&states[..2], ["pending", "sending"], "{events:?}");
    // The gateway's reply and its delivery reports race; both are recorded whatever the order.
    let detail = |e: &streetwatch::alert::DeliveryEvent| e.detail.clone().unwrap_or_default();
    assert!(
        events
            .iter()
            .any(|e| detail(e).contains("HTTP 202: 0: Accepted for delivery")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.state == "delivered" && detail(e).starts_with("report 1")),
        "{events:?}"
    );
    assert_eq!(states.last(), Some(&"delivered"), "{events:?}");
    alert.shutdown();
}

#[test]
fn bad_credentials_and_a_denied_number_are_dead_lettered_without_retries() {
    let kannel = Kannel::start();
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sw.db");
    let url = kannel.sendsms_url();
    let cfg = format!(
        "{FAST}{}{}\n[route]\nreceiver = \"post\"\ngroup_wait = \"0s\"\n[[route.routes]]\nreceiver = \"post\"\ncontinue = true\n[[route.routes]]\nreceiver = \"wrong-pass\"\n",
        // The first number is on the gateway's black list.
        sms_receiver(
            "post",
            &url,
            KANNEL_PASS,
            &["0900000123", "0901234567"],
            true
        ),
        sms_receiver(
            "wrong-pass",
            &url,
            "not-the-password",
            &["0987654321"],
            true
        ),
    );
    let alert = AlertService::start(
        AlertConfig::from_toml(&cfg).unwrap(),
        &db,
        Arc::new(SystemClock),
    )
    .unwrap();
    alert.submit(opened("d1-nh-03", "Bến Nghé", None));
    wait_deliveries(
        &db,
        Duration::from_secs(20),
        "three settled deliveries",
        |r| r.len() == 3 && r.iter().all(settled),
    );
    // A window that outlasts the retry schedule (100 ms, then at most 400 ms between attempts) several times
    // over, so a retry of a dead-lettered delivery would have shown.
    std::thread::sleep(Duration::from_secs(3));
    let rows = Store::open(&db).unwrap().deliveries(None).unwrap();
    let by = |t: &str| rows.iter().find(|d| d.target == t).unwrap();
    let denied = by("+84900000123");
    assert_eq!((denied.state.as_str(), denied.attempts), ("dead", 1));
    assert!(
        denied.last_error.as_deref().unwrap().contains("400")
            && denied.last_error.as_deref().unwrap().contains("denied"),
        "{denied:?}"
    );
    let auth = by("+84987654321");
    assert_eq!((auth.state.as_str(), auth.attempts), ("dead", 1));
    assert_eq!(
        auth.last_error.as_deref(),
        Some("HTTP 403: Authorization failed for sendsms")
    );
    let ok = by("+84901234567");
    assert!(
        matches!(ok.state.as_str(), "accepted" | "delivered"),
        "{ok:?}"
    );
    assert_eq!(ok.attempts, 1);
    let got = kannel.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].to, "+84901234567");
    alert.shutdown();
}

/// GSM 03.38 default alphabet and its extension table (two septets each), written out from the spec rather
/// than taken from the code under test.
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM7_EXTENSION: &str = "^{}\\[~]|€\x0c";

/// Parts of a concatenated SMS per GSM 03.40: 160 septets (70 UCS-2 units) fit one message; beyond that each
/// part carries 153 septets (67 units) after its 6-byte concatenation header.
fn parts_by_spec(text: &str, ucs2: bool) -> usize {
    let (len, single, each) = if ucs2 {
        (text.encode_utf16().count(), 70, 67)
    } else {
        let septets = text
            .chars()
            .map(|c| if GSM7_EXTENSION.contains(c) { 2 } else { 1 })
            .sum();
        (septets, 160, 153)
    };
    if len <= single { 1 } else { len.div_ceil(each) }
}
