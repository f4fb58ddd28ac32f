//! What sends: the durable outbox, the notifier that drains it, the SMS / e-mail / webhook / log senders and the
//! SMS gateway's delivery reports. Nothing here decides who hears about what; it delivers what the router
//! committed.

pub(crate) mod dlr;
mod email;
pub(crate) mod log;
pub(crate) mod notify;
pub(crate) mod outbox;
pub(crate) mod sms;
mod webhook;

/// How one attempt ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The peer took it: `accepted`, or `queued` when the gateway holds it for later.
    Accepted { state: &'static str, reply: String },
    /// Worth a retry. `maybe_sent`: the request may have reached the peer (a timeout after sending).
    Transient { error: String, maybe_sent: bool },
    /// Retrying cannot help (bad number, bad credentials): dead-letter with the peer's reason.
    Permanent(String),
}

impl Outcome {
    pub(crate) fn network(e: reqwest::Error) -> Self {
        let maybe_sent = !e.is_connect();
        Outcome::Transient {
            // The URL may carry the gateway's password in its query: never in the outbox or the logs.
            error: error_chain(&e.without_url()),
            maybe_sent,
        }
    }

    pub(crate) fn from_status(status: reqwest::StatusCode, reply: String) -> Self {
        let code = status.as_u16();
        if status.is_client_error() && code != 408 && code != 429 {
            Outcome::Permanent(reply)
        } else {
            Outcome::Transient {
                error: reply,
                maybe_sent: false,
            }
        }
    }
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
