//! Citizen reports through the real pipeline: `POST /api/reports` on the pipeline's own server becomes a
//! `citizen_report` incident, recorded by the incident sink and routed by the alert router by ward to a
//! duty officer's phone through a real Kannel. Also the limits (413/415/422), auth (401/403), the per-client
//! rate limit (429 + Retry-After), malformed multipart bodies (never a 5xx), and closing an incident that
//! has had no report for two hours.

#[path = "support/alert_peers.rs"]
mod peers;
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use peers::{Kannel, free_port, wait_for};
use proptest::prelude::*;
use streetwatch::app::{Pipeline, RunOptions};
use streetwatch::config::Config;
use streetwatch::types::{Clock, ManualClock, SystemClock};

const BOUNDARY: &str = "sw-test-boundary-7MA4YWxkTrZu0gW";
const REPORTER: &str = "reporter-token-ben-nghe-01";
const ERRORS: &str = "reporter-token-errors-0001";
const BURST: &str = "reporter-token-burst-00001";
const VIEWER: &str = "viewer-token-wall-0000001";
const OPERATOR: &str = "operator-token-desk-00001";

fn tokens() -> String {
    [
        ("kiosk-ben-nghe", "reporter", REPORTER),
        ("kiosk-errors", "reporter", ERRORS),
        ("kiosk-burst", "reporter", BURST),
        ("wall", "viewer", VIEWER),
        ("desk", "operator", OPERATOR),
    ]
    .iter()
    .map(|(name, role, token)| {
        format!("[[serve.tokens]]\nname = \"{name}\"\nrole = \"{role}\"\ntoken = \"{token}\"\n")
    })
    .collect()
}

/// A camera in `ward` whose RTSP server is not there: it only tells the server the district's wards.
fn camera(id: &str, ward: &str) -> String {
    format!(
        "[[cameras]]\nid = \"{id}\"\nname = \"Camera {id}\"\nward = \"{ward}\"\nurl = \"rtsp://127.0.0.1:{}/cam\"\n",
        free_port()
    )
}

/// The pipeline's `[runtime]` and `[serve]` tables, then `rest`.
fn config(dir: &std::path::Path, rest: &str) -> Config {
    let text = format!(
        "[runtime]\ndata_dir = {dir:?}\nworkers = 1\n[serve]\nlisten = \"127.0.0.1:0\"\n{}\n{rest}",
        tokens()
    );
    Config::parse(&text, "reports.toml", &support::root()).unwrap()
}

/// An HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
    fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// POSTs `body` to /api/reports over a plain socket, writing on one thread while reading the answer on
/// this one, so an answer sent before the whole body was read (413, 415) is still seen.
fn post(addr: SocketAddr, token: Option<&str>, content_type: &str, body: Vec<u8>) -> Answer {
    exchange(addr, "POST /api/reports", token, content_type, body)
}

/// One request (`line`: method and path) over a plain socket, as [`post`] describes.
fn exchange(
    addr: SocketAddr,
    line: &str,
    token: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let head = format!(
        "{line} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut writer = stream.try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        let _ = writer.write_all(head.as_bytes());
        let _ = writer.write_all(&body);
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if raw.is_empty() => panic!("no answer: {e}"),
            Err(_) => break,
        }
        if complete(&raw) {
            break;
        }
    }
    drop(stream);
    let _ = sending.join();
    parse(&raw)
}

fn split_head(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some((&raw[..i], &raw[i + 4..]))
}

fn content_length(head: &[u8]) -> Option<usize> {
    String::from_utf8_lossy(head).lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}

fn complete(raw: &[u8]) -> bool {
    split_head(raw)
        .and_then(|(head, body)| Some(body.len() >= content_length(head)?))
        .unwrap_or(false)
}

fn parse(raw: &[u8]) -> Answer {
    let (head, body) = split_head(raw)
        .unwrap_or_else(|| panic!("no HTTP head: {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(head);
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let len = content_length(head.as_bytes()).unwrap_or(body.len());
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body[..len.min(body.len())]).into_owned(),
    }
}

/// A part of a multipart body: name, file name, bytes.
type Part<'a> = (&'a str, Option<&'a str>, &'a [u8]);

fn multipart(parts: &[Part]) -> (String, Vec<u8>) {
    let mut body = Vec::new();
    for (name, file, data) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match file {
            Some(f) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n\
                     Content-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={BOUNDARY}"), body)
}

fn jpeg(seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([x as u8 ^ seed, y as u8, seed.wrapping_mul(3)])
    });
    let mut out = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut out),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    out
}

