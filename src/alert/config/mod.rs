//! The `[alert]` table: routes, receivers, timings, inhibition, flood control and retries.
//!
//! Config is plain data (serde, `deny_unknown_fields`) and is checked once by [`AlertConfig::validate`]
//! so that a typo in a receiver name or a phone number fails at start-up, not at 3 a.m. on the first alert.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

use crate::secret::{Secret, SecretUrl};
use crate::types::Severity;

mod hours;
mod phone;
mod placeholders;
mod validate;

pub(crate) use hours::HourWindow;
pub use phone::normalize_phone;
pub(crate) use placeholders::check_template;

/// A span of time written as `"30s"`, `"5m"`, `"1h30m"`, `"250ms"`, `"2d"` (or a bare number of seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default, Serialize)]
pub struct Dur(pub i64);

impl Dur {
    pub const fn secs(s: i64) -> Self {
        Self(s * 1000)
    }
    pub const fn millis(ms: i64) -> Self {
        Self(ms)
    }
    pub fn ms(self) -> i64 {
        self.0
    }
    pub fn std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0.max(0) as u64)
    }

    /// Seconds as read from a file or the command line: an error, not an overflow, when their
    /// milliseconds do not fit.
    pub fn checked_secs(s: i64) -> Result<Self, String> {
        s.checked_mul(1000)
            .map(Self)
            .ok_or_else(|| format!("duration {s} s is too large"))
    }

    /// Parses `"1h30m"`-style text; units ms, s, m, h, d.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("empty duration".into());
        }
        if let Ok(secs) = t.parse::<i64>() {
            return Self::checked_secs(secs);
        }
        let mut total: i64 = 0;
        let mut rest = t;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(format!(
                    "bad duration {text:?}: expected a number at {rest:?}"
                ));
            }
            let n: i64 = rest[..digits]
                .parse()
                .map_err(|_| format!("bad duration {text:?}: number too large"))?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let scale = match unit {
                "ms" => 1,
                "s" => 1000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => {
                    return Err(format!(
                        "bad duration {text:?}: unknown unit {unit:?} (use ms, s, m, h, d)"
                    ));
                }
            };
            total = total
                .checked_add(
                    n.checked_mul(scale)
                        .ok_or_else(|| format!("duration {text:?} too large"))?,
                )
                .ok_or_else(|| format!("duration {text:?} too large"))?;
        }
        Ok(Self(total))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        if ms % 86_400_000 == 0 && ms != 0 {
            write!(f, "{}d", ms / 86_400_000)
        } else if ms % 3_600_000 == 0 && ms != 0 {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms % 60_000 == 0 && ms != 0 {
            write!(f, "{}m", ms / 60_000)
        } else if ms % 1000 == 0 {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Dur::checked_secs(s).map_err(serde::de::Error::custom),
            Raw::Text(t) => Dur::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// The alert router's configuration (the `[alert]` table). Every field has a default, so a config with no
/// `[alert]` table runs: notices are then decided and recorded in the outbox with no receiver (see
/// `alerts list` / `outbox list`) and logged, and nothing is sent.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertConfig {
    /// Local time zone as minutes east of UTC, for times in notices and route hour windows (Vietnam: 420).
    pub utc_offset_minutes: i32,
    /// Root of the routing tree; its settings are inherited by child routes.
    pub route: RouteConfig,
    /// Where notices go; routes name them.
    pub receivers: Vec<ReceiverConfig>,
    /// Muting rules: camera health and severity.
    pub inhibit: InhibitConfig,
    /// At most `max_notices` per receiver per `window` (critical ones apart), then one summary.
    pub flood: FloodConfig,
    /// Delivery retries for transient failures.
    pub retry: RetryConfig,
    /// Base of the short link to a snapshot put in SMS, e.g. `"https://sw.q1.vn/s/"`; the token is appended.
    /// Without it SMS carry no link.
    pub snapshot_base_url: Option<String>,
    /// The HTTP listener for SMS delivery reports (Kannel `dlr-url`). Without it no reports are requested.
    pub dlr: Option<DlrConfig>,
    /// How long a closed incident's key is remembered in memory to drop late duplicates of it
    /// (the database keeps it for good).
    pub resolved_retention: Dur,
    /// On shutdown, how long the router keeps trying to record the events already queued (a database that
    /// refuses writes would otherwise hold the process forever). What is left then is logged; the next
    /// start hands those incidents over again from the incidents table.
    pub shutdown_timeout: Dur,
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            utc_offset_minutes: 7 * 60,
            route: RouteConfig::default(),
            receivers: Vec::new(),
            inhibit: InhibitConfig::default(),
            flood: FloodConfig::default(),
            retry: RetryConfig::default(),
            snapshot_base_url: None,
            dlr: None,
            resolved_retention: Dur::secs(3600),
            shutdown_timeout: Dur::secs(10),
        }
    }
}

