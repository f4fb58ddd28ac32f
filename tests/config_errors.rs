//! `streetwatch check-config` on broken files: each mistake names the file, line and key, and exits non-zero.

mod support;

use std::process::Command;

const GOOD: &str = r#"[runtime]
model = "MODEL"

[[cameras]]
id = "cam-1"
url = "rtsp://admin:pw@10.0.0.5/stream1"

[[cameras.zones]]
id = "plaza"
polygon = [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9]]

[[cameras.rules]]
kind = "crowding"
id = "crowd"
zone = "plaza"
min_people = 5
min_seconds = 10
"#;

/// Writes `text` to a file and runs check-config on it: (exit ok, stdout + stderr, file path).
fn check(text: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("district.toml");
    let model = support::root().join("models/nanodet_g_416_coco.toml");
    std::fs::write(&path, text.replace("MODEL", model.to_str().unwrap())).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_streetwatch"))
        .env(
            "STREETWATCH_ORT_LIB",
            streetwatch::infer::default_runtime_path(),
        )
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text, path.display().to_string())
}

fn fails_with(text: &str, line: usize, key: &str, what: &str) {
    let (ok, out, file) = check(text);
    assert!(!ok, "accepted: {out}");
    let at = format!("{file}:{line}:");
    assert!(out.contains(&at), "expected {at} in: {out}");
    assert!(out.contains(key), "expected key {key} in: {out}");
    assert!(out.contains(what), "expected `{what}` in: {out}");
    assert!(!out.contains("admin:pw"), "credentials leaked: {out}");
}

#[test]
fn a_good_file_passes() {
    let (ok, out, _) = check(GOOD);
    assert!(ok, "{out}");
    assert!(
        out.contains("1 cameras, 1 zones, 1 rules, model nanodet-g-416-coco"),
        "{out}"
    );
}

#[test]
fn unknown_key() {
    fails_with(
        &GOOD.replace("min_people = 5", "min_people = 5\nmin_poeple = 5"),
        17,
        "min_poeple",
        "unknown field",
    );
}

#[test]
fn polygon_with_two_points() {
    fails_with(
        &GOOD.replace(", [0.9, 0.9]]", "]"),
        10,
        "cameras[0].zones[0].polygon",
        "at least 3 points",
    );
}

#[test]
fn polygon_outside_the_frame() {
    fails_with(
        &GOOD.replace("[0.9, 0.9]", "[0.9, 1.2]"),
        10,
        "cameras[0].zones[0].polygon",
        "outside 0–1",
    );
}

#[test]
fn duplicate_camera_id() {
    let twice = format!("{GOOD}\n[[cameras]]\nid = \"cam-1\"\nurl = \"rtsp://10.0.0.6/s\"\n");
    fails_with(&twice, 20, "cameras[1].id", "duplicate camera id `cam-1`");
}

#[test]
fn two_rules_with_one_id() {
    let twice = format!(
        "{GOOD}\n[[cameras.rules]]\nkind = \"loitering\"\nid = \"crowd\"\nzone = \"plaza\"\n"
    );
    fails_with(
        &twice,
        21,
        "cameras[0].rules[1].id",
        "duplicate rule id `crowd`",
    );
}

#[test]
fn a_line_with_identical_endpoints() {
    let line = format!(
        "{GOOD}\n[[cameras.lines]]\nid = \"gate\"\npoints = [[0.5, 0.5], [0.5, 0.5]]\nin_direction = [0.0, 1.0]\n"
    );
    fails_with(&line, 21, "cameras[0].lines[0].points", "no length");
}

#[test]
fn a_schedule_at_25_oclock() {
    let sched =
        format!("{GOOD}[cameras.rules.schedule]\nhours = [\"07:00-11:00\", \"25:00-26:00\"]\n");
    fails_with(
        &sched,
        19,
        "cameras[0].rules[0].schedule.hours",
        "not a time of day",
    );
}

#[test]
fn an_unknown_class_name() {
    fails_with(
        &GOOD.replace(
            "min_people = 5",
            "min_people = 5\nclasses = [\"person\", \"persn\"]",
        ),
        17,
        "cameras[0].rules[0].classes",
        "unknown class `persn`",
    );
}

#[test]
fn a_wrong_way_rule_without_its_direction() {
    let rule =
        format!("{GOOD}\n[[cameras.rules]]\nkind = \"wrong_way\"\nid = \"ww\"\nzone = \"plaza\"\n");
    fails_with(
        &rule,
        21,
        "cameras[0].rules[1].direction",
        "needs `direction`",
    );
}

