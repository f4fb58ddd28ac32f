//! The `[cluster]` table: where NATS is and how this deployment's processes find each other there.

use std::time::Duration;

use serde::Deserialize;

use crate::secret::SecretUrl;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The NATS server (`nats://host:4222`); credentials in it never reach a log.
    pub nats: SecretUrl,
    /// Prefix of the stream, buckets and subjects, so two deployments can share one NATS.
    pub prefix: String,
    /// A node that stops renewing its leases loses its cameras after this many seconds; it renews every
    /// third of it. Failover takes at most this plus a camera's start.
    pub lease_seconds: u64,
    /// The camera cost a node run with this file can carry, in model runs per second (see
    /// `cluster::placement`); nodes share cameras in proportion to it. Default: 25 per core.
    pub capacity: Option<f64>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            nats: SecretUrl::new("nats://127.0.0.1:4222"),
            prefix: "streetwatch".into(),
            lease_seconds: 6,
            capacity: None,
        }
    }
}

impl ClusterConfig {
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.lease_seconds)
    }
}

impl ClusterConfig {
    /// Checks values serde cannot: `(key, message)` of the first problem.
    pub fn check(&self) -> Result<(), (String, String)> {
        let url = self.nats.as_str();
        if !(url.starts_with("nats://") || url.starts_with("tls://")) {
            return Err((
                "nats".into(),
                format!(
                    "must be a nats:// or tls:// URL, found `{}`",
                    self.nats.redacted()
                ),
            ));
        }
        let prefix_ok = !self.prefix.is_empty()
            && self.prefix.len() <= 32
            && self
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !prefix_ok {
            return Err((
                "prefix".into(),
                format!(
                    "must be 1–32 letters, digits or `-`, found `{}`",
                    self.prefix
                ),
            ));
        }
        if !(3..=300).contains(&self.lease_seconds) {
            return Err((
                "lease_seconds".into(),
                format!("must be 3–300, found {}", self.lease_seconds),
            ));
        }
        if let Some(c) = self.capacity
            && !(c.is_finite() && c > 0.0)
        {
            return Err((
                "capacity".into(),
                format!("must be a positive number, found {c}"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_bad_values_name_their_key() {
        assert_eq!(ClusterConfig::default().check(), Ok(()));
        let bad = |f: fn(&mut ClusterConfig)| {
            let mut c = ClusterConfig::default();
            f(&mut c);
            c.check().unwrap_err().0
        };
        assert_eq!(bad(|c| c.nats = SecretUrl::new("http://x:4222")), "nats");
        assert_eq!(bad(|c| c.prefix = "a.b".into()), "prefix");
        assert_eq!(bad(|c| c.lease_seconds = 1), "lease_seconds");
        assert_eq!(bad(|c| c.capacity = Some(0.0)), "capacity");
    }
}
