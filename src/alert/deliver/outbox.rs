//! The durable outbox. The router writes a notice and its deliveries in the same transaction as the decision
//! to notify; notifier tasks move each delivery through its states, recording every change in
//! `alert_delivery_events`:
//!
//! ```text
//! pending ──claim──▶ sending ──▶ accepted ──dlr──▶ delivered | undelivered
//!    ▲                  │    └──▶ queued (gateway holds it) ──dlr──▶ delivered | undelivered
//!    └──transient────────┤
//!                       └──permanent / gave up──▶ dead
//! ```
//! A delivery is marked `sending` before the request goes out, so a crash mid-send leaves it `sending`; on
//! restart it goes back to `pending` with `possible_duplicates` counted: at most one duplicate, never a loss.
//! Decisions commit with synchronous=FULL (they survive a power cut); delivery progress with NORMAL (it
//! survives a process crash; a power cut may roll back the last marks, which can only mean a resend).

use std::borrow::Cow;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use sha2::{Digest, Sha256};

use crate::types::Timestamp;

use super::Outcome;
use crate::alert::config::{ReceiverConfig, RetryConfig};
use crate::alert::error::AlertError;
use crate::alert::model::NoticePayload;
use crate::alert::store::{DeliveryRow, delivery_from_row};
use crate::alert::wording::gsm;
use crate::alert::wording::template::{self, Ctx};

/// Most bytes of peer-supplied text kept per column or event: a gateway reply, an error, a delivery report's
/// answer. A gateway that answers with a whole HTML error page (or a hostile peer) must not add kilobytes to
/// the outbox per attempt; the start of a reply says what went wrong.
pub(crate) const MAX_STORED_TEXT: usize = 1024;

/// `text`, or its first bytes (cut on a character boundary) and a marker, in at most [`MAX_STORED_TEXT`].
pub(crate) fn capped(text: &str) -> Cow<'_, str> {
    if text.len() <= MAX_STORED_TEXT {
        return Cow::Borrowed(text);
    }
    let marker = format!("… [truncated, {} bytes in all]", text.len());
    let mut end = MAX_STORED_TEXT.saturating_sub(marker.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}{marker}", &text[..end]))
}

/// One delivery the decision creates.
pub(crate) struct NewDelivery {
    pub channel: &'static str,
    pub target: String,
    pub body: String,
    pub segments: Option<i64>,
}

/// Renders a notice into one delivery per channel and target of `receiver`: an SMS per number (so one bad
/// number fails alone), one e-mail to all recipients, one webhook call, one log entry.
pub(crate) fn deliveries_for(
    receiver: &ReceiverConfig,
    payload: &NoticePayload,
    ctx: &Ctx<'_>,
) -> Vec<NewDelivery> {
    let mut out = Vec::new();
    if let Some(sms) = &receiver.sms {
        let text = template::sms_text(sms, payload, ctx);
        let segments = gsm::segments(&text).count as i64;
        for n in &sms.numbers {
            // Validated at start-up, so the number normalises.
            let target = crate::alert::config::normalize_phone(n).unwrap_or_else(|_| n.clone());
            out.push(NewDelivery {
                channel: "sms",
                target,
                body: text.clone(),
                segments: Some(segments),
            });
        }
    }
    if let Some(email) = &receiver.email {
        out.push(NewDelivery {
            channel: "email",
            target: email.to.join(", "),
            body: template::email(payload, ctx).to_string(),
            segments: None,
        });
    }
    if let Some(hook) = &receiver.webhook {
        out.push(NewDelivery {
            channel: "webhook",
            // The URL may carry a token: the outbox (and the CLI showing it) keeps it redacted.
            target: hook.url.redacted(),
            body: template::webhook(payload, ctx).to_string(),
            segments: None,
        });
    }
    if let Some(log) = &receiver.log {
        out.push(NewDelivery {
            channel: "log",
            target: log
                .file
                .as_ref()
                .map_or_else(|| "log".to_string(), |f| f.display().to_string()),
            body: super::log::line(payload, ctx),
            segments: None,
        });
    }
    out
}

/// Stable per delivery: the notice, channel and target never change, so retries and a restart reuse it.
fn idempotency_key(notice_id: i64, channel: &str, target: &str) -> String {
    let mut h = Sha256::new();
    h.update(format!("streetwatch-notice:{notice_id}:{channel}:{target}"));
    hex::encode(&h.finalize()[..16])
}

