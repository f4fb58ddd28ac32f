//! `streetwatch silence add|list|expire`, `streetwatch alerts list`, `streetwatch outbox list|show|retry`:
//! operators' access to the router's tables in the shared SQLite file. A silence added here applies to the
//! running router at its next notice decision; no restart.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use crate::secret::redact_url;
use crate::types::{
    Clock, RuleKind, Severity, SystemClock, Timestamp, days_from_civil, days_in_month,
};

use super::config::{Dur, Matchers};
use super::store::Store;

#[derive(Debug, Subcommand)]
pub enum AlertCommand {
    /// Mute alerts matching camera, ward, rule or severity for a while.
    #[command(subcommand)]
    Silence(SilenceCommand),
    /// Incidents the alert router knows.
    #[command(subcommand)]
    Alerts(AlertsCommand),
    /// Notices decided and their deliveries.
    #[command(subcommand)]
    Outbox(OutboxCommand),
}

// Parsed once per process: the size of the `Add` variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum SilenceCommand {
    /// Create a silence; prints its id.
    Add(SilenceAdd),
    /// List silences (active and scheduled; --all adds expired ones).
    List {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// End a silence now.
    Expire { id: i64 },
}

#[derive(Debug, Args)]
pub struct SilenceAdd {
    /// Camera id to match (repeat for several).
    #[arg(long)]
    pub camera: Vec<String>,
    /// Ward to match (repeat for several).
    #[arg(long)]
    pub ward: Vec<String>,
    /// Rule name to match (repeat for several).
    #[arg(long)]
    pub rule: Vec<String>,
    /// Rule family to match: crowding, loitering, parking, … (repeat for several).
    #[arg(long, value_parser = parse_kind)]
    pub kind: Vec<String>,
    /// Severity to match: info, warning, critical (repeat for several).
    #[arg(long, value_parser = parse_severity)]
    pub severity: Vec<Severity>,
    /// Start: RFC 3339 (`2026-11-23T22:00:00+07:00`) or `now`.
    #[arg(long, default_value = "now")]
    pub starts: String,
    /// End: RFC 3339; overrides --duration.
    #[arg(long)]
    pub ends: Option<String>,
    /// How long from the start, e.g. `2h`, `30m`.
    #[arg(long, default_value = "1h")]
    pub duration: String,
    /// Why (required: the next shift must know).
    #[arg(long)]
    pub comment: String,
    /// Who.
    #[arg(long, default_value = "cli")]
    pub created_by: String,
}

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// List incidents, newest first.
    List {
        /// firing or resolved.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// List deliveries, newest first, a page at a time (pending, sending, accepted, queued, delivered,
    /// undelivered, dead).
    List {
        #[arg(long)]
        state: Option<String>,
        /// Deliveries per page.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
        /// Only deliveries with an id below this: the next page starts before the last id shown.
        #[arg(long)]
        before: Option<i64>,
        #[arg(long)]
        json: bool,
    },
    /// One delivery with every state change it went through.
    Show { id: i64 },
    /// Put a dead-lettered or undelivered delivery back in the queue (after fixing the cause).
    Retry { id: i64 },
}

fn parse_kind(s: &str) -> Result<String, String> {
    match RuleKind::parse(s) {
        Some(k) => Ok(k.as_str().to_string()),
        None => Err(format!(
            "unknown rule kind {s:?} ({})",
            RuleKind::ALL.map(RuleKind::as_str).join(", ")
        )),
    }
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    match s {
        "info" => Ok(Severity::Info),
        "warning" => Ok(Severity::Warning),
        "critical" => Ok(Severity::Critical),
        _ => Err(format!("unknown severity {s:?} (info, warning, critical)")),
    }
}

