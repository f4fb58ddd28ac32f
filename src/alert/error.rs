//! The alert router's error at its edge.

use super::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error(transparent)]
    BadConfig(#[from] ConfigError),
    #[error("alert config: {0}")]
    Config(String),
    #[error("alert database: {0}")]
    Db(String),
    #[error("{0}")]
    Invalid(String),
    #[error("alert service: {0}")]
    Service(String),
}

impl From<rusqlite::Error> for AlertError {
    fn from(e: rusqlite::Error) -> Self {
        AlertError::Db(e.to_string())
    }
}
