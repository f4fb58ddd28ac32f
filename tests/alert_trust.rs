//! Trust at the edges of the alert service: delivery reports that someone made up, snapshot links that can be
//! guessed, and the delivery-report listener against clients that hold connections open.

#[path = "support/alert_peers.rs"]
mod peers;
#[path = "support/alert_util.rs"]
mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use peers::{HookServer, KANNEL_PASS, KANNEL_USER, Kannel, http_get};
use sha2::{Digest, Sha256};
use streetwatch::alert::{AlertConfig, AlertHandle, AlertService, DeliveryRow, Router, Store};
use streetwatch::types::SystemClock;
use tempfile::TempDir;
use util::{opened, wait_deliveries};

fn sms_config(sendsms_url: &str) -> String {
    format!(
        r#"
[dlr]
listen = "127.0.0.1:0"
[retry]
initial_backoff = "300ms"
max_backoff = "1s"
[[receivers]]
name = "post"
[receivers.sms]
url = "{sendsms_url}"
username = "{KANNEL_USER}"
password = "{KANNEL_PASS}"
numbers = ["0901234567", "0912345678"]
strip_diacritics = true
[route]
receiver = "post"
group_wait = "0s"
"#
    )
}

/// The delivery-report URL a gateway was handed in one request (Kannel's `dlr-url`, as a query parameter
/// or as the `X-Kannel-DLR-Url` header), with the number it was for.
fn dlr_url_in(req: &peers::HookRequest) -> (String, String) {
    if let (Some(url), Some(to)) = (
        req.headers.get("x-kannel-dlr-url"),
        req.headers.get("x-kannel-to"),
    ) {
        return (to.clone(), url.clone());
    }
    let parsed = url::Url::parse(&format!("http://gateway{}", req.path)).unwrap();
    let param = |k: &str| {
        parsed
            .query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| panic!("no {k} in {}", req.path))
    };
    (param("to"), param("dlr-url"))
}

/// Path and query of a delivery report as Kannel would send it: report type `status`.
fn report_path(dlr_url: &str, status: u8) -> String {
    let u = url::Url::parse(dlr_url).unwrap();
    format!("{}?{}", u.path(), u.query().unwrap())
        .replace("%d", &status.to_string())
        .replace("%A", "id%3A1+stat%3ADELIVRD")
}

/// A token anyone could compute: the notice id and number are in every SMS and on the phone.
fn unkeyed_guess(d: &DeliveryRow) -> String {
    let mut h = Sha256::new();
    h.update(format!(
        "streetwatch-notice:{}:sms:{}",
        d.notice_id, d.target
    ));
    hex::encode(&h.finalize()[..16])
}

fn forged_path(d: &DeliveryRow) -> String {
    let guess = unkeyed_guess(d);
    // Both spellings a forger would try: the key prefix and the whole key.
    format!("/dlr?d={}&k={}&t={guess}&s=1&a=forged", d.id, &guess[..16])
}

fn state(db: &std::path::Path, id: i64) -> String {
    Store::open(db)
        .unwrap()
        .delivery(id)
        .unwrap()
        .unwrap()
        .state
}

/// Not sent yet: between two attempts, or in one (the broken gateway is retried all along).
fn waiting(state: &str) -> bool {
    matches!(state, "pending" | "sending")
}