/// `now`, or RFC 3339 `YYYY-MM-DDTHH:MM[:SS](Z|±HH:MM)`.
fn parse_time(text: &str, now: Timestamp) -> anyhow::Result<Timestamp> {
    if text == "now" {
        return Ok(now);
    }
    let bad = || {
        anyhow::anyhow!("bad time {text:?}: use RFC 3339 like 2026-11-23T22:00:00+07:00, or now")
    };
    // Every valid form is ASCII: refusing anything else first makes each byte offset below a character
    // boundary.
    let b = text.as_bytes();
    if !text.is_ascii()
        || b.len() < 17
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
    {
        return Err(bad());
    }
    let digits = |s: &str| -> anyhow::Result<i64> {
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let num = |r: std::ops::Range<usize>| digits(text.get(r).unwrap_or_default());
    let (y, mo, d, h, mi) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
    );
    let (sec, rest) = if b[16] == b':' {
        (num(17..19)?, text.get(19..).unwrap_or_default())
    } else {
        (0, &text[16..])
    };
    let offset_min = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (digits(&rest[1..3])?, digits(&rest[4..6])?);
            if oh > 23 || om > 59 {
                return Err(bad());
            }
            if *sign == b'-' {
                -(oh * 60 + om)
            } else {
                oh * 60 + om
            }
        }
        _ => return Err(bad()),
    };
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60
    {
        return Err(bad());
    }
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    Ok(Timestamp(secs * 1000))
}

/// The longest silence the command sets: a year and a day covers any planned works; longer is a typo.
const MAX_SILENCE: Dur = Dur::secs(366 * 86_400);

/// A silence's start and end from `--starts`, `--ends` and `--duration`.
fn silence_window(
    starts: &str,
    ends: Option<&str>,
    duration: &str,
    now: Timestamp,
) -> anyhow::Result<(Timestamp, Timestamp)> {
    let starts = parse_time(starts, now)?;
    let ends = match ends {
        Some(e) => parse_time(e, now)?,
        None => {
            let d = Dur::parse(duration).map_err(anyhow::Error::msg)?;
            if d.ms() <= 0 || d > MAX_SILENCE {
                bail!("--duration must be more than 0s and at most {MAX_SILENCE}, found {d}");
            }
            starts.plus_ms(d.ms())
        }
    };
    Ok((starts, ends))
}

/// Runs a command against the database at `db_path`, printing to stdout.
pub fn run(cmd: AlertCommand, db_path: &Path) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    run_to(cmd, db_path, SystemClock.now(), &mut stdout.lock())
}

/// One JSON object per line, for scripts.
fn write_json_lines<T: serde::Serialize>(out: &mut dyn Write, rows: &[T]) -> anyhow::Result<()> {
    for r in rows {
        writeln!(out, "{}", serde_json::to_string(r)?)?;
    }
    Ok(())
}