#[allow(clippy::too_many_arguments)] // one column each; a struct would only restate the table
pub(crate) fn insert_notice(
    tx: &Transaction<'_>,
    now: Timestamp,
    kind: &str,
    route: &str,
    group_key: &str,
    receiver: Option<&str>,
    status: &str,
    payload: &NoticePayload,
) -> Result<i64, AlertError> {
    let json = serde_json::to_string(payload)
        .map_err(|e| AlertError::Db(format!("encode notice: {e}")))?;
    tx.prepare_cached(
        "INSERT INTO alert_notices (created_at, kind, route, group_key, receiver, status, firing, resolved, payload) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        now.0,
        kind,
        route,
        group_key,
        receiver,
        status,
        payload.firing.len() as i64,
        payload.resolved.len() as i64,
        json
    ])?;
    let id = tx.last_insert_rowid();
    let mut link = tx.prepare_cached(
        "INSERT OR IGNORE INTO alert_notice_alerts (alert_key, notice_id) VALUES (?1, ?2)",
    )?;
    for a in payload.firing.iter().chain(&payload.resolved) {
        link.execute(params![a.key, id])?;
    }
    Ok(id)
}

pub(crate) fn insert_delivery(
    tx: &Transaction<'_>,
    notice_id: i64,
    receiver: &str,
    d: &NewDelivery,
    now: Timestamp,
) -> Result<i64, AlertError> {
    tx.prepare_cached(
        "INSERT INTO alert_deliveries (notice_id, receiver, channel, target, idempotency_key, body, segments, state, \
         next_attempt_at, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?8, ?8)",
    )?
    .execute(params![
        notice_id,
        receiver,
        d.channel,
        d.target,
        idempotency_key(notice_id, d.channel, &d.target),
        d.body,
        d.segments,
        now.0
    ])?;
    let id = tx.last_insert_rowid();
    event(tx, id, now, "pending", "decided")?;
    Ok(id)
}

fn event(
    conn: &Connection,
    id: i64,
    now: Timestamp,
    state: &str,
    detail: &str,
) -> Result<(), AlertError> {
    conn.prepare_cached("INSERT INTO alert_delivery_events (delivery_id, at, state, detail) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![id, now.0, state, capped(detail)])?;
    Ok(())
}

/// After a crash: deliveries caught mid-send go back to the queue, counted as possible duplicates.
pub(crate) fn recover_interrupted(
    conn: &mut Connection,
    now: Timestamp,
) -> Result<usize, AlertError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let ids: Vec<i64> = {
        let mut stmt = tx.prepare("SELECT id FROM alert_deliveries WHERE state = 'sending'")?;
        stmt.query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?
    };
    for id in &ids {
        tx.execute(
            "UPDATE alert_deliveries SET state = 'pending', possible_duplicates = possible_duplicates + 1, \
             next_attempt_at = ?2, updated_at = ?2 WHERE id = ?1",
            params![id, now.0],
        )?;
        event(
            &tx,
            *id,
            now,
            "pending",
            "the previous attempt was interrupted (crash); a resend may duplicate it",
        )?;
    }
    tx.commit()?;
    Ok(ids.len())
}

/// One receiver's pending deliveries whose time has come, oldest first. Asked per receiver, so one
/// receiver's backlog cannot hide another's deliveries.
pub(crate) fn due_for(
    conn: &Connection,
    receiver: &str,
    now: Timestamp,
    limit: usize,
) -> Result<Vec<DeliveryRow>, AlertError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, notice_id, receiver, channel, target, idempotency_key, body, segments, state, attempts, \
         next_attempt_at, created_at, updated_at, last_error, gateway_reply, possible_duplicates \
         FROM alert_deliveries WHERE receiver = ?1 AND state = 'pending' AND next_attempt_at <= ?2 \
         ORDER BY next_attempt_at, id LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![receiver, now.0, limit as i64], delivery_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// When the next pending delivery that is not yet due falls due (those already due and waiting for a free
/// slot wake the notifier when a slot frees).
pub(crate) fn next_due(conn: &Connection, now: Timestamp) -> Result<Option<Timestamp>, AlertError> {
    let t: Option<i64> = conn
        .prepare_cached(
            "SELECT MIN(next_attempt_at) FROM alert_deliveries WHERE state = 'pending' AND next_attempt_at > ?1",
        )?
        .query_row([now.0], |r| r.get(0))?;
    Ok(t.map(Timestamp))
}

/// Claims deliveries for one attempt each, in one transaction; says for each whether it was still pending
/// (something else may have changed it meanwhile).
pub(crate) fn claim(
    conn: &mut Connection,
    ids: &[i64],
    now: Timestamp,
) -> Result<Vec<bool>, AlertError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut claimed = Vec::with_capacity(ids.len());
    for &id in ids {
        let n = tx
            .prepare_cached(
                "UPDATE alert_deliveries SET state = 'sending', attempts = attempts + 1, updated_at = ?2 \
                 WHERE id = ?1 AND state = 'pending'",
            )?
            .execute(params![id, now.0])?;
        if n == 1 {
            event(&tx, id, now, "sending", "attempt started")?;
        }
        claimed.push(n == 1);
    }
    tx.commit()?;
    Ok(claimed)
}