fn png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(80, 60, |x, y| image::Rgb([x as u8, y as u8, 200]));
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// A report's fields, the photo first; `fields` replace or remove (empty value) the defaults.
fn report(photo: &[u8], fields: &[(&str, &str)]) -> (String, Vec<u8>) {
    let defaults = [
        ("ward", "Bến Nghé"),
        ("location", "12 Lê Lợi"),
        ("category", "parking"),
        ("description", "Ô tô đỗ chắn lối vào chợ Bến Thành"),
    ];
    let mut text: Vec<(&str, &str)> = defaults
        .iter()
        .filter(|(k, _)| !fields.iter().any(|(f, _)| f == k))
        .copied()
        .collect();
    text.extend(fields.iter().filter(|(_, v)| !v.is_empty()).copied());
    let mut parts: Vec<Part> = vec![("photo", Some("photo.jpg"), photo)];
    parts.extend(text.iter().map(|(k, v)| (*k, None, v.as_bytes())));
    multipart(&parts)
}

fn send(addr: SocketAddr, token: &str, photo: &[u8], fields: &[(&str, &str)]) -> Answer {
    let (ct, body) = report(photo, fields);
    post(addr, Some(token), &ct, body)
}

#[test]
fn a_report_becomes_one_alert_and_one_sms_to_its_wards_duty_officer_and_limits_hold() {
    let kannel = Kannel::start();
    let dir = tempfile::tempdir().unwrap();
    // Bến Nghé's duty officer gets SMS; other wards' alerts are recorded, sent to nobody.
    let alert = peers::sms_alert_table(&kannel).replacen("receiver = \"post\"\n", "", 1)
        + "[[alert.route.routes]]\nmatch = { ward = [\"Bến Nghé\"] }\nreceiver = \"post\"\n";
    let config = config(
        dir.path(),
        &format!(
            "{alert}\n{}\n{}",
            camera("d1-ben-nghe", "Bến Nghé"),
            camera("d1-da-kao", "Đa Kao")
        ),
    );
    let pipeline = Pipeline::start(&config, RunOptions::default(), Arc::new(SystemClock)).unwrap();
    let addr = pipeline.server_addr().expect("[serve] starts the server");
    let db = pipeline.db_path.clone();
    let incidents = streetwatch::store::Store::open(&db).unwrap();
    let alerts = streetwatch::alert::Store::open(&db).unwrap();
    let officer = "+84901234567";

    // 1. A report in Bến Nghé opens an incident and its alert; the duty officer gets one SMS.
    let photo = jpeg(1);
    let first = send(addr, REPORTER, &photo, &[("phone", "0912 345 678")]);
    assert_eq!(first.status, 201, "{}", first.body);
    let j = first.json();
    let key = j["incident"].as_str().unwrap().to_string();
    assert!(
        key.starts_with("citizen/citizen_report/ben-nghe/parking/"),
        "{key}"
    );
    assert_eq!(j["duplicate_of_open"], false);
    assert!(j["report_id"].as_i64().unwrap() > 0);
    let sms = kannel.wait_received(1, Duration::from_secs(30));
    assert_eq!(sms[0].to, officer);
    let text = sms[0].text();
    assert!(
        text.contains("Phan anh cua nguoi dan") && text.contains("12 Le Loi"),
        "the SMS says what and where: {text}"
    );
    assert!(
        text.contains("1 nguoi dan phan anh do xe sai quy dinh"),
        "{text}"
    );
    assert!(
        !text.contains("912345678") && !text.contains("0912"),
        "no citizen's phone in an SMS: {text}"
    );
    let alert = wait_for("the report's alert", Duration::from_secs(30), || {
        alerts
            .alerts(None, 100)
            .unwrap()
            .into_iter()
            .find(|a| a.key == key)
    });
    assert_eq!(
        (
            alert.camera.as_str(),
            alert.ward.as_str(),
            alert.rule.as_str()
        ),
        ("citizen", "Bến Nghé", "citizen_report")
    );
    let row = incidents
        .incident(&key)
        .unwrap()
        .expect("the sink recorded it");
    assert_eq!(
        (row.kind.as_str(), row.count, row.closed_at),
        ("citizen_report", 1, None)
    );
    let snapshot = row.snapshot.expect("the photo is the incident's snapshot");
    assert_eq!(std::fs::read(&snapshot).unwrap(), photo, "{snapshot}");
    assert!(snapshot.starts_with(dir.path().join("snapshots").to_str().unwrap()));

    // 2. The same category in the same ward (another spelling, coordinates instead of text) joins it: the
    // alert's summary counts two citizens, and no second SMS goes out.
    let second = send(
        addr,
        OPERATOR,
        &jpeg(2),
        &[
            ("ward", "ben nghe"),
            ("location", ""),
            ("lat", "10.77250"),
            ("lon", "106.69800"),
            ("description", "Vẫn còn đỗ, gọi 0987654321"),
        ],
    );
    assert_eq!(second.status, 201, "{}", second.body);
    assert_eq!(second.json()["incident"], key.as_str());
    assert_eq!(second.json()["duplicate_of_open"], true);
    // 3. Another ward's report: its own incident and alert, no SMS (no route for Đa Kao).
    let other = send(
        addr,
        REPORTER,
        &jpeg(3),
        &[("ward", "Đa Kao"), ("category", "noise")],
    );
    assert_eq!(other.status, 201, "{}", other.body);
    let other_key = other.json()["incident"].as_str().unwrap().to_string();
    assert!(
        other_key.starts_with("citizen/citizen_report/da-kao/noise/"),
        "{other_key}"
    );
    let joined = wait_for(
        "the alert to count two reports",
        Duration::from_secs(30),
        || {
            alerts
                .alerts(None, 100)
                .unwrap()
                .into_iter()
                .find(|a| a.key == key && a.summary.starts_with("2 người dân phản ánh"))
        },
    );
    assert!(!joined.summary.contains("0987654321"), "{}", joined.summary);
    assert_eq!(incidents.incident(&key).unwrap().unwrap().count, 2);
    wait_for("Đa Kao's alert", Duration::from_secs(30), || {
        alerts
            .alerts(None, 100)
            .unwrap()
            .into_iter()
            .find(|a| a.key == other_key)
    });
    assert_eq!(
        alerts
            .alerts(None, 100)
            .unwrap()
            .iter()
            .filter(|a| a.rule == "citizen_report")
            .count(),
        2,
        "two incidents, two alerts"
    );
    // Several group intervals (1 s) pass: an update or the other ward would have been sent by now.
    std::thread::sleep(Duration::from_secs(4));
    let got = kannel.received();
    assert_eq!(
        got.len(),
        1,
        "one SMS for the joined incident, none for Đa Kao: {:?}",
        got.iter().map(|s| s.text()).collect::<Vec<_>>()
    );
    assert_eq!(alerts.deliveries(None).unwrap().len(), 1);

    // The reports are kept, with the citizen's phone normalised (and nowhere else).
    let filed = incidents.citizen_reports(&key).unwrap();
    assert_eq!(filed.len(), 2);
    assert_eq!(filed[0].report.phone.as_deref(), Some("+84912345678"));
    assert_eq!(filed[0].report.client, "kiosk-ben-nghe@127.0.0.1");
    assert_eq!(filed[1].report.ward, "Bến Nghé", "the district's spelling");
    assert_eq!(
        (filed[1].report.lat, filed[1].report.lon),
        (Some(10.7725), Some(106.698))
    );

    // 4. Limits and auth, each answered with a JSON error that says what is wrong.
    let mut big = jpeg(4);
    big.resize(5 * 1024 * 1024 + 1, 0x55);
    let a = send(addr, ERRORS, &big, &[]);
    assert_eq!(a.status, 413, "{}", a.body);
    assert!(a.error().contains("`photo`"), "{}", a.body);
    let a = send(addr, ERRORS, b"just some text, not a photo\n", &[]);
    assert_eq!(a.status, 415, "{}", a.body);
    let a = send(addr, ERRORS, &jpeg(5), &[("ward", "")]);
    assert_eq!(a.status, 422, "{}", a.body);
    assert!(a.error().contains("`ward`"), "{}", a.body);
    let a = send(addr, ERRORS, &jpeg(5), &[("ward", "Tân Định")]);
    assert_eq!(a.status, 422, "{}", a.body);
    assert!(a.error().contains("Bến Nghé, Đa Kao"), "{}", a.body);
    let a = send(addr, VIEWER, &jpeg(6), &[]);
    assert_eq!(a.status, 403, "{}", a.body);
    let (ct, body) = report(&jpeg(6), &[]);
    let a = post(addr, None, &ct, body);
    assert_eq!(a.status, 401, "{}", a.body);
    let (ct, body) = report(&jpeg(6), &[]);
    let a = post(addr, Some("not-a-token-at-all-xx"), &ct, body);
    assert_eq!(a.status, 401, "{}", a.body);

    // 5. One client may send five at once, then one a minute.
    for i in 0..5 {
        let a = send(
            addr,
            BURST,
            &jpeg(10 + i),
            &[("category", "litter"), ("ward", "Đa Kao")],
        );
        assert_eq!(a.status, 201, "report {i}: {}", a.body);
    }
    let a = send(
        addr,
        BURST,
        &jpeg(20),
        &[("category", "litter"), ("ward", "Đa Kao")],
    );
    assert_eq!(a.status, 429, "{}", a.body);
    let wait: u64 = a
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // Other clients are not held back by it.
    let a = send(
        addr,
        ERRORS,
        &jpeg(21),
        &[("category", "litter"), ("ward", "Đa Kao")],
    );
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(kannel.received().len(), 1, "Đa Kao's reports sent no SMS");
    pipeline.shutdown();
}

