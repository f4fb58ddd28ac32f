//! Checks across the `[alert]` table that serde cannot make: receiver names, phone numbers, templates,
//! routes and timings.

use std::collections::HashSet;

use super::{
    AlertConfig, ConfigError, Dur, HourWindow, HttpMethod, MAX_SPAN, MAX_TIMEOUT, Matchers,
    ReceiverConfig, RouteConfig, SmsConfig, check_template, normalize_phone,
};

/// The labels `group_by` and `equal` may name.
const LABELS: &[&str] = &["camera", "ward", "rule", "zone", "severity"];

/// Most deliveries in flight to one receiver: far past what a gateway or mail server takes at once.
const MAX_CONCURRENCY: usize = 1000;
/// Below one delivery a day a rate limit is a mistake (and its wait no longer fits a timer).
const MIN_RATE: f64 = 1.0 / 86_400.0;
/// Most parts of a concatenated SMS: the header's part count is one byte.
const MAX_SEGMENTS: usize = 255;

/// A span of time at `key` within `(0, max]`, or `[0, max]` when `zero` is allowed.
fn time_span(key: String, d: Dur, zero: bool, max: Dur) -> Result<(), ConfigError> {
    match (d.ms(), zero) {
        (ms, _) if ms > 0 && d <= max => Ok(()),
        (0, true) => Ok(()),
        (_, true) => Err(ConfigError::new(
            key,
            format!("must be 0s–{max}, found {d}"),
        )),
        (_, false) => Err(ConfigError::new(
            key,
            format!("must be more than 0s and at most {max}, found {d}"),
        )),
    }
}

