//! SMS through an HTTP gateway. Kannel's `/cgi-bin/sendsms` is the reference (its parameter names are the
//! defaults); other gateways are reached by renaming parameters and adding fixed ones in config.

use super::config::{HttpMethod, SmsCoding, SmsConfig};
use super::gsm;
use super::notify::Outcome;

/// Keys of `param_names`, and Kannel's name for each.
pub(crate) const PARAM_KEYS: &[&str] = &[
    "username", "password", "to", "from", "text", "coding", "charset", "dlr_mask", "dlr_url",
];

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

/// Normalises a phone number to E.164: Vietnamese `0xxxxxxxxx` (and `84xxxxxxxxx`) become `+84xxxxxxxxx`;
/// spaces, dots, dashes and brackets are ignored. Vietnamese numbers are checked for length and prefix
/// (mobile 3/5/7/8/9 + 8 digits, landline 2 + 9 digits); others for E.164's 8–15 digits.
pub fn normalize_phone(input: &str) -> Result<String, String> {
    let bad = |why: &str| Err(format!("bad phone number {input:?}: {why}"));
    let compact: String = input
        .chars()
        .filter(|c| !matches!(c, ' ' | '.' | '-' | '(' | ')'))
        .collect();
    let (plus, digits) = match compact.strip_prefix('+') {
        Some(d) => (true, d),
        None => (false, compact.as_str()),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return bad("only digits, optionally after +");
    }
    let national = if plus {
        digits.strip_prefix("84")
    } else if let Some(n) = digits.strip_prefix('0') {
        Some(n)
    } else if digits.len() == 11 && digits.starts_with("84") {
        Some(&digits[2..])
    } else {
        return bad("write Vietnamese numbers as 0xxxxxxxxx, others as +<country><number>");
    };
    match national {
        Some(n) => {
            let ok = match n.as_bytes().first() {
                Some(b'3' | b'5' | b'7' | b'8' | b'9') => n.len() == 9,
                Some(b'2') => n.len() == 10,
                _ => false,
            };
            if !ok {
                return bad(
                    "not a Vietnamese mobile (0[35789] + 8 digits) or landline (02 + 9 digits) number",
                );
            }
            Ok(format!("+84{n}"))
        }
        None if (8..=15).contains(&digits.len()) => Ok(format!("+{digits}")),
        None => bad("E.164 numbers have 8 to 15 digits"),
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
    let mut params: Vec<(&str, &str)> = vec![
        (param(cfg, "username"), &cfg.username),
        (param(cfg, "password"), &cfg.password),
        (param(cfg, "to"), to),
        (param(cfg, "text"), text),
        (param(cfg, "charset"), "UTF-8"),
    ];
    if let Some(from) = &cfg.sender {
        params.push((param(cfg, "from"), from));
    }
    if cfg.coding == SmsCoding::Ucs2 || !gsm::is_gsm7(text) {
        params.push((param(cfg, "coding"), "2"));
    }
    if let Some(url) = dlr_url {
        // 31: every report type (delivered, failed, buffered, SMSC accepted, SMSC rejected).
        params.push((param(cfg, "dlr_mask"), "31"));
        params.push((param(cfg, "dlr_url"), url));
    }
    for (k, v) in &cfg.extra_params {
        params.push((k, v));
    }
    let req = match cfg.method {
        HttpMethod::Get => client.get(&cfg.url).query(&params),
        HttpMethod::Post => client.post(&cfg.url).form(&params),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vietnamese_numbers_normalise_to_e164() {
        assert_eq!(normalize_phone("0901 234 567").unwrap(), "+84901234567");
        assert_eq!(normalize_phone("090-123-4567").unwrap(), "+84901234567");
        assert_eq!(normalize_phone("+84901234567").unwrap(), "+84901234567");
        assert_eq!(normalize_phone("84901234567").unwrap(), "+84901234567");
        assert_eq!(normalize_phone("(028) 3829 1234").unwrap(), "+842838291234");
        assert_eq!(normalize_phone("+33612345678").unwrap(), "+33612345678");
    }

    #[test]
    fn bad_numbers_are_refused_with_a_reason() {
        for n in [
            "",
            "0123",
            "0101234567",
            "09012345678",
            "+84 1234",
            "090x234567",
            "901234567",
            "+1234",
        ] {
            let e = normalize_phone(n).unwrap_err();
            assert!(e.contains("bad phone number"), "{n}: {e}");
        }
    }
}