#[test]
fn missing_model_file() {
    let (ok, out, file) =
        check(&GOOD.replace("model = \"MODEL\"", "model = \"/nonexistent/model.toml\""));
    assert!(!ok);
    assert!(
        out.contains(&format!("{file}:2:9: runtime.model")) && out.contains("does not exist"),
        "{out}"
    );
}

#[test]
fn model_manifest_pointing_at_a_missing_onnx() {
    let dir = tempfile::tempdir().unwrap();
    let manifest =
        std::fs::read_to_string(support::root().join("models/nanodet_g_416_coco.toml")).unwrap();
    let m = dir.path().join("m.toml");
    std::fs::write(&m, manifest).unwrap();
    let (ok, out, _) = check(&GOOD.replace("MODEL", m.to_str().unwrap()));
    assert!(!ok);
    assert!(
        out.contains("nanodet_g_416_coco.onnx") && out.contains("cannot read"),
        "{out}"
    );
}

#[test]
fn unparseable_url() {
    fails_with(
        &GOOD.replace(
            "rtsp://admin:pw@10.0.0.5/stream1",
            "rtsp://admin:pw@[10.0.0.5/stream1",
        ),
        6,
        "cameras[0].url",
        "not a valid URL",
    );
    fails_with(
        &GOOD.replace(
            "rtsp://admin:pw@10.0.0.5/stream1",
            "http://admin:pw@10.0.0.5/",
        ),
        6,
        "cameras[0].url",
        "unsupported scheme",
    );
}

#[test]
fn syntax_error() {
    fails_with(
        &GOOD.replace("min_seconds = 10", "min_seconds = "),
        17,
        "",
        "",
    );
}