/// [`run`] with the time and the output given (for tests).
pub fn run_to(
    cmd: AlertCommand,
    db_path: &Path,
    now: Timestamp,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let store = Store::open(db_path).with_context(|| format!("open {}", db_path.display()))?;
    match cmd {
        AlertCommand::Silence(SilenceCommand::Add(a)) => {
            let matchers = Matchers {
                camera: a.camera,
                ward: a.ward,
                rule: a.rule,
                kind: a.kind,
                severity: a.severity,
                min_severity: None,
            };
            let (starts, ends) = silence_window(&a.starts, a.ends.as_deref(), &a.duration, now)?;
            if a.comment.trim().is_empty() {
                bail!("--comment must say why");
            }
            let id = store.add_silence(&matchers, starts, ends, &a.created_by, &a.comment, now)?;
            writeln!(
                out,
                "silence {id} created: {} until {}",
                starts.to_rfc3339(),
                ends.to_rfc3339()
            )?;
        }
        AlertCommand::Silence(SilenceCommand::List { all, json }) => {
            let rows: Vec<_> = store
                .silences(all)?
                .into_iter()
                .filter(|s| all || s.ends_at > now)
                .collect();
            if json {
                write_json_lines(out, &rows)?;
            } else {
                writeln!(
                    out,
                    "{:>4}  {:<8}  {:<20}  {:<20}  {:<40}  COMMENT",
                    "ID", "STATE", "STARTS", "ENDS", "MATCHERS"
                )?;
                for s in &rows {
                    let state = s.state(now);
                    writeln!(
                        out,
                        "{:>4}  {:<8}  {:<20}  {:<20}  {:<40}  {} ({})",
                        s.id,
                        state,
                        s.starts_at.to_rfc3339(),
                        s.ends_at.to_rfc3339(),
                        describe(&s.matchers),
                        s.comment,
                        s.created_by
                    )?;
                }
            }
        }
        AlertCommand::Silence(SilenceCommand::Expire { id }) => {
            store.expire_silence(id, now)?;
            writeln!(out, "silence {id} expired")?;
        }
        AlertCommand::Alerts(AlertsCommand::List {
            status,
            limit,
            json,
        }) => {
            if let Some(s) = &status
                && s != "firing"
                && s != "resolved"
            {
                bail!("--status is firing or resolved, not {s:?}");
            }
            let rows = store.alerts(status.as_deref(), limit)?;
            if json {
                write_json_lines(out, &rows)?;
            } else {
                writeln!(
                    out,
                    "{:<9} {:<8} {:<20} {:<14} {:<44} {:>6} {:>4}  SUMMARY / MUTED",
                    "STATUS", "SEVERITY", "STARTED", "WARD", "INCIDENT", "NOTICE", "DUPS"
                )?;
                for r in &rows {
                    let muted = r
                        .muted_by
                        .as_ref()
                        .map(|m| format!(" [muted: {m}]"))
                        .unwrap_or_default();
                    writeln!(
                        out,
                        "{:<9} {:<8} {:<20} {:<14} {:<44} {:>6} {:>4}  {}{muted}",
                        r.status,
                        r.severity,
                        r.started_at.to_rfc3339(),
                        r.ward,
                        r.key,
                        r.last_notice_id
                            .map(|n| n.to_string())
                            .unwrap_or_else(|| "-".into()),
                        r.duplicates,
                        r.summary
                    )?;
                }
            }
        }
        AlertCommand::Outbox(OutboxCommand::List {
            state,
            limit,
            before,
            json,
        }) => {
            let mut rows = store.deliveries_page(state.as_deref(), before, limit as usize)?;
            for r in &mut rows {
                // Rows written before webhook targets were stored redacted may hold a token.
                r.target = redact_url(&r.target);
            }
            if json {
                write_json_lines(out, &rows)?;
            } else {
                writeln!(
                    out,
                    "{:>5} {:>6} {:<16} {:<7} {:<28} {:<11} {:>3} {:>4}  LAST REPLY / ERROR",
                    "ID", "NOTICE", "RECEIVER", "CHANNEL", "TARGET", "STATE", "TRY", "DUPS"
                )?;
                for r in &rows {
                    let note = r
                        .last_error
                        .as_deref()
                        .or(r.gateway_reply.as_deref())
                        .unwrap_or("");
                    writeln!(
                        out,
                        "{:>5} {:>6} {:<16} {:<7} {:<28} {:<11} {:>3} {:>4}  {}",
                        r.id,
                        r.notice_id,
                        r.receiver,
                        r.channel,
                        r.target,
                        r.state,
                        r.attempts,
                        r.possible_duplicates,
                        note
                    )?;
                }
                if rows.len() == limit as usize
                    && let Some(last) = rows.last()
                {
                    writeln!(out, "(more: --before {})", last.id)?;
                }
                let unrouted = store.notices_without_delivery()?;
                if unrouted > 0 {
                    writeln!(
                        out,
                        "({unrouted} notices were held by flood control or had no receiver: no deliveries)"
                    )?;
                }
            }
        }
        AlertCommand::Outbox(OutboxCommand::Show { id }) => {
            let d = store
                .delivery(id)?
                .with_context(|| format!("no delivery {id}"))?;
            writeln!(
                out,
                "delivery {} of notice {} to {} by {} ({})",
                d.id,
                d.notice_id,
                d.receiver,
                d.channel,
                redact_url(&d.target)
            )?;
            writeln!(
                out,
                "state {} after {} attempts; idempotency key {}",
                d.state, d.attempts, d.idempotency_key
            )?;
            if let Some(s) = d.segments {
                writeln!(out, "{s} SMS segment(s)")?;
            }
            writeln!(out, "body: {}", d.body)?;
            for e in store.delivery_events(id)? {
                writeln!(
                    out,
                    "  {}  {:<11}  {}",
                    e.at.to_rfc3339(),
                    e.state,
                    e.detail.unwrap_or_default()
                )?;
            }
        }
        AlertCommand::Outbox(OutboxCommand::Retry { id }) => {
            store.retry_delivery(id, now)?;
            writeln!(out, "delivery {id} queued again")?;
        }
    }
    Ok(())
}

