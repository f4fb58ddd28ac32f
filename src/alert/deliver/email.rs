//! E-mail with lettre over SMTP: STARTTLS required (a CA file can be trusted besides the system roots),
//! AUTH when credentials are set; a plain-text and an HTML body, the snapshots attached.
//!
//! lettre's transport bounds only the connect; a server that goes silent later would hold the attempt, and
//! the receiver's slot, for ever. So the conversation is driven here step by step under one deadline, which
//! also tells whether the message had gone out when it failed (then the retry may duplicate it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lettre::Message;
use lettre::address::Envelope;
use lettre::message::header::{ContentType, MessageId};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;

use super::{Outcome, error_chain};
use crate::alert::config::{Dur, EmailConfig};
use crate::alert::error::AlertError;

/// After the server took the message, how long a polite QUIT may take before the connection is dropped.
const QUIT_WAIT: Duration = Duration::from_secs(2);

/// Why a conversation ended without the server taking the message.
enum Failure {
    Smtp(lettre::transport::smtp::Error),
    /// The message needs an extension the server does not offer; resending cannot help.
    Unsupported(&'static str),
}

impl From<lettre::transport::smtp::Error> for Failure {
    fn from(e: lettre::transport::smtp::Error) -> Self {
        Failure::Smtp(e)
    }
}

pub(crate) struct Mailer {
    host: String,
    port: u16,
    hello: ClientId,
    /// `None`: plain text (a relay on loopback).
    starttls: Option<TlsParameters>,
    credentials: Option<Credentials>,
    connect_timeout: Duration,
    send_timeout: Dur,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl Mailer {
    pub(crate) fn new(receiver: &str, cfg: &EmailConfig) -> Result<Self, AlertError> {
        let err = |what: String| AlertError::Config(format!("receiver {receiver:?}: {what}"));
        let starttls = if cfg.starttls {
            let domain = cfg
                .tls_domain
                .clone()
                .unwrap_or_else(|| cfg.smtp_host.clone());
            let mut tls = TlsParameters::builder(domain);
            if let Some(ca) = &cfg.ca_file {
                let pem = std::fs::read(ca)
                    .map_err(|e| err(format!("read ca_file {}: {e}", ca.display())))?;
                let cert = Certificate::from_pem(&pem)
                    .map_err(|e| err(format!("ca_file {}: {e}", ca.display())))?;
                tls = tls.add_root_certificate(cert);
            }
            Some(tls.build_rustls().map_err(|e| err(format!("TLS: {e}")))?)
        } else {
            None
        };
        let credentials = match (&cfg.username, &cfg.password) {
            (Some(user), Some(pass)) => {
                Some(Credentials::new(user.clone(), pass.expose().to_string()))
            }
            _ => None,
        };
        let parse = |a: &str| {
            a.parse::<Mailbox>()
                .map_err(|e| err(format!("address {a:?}: {e}")))
        };
        Ok(Self {
            host: cfg.smtp_host.clone(),
            port: cfg.smtp_port,
            hello: ClientId::default(),
            starttls,
            credentials,
            connect_timeout: cfg.timeout.std(),
            send_timeout: cfg.send_timeout,
            from: parse(&cfg.from)?,
            to: cfg.to.iter().map(|a| parse(a)).collect::<Result<_, _>>()?,
        })
    }

    /// Sends the rendered notice (`body` is the JSON the template made). The Message-ID carries the
    /// idempotency key, so a resend after a crash is recognisable as the same message by mail clients.
    pub(crate) async fn send(&self, body: &str, key: &str) -> Outcome {
        let doc: serde_json::Value = match serde_json::from_str(body) {
            Ok(v) => v,
            Err(e) => return Outcome::Permanent(format!("stored e-mail is not JSON: {e}")),
        };
        let field = |k: &str| doc[k].as_str().unwrap_or_default().to_string();
        let alternative = MultiPart::alternative()
            .singlepart(SinglePart::plain(field("text")))
            .singlepart(SinglePart::html(field("html")));
        let mut mixed = MultiPart::mixed().multipart(alternative);
        let mut missing = Vec::new();
        for (i, path) in doc["attachments"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str())
            .enumerate()
        {
            match tokio::fs::read(path).await {
                Ok(bytes) => {
                    let name = format!("snapshot-{}.jpg", i + 1);
                    mixed = mixed.singlepart(
                        Attachment::new(name)
                            .body(bytes, ContentType::parse("image/jpeg").unwrap()),
                    );
                }
                // A snapshot cleaned up before the mail went out must not block the notice.
                Err(e) => missing.push(format!("{path}: {e}")),
            }
        }
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(field("subject"))
            .header(MessageId::from(format!("<{key}@streetwatch>")));
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        let msg = match builder.multipart(mixed) {
            Ok(m) => m,
            Err(e) => return Outcome::Permanent(format!("cannot build the message: {e}")),
        };
        let body_sent = AtomicBool::new(false);
        let sent = tokio::time::timeout(
            self.send_timeout.std(),
            self.transmit(msg.envelope(), &msg.formatted(), &body_sent),
        )
        .await;
        // The message may have reached the server once its body went out, unless the server answered.
        let maybe_sent = body_sent.load(Ordering::Relaxed);
        match sent {
            Ok(Ok((resp, mut conn))) => {
                // The outcome is known; the connection is closed politely if the server lets it.
                let _ = tokio::time::timeout(QUIT_WAIT, conn.quit()).await;
                let mut reply = format!(
                    "{} {}",
                    resp.code(),
                    resp.message().collect::<Vec<_>>().join(" ")
                );
                if !missing.is_empty() {
                    reply.push_str(&format!(" (snapshots missing: {})", missing.join("; ")));
                }
                Outcome::Accepted {
                    state: "accepted",
                    reply,
                }
            }
            Ok(Err(Failure::Unsupported(why))) => Outcome::Permanent(why.into()),
            // 5xx (bad credentials, refused recipient): retrying the same message cannot succeed.
            Ok(Err(Failure::Smtp(e))) if e.is_permanent() => Outcome::Permanent(error_chain(&e)),
            Ok(Err(Failure::Smtp(e))) => Outcome::Transient {
                error: error_chain(&e),
                // A 4xx is the server's answer that it did not take the message; anything else after the
                // body (a dropped connection, a garbled reply) leaves it unknown.
                maybe_sent: maybe_sent && !e.is_transient(),
            },
            Err(_) => Outcome::Transient {
                error: format!(
                    "no answer from the SMTP server within send_timeout {}{}",
                    self.send_timeout,
                    if maybe_sent {
                        " after the message was sent"
                    } else {
                        ""
                    }
                ),
                maybe_sent,
            },
        }
    }

    /// One SMTP conversation up to the server's reply to the message. `body_sent` is set just before the
    /// message goes out: from then on a failure may hide a delivery.
    async fn transmit(
        &self,
        envelope: &Envelope,
        email: &[u8],
        body_sent: &AtomicBool,
    ) -> Result<(Response, AsyncSmtpConnection), Failure> {
        let mut conn = AsyncSmtpConnection::connect_tokio1(
            (self.host.as_str(), self.port),
            Some(self.connect_timeout),
            &self.hello,
            None,
            None,
        )
        .await?;
        if let Some(tls) = &self.starttls {
            conn.starttls(tls.clone(), &self.hello).await?;
        }
        if let Some(c) = &self.credentials {
            conn.auth(DEFAULT_MECHANISMS, c).await?;
        }
        // As lettre's own send: UTF-8 addresses and 8-bit bodies only to a server that says it takes them.
        let mut params = Vec::new();
        let info = conn.server_info();
        let ascii_addresses = envelope
            .from()
            .into_iter()
            .chain(envelope.to())
            .all(|a: &lettre::Address| AsRef::<str>::as_ref(a).is_ascii());
        if !ascii_addresses {
            if !info.supports_feature(Extension::SmtpUtfEight) {
                return Err(Failure::Unsupported(
                    "the addresses are not ASCII and the SMTP server lacks SMTPUTF8",
                ));
            }
            params.push(MailParameter::SmtpUtfEight);
        }
        if !email.is_ascii() {
            if !info.supports_feature(Extension::EightBitMime) {
                return Err(Failure::Unsupported(
                    "the message is not ASCII and the SMTP server lacks 8BITMIME",
                ));
            }
            params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        conn.command(Mail::new(envelope.from().cloned(), params))
            .await?;
        for to in envelope.to() {
            conn.command(Rcpt::new(to.clone(), vec![])).await?;
        }
        conn.command(Data).await?;
        body_sent.store(true, Ordering::Relaxed);
        let resp = conn.message(email).await?;
        Ok((resp, conn))
    }
}