#[test]
fn the_shipped_configurations_pass() {
    for name in ["demo.toml", "district.example.toml"] {
        let path = support::root().join("pipelines").join(name);
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("${DEMO_RTSP_PORT}", "8554");
        let copy = write_beside(&path, &text);
        let out = Command::new(env!("CARGO_BIN_EXE_streetwatch"))
            .env("CAM_PASSWORD", "example")
            .env(
                "STREETWATCH_ORT_LIB",
                streetwatch::infer::default_runtime_path(),
            )
            .arg("check-config")
            .arg(&copy)
            .output()
            .unwrap();
        std::fs::remove_file(&copy).unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A copy in the same folder, so relative paths resolve as they do for the original.
fn write_beside(original: &std::path::Path, text: &str) -> std::path::PathBuf {
    let copy = original.with_file_name(format!(
        ".check-{}-{}",
        std::process::id(),
        original.file_name().unwrap().to_str().unwrap()
    ));
    std::fs::write(&copy, text).unwrap();
    copy
}

/// `GOOD` with `find` replaced by `with`.
fn good_with(find: &str, with: &str) -> String {
    assert!(GOOD.contains(find), "{find}");
    GOOD.replacen(find, with, 1)
}

/// `GOOD` followed by an `[alert]` table whose first line (after the header) is line 19.
fn with_alert(table: &str) -> String {
    format!("{GOOD}[alert]\n{table}")
}

const RECEIVER: &str = "[[alert.receivers]]\nname = \"hq\"\n";
const HOOK: &str =
    "webhook = { url = \"http://127.0.0.1:9/hook\", secret = \"0123456789abcdef\" }\n";

/// The numbers reported to panic, wrap or break a thread at run time: each is refused at its own line and
/// key, before anything starts.
#[test]
fn numbers_that_broke_the_run_are_refused_where_they_are() {
    let cam = "url = \"rtsp://admin:pw@10.0.0.5/stream1\"";
    fails_with(
        &good_with(cam, &format!("{cam}\nstall_seconds = -1")),
        7,
        "cameras[0].stall_seconds",
        "must be 1–3600 s, found -1",
    );
    fails_with(
        &good_with(cam, &format!("{cam}\nstall_seconds = nan")),
        7,
        "cameras[0].stall_seconds",
        "must be 1–3600 s, found NaN",
    );
    fails_with(
        &with_alert(&format!(
            "{RECEIVER}max_concurrency = 4000000000000000000\n{HOOK}"
        )),
        21,
        "alert.receivers[0].max_concurrency",
        "must be 1–1000, found 4000000000000000000",
    );
    fails_with(
        &with_alert("[alert.route]\ngroup_wait = 9223372036854775\n"),
        20,
        "alert.route.group_wait",
        "must be 0s–30d",
    );
    fails_with(
        &with_alert("[alert.retry]\ngive_up_after = 0\n"),
        20,
        "alert.retry.give_up_after",
        "must be more than 0s and at most 30d, found 0s",
    );
    fails_with(
        &with_alert(&format!("{RECEIVER}rate_per_second = 1e-20\n{HOOK}")),
        21,
        "alert.receivers[0].rate_per_second",
        "0 (no limit) or at least one a day",
    );
    // Seconds that overflow milliseconds fail while parsing, at the value.
    let (ok, out, file) = check(&with_alert(
        "[alert.route]\ngroup_wait = 9223372036854776\n",
    ));
    assert!(!ok, "accepted: {out}");
    assert!(
        out.contains(&format!("{file}:20:14:")) && out.contains("too large"),
        "{out}"
    );
}

/// Every other number in the file is checked against a sane range too, and located at its key.
#[test]
fn numbers_out_of_range_are_located() {
    let model = "model = \"MODEL\"";
    let cam = "url = \"rtsp://admin:pw@10.0.0.5/stream1\"";
    let cases: Vec<(String, usize, &str, &str)> = vec![
        (
            good_with(model, &format!("{model}\nworkers = 100000")),
            3,
            "runtime.workers",
            "must be 0 (one per core) to 256, found 100000",
        ),
        (
            good_with(model, &format!("{model}\nmax_batch = 0")),
            3,
            "runtime.max_batch",
            "must be 1–64, found 0",
        ),
        (
            good_with(model, &format!("{model}\nbatch_wait_ms = 100000")),
            3,
            "runtime.batch_wait_ms",
            "must be 0–1000 ms, found 100000",
        ),
        (
            good_with(model, &format!("{model}\nscore_threshold = nan")),
            3,
            "runtime.score_threshold",
            "must be within 0–1, found NaN",
        ),
        (
            // Room for fewer cameras than the file names: a reload could never fit them.
            good_with(model, &format!("{model}\ncamera_capacity = 0")),
            3,
            "runtime.camera_capacity",
            "must be at least the 1 cameras configured and at most 100000, found 0",
        ),
        (
            good_with(cam, &format!("{cam}\nfps = 0")),
            7,
            "cameras[0].fps",
            "must be in (0, 60], found 0",
        ),
        (
            good_with(cam, &format!("{cam}\nwidth = 0")),
            7,
            "cameras[0].width",
            "must be 32–7680 px, found 0",
        ),
        (
            good_with("min_seconds = 10", "min_seconds = 1e30"),
            17,
            "cameras[0].rules[0].min_seconds",
            "must be a duration of 0–2592000 s (30 days), found 1e30",
        ),
        (
            format!(
                "{GOOD}\n[[cameras.lines]]\nid = \"gate\"\npoints = [[0.1, 0.5], [0.9, 0.5]]\nin_direction = [nan, 1.0]\n"
            ),
            22,
            "cameras[0].lines[0].in_direction",
            "must be finite",
        ),
        (
            format!(
                "{GOOD}\n[[cameras.rules]]\nkind = \"wrong_way\"\nid = \"ww\"\nzone = \"plaza\"\ndirection = [inf, 0.0]\n"
            ),
            23,
            "cameras[0].rules[1].direction",
            "must be finite",
        ),
        (
            with_alert(&format!("{RECEIVER}max_concurrency = 0\n{HOOK}")),
            21,
            "alert.receivers[0].max_concurrency",
            "must be 1–1000, found 0",
        ),
        (
            with_alert(
                "[[alert.receivers]]\nname = \"sms\"\n[alert.receivers.sms]\nurl = \"http://127.0.0.1:13013/\"\nusername = \"u\"\npassword = \"p\"\nnumbers = [\"0901234567\"]\nmax_segments = 1000\n",
            ),
            26,
            "alert.receivers[0].sms.max_segments",
            "must be 1–255, found 1000",
        ),
        (
            with_alert(&format!(
                "{RECEIVER}[alert.receivers.webhook]\nurl = \"http://127.0.0.1:9/\"\nsecret = \"0123456789abcdef\"\ntimeout = \"0s\"\n"
            )),
            24,
            "alert.receivers[0].webhook.timeout",
            "must be more than 0s and at most 1h, found 0s",
        ),
        (
            with_alert(&format!(
                "{RECEIVER}[alert.receivers.email]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = 0\nfrom = \"a@b.vn\"\nto = [\"c@d.vn\"]\n"
            )),
            23,
            "alert.receivers[0].email.smtp_port",
            "must be 1–65535, found 0",
        ),
        (
            with_alert("[alert.flood]\nwindow = \"0s\"\n"),
            20,
            "alert.flood.window",
            "must be more than 0s and at most 30d, found 0s",
        ),
        (
            with_alert("[alert.retry]\nmultiplier = nan\n"),
            20,
            "alert.retry.multiplier",
            "must be 1–100, found NaN",
        ),
        (
            with_alert("[[alert.route.routes]]\nrepeat_interval = \"400d\"\n"),
            20,
            "alert.route.routes[0].repeat_interval",
            "must be more than 0s and at most 30d, found 400d",
        ),
        (
            with_alert("resolved_retention = -1\n"),
            19,
            "alert.resolved_retention",
            "must be 0s–30d, found -1s",
        ),
    ];
    for (text, line, key, what) in cases {
        fails_with(&text, line, key, what);
    }
}

/// `[alert.route]` without an `[alert]` header is the same TOML as with one.
#[test]
fn alert_sub_tables_need_no_alert_header() {
    let (ok, out, _) = check(&format!("{GOOD}[alert.route]\ngroup_wait = \"1s\"\n"));
    assert!(ok, "{out}");
}

/// An `[alert]` table with every kind of secret, for `GOOD`.
const ALERT_SECRETS: &str = r#"
[alert]
[[alert.receivers]]
name = "post"
[alert.receivers.sms]
url = "http://gw.q1.vn/cgi-bin/sendsms?api_key=SmsKey-6650"
username = "streetwatch"
password = "SmsPw-4410"
numbers = ["0901234567"]
method = "get"
extra_params = { account = "SmsExtra-1207" }
[[alert.receivers]]
name = "command"
[alert.receivers.email]
smtp_host = "mail.q1.police.vn"
username = "streetwatch@q1.police.vn"
password = "SmtpPw-9902"
from = "streetwatch@q1.police.vn"
to = ["truc-ban@q1.police.vn"]
[[alert.receivers]]
name = "city"
[alert.receivers.webhook]
url = "https://user:HookUserPw-5150@hooks.hcmc.example/streetwatch?token=HookTok-3387"
secret = "HookSecret-0123456789"
"#;

#[test]
fn secrets_do_not_show_in_debug_output() {
    let text =
        GOOD.replace(
            "rtsp://admin:pw@10.0.0.5/stream1",
            "rtsp://admin:CamPw-7731@10.0.0.5/stream1?token=CamTok-5521",
        )
        .replace(
            "MODEL",
            support::root()
                .join("models/nanodet_g_416_coco.toml")
                .to_str()
                .unwrap(),
        ) + ALERT_SECRETS;
    let config = streetwatch::config::Config::parse(&text, "d.toml", std::path::Path::new("."))
        .unwrap_or_else(|e| panic!("{e}"));
    let shown = format!("{config:?} {config:#?}");
    for secret in [
        "CamPw-7731",
        "CamTok-5521",
        "SmsKey-6650",
        "SmsPw-4410",
        "SmsExtra-1207",
        "SmtpPw-9902",
        "HookUserPw-5150",
        "HookTok-3387",
        "HookSecret-0123456789",
    ] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(shown.contains("***"), "{shown}");
    // What is not secret still shows, for whoever debugs a config.
    for plain in [
        "10.0.0.5/stream1",
        "gw.q1.vn",
        "mail.q1.police.vn",
        "hooks.hcmc.example",
    ] {
        assert!(shown.contains(plain), "{plain} missing from {shown}");
    }
}

#[test]
fn smtp_auth_in_clear_text_to_another_host_is_refused() {
    let with = |host: &str| {
        format!(
            "{GOOD}\n[alert]\n[[alert.receivers]]\nname = \"command\"\n[alert.receivers.email]\n\
             smtp_host = \"{host}\"\nstarttls = false\nusername = \"sw\"\npassword = \"SmtpPw-9902\"\n\
             from = \"sw@q1.police.vn\"\nto = [\"truc-ban@q1.police.vn\"]\n"
        )
    };
    // `starttls = false` is the seventh line after GOOD's last.
    let starttls_line = GOOD.lines().count() + 7;
    fails_with(
        &with("mail.q1.police.vn"),
        starttls_line,
        "alert.receivers[0].email.starttls",
        "without TLS",
    );
    let (ok, out, _) = check(&with("mail.q1.police.vn"));
    assert!(!ok && !out.contains("SmtpPw-9902"), "{out}");
    // A relay on this machine: the password does not cross a network.
    for local in ["127.0.0.1", "localhost", "::1"] {
        let (ok, out, _) = check(&with(local));
        assert!(ok, "{local}: {out}");
    }
}