#[test]
fn made_up_delivery_reports_change_nothing_and_the_sms_still_goes_out() {
    let mut kannel = Kannel::start_without_smsbox();
    // The gateway's HTTP side fails (503) for now: every attempt is recorded, with the report URL it carried.
    let mut broken_gateway = HookServer::start_on(kannel.sendsms_port, vec![503]);
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sw.db");
    let alert = AlertService::start(
        AlertConfig::from_toml(&sms_config(&kannel.sendsms_url())).unwrap(),
        &db,
        Arc::new(SystemClock),
    )
    .unwrap();
    let dlr_port = alert.dlr_addr().unwrap().port();
    alert.submit(opened("d1-nh-03", "Bến Nghé", None));
    let rows = wait_deliveries(
        &db,
        Duration::from_secs(20),
        "both SMS waiting for a retry after the gateway's 503",
        |r| r.len() == 2 && r.iter().all(|d| d.state == "pending" && d.attempts >= 1),
    );
    let genuine = |target: &str| {
        let reqs = broken_gateway.requests.lock().unwrap();
        reqs.iter()
            .map(dlr_url_in)
            .find(|(to, _)| to == target)
            .unwrap_or_else(|| panic!("no attempt to {target}"))
            .1
    };
    let (a, b) = (&rows[0], &rows[1]);
    let (url_a, url_b) = (genuine(&a.target), genuine(&b.target));

    // While a delivery waits for its retry, even a report with its own, genuine token is refused: it cannot
    // be about a message the gateway has.
    let (status, _) = http_get(dlr_port, &report_path(&url_a, 1)).unwrap();
    assert_ne!(status, 200, "report 1 for a pending delivery was taken");
    assert!(waiting(&state(&db, a.id)));
    let (status, _) = http_get(dlr_port, &forged_path(b)).unwrap();
    assert_ne!(status, 200, "a report with a guessed token was taken");
    assert!(waiting(&state(&db, b.id)));

    // The gateway comes back, but its SMSC link is down: it takes both SMS and holds them ("queued"), the
    // state in which a report is expected.
    broken_gateway.stop();
    kannel.kill_fakesmsc();
    kannel.start_smsbox();
    wait_deliveries(
        &db,
        Duration::from_secs(20),
        "both queued at the gateway",
        |r| r.iter().all(|d| d.state == "queued"),
    );
    let (status, _) = http_get(dlr_port, &forged_path(b)).unwrap();
    assert_eq!(status, 403, "a report with a guessed token");
    // A's token does not open B.
    let a_token_for_b =
        report_path(&url_a, 1).replace(&format!("d={}&", a.id), &format!("d={}&", b.id));
    assert!(
        a_token_for_b.contains(&format!("d={}&", b.id)),
        "{a_token_for_b}"
    );
    let (status, _) = http_get(dlr_port, &a_token_for_b).unwrap();
    assert_eq!(status, 403, "another delivery's token");
    assert_eq!(state(&db, b.id), "queued");
    // Malformed reports are refused, and change nothing either.
    for bad in [
        "/dlr".to_string(),
        format!("/dlr?d={}&s=1", b.id),
        "/dlr?d=x&t=00&s=1".to_string(),
        report_path(&url_b, 1).replace("s=1", "s=one"),
    ] {
        let (status, _) = http_get(dlr_port, &bad).unwrap();
        assert_eq!(status, 400, "{bad}");
    }
    assert_eq!(state(&db, b.id), "queued");
    let events = Store::open(&db).unwrap().delivery_events(b.id).unwrap();
    assert!(
        events
            .iter()
            .all(|e| !e.detail.as_deref().unwrap_or("").contains("forged")),
        "{events:?}"
    );

    // The SMSC link returns: each phone gets its SMS once, and the gateway's own reports mark them delivered.
    kannel.start_fakesmsc();
    let got = kannel.wait_received(2, Duration::from_secs(30));
    wait_deliveries(
        &db,
        Duration::from_secs(30),
        "both delivered by the gateway's reports",
        |r| r.iter().all(|d| d.state == "delivered"),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(kannel.received().len(), 2, "{got:?}");
    alert.shutdown();
}

/// The snapshot link of one incident, as its notice carries it.
fn snapshot_token_in(db: &std::path::Path) -> String {
    let notices = Store::open(db).unwrap().notices().unwrap();
    let payload: serde_json::Value = serde_json::from_str(&notices[0].payload).unwrap();
    payload["firing"][0]["snapshot_token"]
        .as_str()
        .expect("a snapshot token")
        .to_string()
}

#[test]
fn snapshot_links_cannot_be_derived_from_the_incident() {
    // No receiver: the notice is still decided and recorded, with its links.
    let cfg = AlertConfig::from_toml(
        "snapshot_base_url = \"https://sw.q1.vn/s/\"\n[route]\ngroup_wait = \"0s\"\n",
    )
    .unwrap();
    let snap = std::path::Path::new("/var/lib/streetwatch/snapshots/d1-nh-03.jpg");
    let ev = opened("d1-nh-03", "Bến Nghé", Some(snap));
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let dir = TempDir::new().unwrap();
        let db = dir.path().join("sw.db");
        let mut router = Router::open(&cfg, &db, ev.at).unwrap();
        router.submit(&ev, ev.at).unwrap();
        router.tick(ev.at).unwrap();
        tokens.push(snapshot_token_in(&db));
    }
    assert_ne!(
        tokens[0], tokens[1],
        "two installations give one incident the same link: it is computed from the incident alone"
    );
    assert!(tokens.iter().all(|t| t.len() >= 12), "{tokens:?}");
}

/// A delivery-report listener alone (no receivers), with `extra` in its `[dlr]` table.
fn listener_only(dir: &TempDir, extra: &str) -> AlertHandle {
    let cfg = format!("[dlr]\nlisten = \"127.0.0.1:0\"\n{extra}\n");
    AlertService::start(
        AlertConfig::from_toml(&cfg).unwrap(),
        &dir.path().join("sw.db"),
        Arc::new(SystemClock),
    )
    .unwrap()
}

