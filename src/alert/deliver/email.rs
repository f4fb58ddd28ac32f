//! E-mail with lettre over SMTP: STARTTLS required (a CA file can be trusted besides the system roots),
//! AUTH when credentials are set; a plain-text and an HTML body, the snapshots attached.

use lettre::message::header::{ContentType, MessageId};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{Outcome, error_chain};
use crate::alert::config::EmailConfig;
use crate::alert::error::AlertError;

pub(crate) struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl Mailer {
    pub(crate) fn new(receiver: &str, cfg: &EmailConfig) -> Result<Self, AlertError> {
        let err = |what: String| AlertError::Config(format!("receiver {receiver:?}: {what}"));
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.smtp_host)
            .port(cfg.smtp_port)
            .timeout(Some(cfg.timeout.std()));
        if cfg.starttls {
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
            let tls = tls.build_rustls().map_err(|e| err(format!("TLS: {e}")))?;
            b = b.tls(Tls::Required(tls));
        }
        if let (Some(user), Some(pass)) = (&cfg.username, &cfg.password) {
            b = b.credentials(Credentials::new(user.clone(), pass.expose().to_string()));
        }
        let parse = |a: &str| {
            a.parse::<Mailbox>()
                .map_err(|e| err(format!("address {a:?}: {e}")))
        };
        Ok(Self {
            transport: b.build(),
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
        match self.transport.send(msg).await {
            Ok(resp) => {
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
            // 5xx (bad credentials, refused recipient): retrying the same message cannot succeed.
            Err(e) if e.is_permanent() => Outcome::Permanent(error_chain(&e)),
            Err(e) => Outcome::Transient {
                error: error_chain(&e),
                // Once DATA was sent a lost reply may still mean delivered; only a refused connection is safe.
                maybe_sent: e.is_timeout(),
            },
        }
    }
}