/// Random and mangled bodies, and headers that are not multipart: always an answer, never a 5xx.
fn bodies() -> impl Strategy<Value = (String, Vec<u8>)> {
    let (ct, valid) = report(&jpeg(7), &[]);
    let ct2 = ct.clone();
    let mangled = (
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(move |(flips, cut, truncate)| {
            let mut b = valid.clone();
            for (at, byte) in flips {
                let i = at.index(b.len());
                b[i] = byte;
            }
            if truncate {
                b.truncate(cut.index(b.len()));
            }
            (ct.clone(), b)
        });
    let random = proptest::collection::vec(any::<u8>(), 0..600).prop_map(move |b| (ct2.clone(), b));
    let headers = (
        prop_oneof![
            Just("multipart/form-data".to_string()),
            Just("multipart/form-data; boundary=".to_string()),
            Just("application/json".to_string()),
            Just("text/plain".to_string()),
            "[ -~]{0,60}",
        ],
        proptest::collection::vec(any::<u8>(), 0..300),
    );
    let framed = proptest::collection::vec(
        (
            prop_oneof![
                Just("photo"),
                Just("ward"),
                Just("lat"),
                Just("description"),
                Just("x")
            ],
            proptest::collection::vec(any::<u8>(), 0..200),
        ),
        0..6,
    )
    .prop_map(|parts| {
        let parts: Vec<Part> = parts
            .iter()
            .map(|(n, d)| (*n, None, d.as_slice()))
            .collect();
        multipart(&parts)
    });
    prop_oneof![mangled, random, headers, framed]
}

#[test]
fn malformed_bodies_never_answer_5xx_and_report_incidents_survive_a_restart_then_close_after_two_idle_hours()
 {
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        // An alert router (recording, sending nothing): with one, a restart hands over what was left open.
        "[serve.reports]\nburst = 100000\nper_hour = 1000000\n[alert]\n[alert.route]\n",
    );
    let clock = ManualClock::at(SystemClock.now());
    let pipeline =
        Pipeline::start(&config, RunOptions::default(), Arc::new(clock.clone())).unwrap();
    let addr = pipeline.server_addr().unwrap();
    let incidents = streetwatch::store::Store::open(&pipeline.db_path).unwrap();

    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&bodies(), |(ct, body)| {
            let a = post(addr, Some(ERRORS), &ct, body);
            prop_assert!(a.status < 500, "{} {}", a.status, a.body);
            if a.status != 201 {
                prop_assert!(
                    (400..500).contains(&a.status) && !a.error().is_empty(),
                    "{} {}",
                    a.status,
                    a.body
                );
            }
            Ok(())
        })
        .unwrap();

    // Without cameras any ward is taken. A report opens an incident; it stays open across a restart and
    // takes the next report; two hours after that, with no other report, it is closed; the next report
    // opens a new one.
    let a = send(
        addr,
        REPORTER,
        &png(),
        &[("ward", "Tân Định"), ("category", "vending")],
    );
    assert_eq!(a.status, 201, "{}", a.body);
    let key = a.json()["incident"].as_str().unwrap().to_string();
    let row = wait_for("the incident recorded", Duration::from_secs(30), || {
        incidents.incident(&key).unwrap()
    });
    // A PNG is kept as a JPEG: snapshots are JPEGs wherever they go (link, e-mail attachment).
    let snapshot = std::fs::read(row.snapshot.unwrap()).unwrap();
    let decoded = image::load_from_memory_with_format(&snapshot, image::ImageFormat::Jpeg).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (80, 60));

    // The restart closes a camera's incidents left open after a grace (1 s here), not a report's.
    pipeline.shutdown();
    let opts = RunOptions {
        restart_close_grace: Duration::from_secs(1),
        ..RunOptions::default()
    };
    let pipeline = Pipeline::start(&config, opts, Arc::new(clock.clone())).unwrap();
    let addr = pipeline.server_addr().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(incidents.incident(&key).unwrap().unwrap().closed_at, None);
    clock.advance_ms(10 * 60_000);
    let again = send(
        addr,
        REPORTER,
        &jpeg(10),
        &[("ward", "tan dinh"), ("category", "vending")],
    );
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(
        again.json()["incident"],
        key.as_str(),
        "joined across the restart"
    );
    assert_eq!(again.json()["duplicate_of_open"], true);
    wait_for("two reports counted", Duration::from_secs(30), || {
        incidents.incident(&key).unwrap().filter(|r| r.count == 2)
    });

    clock.advance_ms(2 * 3_600_000 - 60_000);
    // A sweep passes (one each 10 s): still open at 1 h 59 min.
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(incidents.incident(&key).unwrap().unwrap().closed_at, None);
    clock.advance_ms(61_000);
    let closed = wait_for("the idle incident closed", Duration::from_secs(30), || {
        incidents
            .incident(&key)
            .unwrap()
            .filter(|r| r.closed_at.is_some())
    });
    assert_eq!(
        closed.closed_at,
        Some(clock.now().0),
        "closed when the sweep saw it idle"
    );
    assert!(closed.summary.contains("2 giờ"), "{}", closed.summary);
    let b = send(
        addr,
        REPORTER,
        &jpeg(9),
        &[("ward", "Tân Định"), ("category", "vending")],
    );
    assert_eq!(b.status, 201, "{}", b.body);
    assert_eq!(b.json()["duplicate_of_open"], false);
    assert_ne!(b.json()["incident"], key.as_str());
    pipeline.shutdown();
}