fn describe(m: &Matchers) -> String {
    let mut parts = Vec::new();
    for (name, vals) in [
        ("camera", &m.camera),
        ("ward", &m.ward),
        ("rule", &m.rule),
        ("kind", &m.kind),
    ] {
        if !vals.is_empty() {
            parts.push(format!("{name}={}", vals.join("|")));
        }
    }
    if !m.severity.is_empty() {
        parts.push(format!(
            "severity={}",
            m.severity
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("|")
        ));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        let now = Timestamp(5);
        assert_eq!(parse_time("now", now).unwrap(), now);
        assert_eq!(
            parse_time("2026-11-18T11:06:40Z", now).unwrap(),
            Timestamp(1_795_000_000_000)
        );
        assert_eq!(
            parse_time("2026-11-18T18:06:40+07:00", now).unwrap(),
            Timestamp(1_795_000_000_000)
        );
        assert_eq!(
            parse_time("2000-02-29T00:00Z", now).unwrap().to_rfc3339(),
            "2000-02-29T00:00:00Z"
        );
        assert!(parse_time("2026-13-01T00:00:00Z", now).is_err());
        assert!(parse_time("tomorrow", now).is_err());
    }

    #[test]
    fn offsets_and_dates_outside_the_calendar_are_refused() {
        let now = Timestamp(5);
        for t in [
            "2026-11-18T11:06+0é00",
            "2026-11-18T11:06:00+éé0",
            "2026-02-29T00:00Z",
            "2026-04-31T00:00Z",
            "2026-11-18T11:06+24:00",
            "2026-11-18T11:06+07:60",
            "2026-+1-18T11:06Z",
            "2026-11-18T11:06++7:00",
        ] {
            assert!(parse_time(t, now).is_err(), "{t}");
        }
        assert!(parse_time("2028-02-29T00:00Z", now).is_ok());
    }

    proptest::proptest! {
        #[test]
        fn any_time_text_parses_or_errs(text in proptest::prelude::any::<String>()) {
            let _ = parse_time(&text, Timestamp(5));
        }

        /// Valid-looking dates with any tail: the offset is where byte slicing used to split a character.
        #[test]
        fn any_tail_after_a_date_parses_or_errs(
            date in "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2})?",
            tail in "([+-][0-9]{0,2}:?[0-9]{0,2})?\\PC{0,4}",
        ) {
            let _ = parse_time(&format!("{date}{tail}"), Timestamp(5));
        }

        #[test]
        fn any_silence_window_is_ordered_or_an_error(
            starts in "now|2026-11-18T11:06(:00)?(Z|[+-][0-9]{2}:[0-9]{2})|\\PC{0,20}",
            duration in "[+-]?[0-9]{1,20}(ms|s|m|h|d)?|\\PC{0,12}",
        ) {
            let now = Timestamp(1_795_000_000_000);
            if let Ok((from, to)) = silence_window(&starts, None, &duration, now) {
                proptest::prop_assert!(from < to && to.since(from) <= MAX_SILENCE.ms());
            }
        }
    }
}
