//! The SMS template's placeholders, checked when the config is read.

const PLACEHOLDERS: &[&str] = &[
    "title",
    "rule",
    "camera",
    "camera_id",
    "incident",
    "ward",
    "time",
    "summary",
    "count",
    "link",
    "ref",
    "more",
    "severity",
];

/// Checks that a template's placeholders are known and its braces balanced.
pub(crate) fn check_template(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err(format!("unmatched '}}' in {template:?}"));
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed '{{' in {template:?}"))?;
        let name = &after[..close];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "unknown placeholder {{{name}}} (known: {})",
                PLACEHOLDERS.join(", ")
            ));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_checked() {
        assert!(check_template("{title} {ward}").is_ok());
        assert!(check_template("{nope}").unwrap_err().contains("nope"));
        assert!(check_template("{title").is_err());
        assert!(check_template("a}").is_err());
    }
}