/// Dead-letters the pending deliveries of receivers not in `configured` (a receiver removed from the
/// config while it had deliveries queued); returns how many.
pub(crate) fn dead_letter_unconfigured(
    conn: &mut Connection,
    configured: &[String],
    now: Timestamp,
) -> Result<usize, AlertError> {
    let names = serde_json::to_string(configured)
        .map_err(|e| AlertError::Db(format!("encode receiver names: {e}")))?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let orphans: Vec<(i64, String)> = {
        let mut stmt = tx.prepare(
            "SELECT id, receiver FROM alert_deliveries WHERE state = 'pending' \
             AND receiver NOT IN (SELECT value FROM json_each(?1))",
        )?;
        stmt.query_map([names], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?
    };
    for (id, receiver) in &orphans {
        let reason = format!("receiver {receiver:?} is no longer configured");
        tx.execute(
            "UPDATE alert_deliveries SET state = 'dead', last_error = ?3, updated_at = ?2 WHERE id = ?1",
            params![id, now.0, capped(&reason)],
        )?;
        event(&tx, *id, now, "dead", &reason)?;
    }
    tx.commit()?;
    Ok(orphans.len())
}

/// A notice's payload and when it was decided, for claiming and re-rendering its deliveries; `None` when the
/// notice is gone (pruned) or its payload does not decode.
pub(crate) fn notice_payload(
    conn: &Connection,
    notice_id: i64,
) -> Result<Option<(Timestamp, NoticePayload)>, AlertError> {
    let row: Option<(i64, String)> = conn
        .prepare_cached("SELECT created_at, payload FROM alert_notices WHERE id = ?1")?
        .query_row([notice_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(row.and_then(|(at, json)| serde_json::from_str(&json).ok().map(|p| (Timestamp(at), p))))
}

/// Ends a delivery being sent without sending it: every incident it tells was claimed by another router.
pub(crate) fn suppress(
    conn: &mut Connection,
    id: i64,
    reason: &str,
    now: Timestamp,
) -> Result<(), AlertError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "UPDATE alert_deliveries SET state = 'suppressed', last_error = ?3, updated_at = ?2 \
         WHERE id = ?1 AND state = 'sending'",
        params![id, now.0, capped(reason)],
    )?;
    event(&tx, id, now, "suppressed", reason)?;
    tx.commit()?;
    Ok(())
}

/// Replaces the text of a delivery about to be sent: some of its incidents were claimed by another router
/// and it now tells only the rest (`detail` says which).
pub(crate) fn narrow(
    conn: &mut Connection,
    id: i64,
    body: &str,
    segments: Option<i64>,
    detail: &str,
    now: Timestamp,
) -> Result<(), AlertError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "UPDATE alert_deliveries SET body = ?2, segments = ?3, updated_at = ?4 WHERE id = ?1",
        params![id, body, segments, now.0],
    )?;
    event(&tx, id, now, "sending", detail)?;
    tx.commit()?;
    Ok(())
}

/// Exponential backoff with jitter for the `attempts`-th failure.
pub(crate) fn backoff_ms(cfg: &RetryConfig, attempts: i64) -> i64 {
    let exp = cfg.multiplier.powi((attempts.max(1) - 1).min(60) as i32);
    let base = (cfg.initial_backoff.ms() as f64 * exp).min(cfg.max_backoff.ms() as f64);
    let spread = base * cfg.jitter * (2.0 * fastrand::f64() - 1.0);
    (base + spread).max(1.0) as i64
}

