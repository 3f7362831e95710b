//! Where in the file a setting is: a TOML error's byte span turned into the setting's dotted
//! path and line, and the line of a dotted path for problems found after parsing.

use super::problems::Problem;

/// Turns a TOML/serde error into a [`Problem`] naming the setting. toml reports a byte span;
/// the span is matched against the document's keys to find the dotted path, and
/// "missing field" errors (whose span is the enclosing table) get the missing name appended.
pub(super) fn toml_problem(text: &str, error: &toml::de::Error) -> Problem {
    let message = error.message().trim().to_owned();
    let span = error.span();
    let line = span
        .as_ref()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
    let mut field = span
        .as_ref()
        .and_then(|s| {
            toml::de::DeTable::parse(text)
                .ok()
                .map(|doc| path_at(doc.get_ref(), s))
        })
        .unwrap_or_default();
    if field.is_empty()
        && let Some(s) = &span
    {
        // A document TOML refuses as a whole ("duplicate key") has no tree to search: the
        // key is read from the line itself.
        field = setting_on_line(text, s.start);
    }
    let quoted = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned)
    };
    let reason = if let Some(missing) = quoted("missing field `") {
        field = join_path(&field, &missing);
        "is missing".to_owned()
    } else if let Some(unknown) = quoted("unknown field `") {
        if !field.ends_with(&unknown) {
            field = join_path(&field, &unknown);
        }
        let expected = message
            .split_once("expected ")
            .map(|(_, e)| e.replace('`', ""))
            .unwrap_or_default();
        let expected = expected.strip_prefix("one of ").unwrap_or(&expected);
        if expected.is_empty() {
            "is not a setting cartprep knows".to_owned()
        } else {
            format!("is not a setting cartprep knows here (known: {expected})")
        }
    } else {
        plain_serde_message(&message.replace('`', "\""))
    };
    Problem {
        field,
        line,
        reason,
    }
}

/// serde's wording ("invalid type: string \"two\", expected i64") in a volunteer's words
/// ("is the text \"two\"; expected a whole number").
fn plain_serde_message(message: &str) -> String {
    let kinds = |s: &str| {
        s.replace("expected i64", "expected a whole number")
            .replace("expected u32", "expected a whole number (0 or more)")
            .replace("expected path string", "expected a path in quotes")
            .replace("expected a boolean", "expected true or false")
            .replace("string ", "the text ")
            .replace("integer ", "the number ")
    };
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        return format!("is {}", kinds(rest).replacen(", expected", "; expected", 1));
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        return match rest.split_once(", expected one of ") {
            Some((got, choices)) => format!("is {got}; choose one of {choices}"),
            None => format!("is {rest}"),
        };
    }
    kinds(message)
}

/// The dotted setting written on the line holding byte `offset` of `text` (`wifi.ssid`), or ""
/// when that line sets nothing: a best effort for text TOML could not parse (a duplicate key, a
/// byte that is not UTF-8).
pub(super) fn setting_on_line(text: &str, offset: usize) -> String {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let section = text[..start]
        .lines()
        .map(str::trim)
        .rfind(|l| l.starts_with('[') && !l.starts_with("[["))
        .map(|l| l.trim_matches(['[', ']']).trim().to_owned())
        .unwrap_or_default();
    match text[start..end].split_once('=') {
        Some((key, _)) if !key.trim().is_empty() && !key.trim_start().starts_with('#') => {
            join_path(&section, key.trim())
        }
        _ => String::new(),
    }
}

/// The line of the setting at dotted path `field` (`mdm.anchor_certificates[1]`,
/// `slots."1-1.2"`), for problems found after parsing.
pub(super) fn line_of(text: &str, field: &str) -> Option<usize> {
    use toml::de::DeValue;
    let doc = toml::de::DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let mut start = None;
    for segment in split_path(field) {
        let (name, index) = match segment.find('[') {
            Some(i) => (
                &segment[..i],
                segment[i + 1..].trim_end_matches(']').parse::<usize>().ok(),
            ),
            None => (segment.as_str(), None),
        };
        // A missing setting is reported at its section.
        let Some((key, value)) = table.iter().find(|(k, _)| k.get_ref() == name) else {
            break;
        };
        start = Some(key.span().start);
        let value = match (index, value.get_ref()) {
            (Some(i), DeValue::Array(items)) => {
                let item = items.get(i)?;
                start = Some(item.span().start);
                item
            }
            _ => value,
        };
        match value.get_ref() {
            DeValue::Table(t) => table = t,
            _ => break,
        }
    }
    start.map(|s| text[..s.min(text.len())].matches('\n').count() + 1)
}

/// Splits `a.b."c.d"[0]` into `a`, `b`, `c.d[0]` (dots inside quotes belong to the key).
fn split_path(field: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    for c in field.chars() {
        match c {
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(String::new()),
            c => parts.last_mut().expect("never empty").push(c),
        }
    }
    parts
}

fn join_path(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_owned()
    } else {
        format!("{parent}.{child}")
    }
}

/// Dotted path of the deepest key whose key or value span holds `span`.
///
/// Every table is searched, not only those whose span holds `span`: the span of a `[section]`
/// table covers its header, not the keys below it.
fn path_at(table: &toml::de::DeTable<'_>, span: &std::ops::Range<usize>) -> String {
    use toml::de::{DeTable, DeValue};
    type Span = std::ops::Range<usize>;

    fn contains(outer: &Span, inner: &Span) -> bool {
        outer.start <= inner.start && inner.end <= outer.end && outer.start < outer.end
    }
    fn in_value(value: &toml::Spanned<DeValue<'_>>, span: &Span) -> Option<String> {
        match value.get_ref() {
            DeValue::Table(t) => in_table(t, span),
            DeValue::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, item)| match in_value(item, span) {
                    Some(inner) if inner.starts_with('[') => Some(format!("[{i}]{inner}")),
                    Some(inner) => Some(format!("[{i}].{inner}")),
                    None if contains(&item.span(), span) => Some(format!("[{i}]")),
                    None => None,
                }),
            _ => None,
        }
    }
    fn in_table(table: &DeTable<'_>, span: &Span) -> Option<String> {
        table.iter().find_map(|(key, value)| {
            let name = key.get_ref();
            match in_value(value, span) {
                Some(inner) if inner.starts_with('[') => Some(format!("{name}{inner}")),
                Some(inner) => Some(format!("{name}.{inner}")),
                None if contains(&key.span(), span) || contains(&value.span(), span) => {
                    Some(name.to_string())
                }
                None => None,
            }
        })
    }
    in_table(table, span).unwrap_or_default()
}
