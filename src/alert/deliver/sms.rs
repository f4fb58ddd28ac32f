//! SMS through an HTTP gateway. Kannel's `/cgi-bin/sendsms` is the reference (its parameter names are the
//! defaults); other gateways are reached by renaming parameters and adding fixed ones in config.

use super::Outcome;
use crate::alert::config::{HttpMethod, SmsCoding, SmsConfig};
use crate::alert::wording::gsm;

fn param<'a>(cfg: &'a SmsConfig, key: &'a str) -> &'a str {
    if let Some(n) = cfg.param_names.get(key) {
        return n;
    }
    match key {
        "dlr_mask" => "dlr-mask",
        "dlr_url" => "dlr-url",
        k => k,
    }
}

/// One SMS to one number. Kannel answers 202 with `0: Accepted for delivery` or `3: Queued for later delivery`
/// (its SMSC link is down; it delivers when the link returns); 4xx is permanent (bad number, bad
/// credentials) except 408 and 429; 5xx and network errors are worth a retry.
pub(crate) async fn send(
    client: &reqwest::Client,
    cfg: &SmsConfig,
    to: &str,
    text: &str,
    dlr_url: Option<&str>,
) -> Outcome {
    let ucs2 = cfg.coding == SmsCoding::Ucs2 || !gsm::is_gsm7(text);
    let req = match cfg.method {
        HttpMethod::KannelPost => kannel_post(client, cfg, to, text, ucs2, dlr_url),
        HttpMethod::Get | HttpMethod::Post => {
            let mut params: Vec<(&str, &str)> = vec![
                (param(cfg, "username"), &cfg.username),
                (param(cfg, "password"), cfg.password.expose()),
                (param(cfg, "to"), to),
                (param(cfg, "text"), text),
                (param(cfg, "charset"), "UTF-8"),
            ];
            if let Some(from) = &cfg.sender {
                params.push((param(cfg, "from"), from));
            }
            if ucs2 {
                params.push((param(cfg, "coding"), "2"));
            }
            if let Some(url) = dlr_url {
                // 31: every report type (delivered, failed, buffered, SMSC accepted, SMSC rejected).
                params.push((param(cfg, "dlr_mask"), "31"));
                params.push((param(cfg, "dlr_url"), url));
            }
            for (k, v) in &cfg.extra_params {
                params.push((k, v.expose()));
            }
            if cfg.method == HttpMethod::Get {
                client.get(cfg.url.as_str()).query(&params)
            } else {
                client.post(cfg.url.as_str()).form(&params)
            }
        }
    };
    let resp = match req.timeout(cfg.timeout.std()).send().await {
        Ok(r) => r,
        Err(e) => return Outcome::network(e),
    };
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default().trim().to_string();
    let reply = format!("HTTP {}: {body}", status.as_u16());
    if status.is_success() {
        if body.starts_with("3:") {
            Outcome::Accepted {
                state: "queued",
                reply,
            }
        } else {
            Outcome::Accepted {
                state: "accepted",
                reply,
            }
        }
    } else {
        Outcome::from_status(status, reply)
    }
}

/// Kannel's POST form of sendsms: the text is the body, the rest are `X-Kannel-*` headers (values checked
/// to fit a header when the config was validated).
fn kannel_post(
    client: &reqwest::Client,
    cfg: &SmsConfig,
    to: &str,
    text: &str,
    ucs2: bool,
    dlr_url: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut req = client
        .post(cfg.url.as_str())
        .header("Content-Type", "text/plain; charset=UTF-8")
        .header("X-Kannel-Username", &cfg.username)
        .header("X-Kannel-Password", cfg.password.expose())
        .header("X-Kannel-To", to);
    if let Some(from) = &cfg.sender {
        req = req.header("X-Kannel-From", from);
    }
    if ucs2 {
        req = req.header("X-Kannel-Coding", "2");
    }
    if let Some(url) = dlr_url {
        req = req
            .header("X-Kannel-DLR-Mask", "31")
            .header("X-Kannel-DLR-Url", url);
    }
    for (k, v) in &cfg.extra_params {
        req = req.header(format!("X-Kannel-{k}"), v.expose());
    }
    req.body(text.to_string())
}