/// Records the outcome of an attempt.
pub(crate) fn finish(
    conn: &mut Connection,
    d: &DeliveryRow,
    outcome: &Outcome,
    retry: &RetryConfig,
    now: Timestamp,
) -> Result<(), AlertError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let attempts = d.attempts + 1;
    match outcome {
        Outcome::Accepted { state, reply } => {
            // A delivery report can beat the gateway's HTTP reply; it is not undone, and the event says
            // the state the delivery is really in.
            let now_state: String = tx.query_row(
                "UPDATE alert_deliveries SET state = CASE WHEN state = 'sending' THEN ?3 ELSE state END, \
                 gateway_reply = ?4, last_error = NULL, updated_at = ?2 WHERE id = ?1 RETURNING state",
                params![d.id, now.0, state, capped(reply)],
                |r| r.get(0),
            )?;
            event(&tx, d.id, now, &now_state, reply)?;
        }
        Outcome::Permanent(reason) => {
            tx.execute(
                "UPDATE alert_deliveries SET state = 'dead', last_error = ?3, updated_at = ?2 WHERE id = ?1",
                params![d.id, now.0, capped(reason)],
            )?;
            event(&tx, d.id, now, "dead", reason)?;
        }
        Outcome::Transient { error, maybe_sent } => {
            let since: i64 = tx.query_row(
                "SELECT COALESCE(retried_at, created_at) FROM alert_deliveries WHERE id = ?1",
                [d.id],
                |r| r.get(0),
            )?;
            if now.since(Timestamp(since)) >= retry.give_up_after.ms() {
                let reason = format!(
                    "gave up after {attempts} attempts over {}: {error}",
                    retry.give_up_after
                );
                tx.execute(
                    "UPDATE alert_deliveries SET state = 'dead', last_error = ?3, updated_at = ?2 WHERE id = ?1",
                    params![d.id, now.0, capped(&reason)],
                )?;
                event(&tx, d.id, now, "dead", &reason)?;
            } else {
                let next = now.plus_ms(backoff_ms(retry, attempts));
                tx.execute(
                    "UPDATE alert_deliveries SET state = 'pending', last_error = ?3, next_attempt_at = ?4, \
                     possible_duplicates = possible_duplicates + ?5, updated_at = ?2 WHERE id = ?1",
                    params![d.id, now.0, capped(error), next.0, i64::from(*maybe_sent)],
                )?;
                let detail = format!(
                    "attempt {attempts} failed: {error}; retry at {}",
                    next.to_rfc3339()
                );
                event(&tx, d.id, now, "pending", &detail)?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

/// What a delivery report did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DlrApplied {
    /// Recorded; the delivery is now in this state.
    Recorded(String),
    /// Refused, nothing changed: the delivery is in a state no report can be about. `pending` (waiting for a
    /// retry) and `dead` were never taken by the gateway, or not by the attempt now due; `delivered` and
    /// `undelivered` are settled (a later report is a duplicate, or about another part of a long SMS).
    Refused { state: String },
    /// No SMS delivery with that id.
    Unknown,
}

/// Applies a delivery report from the gateway (its token already checked). `status` is Kannel's: 1 delivered,
/// 2 undelivered, 4 buffered, 8 accepted by the SMSC, 16 rejected by the SMSC. Only a delivery the gateway
/// holds takes a report: `sending` (a report can beat the gateway's HTTP reply), `accepted` or `queued`.
pub(crate) fn apply_dlr(
    conn: &mut Connection,
    id: i64,
    status: i64,
    answer: &str,
    now: Timestamp,
) -> Result<DlrApplied, AlertError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let state: Option<String> = tx
        .query_row(
            "SELECT state FROM alert_deliveries WHERE id = ?1 AND channel = 'sms'",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    let Some(state) = state else {
        return Ok(DlrApplied::Unknown);
    };
    if !matches!(state.as_str(), "sending" | "accepted" | "queued") {
        return Ok(DlrApplied::Refused { state });
    }
    let (new_state, what) = match status {
        1 => ("delivered", "delivered to the phone"),
        2 => ("undelivered", "the network could not deliver it"),
        16 => ("undelivered", "rejected by the SMSC"),
        4 => (state.as_str(), "buffered by the SMSC"),
        8 => (state.as_str(), "accepted by the SMSC"),
        _ => (state.as_str(), "unknown report type"),
    };
    tx.execute(
        "UPDATE alert_deliveries SET state = ?2, updated_at = ?3 WHERE id = ?1",
        params![id, new_state, now.0],
    )?;
    event(
        &tx,
        id,
        now,
        new_state,
        &format!("report {status}: {what}; {answer}"),
    )?;
    let new_state = new_state.to_string();
    tx.commit()?;
    Ok(DlrApplied::Recorded(new_state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::config::Dur;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let cfg = RetryConfig {
            initial_backoff: Dur::secs(1),
            max_backoff: Dur::secs(8),
            multiplier: 2.0,
            jitter: 0.2,
            give_up_after: Dur::secs(3600),
        };
        for (attempt, base) in [
            (1, 1000.0),
            (2, 2000.0),
            (3, 4000.0),
            (4, 8000.0),
            (9, 8000.0),
        ] {
            for _ in 0..50 {
                let b = backoff_ms(&cfg, attempt) as f64;
                assert!(
                    (base * 0.8 - 1.0..=base * 1.2 + 1.0).contains(&b),
                    "attempt {attempt}: {b}"
                );
            }
        }
    }

    #[test]
    fn idempotency_keys_are_stable_and_distinct() {
        assert_eq!(
            idempotency_key(1, "sms", "+84901234567"),
            idempotency_key(1, "sms", "+84901234567")
        );
        assert_ne!(
            idempotency_key(1, "sms", "+84901234567"),
            idempotency_key(2, "sms", "+84901234567")
        );
        assert_eq!(idempotency_key(1, "sms", "x").len(), 32);
    }
}