/// A node of the routing tree (Alertmanager semantics): an alert goes down the first child whose matchers and
/// hours match (or every matching child, while a matching child has `continue = true`); the deepest matching
/// node picks the receiver. Unset timings and group_by are inherited from the parent.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    /// Receiver name; inherited when unset. The root may leave it unset: then notices are recorded, not sent.
    pub receiver: Option<String>,
    /// Matchers: every listed field must match.
    #[serde(rename = "match")]
    pub matchers: Matchers,
    /// Local time windows in which this route applies, e.g. `["22:00-06:00"]`; empty = always.
    pub hours: Vec<String>,
    /// Keep looking at later siblings after this route matched.
    #[serde(rename = "continue")]
    pub continue_matching: bool,
    /// Labels that split alerts into groups (each group is one notice): any of
    /// camera, ward, rule, zone, severity, or `"..."` for one group per incident.
    pub group_by: Option<Vec<String>>,
    /// How long a new group waits for more alerts before its first notice.
    pub group_wait: Option<Dur>,
    /// How long to wait before notifying about alerts added to a group that already notified.
    pub group_interval: Option<Dur>,
    /// How long to wait before repeating a notice for alerts still firing.
    pub repeat_interval: Option<Dur>,
    /// Child routes, tried in order.
    pub routes: Vec<RouteConfig>,
}

/// Equality matchers; a field left empty matches anything, a list matches any of its values.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Matchers {
    pub camera: Vec<String>,
    pub ward: Vec<String>,
    pub rule: Vec<String>,
    /// Rule family: crowding, loitering, parking, … (`RuleKind` names).
    pub kind: Vec<String>,
    pub severity: Vec<Severity>,
    /// Matches this severity or a higher one.
    pub min_severity: Option<Severity>,
}

/// A named destination with one or more channels.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    pub name: String,
    /// Also notify when the incidents of a group close.
    #[serde(default)]
    pub send_resolved: bool,
    /// Deliveries to this receiver in flight at once.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    /// Deliveries started per second at most (0 = no limit).
    #[serde(default)]
    pub rate_per_second: f64,
    pub sms: Option<SmsConfig>,
    pub email: Option<EmailConfig>,
    pub webhook: Option<WebhookConfig>,
    /// The streetwatch log, and a file if set: a receiver that needs no phone, mail server or peer.
    pub log: Option<LogConfig>,
}

fn default_concurrency() -> usize {
    4
}

/// How SMS text is encoded.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmsCoding {
    /// GSM-7 when every character fits it, otherwise UCS-2.
    #[default]
    Auto,
    /// Always UCS-2 (keeps Vietnamese diacritics; 70 characters per segment).
    Ucs2,
}

/// How the SMS gateway is called.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HttpMethod {
    /// Kannel's POST interface: the text as a `text/plain` body, everything else in `X-Kannel-*` headers
    /// (`extra_params` too, as `X-Kannel-{name}`). The password is in no URL, so no gateway, proxy or access
    /// log records it. Kannel 1.4 refuses form bodies ("Invalid content-type"), so this is its POST.
    #[default]
    #[serde(rename = "kannel-post")]
    KannelPost,
    /// Parameters in the query string (any gateway; Kannel too). The password is in the URL, where gateway
    /// and proxy access logs keep it: use only where the gateway offers nothing else.
    Get,
    /// Parameters as an `application/x-www-form-urlencoded` body, for gateways that take one.
    Post,
}

/// An HTTP SMS gateway; defaults speak Kannel's sendsms interface.
/// Keys of `param_names`, and Kannel's name for each.
pub(crate) const SMS_PARAM_KEYS: &[&str] = &[
    "username", "password", "to", "from", "text", "coding", "charset", "dlr_mask", "dlr_url",
];

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsConfig {
    /// e.g. `http://127.0.0.1:13013/cgi-bin/sendsms`.
    pub url: SecretUrl,
    pub username: String,
    pub password: Secret,
    /// Recipients; Vietnamese `0xxxxxxxxx` is normalised to `+84xxxxxxxxx`.
    pub numbers: Vec<String>,
    /// Sender id shown on the phone (`from`).
    pub sender: Option<String>,
    #[serde(default)]
    pub coding: SmsCoding,
    /// Replace Vietnamese letters by their base letters so a notice fits GSM-7 (160 per segment).
    #[serde(default)]
    pub strip_diacritics: bool,
    /// Refuse to send more segments than this (the text is cut to fit, ending with "…").
    #[serde(default = "default_max_segments")]
    pub max_segments: usize,
    /// Text template; placeholders: {title} {rule} {camera} {camera_id} {ward} {time} {summary} {count}
    /// {link} {ref} {more} {severity} {incident} (the incident's code, as the page and e-mail show it).
    #[serde(default = "default_sms_template")]
    pub template: String,
    #[serde(default)]
    pub method: HttpMethod,
    /// Renames of the gateway's parameters for gateways other than Kannel (`method` get or post). Keys:
    /// username, password, to, from, text, coding, charset, dlr_mask, dlr_url.
    #[serde(default)]
    pub param_names: BTreeMap<String, String>,
    /// Extra fixed parameters sent with every message (e.g. `smsc = "viettel"`, or a gateway's API key).
    #[serde(default)]
    pub extra_params: BTreeMap<String, Secret>,
    /// Per-request timeout.
    #[serde(default = "default_http_timeout")]
    pub timeout: Dur,
}

