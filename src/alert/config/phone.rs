//! Phone numbers as receivers write them, normalised to E.164 when the config is read.

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
