//! Delivery reports: the HTTP endpoint the SMS gateway calls back (Kannel `dlr-url`), which moves a delivery
//! to `delivered` or `undelivered`.
//!
//! Anyone who can reach the listener can send it a report, so a report is taken only if
//! - its token is the delivery's: an HMAC under the database's secret (keys.rs), checked in constant time, so
//!   only whoever was handed the URL (the gateway) can make one; ids, numbers and notice ids do not help;
//! - the gateway holds the delivery (`sending`, `accepted`, `queued`): a report about one waiting for a retry
//!   must not mark it delivered, or it would never be sent.
//!
//! Anything else is refused with a 4xx, logged, and changes nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rusqlite::Connection;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::types::{Clock, Timestamp};

use super::outbox::{self, DlrApplied};
use crate::alert::error::AlertError;
use crate::alert::keys::Keys;

/// Makes the report URL handed to the gateway with each SMS.
pub(crate) struct Links {
    base: String,
    keys: Keys,
}

impl Links {
    /// `base`: where the gateway reaches the listener, without a trailing `/`.
    pub(crate) fn new(base: String, keys: Keys) -> Self {
        Self { base, keys }
    }

    /// The `dlr-url` of one delivery; Kannel fills in `%d` (report type) and `%A` (the SMSC's answer).
    pub(crate) fn url(&self, delivery: i64) -> String {
        format!(
            "{}/dlr?d={delivery}&t={}&s=%d&a=%A",
            self.base,
            self.keys.dlr_token(delivery)
        )
    }
}

/// One report as the gateway sent it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Report {
    pub delivery: i64,
    pub token: String,
    /// Kannel's report type (`%d`).
    pub status: i64,
    /// The SMSC's answer (`%A`), free text, cut to [`ANSWER_MAX`] characters.
    pub answer: String,
}

/// Longest SMSC answer kept in the delivery's history.
const ANSWER_MAX: usize = 200;

/// Why a report was not taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DlrError {
    #[error("malformed delivery report: {0}")]
    Malformed(String),
    #[error("delivery report for delivery {0} with a wrong token")]
    WrongToken(i64),
    #[error("delivery report for delivery {0}, which does not exist")]
    Unknown(i64),
    #[error("delivery report {status} for delivery {delivery}, which is {state}: refused")]
    Refused {
        delivery: i64,
        status: i64,
        state: String,
    },
    #[error("cannot record a delivery report: {0}")]
    Db(#[from] AlertError),
}

