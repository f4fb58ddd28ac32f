//! The `[serve]` table: where the operations-centre server listens and who may use it.

use std::net::SocketAddr;

use serde::Deserialize;

use crate::secret::Secret;

/// What a bearer token lets its holder do. Each role includes the one before it, except `reporter`,
/// which may only submit citizen reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Submits citizen reports, nothing else (a ward's reporting app or kiosk).
    Reporter,
    /// Reads alerts, incidents, cameras, silences, deliveries and the daily report.
    Viewer,
    /// A viewer who also acknowledges and resolves alerts and creates or expires silences.
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reporter => "reporter",
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }
}

/// One bearer token. `name` is who acts (recorded with each acknowledgement); the token itself never
/// appears in a response, log or metric.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    pub role: Role,
    /// At least 16 characters; `${ENV_VAR}` keeps it out of the file.
    pub token: Secret,
}

/// Shortest token accepted: 16 random characters is ~95 bits from a base62 alphabet.
pub const MIN_TOKEN_LEN: usize = 16;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Address of the page, the API and `/metrics`; port 0 takes a free one (logged at start).
    pub listen: SocketAddr,
    pub tokens: Vec<TokenConfig>,
    /// The operations centre's offset from UTC in minutes, for the daily report's day (Hồ Chí Minh: +420).
    pub utc_offset_minutes: i32,
    /// `[serve.reports]`: citizen reports each client may send.
    pub reports: super::reports::ReportLimits,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tokens: Vec::new(),
            utc_offset_minutes: 7 * 60,
            reports: Default::default(),
        }
    }
}

impl ServeConfig {
    /// The first mistake: its key (under `serve.`) and what is wrong.
    pub fn check(&self) -> Result<(), (String, String)> {
        if !(-14 * 60..=14 * 60).contains(&self.utc_offset_minutes) {
            return Err((
                "utc_offset_minutes".into(),
                format!(
                    "must be between -840 and 840, found {}",
                    self.utc_offset_minutes
                ),
            ));
        }
        if let Err((key, message)) = self.reports.check() {
            return Err((format!("reports.{key}"), message));
        }
        let mut names = std::collections::HashSet::new();
        let mut tokens = std::collections::HashSet::new();
        for (i, t) in self.tokens.iter().enumerate() {
            let key = |k: &str| format!("tokens[{i}].{k}");
            if t.name.trim().is_empty() || t.name.len() > 64 {
                return Err((key("name"), "must be 1–64 characters".into()));
            }
            if !names.insert(t.name.as_str()) {
                return Err((key("name"), format!("`{}` is used twice", t.name)));
            }
            if t.token.expose().chars().count() < MIN_TOKEN_LEN {
                return Err((
                    key("token"),
                    format!("must be at least {MIN_TOKEN_LEN} characters"),
                ));
            }
            if !tokens.insert(t.token.expose()) {
                return Err((key("token"), "the same token is given twice".into()));
            }
        }
        Ok(())
    }
}