fn default_max_segments() -> usize {
    3
}

pub(crate) fn default_sms_template() -> String {
    "{title} {rule}: {camera} (P. {ward}) {time}. {summary}.{more} {link} #{ref}".into()
}

fn default_http_timeout() -> Dur {
    Dur::secs(10)
}

/// SMTP with STARTTLS and AUTH. AUTH without STARTTLS is refused unless the server is on this machine.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub smtp_host: String,
    #[serde(default = "default_smtp_port")]
    pub smtp_port: u16,
    /// Require STARTTLS (default). Turning it off sends in clear text: only for a relay on loopback.
    #[serde(default = "default_true")]
    pub starttls: bool,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// PEM file of a CA (or a self-signed server certificate) to trust besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// Name the server's certificate must carry; defaults to `smtp_host`.
    pub tls_domain: Option<String>,
    pub from: String,
    pub to: Vec<String>,
    /// For connecting to the server.
    #[serde(default = "default_smtp_timeout")]
    pub timeout: Dur,
    /// For the whole conversation, connecting to the server's answer to the message: a server that goes
    /// silent mid-way must not hold the attempt (and the receiver's slot) for ever.
    #[serde(default = "default_smtp_send_timeout")]
    pub send_timeout: Dur,
}

fn default_smtp_port() -> u16 {
    587
}
fn default_true() -> bool {
    true
}
fn default_smtp_timeout() -> Dur {
    Dur::secs(30)
}
fn default_smtp_send_timeout() -> Dur {
    Dur::secs(60)
}

/// JSON POST signed with HMAC-SHA256.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: SecretUrl,
    /// Shared secret for the `X-Streetwatch-Signature` header.
    pub secret: Secret,
    #[serde(default = "default_http_timeout")]
    pub timeout: Dur,
}

/// Notices written to the streetwatch log (target `streetwatch::notice`, level info), and with `file` also
/// appended to a file as JSON Lines, one object per notice. Its deliveries end `delivered` as soon as they
/// are written: a demo or a trial sees the whole chain, and a log shipper can take the file elsewhere.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// JSON Lines file the notices are appended to (created if missing). A relative path is taken inside
    /// the data directory (the folder of the database), where the rest of what a run writes goes.
    pub file: Option<PathBuf>,
}

/// Muting rules, checked when a group is about to notify.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InhibitConfig {
    /// A camera reported down or in maintenance mutes its rule alerts.
    pub camera_health: bool,
    /// Severity rules: a firing source alert mutes matching target alerts that share the `equal` labels.
    pub rules: Vec<InhibitRule>,
}