/// Reads what the server sends until it closes the connection or `limit` passes; Some(bytes) if it closed.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let end = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(got),
        }
    }
    None
}

#[test]
fn clients_that_hold_connections_open_do_not_hold_up_shutdown() {
    let dir = TempDir::new().unwrap();
    // A header timeout far beyond the test: only the shutdown deadline can end these connections.
    let alert = listener_only(&dir, "header_timeout = \"10m\"");
    let addr = alert.dlr_addr().unwrap();
    // One client that never says anything, one that keeps its connection after a request, one that stops
    // in the middle of its header.
    let silent = TcpStream::connect(addr).unwrap();
    let mut kept = TcpStream::connect(addr).unwrap();
    write!(kept, "GET /dlr HTTP/1.1\r\nHost: sw\r\n\r\n").unwrap();
    let mut head = [0u8; 12];
    kept.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 400");
    let mut partial = TcpStream::connect(addr).unwrap();
    write!(partial, "GET /dlr?d=1 HTTP/1.1\r\nHost: sw\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let started = Instant::now();
    let (done_tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        alert.shutdown();
        let _ = done_tx.send(());
    });
    done.recv_timeout(Duration::from_secs(20))
        .expect("shutdown still waiting for idle clients after 20 s");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );
    for mut s in [silent, kept, partial] {
        assert!(
            read_until_closed(&mut s, Duration::from_secs(2)).is_some(),
            "a connection outlived the service"
        );
    }
}

#[test]
fn a_client_that_trickles_its_header_is_cut_off_after_the_header_timeout() {
    let dir = TempDir::new().unwrap();
    let alert = listener_only(&dir, "header_timeout = \"1s\"");
    let mut s = TcpStream::connect(alert.dlr_addr().unwrap()).unwrap();
    let started = Instant::now();
    write!(s, "GET /dlr?d=1 HTTP/1.1\r\nHost: sw\r\n").unwrap();
    // Slowloris: a header line every 200 ms keeps the connection busy but never finishes the request.
    let mut closed = None;
    for i in 0..40 {
        if write!(s, "X-Pad-{i}: {}\r\n", "a".repeat(8)).is_err() {
            closed = Some(Vec::new());
            break;
        }
        if let Some(got) = read_until_closed(&mut s, Duration::from_millis(200)) {
            closed = Some(got);
            break;
        }
    }
    let took = started.elapsed();
    assert!(
        closed.is_some(),
        "still connected after {took:?} of trickling"
    );
    assert!(took < Duration::from_secs(5), "cut off only after {took:?}");
    alert.shutdown();
}

#[test]
fn connections_beyond_the_cap_wait_for_a_free_one() {
    let dir = TempDir::new().unwrap();
    let alert = listener_only(&dir, "header_timeout = \"10m\"\nmax_connections = 1");
    let addr = alert.dlr_addr().unwrap();
    let holder = TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut next = TcpStream::connect(addr).unwrap();
    write!(
        next,
        "GET /dlr HTTP/1.1\r\nHost: sw\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    if let Some(reply) = read_until_closed(&mut next, Duration::from_secs(1)) {
        panic!("served beyond the cap: {}", String::from_utf8_lossy(&reply));
    }
    drop(holder);
    let reply =
        read_until_closed(&mut next, Duration::from_secs(10)).expect("served once a slot freed");
    assert!(
        reply.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    alert.shutdown();
}

#[test]
fn the_sms_password_is_not_put_in_a_url() {
    // A gateway that records what it is sent (proxies and gateways log URLs, not headers or bodies).
    let gateway = HookServer::start(vec![202]);
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("sw.db");
    let url = format!("http://127.0.0.1:{}/cgi-bin/sendsms", gateway.port);
    let alert = AlertService::start(
        AlertConfig::from_toml(&sms_config(&url)).unwrap(),
        &db,
        Arc::new(SystemClock),
    )
    .unwrap();
    alert.submit(opened("d1-nh-03", "Bến Nghé", None));
    wait_deliveries(&db, Duration::from_secs(20), "both SMS handed over", |r| {
        r.len() == 2 && r.iter().all(|d| d.state == "accepted")
    });
    alert.shutdown();
    let requests = gateway.requests.lock().unwrap();
    for r in requests.iter() {
        assert!(
            !r.path.contains(KANNEL_PASS),
            "password in the URL: {}",
            r.path
        );
        assert!(
            r.headers.values().any(|v| v == KANNEL_PASS),
            "the password is sent: {r:?}"
        );
    }
}
