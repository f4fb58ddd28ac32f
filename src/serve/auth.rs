//! Bearer tokens: `Authorization: Bearer <token>` names a configured token, whose role decides what the
//! request may do. Tokens are compared in constant time, and never logged or echoed.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;

use super::config::{Role, TokenConfig};
use super::error::ApiError;
use super::state::AppState;

/// The tokens the server accepts.
#[derive(Clone)]
pub struct Tokens(Arc<[TokenConfig]>);

impl Tokens {
    pub fn new(tokens: &[TokenConfig]) -> Self {
        Self(tokens.into())
    }

    /// The token's holder, comparing against every configured token so the time taken does not depend on
    /// which one matched or how much of it did.
    fn find(&self, presented: &str) -> Option<&TokenConfig> {
        let mut found = None;
        for t in self.0.iter() {
            if constant_time_eq(t.token.expose().as_bytes(), presented.as_bytes()) {
                found = Some(t);
            }
        }
        found
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who made the request, from a valid bearer token.
#[derive(Clone, Debug)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// Refuses (403) a caller whose role does not allow `action`.
    pub fn require(&self, least: Role, action: &str) -> Result<(), ApiError> {
        let allowed = match least {
            Role::Reporter => matches!(self.role, Role::Reporter | Role::Operator),
            Role::Viewer => matches!(self.role, Role::Viewer | Role::Operator),
            Role::Operator => self.role == Role::Operator,
        };
        if allowed {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "a {} token may not {action}; it needs the {} role",
                    self.role.as_str(),
                    least.as_str()
                ),
            ))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("missing `Authorization: Bearer <token>`"))?;
        let value = header
            .to_str()
            .map_err(|_| unauthorized("the Authorization header is not text"))?;
        let token = value
            .strip_prefix("Bearer ")
            .ok_or_else(|| unauthorized("the Authorization header is not `Bearer <token>`"))?;
        let t = state
            .tokens
            .find(token.trim())
            .ok_or_else(|| unauthorized("unknown token"))?;
        Ok(Caller {
            name: t.name.clone(),
            role: t.role,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn token(name: &str, role: Role, token: &str) -> TokenConfig {
        TokenConfig {
            name: name.into(),
            role,
            token: Secret::new(token),
        }
    }

    #[test]
    fn finds_only_the_exact_token() {
        let tokens = Tokens::new(&[
            token("desk", Role::Operator, "operator-token-0001"),
            token("wall", Role::Viewer, "viewer-token-00001"),
        ]);
        assert_eq!(tokens.find("operator-token-0001").unwrap().name, "desk");
        assert_eq!(tokens.find("viewer-token-00001").unwrap().name, "wall");
        assert!(tokens.find("operator-token-000").is_none());
        assert!(tokens.find("operator-token-00011").is_none());
        assert!(tokens.find("").is_none());
    }

    #[test]
    fn roles_allow_what_they_say() {
        let c = |role| Caller {
            name: "x".into(),
            role,
        };
        assert!(c(Role::Viewer).require(Role::Viewer, "read").is_ok());
        assert!(c(Role::Viewer).require(Role::Operator, "ack").is_err());
        assert!(c(Role::Operator).require(Role::Viewer, "read").is_ok());
        assert!(c(Role::Reporter).require(Role::Viewer, "read").is_err());
        assert!(c(Role::Reporter).require(Role::Reporter, "report").is_ok());
        assert!(c(Role::Viewer).require(Role::Reporter, "report").is_err());
    }
}