impl AlertConfig {
    /// Parses the contents of an `[alert]` table (without the header), mainly for tests and tools.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(text).map_err(|e| ConfigError::new("", e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks cross-references and values that serde cannot; the error names the key at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        for (i, r) in self.receivers.iter().enumerate() {
            self.validate_receiver(r, &format!("receivers[{i}]"))?;
            if !names.insert(r.name.as_str()) {
                return Err(ConfigError::new(
                    format!("receivers[{i}].name"),
                    format!("receiver {:?} is defined twice", r.name),
                ));
            }
        }
        self.validate_route(&self.route, "route", &names, true)?;
        for (i, rule) in self.inhibit.rules.iter().enumerate() {
            for l in &rule.equal {
                if !LABELS.contains(&l.as_str()) || l == "severity" {
                    return Err(ConfigError::new(
                        format!("inhibit.rules[{i}].equal"),
                        format!(
                            "inhibit rule: cannot compare label {l:?} (use camera, ward, rule, zone)"
                        ),
                    ));
                }
            }
        }
        let flood = &self.flood;
        time_span(
            "flood.window".into(),
            flood.window,
            flood.max_notices == 0 && flood.critical_max_notices == 0,
            MAX_SPAN,
        )?;
        let r = &self.retry;
        time_span(
            "retry.initial_backoff".into(),
            r.initial_backoff,
            false,
            MAX_SPAN,
        )?;
        if !(r.initial_backoff <= r.max_backoff && r.max_backoff <= MAX_SPAN) {
            return Err(ConfigError::new(
                "retry.max_backoff",
                format!(
                    "need initial_backoff ≤ max_backoff ≤ {MAX_SPAN}, found {} and {}",
                    r.initial_backoff, r.max_backoff
                ),
            ));
        }
        // Past 100 the second retry already waits max_backoff; NaN or infinity would poison every wait.
        if !(1.0..=100.0).contains(&r.multiplier) {
            return Err(ConfigError::new(
                "retry.multiplier",
                format!("must be 1–100, found {:?}", r.multiplier),
            ));
        }
        if !(0.0..=1.0).contains(&r.jitter) {
            return Err(ConfigError::new(
                "retry.jitter",
                format!("must be within 0–1, found {:?}", r.jitter),
            ));
        }
        time_span(
            "retry.give_up_after".into(),
            r.give_up_after,
            false,
            MAX_SPAN,
        )?;
        time_span(
            "resolved_retention".into(),
            self.resolved_retention,
            true,
            MAX_SPAN,
        )?;
        if let Some(base) = &self.snapshot_base_url {
            url::Url::parse(base)
                .map_err(|e| ConfigError::new("snapshot_base_url", e.to_string()))?;
        }
        if let Some(d) = &self.dlr {
            time_span(
                "dlr.header_timeout".into(),
                d.header_timeout,
                false,
                MAX_TIMEOUT,
            )?;
            if !(1..=MAX_CONCURRENCY).contains(&d.max_connections) {
                return Err(ConfigError::new(
                    "dlr.max_connections",
                    format!("must be 1–{MAX_CONCURRENCY}, found {}", d.max_connections),
                ));
            }
        }
        if !(-14 * 60..=14 * 60).contains(&self.utc_offset_minutes) {
            return Err(ConfigError::new(
                "utc_offset_minutes",
                format!(
                    "must be within ±840 (±14 h), found {}",
                    self.utc_offset_minutes
                ),
            ));
        }
        Ok(())
    }

    fn validate_receiver(&self, r: &ReceiverConfig, at: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{at}.{k}");
        let err = |k: &str, m: String| Err(ConfigError::new(key(k), m));
        if r.sms.is_none() && r.email.is_none() && r.webhook.is_none() && r.log.is_none() {
            return err(
                "name",
                format!("receiver {:?} has no sms, email, webhook or log", r.name),
            );
        }
        if !(1..=MAX_CONCURRENCY).contains(&r.max_concurrency) {
            return err(
                "max_concurrency",
                format!("must be 1–{MAX_CONCURRENCY}, found {}", r.max_concurrency),
            );
        }
        if !(r.rate_per_second == 0.0
            || (r.rate_per_second >= MIN_RATE && r.rate_per_second.is_finite()))
        {
            return err(
                "rate_per_second",
                format!(
                    "must be 0 (no limit) or at least one a day ({MIN_RATE:.7}), found {:?}",
                    r.rate_per_second
                ),
            );
        }
        if let Some(s) = &r.sms {
            url::Url::parse(&s.url).map_err(|e| ConfigError::new(key("sms.url"), e.to_string()))?;
            validate_sms_method(s).map_err(|e| ConfigError::new(key("sms.method"), e))?;
            if s.numbers.is_empty() {
                return err("sms.numbers", "sms has no numbers".into());
            }
            for n in &s.numbers {
                normalize_phone(n).map_err(|e| ConfigError::new(key("sms.numbers"), e))?;
            }
            if !(1..=MAX_SEGMENTS).contains(&s.max_segments) {
                return err(
                    "sms.max_segments",
                    format!("must be 1–{MAX_SEGMENTS}, found {}", s.max_segments),
                );
            }
            for k in s.param_names.keys() {
                if !super::SMS_PARAM_KEYS.contains(&k.as_str()) {
                    return err(
                        "sms.param_names",
                        format!(
                            "unknown sms param_names key {k:?} (known: {})",
                            super::SMS_PARAM_KEYS.join(", ")
                        ),
                    );
                }
            }
            check_template(&s.template)
                .map_err(|e| ConfigError::new(key("sms.template"), format!("sms template: {e}")))?;
            time_span(key("sms.timeout"), s.timeout, false, MAX_TIMEOUT)?;
        }
        if let Some(e) = &r.email {
            if e.to.is_empty() {
                return err("email.to", "email has no `to`".into());
            }
            for (k, a) in
                e.to.iter()
                    .map(|a| ("email.to", a))
                    .chain([("email.from", &e.from)])
            {
                a.parse::<lettre::message::Mailbox>()
                    .map_err(|x| ConfigError::new(key(k), format!("bad address {a:?}: {x}")))?;
            }
            if !e.starttls && e.password.is_some() && !is_loopback(&e.smtp_host) {
                return err(
                    "email.starttls",
                    format!(
                        "SMTP AUTH without TLS would send the password in clear text to {}: \
                         keep starttls = true (a relay on this machine may do without)",
                        e.smtp_host
                    ),
                );
            }
            if e.smtp_port == 0 {
                return err("email.smtp_port", "must be 1–65535, found 0".into());
            }
            if let Some(ca) = &e.ca_file
                && !ca.is_file()
            {
                return err(
                    "email.ca_file",
                    format!("ca_file {} does not exist", ca.display()),
                );
            }
            time_span(key("email.timeout"), e.timeout, false, MAX_TIMEOUT)?;
            time_span(
                key("email.send_timeout"),
                e.send_timeout,
                false,
                MAX_TIMEOUT,
            )?;
        }
        if let Some(w) = &r.webhook {
            url::Url::parse(&w.url)
                .map_err(|e| ConfigError::new(key("webhook.url"), e.to_string()))?;
            if w.secret.expose().len() < 16 {
                return err(
                    "webhook.secret",
                    "webhook secret must be at least 16 bytes".into(),
                );
            }
            time_span(key("webhook.timeout"), w.timeout, false, MAX_TIMEOUT)?;
        }
        if let Some(file) = r.log.as_ref().and_then(|l| l.file.as_ref()) {
            if file.file_name().is_none() {
                return err(
                    "log.file",
                    format!("{:?} names no file to append to", file.display()),
                );
            }
            if file.is_dir() {
                return err(
                    "log.file",
                    format!("{} is a folder, not a file", file.display()),
                );
            }
        }
        Ok(())
    }

    /// Takes relative `log.file` paths inside `data_dir` (the folder of the database).
    pub fn resolve_files(&mut self, data_dir: &std::path::Path) {
        for r in &mut self.receivers {
            if let Some(file) = r.log.as_mut().and_then(|l| l.file.as_mut())
                && file.is_relative()
            {
                *file = data_dir.join(&*file);
            }
        }
    }

    fn validate_route(
        &self,
        r: &RouteConfig,
        at: &str,
        receivers: &HashSet<&str>,
        root: bool,
    ) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{at}.{k}");
        if let Some(name) = &r.receiver
            && !receivers.contains(name.as_str())
        {
            return Err(ConfigError::new(
                key("receiver"),
                format!("route names unknown receiver {name:?}"),
            ));
        }
        if root && (!r.hours.is_empty() || r.matchers != Matchers::default()) {
            let k = if r.hours.is_empty() { "match" } else { "hours" };
            return Err(ConfigError::new(
                key(k),
                "the root route matches everything: no match or hours on it",
            ));
        }
        for h in &r.hours {
            HourWindow::parse(h).map_err(|e| ConfigError::new(key("hours"), e))?;
        }
        if let Some(g) = &r.group_by {
            for l in g {
                if l != "..." && !LABELS.contains(&l.as_str()) {
                    return Err(ConfigError::new(
                        key("group_by"),
                        format!(
                            "group_by label {l:?} unknown (use camera, ward, rule, zone, severity or \"...\")"
                        ),
                    ));
                }
            }
        }
        if let Some(d) = r.group_wait {
            time_span(key("group_wait"), d, true, MAX_SPAN)?;
        }
        for (k, d) in [
            ("group_interval", r.group_interval),
            ("repeat_interval", r.repeat_interval),
        ] {
            if let Some(d) = d {
                time_span(key(k), d, false, MAX_SPAN)?;
            }
        }
        for (i, c) in r.routes.iter().enumerate() {
            self.validate_route(c, &key(&format!("routes[{i}]")), receivers, false)?;
        }
        Ok(())
    }

    pub(crate) fn receiver(&self, name: &str) -> Option<&ReceiverConfig> {
        self.receivers.iter().find(|r| r.name == name)
    }
}

