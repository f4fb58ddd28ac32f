//! Any TOML value in any numeric field of a valid configuration: parsing and validation answer Ok or a
//! located error, never a panic, and what they accept is safe for the arithmetic the run does with it.

use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;

use super::{Config, ConfigError};

/// A configuration with every numeric field as a `@name@` placeholder.
const BASE: &str = r#"
[runtime]
workers = @workers@
max_batch = @max_batch@
batch_wait_ms = @batch_wait_ms@
score_threshold = @score_threshold@
ingest_nice = @ingest_nice@

[[cameras]]
id = "cam-1"
url = "rtsp://10.0.0.5/stream1"
fps = @fps@
width = @width@
stall_seconds = @stall_seconds@
regions = [[@region_x@, 0.1, 0.9, 0.9]]

[[cameras.zones]]
id = "plaza"
polygon = [[@polygon_x@, 0.1], [0.9, 0.1], [0.9, 0.9]]

[[cameras.lines]]
id = "gate"
points = [[@line_x@, 0.5], [0.9, 0.5]]
in_direction = [@in_direction_x@, 1.0]

[[cameras.rules]]
kind = "crowding"
id = "crowd"
zone = "plaza"
min_people = @min_people@
min_seconds = @min_seconds@
clear_seconds = @clear_seconds@

[[cameras.rules]]
kind = "parking"
id = "park"
zone = "plaza"
stationary_radius = @stationary_radius@

[[cameras.rules]]
kind = "wrong_way"
id = "ww"
zone = "plaza"
direction = [@direction_x@, 1.0]

[alert]
utc_offset_minutes = @utc_offset_minutes@
resolved_retention = @resolved_retention@
[alert.route]
receiver = "hq"
group_wait = @group_wait@
group_interval = @group_interval@
repeat_interval = @repeat_interval@
[[alert.route.routes]]
group_wait = @child_group_wait@
[alert.flood]
max_notices = @max_notices@
window = @window@
[alert.retry]
initial_backoff = @initial_backoff@
max_backoff = @max_backoff@
multiplier = @multiplier@
jitter = @jitter@
give_up_after = @give_up_after@
[[alert.receivers]]
name = "hq"
max_concurrency = @max_concurrency@
rate_per_second = @rate_per_second@
[alert.receivers.sms]
url = "http://127.0.0.1:13013/cgi-bin/sendsms"
username = "u"
password = "p"
numbers = ["0901234567"]
max_segments = @max_segments@
timeout = @sms_timeout@
[alert.receivers.email]
smtp_host = "127.0.0.1"
smtp_port = @smtp_port@
from = "a@b.vn"
to = ["c@d.vn"]
timeout = @email_timeout@
[alert.receivers.webhook]
url = "http://127.0.0.1:9/"
secret = "0123456789abcdef"
timeout = @webhook_timeout@
"#;

/// Each placeholder with a value the base is valid with.
const FIELDS: &[(&str, &str)] = &[
    ("workers", "1"),
    ("max_batch", "4"),
    ("batch_wait_ms", "5"),
    ("score_threshold", "0.35"),
    ("ingest_nice", "19"),
    ("fps", "2"),
    ("width", "1280"),
    ("stall_seconds", "8"),
    ("region_x", "0.1"),
    ("polygon_x", "0.1"),
    ("line_x", "0.1"),
    ("in_direction_x", "0.0"),
    ("min_people", "5"),
    ("min_seconds", "10"),
    ("clear_seconds", "30"),
    ("stationary_radius", "0.3"),
    ("direction_x", "0.0"),
    ("utc_offset_minutes", "420"),
    ("resolved_retention", "\"1h\""),
    ("group_wait", "\"30s\""),
    ("group_interval", "\"5m\""),
    ("repeat_interval", "\"4h\""),
    ("child_group_wait", "\"10s\""),
    ("max_notices", "10"),
    ("window", "\"10m\""),
    ("initial_backoff", "\"1s\""),
    ("max_backoff", "\"5m\""),
    ("multiplier", "2.0"),
    ("jitter", "0.2"),
    ("give_up_after", "\"1d\""),
    ("max_concurrency", "4"),
    ("rate_per_second", "5.0"),
    ("max_segments", "3"),
    ("sms_timeout", "\"10s\""),
    ("smtp_port", "587"),
    ("email_timeout", "\"30s\""),
    ("webhook_timeout", "\"10s\""),
];

