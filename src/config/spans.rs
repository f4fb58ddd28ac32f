//! Where a key is written in the text, for mistakes found after deserialising: serde keeps no positions
//! but for `Spanned` fields, and `Spanned` cannot hold a table the file never writes a header for
//! (`[alert.route]` without `[alert]`: toml 0.8 then fails with "expected a borrowed string").

use std::ops::Range;

use toml_edit::{ImDocument, Item};

/// The span of `key` (e.g. `alert.receivers[0].max_concurrency`) in `text`: its value's, or, when the
/// file leaves the key to its default, that of the nearest enclosing table the file writes; `0..0`
/// (line 1) when there is none.
pub(super) fn find(text: &str, key: &str) -> Range<usize> {
    let Ok(doc) = ImDocument::parse(text) else {
        return 0..0;
    };
    let mut item: &Item = doc.as_item();
    let mut best = 0..0;
    for part in key.split('.') {
        let (name, indices) = part.split_once('[').unwrap_or((part, ""));
        let mut next = item.get(name);
        for index in indices.split('[').filter(|s| !s.is_empty()) {
            next = next.and_then(|n| n.get(index.trim_end_matches(']').parse::<usize>().ok()?));
        }
        let Some(next) = next else { break };
        if let Some(span) = span(next) {
            best = span;
        }
        item = next;
    }
    best
}

/// An item's span; for a table the file never writes a header for, that of its first written part.
fn span(item: &Item) -> Option<Range<usize>> {
    item.span().or_else(|| {
        item.as_table_like()?
            .iter()
            .filter_map(|(_, child)| span(child))
            .min_by_key(|s| s.start)
    })
}

#[cfg(test)]
mod tests {
    use super::find;

    const TEXT: &str = "[runtime]\nworkers = 2\n[[cameras]]\nid = \"a\"\n[[cameras]]\nid = \"b\"\nregions = [[0.1, 0.2, 0.3, 0.4]]\n[alert.route]\ngroup_wait = \"1s\"\n[[alert.receivers]]\nname = \"x\"\nwebhook = { url = \"u\", timeout = 0 }\n";

    fn at(key: &str) -> &'static str {
        &TEXT[find(TEXT, key)]
    }

    #[test]
    fn keys_resolve_to_their_values() {
        assert_eq!(at("runtime.workers"), "2");
        assert_eq!(at("cameras[1].id"), "\"b\"");
        assert_eq!(at("cameras[1].regions[0][2]"), "0.3");
        assert_eq!(at("alert.route.group_wait"), "\"1s\"");
        assert_eq!(at("alert.receivers[0].webhook.timeout"), "0");
    }

    #[test]
    fn missing_keys_fall_back_to_their_table() {
        // A table's span runs from its header over its keys; errors are located at its start.
        let starts = |key: &str, header: &str| {
            let at = find(TEXT, key).start;
            assert!(TEXT[at..].starts_with(header), "{key}: {}", &TEXT[at..]);
            at
        };
        starts("runtime.max_batch", "[runtime]");
        let second = starts("cameras[1].fps", "[[cameras]]");
        assert_eq!(second, TEXT.rfind("[[cameras]]").unwrap());
        // `[alert]` is never written: its first written part stands for it.
        starts("alert.flood.window", "[alert.route]");
        assert_eq!(find("not = [toml", "not"), 0..0);
    }
}