/// The SMTP server is on this machine: nothing it is sent crosses a network.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What Kannel's POST interface can carry: every value goes in an HTTP header.
fn validate_sms_method(s: &SmsConfig) -> Result<(), String> {
    let err = |m: String| Err(m);
    if s.method != HttpMethod::KannelPost {
        return Ok(());
    }
    if !s.param_names.is_empty() {
        return err(
            "param_names rename query or form parameters: set method = \"get\" or \"post\"".into(),
        );
    }
    let header_value = |v: &str| v.bytes().all(|b| (b' '..=b'~').contains(&b));
    for (k, v) in &s.extra_params {
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return err(format!(
                "extra_params name {k:?} cannot be an X-Kannel- header (letters, digits, -)"
            ));
        }
        if !header_value(v.expose()) {
            return err(format!(
                "extra_params {k:?}: only printable ASCII fits an HTTP header"
            ));
        }
    }
    for (what, v) in [
        ("username", s.username.as_str()),
        ("password", s.password.expose()),
        ("sender", s.sender.as_deref().unwrap_or("")),
    ] {
        if !header_value(v) {
            return err(format!(
                "{what}: only printable ASCII fits an HTTP header (method = \"kannel-post\")"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_valid_and_sends_nothing() {
        let c = AlertConfig::from_toml("").unwrap();
        assert!(c.receivers.is_empty());
        assert!(c.route.receiver.is_none());
    }

    #[test]
    fn config_errors_name_the_problem() {
        let e = AlertConfig::from_toml("[route]\nreceiver = \"nobody\"\n").unwrap_err();
        assert!(e.to_string().contains("unknown receiver \"nobody\""), "{e}");
        let e = AlertConfig::from_toml("[route]\ngroup_by = [\"colour\"]\n").unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        let e = AlertConfig::from_toml("typo = 1\n").unwrap_err();
        assert!(e.to_string().contains("typo"), "{e}");
        let e = AlertConfig::from_toml(
            "[[receivers]]\nname = \"p\"\n[receivers.sms]\nurl = \"http://x/\"\nusername = \"u\"\npassword = \"p\"\nnumbers = [\"12\"]\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("phone number"), "{e}");
    }

    #[test]
    fn a_log_receiver_needs_nothing_but_its_file_must_be_one() {
        let c = AlertConfig::from_toml("[[receivers]]\nname = \"duty\"\nlog = {}\n").unwrap();
        assert!(c.receivers[0].log.as_ref().unwrap().file.is_none());
        let dir = tempfile::tempdir().unwrap();
        let e = AlertConfig::from_toml(&format!(
            "[[receivers]]\nname = \"duty\"\nlog = {{ file = {:?} }}\n",
            dir.path()
        ))
        .unwrap_err();
        assert_eq!(e.key, "receivers[0].log.file", "{e}");
        assert!(e.message.contains("folder"), "{e}");
        let e = AlertConfig::from_toml("[[receivers]]\nname = \"none\"\n").unwrap_err();
        assert!(e.message.contains("no sms, email, webhook or log"), "{e}");
    }

    #[test]
    fn relative_log_files_are_taken_inside_the_data_directory() {
        let mut c = AlertConfig::from_toml(
            "[[receivers]]\nname = \"a\"\nlog = { file = \"n.jsonl\" }\n\
             [[receivers]]\nname = \"b\"\nlog = { file = \"/var/log/n.jsonl\" }\n",
        )
        .unwrap();
        c.resolve_files(std::path::Path::new("/srv/sw/data"));
        let files: Vec<_> = c
            .receivers
            .iter()
            .map(|r| r.log.as_ref().unwrap().file.clone().unwrap())
            .collect();
        assert_eq!(
            files,
            [
                std::path::PathBuf::from("/srv/sw/data/n.jsonl"),
                std::path::PathBuf::from("/var/log/n.jsonl")
            ]
        );
    }
}
