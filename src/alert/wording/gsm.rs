//! SMS text arithmetic: which alphabet a text needs (GSM-7 or UCS-2), how many segments it costs, and
//! stripping Vietnamese diacritics so a notice fits GSM-7's 160 characters instead of UCS-2's 70.

/// GSM 03.38 default alphabet (one septet each).
const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\u{1b}ÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// GSM 03.38 extension table: an escape septet plus one, so two septets each.
const GSM_EXTENDED: &str = "^{}\\[~]|€\u{0c}";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alphabet {
    Gsm7,
    Ucs2,
}

/// What a text costs as SMS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segments {
    pub alphabet: Alphabet,
    /// Septets (GSM-7) or UTF-16 code units (UCS-2).
    pub units: usize,
    pub count: usize,
}

fn gsm_septets(c: char) -> Option<usize> {
    if GSM_BASIC.contains(c) {
        Some(1)
    } else if GSM_EXTENDED.contains(c) {
        Some(2)
    } else {
        None
    }
}

pub fn is_gsm7(text: &str) -> bool {
    text.chars().all(|c| gsm_septets(c).is_some())
}

/// Segments of `text`: GSM-7 when every character fits it (160 septets in one segment, 153 per part when
/// concatenated), else UCS-2 (70 / 67 UTF-16 units). Parts never split an escape sequence or a surrogate
/// pair, as handsets and gateways refuse such parts.
pub fn segments(text: &str) -> Segments {
    if is_gsm7(text) {
        let sizes: Vec<usize> = text.chars().filter_map(gsm_septets).collect();
        count_parts(Alphabet::Gsm7, &sizes, 160, 153)
    } else {
        let sizes: Vec<usize> = text.chars().map(char::len_utf16).collect();
        count_parts(Alphabet::Ucs2, &sizes, 70, 67)
    }
}

fn count_parts(alphabet: Alphabet, sizes: &[usize], single: usize, part: usize) -> Segments {
    let units: usize = sizes.iter().sum();
    if units <= single {
        return Segments {
            alphabet,
            units,
            count: 1,
        };
    }
    let (mut count, mut used) = (1, 0);
    for &s in sizes {
        if used + s > part {
            count += 1;
            used = 0;
        }
        used += s;
    }
    Segments {
        alphabet,
        units,
        count,
    }
}

/// Cuts `text` so it fits in `max` segments, ending with "..." when cut. Keeps whole characters.
pub fn truncate_to_segments(text: &str, max: usize) -> String {
    if segments(text).count <= max {
        return text.to_string();
    }
    let mut chars: Vec<char> = text.chars().collect();
    while !chars.is_empty() {
        chars.pop();
        let candidate: String = chars.iter().collect::<String>() + "...";
        if segments(&candidate).count <= max {
            return candidate;
        }
    }
    String::new()
}

/// Vietnamese letters with diacritics and their base letters.
const VIETNAMESE: &[(&str, char)] = &[
    ("àáảãạăằắẳẵặâầấẩẫậ", 'a'),
    ("ÀÁẢÃẠĂẰẮẲẴẶÂẦẤẨẪẬ", 'A'),
    ("èéẻẽẹêềếểễệ", 'e'),
    ("ÈÉẺẼẸÊỀẾỂỄỆ", 'E'),
    ("ìíỉĩị", 'i'),
    ("ÌÍỈĨỊ", 'I'),
    ("òóỏõọôồốổỗộơờớởỡợ", 'o'),
    ("ÒÓỎÕỌÔỒỐỔỖỘƠỜỚỞỠỢ", 'O'),
    ("ùúủũụưừứửữự", 'u'),
    ("ÙÚỦŨỤƯỪỨỬỮỰ", 'U'),
    ("ỳýỷỹỵ", 'y'),
    ("ỲÝỶỸỴ", 'Y'),
    ("đ", 'd'),
    ("Đ", 'D'),
];

/// Replaces Vietnamese letters by their base letters and common typography by ASCII, so the text is GSM-7.
/// Characters with no such mapping (e.g. emoji) are kept and the text stays UCS-2.
pub fn strip_diacritics(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if let Some((_, base)) = VIETNAMESE.iter().find(|(set, _)| set.contains(c)) {
            out.push(*base);
            continue;
        }
        match c {
            '…' => out.push_str("..."),
            '–' | '—' => out.push('-'),
            '‘' | '’' => out.push('\''),
            '“' | '”' => out.push('"'),
            // é è ù ì ò à exist in GSM-7, but their uppercase/other accents do not; the loop above already
            // handled Vietnamese ones, so anything left goes through unchanged.
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsm7_single_and_multi_part_limits() {
        let s = segments(&"a".repeat(160));
        assert_eq!((s.alphabet, s.units, s.count), (Alphabet::Gsm7, 160, 1));
        assert_eq!(segments(&"a".repeat(161)).count, 2);
        assert_eq!(segments(&"a".repeat(306)).count, 2);
        assert_eq!(segments(&"a".repeat(307)).count, 3);
    }

    #[test]
    fn extension_characters_cost_two_septets_and_are_not_split() {
        let s = segments(&"€".repeat(80));
        assert_eq!((s.alphabet, s.units, s.count), (Alphabet::Gsm7, 160, 1));
        // 152 septets then a 2-septet escape: it moves whole to the second part.
        let text = "a".repeat(152) + "[" + &"a".repeat(10);
        assert_eq!(segments(&text).count, 2);
    }

    #[test]
    fn vietnamese_needs_ucs2_unless_stripped() {
        let text = "Tụ tập đông người tại Nguyễn Huệ / Lê Lợi (P. Bến Nghé)";
        let s = segments(text);
        assert_eq!(s.alphabet, Alphabet::Ucs2);
        assert_eq!(s.count, 1);
        let plain = strip_diacritics(text);
        assert_eq!(
            plain,
            "Tu tap dong nguoi tai Nguyen Hue / Le Loi (P. Ben Nghe)"
        );
        assert_eq!(segments(&plain).alphabet, Alphabet::Gsm7);
        assert_eq!(segments(&"ệ".repeat(71)).count, 2);
        assert_eq!(segments(&"ệ".repeat(134)).count, 2);
        assert_eq!(segments(&"ệ".repeat(135)).count, 3);
    }

    #[test]
    fn surrogate_pairs_count_two_units() {
        let s = segments("🚨 cảnh báo");
        assert_eq!(s.alphabet, Alphabet::Ucs2);
        assert_eq!(s.units, 11);
    }

    #[test]
    fn truncation_fits_the_segment_budget() {
        let long = "Đường ".repeat(40);
        let cut = truncate_to_segments(&long, 1);
        assert!(cut.ends_with("..."));
        assert_eq!(segments(&cut).count, 1);
        assert_eq!(truncate_to_segments("ngắn", 1), "ngắn");
    }
}