impl DlrError {
    fn http_status(&self) -> StatusCode {
        match self {
            DlrError::Malformed(_) => StatusCode::BAD_REQUEST,
            DlrError::WrongToken(_) => StatusCode::FORBIDDEN,
            DlrError::Unknown(_) => StatusCode::NOT_FOUND,
            DlrError::Refused { .. } => StatusCode::CONFLICT,
            // Kannel retries nothing, but a 5xx at least shows in its log.
            DlrError::Db(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Parses a report's query string (`d`, `t`, `s` required, `a` optional; other parameters are ignored).
pub(crate) fn parse(query: &str) -> Result<Report, DlrError> {
    let (mut d, mut t, mut s, mut a) = (None, None, None, None);
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot = match k.as_ref() {
            "d" => &mut d,
            "t" => &mut t,
            "s" => &mut s,
            "a" => &mut a,
            _ => continue,
        };
        if slot.replace(v.into_owned()).is_some() {
            return Err(DlrError::Malformed(format!("`{k}` given twice")));
        }
    }
    let number = |v: Option<String>, what: &str| -> Result<i64, DlrError> {
        let v = v.ok_or_else(|| DlrError::Malformed(format!("no `{what}`")))?;
        v.parse()
            .map_err(|_| DlrError::Malformed(format!("`{what}` is not a number")))
    };
    Ok(Report {
        delivery: number(d, "d")?,
        token: t.ok_or_else(|| DlrError::Malformed("no `t`".into()))?,
        status: number(s, "s")?,
        answer: a.unwrap_or_default().chars().take(ANSWER_MAX).collect(),
    })
}

/// Checks one report and records it; returns the delivery's new state. Blocking (SQLite).
pub(crate) fn handle(
    conn: &mut Connection,
    keys: &Keys,
    query: &str,
    now: Timestamp,
) -> Result<String, DlrError> {
    let r = parse(query)?;
    if !keys.dlr_token_matches(r.delivery, &r.token) {
        return Err(DlrError::WrongToken(r.delivery));
    }
    match outbox::apply_dlr(conn, r.delivery, r.status, &r.answer, now)? {
        DlrApplied::Recorded(state) => Ok(state),
        DlrApplied::Unknown => Err(DlrError::Unknown(r.delivery)),
        DlrApplied::Refused { state } => Err(DlrError::Refused {
            delivery: r.delivery,
            status: r.status,
            state,
        }),
    }
}

struct Ctx {
    db: Mutex<Connection>,
    keys: Keys,
    clock: Arc<dyn Clock>,
}

async fn report(State(ctx): State<Arc<Ctx>>, RawQuery(query): RawQuery) -> StatusCode {
    let query = query.unwrap_or_default();
    // SQLite blocks (busy_timeout up to 10 s while another writer commits): not on the runtime's workers.
    let handled = tokio::task::spawn_blocking(move || {
        // A panic while holding the lock leaves the connection usable (every write is one transaction).
        let mut db = ctx.db.lock().unwrap_or_else(|p| p.into_inner());
        handle(&mut db, &ctx.keys, &query, ctx.clock.now())
    })
    .await;
    match handled {
        Ok(Ok(_)) => StatusCode::OK,
        Ok(Err(e)) => {
            match &e {
                DlrError::Db(_) => tracing::error!(error = %e, "delivery report not recorded"),
                // Duplicates, or reports on other parts of a long SMS: expected now and then.
                DlrError::Refused { state, .. }
                    if state == "delivered" || state == "undelivered" =>
                {
                    tracing::info!(reason = %e, "delivery report ignored")
                }
                _ => tracing::warn!(reason = %e, "delivery report refused"),
            }
            e.http_status()
        }
        Err(e) => {
            tracing::error!(error = %e, "delivery report handler failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// How the listener treats its clients.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// A request's header must be in within this time (from the connection's start, or from the end of the
    /// previous request): a silent or trickling client cannot hold a connection.
    pub header_timeout: Duration,
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
}

/// Waits until `flag` is true (or its sender is gone).
async fn turns_true(flag: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send: drop it here, not in the caller's `select!`.
    let _ = flag.wait_for(|f| *f).await;
}

/// On shutdown, connections still open this long after the listener stopped accepting are dropped.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves delivery reports until `stop` turns true, then stops accepting, lets requests in progress finish
/// for up to [`DRAIN`], and drops what is left.
pub(crate) async fn serve(
    listener: std::net::TcpListener,
    db: Connection,
    keys: Keys,
    clock: Arc<dyn Clock>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "delivery-report listener");
            return;
        }
    };
    let ctx = Arc::new(Ctx {
        db: Mutex::new(db),
        keys,
        clock,
    });
    let app = axum::Router::new()
        .route("/dlr", get(report))
        .with_state(ctx);
    let service = TowerToHyperService::new(app);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (closing_tx, closing) = watch::channel(false);
    let mut conns = JoinSet::new();
    loop {
        // A slot first, then accept: beyond the cap, clients wait in the accept queue.
        let slot = tokio::select! {
            _ = turns_true(&mut stop) => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            _ = turns_true(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, or the client left before it was accepted: try again.
                    tracing::warn!(error = %e, "delivery-report listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        while conns.try_join_next().is_some() {}
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(stream), service.clone());
        let mut closing = closing.clone();
        conns.spawn(async move {
            let _slot = slot;
            tokio::pin!(conn);
            tokio::select! {
                done = conn.as_mut() => {
                    if let Err(e) = done {
                        tracing::debug!(error = %e, "delivery-report connection");
                    }
                    return;
                }
                _ = turns_true(&mut closing) => {}
            }
            // Finish the request in progress, if any, then close.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    let drained =
        tokio::time::timeout(DRAIN, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            connections = conns.len(),
            "delivery-report listener: dropping connections still open at the shutdown deadline"
        );
        conns.abort_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::store;
    use proptest::prelude::*;
    use rusqlite::params;

    /// A database with one SMS delivery in each state, ids 1–7.
    fn outbox() -> (tempfile::TempDir, Connection, Keys) {
        let dir = tempfile::TempDir::new().unwrap();
        let conn = store::open(&dir.path().join("sw.db")).unwrap();
        let keys = store::keys(&conn).unwrap();
        conn.execute(
            "INSERT INTO alert_notices (id, created_at, kind, route, group_key, status, firing, resolved, payload) \
             VALUES (1, 0, 'alerts', 'r', 'g', 'queued', 1, 0, '{}')",
            [],
        )
        .unwrap();
        for (id, state) in STATES.iter().enumerate() {
            conn.execute(
                "INSERT INTO alert_deliveries (id, notice_id, receiver, channel, target, idempotency_key, body, \
                 state, next_attempt_at, created_at, updated_at) VALUES (?1, 1, 'p', 'sms', '+84901234567', ?2, 'x', ?3, 0, 0, 0)",
                params![id as i64 + 1, format!("k{id}"), state],
            )
            .unwrap();
        }
        (dir, conn, keys)
    }

    const STATES: [&str; 7] = [
        "pending",
        "sending",
        "accepted",
        "queued",
        "delivered",
        "undelivered",
        "dead",
    ];

    fn state(conn: &Connection, id: i64) -> Option<String> {
        conn.query_row(
            "SELECT state FROM alert_deliveries WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .ok()
    }

    #[test]
    fn reports_are_taken_only_with_the_token_and_while_the_gateway_holds_the_sms() {
        let (_dir, mut conn, keys) = outbox();
        for (i, before) in STATES.iter().enumerate() {
            let id = i as i64 + 1;
            let other = if id == 1 { 2 } else { 1 };
            for token in [keys.dlr_token(other), "0".repeat(32)] {
                let q = format!("d={id}&t={token}&s=1&a=x");
                assert!(
                    matches!(handle(&mut conn, &keys, &q, Timestamp(5)), Err(DlrError::WrongToken(d)) if d == id)
                );
            }
            assert_eq!(state(&conn, id).as_deref(), Some(*before));
            let q = format!("d={id}&t={}&s=1&a=id%3A1", keys.dlr_token(id));
            let got = handle(&mut conn, &keys, &q, Timestamp(5));
            if matches!(*before, "sending" | "accepted" | "queued") {
                assert_eq!(got.unwrap(), "delivered");
                assert_eq!(state(&conn, id).as_deref(), Some("delivered"));
            } else {
                assert!(
                    matches!(got, Err(DlrError::Refused { .. })),
                    "{before}: {got:?}"
                );
                assert_eq!(state(&conn, id).as_deref(), Some(*before));
            }
        }
        let q = format!("d=99&t={}&s=1", keys.dlr_token(99));
        assert!(matches!(
            handle(&mut conn, &keys, &q, Timestamp(5)),
            Err(DlrError::Unknown(99))
        ));
    }

    /// Query strings a gateway, a scanner or a forger might send: well-formed ones with odd values, and noise.
    fn queries() -> impl Strategy<Value = String> {
        let field = prop_oneof![
            Just(String::new()),
            "-?[0-9]{1,25}",
            "[0-9a-fA-F]{0,40}",
            ".{0,40}",
            "%[0-9A-Fa-f]{0,2}[^&]{0,5}",
        ];
        let named = (
            prop::sample::select(vec!["d", "t", "s", "a", "k", "", "d[]", "%64"]),
            prop_oneof![Just("="), Just(""), Just("==")],
            field,
        )
            .prop_map(|(k, eq, v)| format!("{k}{eq}{v}"));
        prop_oneof![
            ".{0,200}",
            prop::collection::vec(named, 0..8).prop_map(|p| p.join("&")),
        ]
    }

    proptest! {
        #[test]
        fn any_query_is_an_answer_never_a_panic(query in queries()) {
            if let Ok(r) = parse(&query) {
                prop_assert!(r.answer.chars().count() <= ANSWER_MAX);
            }
        }
    }

    proptest! {
        // Each case makes a database: fewer cases.
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn the_handler_takes_only_genuine_reports(
            id in 0i64..9,
            genuine in any::<bool>(),
            status in prop_oneof![Just("1".to_string()), Just("16".to_string()), "-?[0-9]{1,20}", ".{0,8}"],
            rest in queries(),
        ) {
            let (_dir, mut conn, keys) = outbox();
            let token = if genuine { keys.dlr_token(id) } else { Keys::from_secret([9; 32]).dlr_token(id) };
            let query = format!("d={id}&t={token}&s={}&{rest}", url::form_urlencoded::byte_serialize(status.as_bytes()).collect::<String>());
            let before = state(&conn, id);
            match handle(&mut conn, &keys, &query, Timestamp(5)) {
                Ok(now) => {
                    prop_assert!(genuine);
                    prop_assert!(matches!(before.as_deref(), Some("sending" | "accepted" | "queued")));
                    prop_assert_eq!(state(&conn, id), Some(now));
                }
                Err(_) => prop_assert_eq!(state(&conn, id), before),
            }
        }
    }
}