/// An operator resolving a report's alert closes its incident: the alert stops firing, and the next report
/// of the same kind in that ward opens a new incident instead of joining the handled one.
#[test]
fn resolving_a_reports_alert_closes_its_incident() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "[alert]\n[alert.route]\n");
    let pipeline = Pipeline::start(&config, RunOptions::default(), Arc::new(SystemClock)).unwrap();
    let addr = pipeline.server_addr().unwrap();
    let incidents = streetwatch::store::Store::open(&pipeline.db_path).unwrap();
    let fields = [
        ("ward", "Đa Kao"),
        ("category", "litter"),
        ("location", "Chợ Tân Định"),
    ];
    let first = send(addr, REPORTER, &jpeg(3), &fields);
    assert_eq!(first.status, 201, "{}", first.body);
    let key = first.json()["incident"].as_str().unwrap().to_string();
    let alert = wait_for("the report's alert", Duration::from_secs(30), || {
        let a = exchange(
            addr,
            "GET /api/alerts?kind=citizen_report",
            Some(VIEWER),
            "text/plain",
            Vec::new(),
        );
        assert_eq!(a.status, 200, "{}", a.body);
        a.json()["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["key"] == key.as_str())
            .cloned()
    });
    assert_eq!(alert["firing"], true);

    let resolved = exchange(
        addr,
        &format!("POST /api/alerts/{}/resolve", alert["id"]),
        Some(OPERATOR),
        "application/json",
        r#"{"note": "Đã dọn, phường xác nhận"}"#.as_bytes().to_vec(),
    );
    assert_eq!(resolved.status, 200, "{}", resolved.body);
    assert_eq!(resolved.json()["state"], "resolved");
    wait_for("the incident closed", Duration::from_secs(30), || {
        incidents
            .incident(&key)
            .unwrap()
            .filter(|r| r.closed_at.is_some())
    });
    wait_for(
        "the alert no longer firing",
        Duration::from_secs(30),
        || {
            let a = exchange(
                addr,
                &format!("GET /api/alerts/{}", alert["id"]),
                Some(VIEWER),
                "text/plain",
                Vec::new(),
            );
            (a.json()["firing"] == false).then_some(())
        },
    );

    let next = send(addr, REPORTER, &jpeg(4), &fields);
    assert_eq!(next.status, 201, "{}", next.body);
    assert_eq!(next.json()["duplicate_of_open"], false);
    assert_ne!(next.json()["incident"], key.as_str());
    pipeline.shutdown();
}