fn text(overrides: &[(usize, String)]) -> String {
    let mut text = BASE.to_string();
    for (i, (name, default)) in FIELDS.iter().enumerate() {
        let value = overrides
            .iter()
            .rev()
            .find(|(j, _)| *j == i)
            .map_or(*default, |(_, v)| v.as_str());
        text = text.replace(&format!("@{name}@"), value);
    }
    text
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "prop.toml", Path::new(env!("CARGO_MANIFEST_DIR")))
}

/// A TOML float as TOML writes it (Rust prints NaN and infinity differently).
fn toml_float(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        format!("{v:?}")
    }
}

/// Any TOML value, weighted towards the edges of numbers and durations.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        (-10i64..100_000).prop_map(|v| v.to_string()),
        any::<f64>().prop_map(toml_float),
        prop::sample::select(vec![
            "nan",
            "-nan",
            "inf",
            "-inf",
            "-0.0",
            "1e-20",
            "1e-300",
            "1e300",
            "0",
            "-1",
            "9223372036854775807",
            "-9223372036854775808",
            "9223372036854776",
            "4294967296",
            "65536",
        ])
        .prop_map(String::from),
        "-?[0-9]{1,20}(ms|s|m|h|d)?([0-9]{1,12}(ms|s|m|h|d))?"
            .prop_map(|s| toml::Value::String(s).to_string()),
        any::<String>().prop_map(|s| toml::Value::String(s).to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("[1, 2]".to_string()),
        Just("{ a = 1 }".to_string()),
    ]
}

/// Checks what a valid configuration promises the code that runs with it.
fn usable(c: &Config) {
    for cam in &c.cameras {
        // The ingest watchdog's timer.
        let stall = Duration::try_from_secs_f32(cam.stall_seconds).expect("stall_seconds");
        assert!(stall > Duration::ZERO);
        assert!(cam.width > 0 && cam.fps > 0.0);
    }
    assert!(c.runtime.max_batch >= 1 && c.runtime.max_batch <= 1024);
    let Some(a) = &c.alert else { return };
    // Every span of time is added to or taken from "now" in milliseconds.
    let now: i64 = 1_795_000_000_000;
    let mut durations = vec![
        a.resolved_retention,
        a.flood.window,
        a.retry.initial_backoff,
        a.retry.max_backoff,
        a.retry.give_up_after,
    ];
    let mut routes = vec![&a.route];
    while let Some(r) = routes.pop() {
        durations.extend(
            [r.group_wait, r.group_interval, r.repeat_interval]
                .into_iter()
                .flatten(),
        );
        routes.extend(&r.routes);
    }
    for r in &a.receivers {
        // The notifier's semaphore and token bucket.
        assert!(r.max_concurrency >= 1 && r.max_concurrency <= tokio::sync::Semaphore::MAX_PERMITS);
        if r.rate_per_second > 0.0 {
            Duration::try_from_secs_f64(1.0 / r.rate_per_second).expect("rate_per_second");
        }
        durations.extend(r.sms.as_ref().map(|s| s.timeout));
        durations.extend(r.email.as_ref().map(|e| e.timeout));
        durations.extend(r.webhook.as_ref().map(|w| w.timeout));
    }
    for d in durations {
        assert!(
            now.checked_add(d.ms()).is_some() && now.checked_sub(d.ms()).is_some(),
            "{d:?}"
        );
    }
    assert!(a.retry.multiplier.is_finite() && a.retry.jitter.is_finite());
}

#[test]
fn the_base_is_valid() {
    let c = parse(&text(&[])).unwrap_or_else(|e| panic!("{e}"));
    usable(&c);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_value_in_one_field(field in 0..FIELDS.len(), v in value()) {
        if let Ok(c) = parse(&text(&[(field, v)])) {
            usable(&c);
        }
    }

    #[test]
    fn any_values_in_three_fields(
        changes in prop::collection::vec((0..FIELDS.len(), value()), 3)
    ) {
        if let Ok(c) = parse(&text(&changes)) {
            usable(&c);
        }
    }

    /// A value that parses but is out of range is reported on the line that sets the key it names.
    #[test]
    fn errors_point_at_their_key(field in 0..FIELDS.len(), v in value()) {
        let text = text(&[(field, v)]);
        if let Err(ConfigError::Invalid { line, key, .. }) = parse(&text) {
            let last = key.rsplit('.').next().unwrap_or_default();
            let at = text.lines().nth(line - 1).unwrap_or_default();
            prop_assert!(at.starts_with(&format!("{last} =")), "{key} at line {line}: {at}");
        }
    }
}
