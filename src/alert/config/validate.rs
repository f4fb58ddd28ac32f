//! Checks across the `[alert]` table that serde cannot make: receiver names, phone numbers, templates,
//! routes and timings.

use std::collections::HashSet;

use super::{
    AlertConfig, ConfigError, HourWindow, Matchers, ReceiverConfig, RouteConfig, check_template,
    normalize_phone,
};

/// The labels `group_by` and `equal` may name.
const LABELS: &[&str] = &["camera", "ward", "rule", "zone", "severity"];

impl AlertConfig {
    /// Parses the contents of an `[alert]` table (without the header), mainly for tests and tools.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks cross-references and values that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        let mut names = HashSet::new();
        for r in &self.receivers {
            if !names.insert(r.name.as_str()) {
                return err(format!("receiver {:?} is defined twice", r.name));
            }
            if r.sms.is_none() && r.email.is_none() && r.webhook.is_none() {
                return err(format!(
                    "receiver {:?} has no sms, email or webhook",
                    r.name
                ));
            }
            if r.max_concurrency == 0 {
                return err(format!(
                    "receiver {:?}: max_concurrency must be at least 1",
                    r.name
                ));
            }
            if !(r.rate_per_second >= 0.0 && r.rate_per_second.is_finite()) {
                return err(format!(
                    "receiver {:?}: rate_per_second must be ≥ 0",
                    r.name
                ));
            }
            if let Some(s) = &r.sms {
                url::Url::parse(&s.url)
                    .map_err(|e| ConfigError(format!("receiver {:?}: sms url: {e}", r.name)))?;
                if s.numbers.is_empty() {
                    return err(format!("receiver {:?}: sms has no numbers", r.name));
                }
                for n in &s.numbers {
                    normalize_phone(n)
                        .map_err(|e| ConfigError(format!("receiver {:?}: {e}", r.name)))?;
                }
                if s.max_segments == 0 {
                    return err(format!(
                        "receiver {:?}: sms max_segments must be at least 1",
                        r.name
                    ));
                }
                for k in s.param_names.keys() {
                    if !super::SMS_PARAM_KEYS.contains(&k.as_str()) {
                        return err(format!(
                            "receiver {:?}: unknown sms param_names key {k:?} (known: {})",
                            r.name,
                            super::SMS_PARAM_KEYS.join(", ")
                        ));
                    }
                }
                check_template(&s.template).map_err(|e| {
                    ConfigError(format!("receiver {:?}: sms template: {e}", r.name))
                })?;
            }
            if let Some(e) = &r.email {
                if e.to.is_empty() {
                    return err(format!("receiver {:?}: email has no `to`", r.name));
                }
                for a in e.to.iter().chain(std::iter::once(&e.from)) {
                    a.parse::<lettre::message::Mailbox>().map_err(|x| {
                        ConfigError(format!("receiver {:?}: bad address {a:?}: {x}", r.name))
                    })?;
                }
                if let Some(ca) = &e.ca_file
                    && !ca.is_file()
                {
                    return err(format!(
                        "receiver {:?}: ca_file {} does not exist",
                        r.name,
                        ca.display()
                    ));
                }
            }
            if let Some(w) = &r.webhook {
                url::Url::parse(&w.url)
                    .map_err(|e| ConfigError(format!("receiver {:?}: webhook url: {e}", r.name)))?;
                if w.secret.len() < 16 {
                    return err(format!(
                        "receiver {:?}: webhook secret must be at least 16 bytes",
                        r.name
                    ));
                }
            }
        }
        self.validate_route(&self.route, &names, true)?;
        for rule in &self.inhibit.rules {
            for l in &rule.equal {
                if !LABELS.contains(&l.as_str()) || l == "severity" {
                    return err(format!(
                        "inhibit rule: cannot compare label {l:?} (use camera, ward, rule, zone)"
                    ));
                }
            }
        }
        if (self.flood.max_notices > 0 || self.flood.critical_max_notices > 0)
            && self.flood.window.ms() <= 0
        {
            return err("flood.window must be positive".into());
        }
        let r = &self.retry;
        if r.initial_backoff.ms() <= 0 || r.max_backoff < r.initial_backoff {
            return err("retry: need 0 < initial_backoff ≤ max_backoff".into());
        }
        if !(r.multiplier >= 1.0 && r.multiplier.is_finite() && (0.0..=1.0).contains(&r.jitter)) {
            return err("retry: multiplier must be ≥ 1 and jitter within 0..1".into());
        }
        if let Some(base) = &self.snapshot_base_url {
            url::Url::parse(base).map_err(|e| ConfigError(format!("snapshot_base_url: {e}")))?;
        }
        if !(-14 * 60..=14 * 60).contains(&self.utc_offset_minutes) {
            return err("utc_offset_minutes must be within ±840".into());
        }
        Ok(())
    }

    fn validate_route(
        &self,
        r: &RouteConfig,
        receivers: &HashSet<&str>,
        root: bool,
    ) -> Result<(), ConfigError> {
        if let Some(name) = &r.receiver
            && !receivers.contains(name.as_str())
        {
            return Err(ConfigError(format!(
                "route names unknown receiver {name:?}"
            )));
        }
        if root && (!r.hours.is_empty() || r.matchers != Matchers::default()) {
            return Err(ConfigError(
                "the root route matches everything: no match or hours on it".into(),
            ));
        }
        for h in &r.hours {
            HourWindow::parse(h).map_err(ConfigError)?;
        }
        if let Some(g) = &r.group_by {
            for l in g {
                if l != "..." && !LABELS.contains(&l.as_str()) {
                    return Err(ConfigError(format!(
                        "group_by label {l:?} unknown (use camera, ward, rule, zone, severity or \"...\")"
                    )));
                }
            }
        }
        for (what, d) in [
            ("group_interval", r.group_interval),
            ("repeat_interval", r.repeat_interval),
        ] {
            if let Some(d) = d
                && d.ms() <= 0
            {
                return Err(ConfigError(format!("{what} must be positive")));
            }
        }
        if let Some(d) = r.group_wait
            && d.ms() < 0
        {
            return Err(ConfigError("group_wait must not be negative".into()));
        }
        for c in &r.routes {
            self.validate_route(c, receivers, false)?;
        }
        Ok(())
    }

    pub(crate) fn receiver(&self, name: &str) -> Option<&ReceiverConfig> {
        self.receivers.iter().find(|r| r.name == name)
    }
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
}
