//! Values that must not reach a log line, an error message or the CLI's output: passwords, shared secrets,
//! and URLs that may carry credentials (`user:password@`, `?token=…`). Config structs hold them in these
//! types, so `{:?}` of a config shows `***` in their place; code that needs the value asks for it by name.

use std::fmt;

use serde::Deserialize;

/// A password or shared secret: `Debug` prints `***`. In a configuration file `${NAME}` in it is replaced by
/// the environment variable NAME (an unset one is an error naming it), so the secret need not be in the file.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        expand_env(&raw)
            .map(Secret)
            .map_err(serde::de::Error::custom)
    }
}

/// Replaces `${NAME}` with the environment variable NAME. Errors name the variable, never its value.
pub fn expand_env(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unclosed `${` in value".to_string())?;
        let name = &after[..end];
        let value =
            std::env::var(name).map_err(|_| format!("environment variable `{name}` is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// A URL that may carry credentials: `Debug` and [`SecretUrl::redacted`] show it with the user info, query
/// values and fragment replaced by `***`; it reads as the full `&str` where it is used.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL with its credentials replaced, for logs and output.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

impl std::ops::Deref for SecretUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.redacted(), f)
    }
}

/// `scheme://user:pass@host/path?k=v#f` → `scheme://***@host/path?k=***#***`. Works on text, not a parsed
/// URL, so a malformed or `${VAR}` URL is redacted too; text without `://`, `?` or `#` is returned as is.
pub fn redact_url(url: &str) -> String {
    let (before_fragment, fragment) = match url.split_once('#') {
        Some((b, _)) => (b, Some("***")),
        None => (url, None),
    };
    let (base, query) = match before_fragment.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (before_fragment, None),
    };
    let mut out = String::with_capacity(url.len());
    match base.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            out.push_str(scheme);
            out.push_str("://");
            match authority.rsplit_once('@') {
                Some((_, host)) => {
                    out.push_str("***@");
                    out.push_str(host);
                }
                None => out.push_str(authority),
            }
            out.push_str(path);
        }
        None => out.push_str(base),
    }
    if let Some(q) = query {
        out.push('?');
        let pairs: Vec<String> = q
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) => format!("{k}=***"),
                None if pair.is_empty() => String::new(),
                None => "***".to_string(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// Free text (an error message, a log line) with every `scheme://…` URL in it passed through [`redact_url`].
/// A URL runs from its scheme to the next whitespace or quote, so credentials in its user info or query are
/// replaced even when a library quoted the URL inside its own message.
pub fn redact_urls_in(text: &str) -> String {
    let scheme_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.');
    let url_end = |c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(sep) = rest.find("://") {
        let start = rest[..sep]
            .char_indices()
            .rev()
            .take_while(|&(_, c)| scheme_char(c))
            .last()
            .map_or(sep, |(i, _)| i);
        let end = rest[sep..].find(url_end).map_or(rest.len(), |e| sep + e);
        out.push_str(&rest[..start]);
        out.push_str(&redact_url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Holder {
        token: Secret,
    }

    #[test]
    fn a_secret_in_a_file_is_read_from_the_environment_and_an_unset_one_is_refused() {
        // SAFETY: a variable only this test reads.
        unsafe { std::env::set_var("SW_TEST_SECRET_TOKEN", "s3cr3t-from-the-environment") };
        let h: Holder = toml::from_str(r#"token = "${SW_TEST_SECRET_TOKEN}""#).unwrap();
        assert_eq!(h.token.expose(), "s3cr3t-from-the-environment");
        let h: Holder = toml::from_str(r#"token = "literal-token-0001""#).unwrap();
        assert_eq!(h.token.expose(), "literal-token-0001");
        let e = toml::from_str::<Holder>(r#"token = "${SW_TEST_SECRET_UNSET}""#)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("environment variable `SW_TEST_SECRET_UNSET` is not set"),
            "{e}"
        );
        assert!(toml::from_str::<Holder>(r#"token = "${OPEN""#).is_err());
    }

    #[test]
    fn urls_lose_their_credentials_and_keep_the_rest() {
        for (url, shown) in [
            (
                "https://ops:pw@x.vn:8443/hook?token=T1&v=2#sig",
                "https://***@x.vn:8443/hook?token=***&v=***#***",
            ),
            (
                "rtsp://admin:p@ss@10.0.0.5/s?t",
                "rtsp://***@10.0.0.5/s?***",
            ),
            ("rtsp://10.0.0.5/stream1", "rtsp://10.0.0.5/stream1"),
            ("http://x/a@b/c", "http://x/a@b/c"),
            ("rtsp://${USER}:${PW}@cam/s", "rtsp://***@cam/s"),
            ("+84901234567", "+84901234567"),
            ("a@b.vn, c@d.vn", "a@b.vn, c@d.vn"),
            ("", ""),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        assert_eq!(format!("{:?}", Secret::new("pw")), "\"***\"");
        assert_eq!(
            format!("{:?}", SecretUrl::new("http://u:pw@h/")),
            "\"http://***@h/\""
        );
    }

    #[test]
    fn urls_inside_text_lose_their_credentials() {
        for (text, shown) in [
            (
                "Could not open resource rtsp://admin:hunter2@10.0.0.5:554/s1?token=abc for reading",
                "Could not open resource rtsp://***@10.0.0.5:554/s1?token=*** for reading",
            ),
            (
                "\"rtsp://u:p@cam/a\" then 'http://x/y?k=v'",
                "\"rtsp://***@cam/a\" then 'http://x/y?k=***'",
            ),
            ("lỗi: rtsp://u:mật@cam/a", "lỗi: rtsp://***@cam/a"),
            (
                "cannot open rtsp://admin:hunter2@10.0.0.5/s1: 401, then http://u:p@h/x?token=abc",
                "cannot open rtsp://***@10.0.0.5/s1: 401, then http://***@h/x?token=***",
            ),
            ("connection refused", "connection refused"),
            ("no url here: a@b", "no url here: a@b"),
            ("://u:p@h", "://***@h"),
            ("", ""),
        ] {
            assert_eq!(redact_urls_in(text), shown, "{text}");
        }
    }
}