impl Default for InhibitConfig {
    fn default() -> Self {
        Self {
            camera_health: true,
            rules: vec![InhibitRule {
                source: Matchers {
                    severity: vec![Severity::Critical],
                    ..Matchers::default()
                },
                target: Matchers {
                    severity: vec![Severity::Info, Severity::Warning],
                    ..Matchers::default()
                },
                equal: vec!["camera".into()],
            }],
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitRule {
    pub source: Matchers,
    pub target: Matchers,
    /// Labels that must be equal between source and target (camera, ward, rule, zone).
    #[serde(default)]
    pub equal: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FloodConfig {
    /// Notices per receiver per window before the rest are held back (0 = no limit). Notices about a
    /// critical incident do not count here: they have `critical_max_notices`.
    pub max_notices: u32,
    /// Notices about a critical incident per receiver per window before those too are held (0 = no limit:
    /// a critical incident is always told).
    pub critical_max_notices: u32,
    pub window: Dur,
}

impl Default for FloodConfig {
    fn default() -> Self {
        Self {
            max_notices: 10,
            critical_max_notices: 0,
            window: Dur::secs(600),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// First retry after this long; doubled (times `multiplier`) per attempt.
    pub initial_backoff: Dur,
    pub max_backoff: Dur,
    pub multiplier: f64,
    /// Fraction of each backoff drawn at random (0.2 = ±20 %) so retries of many deliveries spread out.
    pub jitter: f64,
    /// A delivery still failing this long after it was decided goes to dead-letter.
    pub give_up_after: Dur,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial_backoff: Dur::secs(1),
            max_backoff: Dur::secs(300),
            multiplier: 2.0,
            jitter: 0.2,
            give_up_after: Dur::secs(24 * 3600),
        }
    }
}

/// The delivery-report listener.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlrConfig {
    /// Address to listen on, e.g. `127.0.0.1:8088` (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Base URL the gateway can reach the listener at; defaults to `http://{listen}`.
    pub public_url: Option<String>,
    /// A client must send a request's whole header within this time, or it is disconnected (also a client
    /// that keeps a connection open without a request).
    #[serde(default = "default_dlr_header_timeout")]
    pub header_timeout: Dur,
    /// Connections served at once; more wait to be accepted.
    #[serde(default = "default_dlr_connections")]
    pub max_connections: usize,
}

fn default_dlr_header_timeout() -> Dur {
    Dur::secs(10)
}

fn default_dlr_connections() -> usize {
    64
}

/// The longest span of time any setting takes: a month is past any sensible wait, interval, retention or
/// retry, and keeps `now ± span` far from overflowing.
pub(crate) const MAX_SPAN: Dur = Dur::secs(30 * 86_400);
/// The longest a single request to a gateway or mail server may take.
pub(crate) const MAX_TIMEOUT: Dur = Dur::secs(3600);

/// What is wrong with a config, in the operator's words, and the key it is about: a path inside the
/// `[alert]` table such as `receivers[0].max_concurrency` (empty for the table as a whole), from which
/// the main configuration locates the mistake in its file.
#[derive(Debug, thiserror::Error)]
#[error("alert config: {}{message}", if key.is_empty() { String::new() } else { format!("{key}: ") })]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(Dur::parse("30s").unwrap(), Dur::secs(30));
        assert_eq!(Dur::parse("1h30m").unwrap(), Dur::secs(5400));
        assert_eq!(Dur::parse("250ms").unwrap(), Dur::millis(250));
        assert_eq!(Dur::parse("45").unwrap(), Dur::secs(45));
        assert!(Dur::parse("5x").is_err());
        assert!(Dur::parse("m").is_err());
        assert_eq!(Dur::secs(300).to_string(), "5m");
        assert_eq!(Dur::millis(1500).to_string(), "1500ms");
    }

    #[test]
    fn durations_that_do_not_fit_are_errors_not_overflows() {
        // Seconds are kept as milliseconds: 9223372036854776 s do not fit an i64 of them.
        let e = Dur::parse("9223372036854776").unwrap_err();
        assert!(e.contains("too large"), "{e}");
        assert!(Dur::parse("9223372036854775807s").is_err());
        assert!(Dur::parse("106751991168d").is_err());
        #[derive(Debug, Deserialize)]
        struct T {
            #[allow(dead_code)]
            d: Dur,
        }
        let e = toml::from_str::<T>("d = 9223372036854776").unwrap_err();
        assert!(e.message().contains("too large"), "{e}");
        assert_eq!(
            Dur::parse("9223372036854775").unwrap(),
            Dur(9_223_372_036_854_775_000)
        );
    }

    /// Milliseconds of `(number, unit)` parts computed wide, to compare the parser with.
    fn wide_ms(parts: &[(u64, &str)]) -> i128 {
        parts
            .iter()
            .map(|(n, unit)| {
                let scale: i128 = match *unit {
                    "ms" => 1,
                    "s" => 1000,
                    "m" => 60_000,
                    "h" => 3_600_000,
                    _ => 86_400_000,
                };
                i128::from(*n) * scale
            })
            .sum()
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_or_errs(text in proptest::prelude::any::<String>()) {
            let _ = Dur::parse(&text);
        }

        #[test]
        fn digits_alone_are_seconds_that_fit_or_an_error(digits in "[+-]?[0-9]{1,25}") {
            let wide = digits.parse::<i128>().unwrap() * 1000;
            match Dur::parse(&digits) {
                Ok(d) => proptest::prop_assert_eq!(i128::from(d.ms()), wide),
                Err(_) => proptest::prop_assert!(i64::try_from(wide).is_err()),
            }
        }

        #[test]
        fn parts_sum_exactly_or_are_too_large(
            parts in proptest::collection::vec(
                (0u64..u64::MAX, proptest::sample::select(vec!["ms", "s", "m", "h", "d"])),
                1..4,
            )
        ) {
            let text: String = parts.iter().map(|(n, u)| format!("{n}{u}")).collect();
            let wide = wide_ms(&parts);
            match Dur::parse(&text) {
                Ok(d) => proptest::prop_assert_eq!(i128::from(d.ms()), wide),
                Err(_) => proptest::prop_assert!(i64::try_from(wide).is_err(), "{}", text),
            }
        }
    }
}
