//! The log receiver: a notice written to the streetwatch log (target `streetwatch::notice`) and, with
//! `file`, appended to a JSON Lines file. Needs no phone, mail server or peer, so a demo or a trial shows
//! the whole chain from camera to delivered notice.
//!
//! The outbox keeps the line that is written: `{"text": "<the notice in one line>", "notice": <the
//! webhook's JSON document>}`. A retry writes the same line again.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::Outcome;
use crate::alert::config::LogConfig;
use crate::alert::model::NoticePayload;
use crate::alert::wording::template::{self, Ctx};

/// The log target notices are written to (filter them with `STREETWATCH_LOG=streetwatch::notice=info`).
pub const TARGET: &str = "streetwatch::notice";

/// The delivery's body: one JSON object on one line, the words first for a person reading the file.
pub(crate) fn line(payload: &NoticePayload, ctx: &Ctx<'_>) -> String {
    format!(
        r#"{{"text":{},"notice":{}}}"#,
        serde_json::Value::from(template::log_text(payload, ctx)),
        template::webhook(payload, ctx)
    )
}

/// Writes one notice: to the file first (its failure is worth a retry, and nothing is logged as sent),
/// then to the log.
pub(crate) async fn send(cfg: &LogConfig, delivery: i64, notice: i64, body: &str) -> Outcome {
    let text = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("text")?.as_str().map(str::to_string))
        .unwrap_or_else(|| body.to_string());
    let reply = match &cfg.file {
        Some(file) => {
            let (file, line) = (file.clone(), body.to_string());
            let written = tokio::task::spawn_blocking(move || append(&file, &line))
                .await
                .unwrap_or_else(|e| Err(format!("the writing task failed: {e}")));
            match written {
                Ok(path) => format!("appended to {}", path.display()),
                Err(error) => {
                    return Outcome::Transient {
                        error,
                        maybe_sent: false,
                    };
                }
            }
        }
        None => "written to the log".to_string(),
    };
    tracing::info!(target: TARGET, delivery, notice, "{text}");
    Outcome::Accepted {
        state: "delivered",
        reply,
    }
}

/// Appends `line` and a newline to `file` in one write, creating the file (and its folder) if missing.
fn append(file: &Path, line: &str) -> Result<PathBuf, String> {
    let fail = |what: &str, e: std::io::Error| format!("{what} {}: {e}", file.display());
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| fail("creating the folder of", e))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .map_err(|e| fail("opening", e))?;
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.trim_end_matches('\n').as_bytes());
    bytes.push(b'\n');
    f.write_all(&bytes).map_err(|e| fail("appending to", e))?;
    Ok(file.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(file: Option<PathBuf>) -> LogConfig {
        LogConfig { file }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn each_notice_is_one_json_line_appended_to_a_file_created_with_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("new/notices.jsonl");
        let c = cfg(Some(file.clone()));
        let a = r#"{"text":"first","notice":{"notice_id":1}}"#;
        let b = r#"{"text":"second","notice":{"notice_id":2}}"#;
        for (i, body) in [a, b].into_iter().enumerate() {
            match rt().block_on(send(&c, i as i64, i as i64, body)) {
                Outcome::Accepted { state, reply } => {
                    assert_eq!(state, "delivered");
                    assert!(reply.contains("notices.jsonl"), "{reply}");
                }
                o => panic!("{o:?}"),
            }
        }
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text, format!("{a}\n{b}\n"));
    }

    #[test]
    fn without_a_file_the_notice_only_goes_to_the_log() {
        match rt().block_on(send(&cfg(None), 1, 1, r#"{"text":"t","notice":{}}"#)) {
            Outcome::Accepted { state, reply } => {
                assert_eq!((state, reply.as_str()), ("delivered", "written to the log"))
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn a_file_that_cannot_be_written_is_a_retryable_failure_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        // A folder where the file should be: opening it for appending fails on any user, root included.
        let file = dir.path().join("taken");
        std::fs::create_dir(&file).unwrap();
        match rt().block_on(send(&cfg(Some(file.clone())), 1, 1, "{}")) {
            Outcome::Transient { error, maybe_sent } => {
                assert!(!maybe_sent);
                assert!(error.contains(&file.display().to_string()), "{error}");
                assert!(error.to_lowercase().contains("directory"), "{error}");
            }
            o => panic!("{o:?}"),
        }
    }
}
