//! Scans the `<array>`/`<dict>` nesting of an XML plist without parsing it.
//!
//! Comments, CDATA sections, processing instructions and declarations (DOCTYPE) are skipped,
//! each ending at the earliest point the XML reader could end it, so that anything the reader
//! sees as a tag is seen here too. A start tag counts when its name (or a part of it between
//! colons) begins with `array` or `dict`; an end tag only when it is exactly `</array>` or
//! `</dict>`; an empty element (`<array/>`) is one level for an instant. Over-counting a
//! malformed document is harmless (the parser refuses it anyway); under-counting is not.

use super::BoundedPlistError;

pub(super) fn check(bytes: &[u8], max_depth: usize) -> Result<(), BoundedPlistError> {
    let too_deep = || BoundedPlistError::TooDeep { max: max_depth };
    let mut depth = 0usize;
    let mut at = 0;
    while let Some(lt) = find(bytes, at, b"<") {
        let rest = &bytes[lt..];
        // Where the markup ends; the reader cannot end it sooner (searches may overlap the
        // opening: the reader may take `<!-->` as a whole comment).
        let end = if rest.starts_with(b"<!--") {
            find(bytes, lt + 2, b"-->").map(|e| e + 3)
        } else if rest.starts_with(b"<![CDATA[") {
            find(bytes, lt + 9, b"]]>").map(|e| e + 3)
        } else if rest.starts_with(b"<?") {
            find(bytes, lt + 1, b"?>").map(|e| e + 2)
        } else if rest.starts_with(b"<!") {
            find(bytes, lt + 2, b">").map(|e| e + 1)
        } else {
            let close = find(bytes, lt + 1, b">");
            let tag = &bytes[lt + 1..close.unwrap_or(bytes.len())];
            if let Some(name) = tag.strip_prefix(b"/") {
                if matches!(name_of(name), b"array" | b"dict") {
                    depth = depth.saturating_sub(1);
                }
            } else if is_collection(name_of(tag)) {
                if depth >= max_depth {
                    return Err(too_deep());
                }
                if !tag.ends_with(b"/") {
                    depth += 1;
                }
            }
            close.map(|e| e + 1)
        };
        match end {
            Some(end) => at = end,
            // Unterminated markup: the reader stops there too.
            None => break,
        }
    }
    Ok(())
}

/// Whether the document opens (after white space) with an XML declaration: the plist crate then
/// never reads it as OpenStep.
pub(super) fn declared(bytes: &[u8]) -> bool {
    let start = bytes
        .iter()
        .position(|b| !b" \t\r\n".contains(b))
        .unwrap_or(bytes.len());
    let rest = &bytes[start..];
    rest.starts_with(b"<?xml") && rest.get(5).is_some_and(|b| b" \t\r\n".contains(b))
}

/// A tag's name: up to white space, `/` or the end.
fn name_of(tag: &[u8]) -> &[u8] {
    let end = tag
        .iter()
        .position(|b| b" \t\r\n/".contains(b))
        .unwrap_or(tag.len());
    &tag[..end]
}

fn is_collection(name: &[u8]) -> bool {
    name.split(|&b| b == b':')
        .any(|part| part.starts_with(b"array") || part.starts_with(b"dict"))
}

fn find(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    bytes
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_ok(xml: &str, max_depth: usize) -> bool {
        match check(xml.as_bytes(), max_depth) {
            Ok(()) => true,
            Err(BoundedPlistError::TooDeep { max }) => {
                assert_eq!(max, max_depth);
                false
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn counts_collection_nesting() {
        // (document, deepest allowed depth that passes)
        let cases = [
            ("<plist><true/></plist>", 0),
            ("<plist><array></array></plist>", 1),
            (
                "<plist><dict><key>a</key><array><dict/></array></dict></plist>",
                3,
            ),
            ("<plist><array/><array/><array/></plist>", 1),
            (
                "<plist><array>\n<array ><array\t/></array></array></plist>",
                3,
            ),
            ("<plist><x:array><dict></dict></x:array></plist>", 2),
            // Comments, CDATA, instructions and declarations hide tags.
            (
                "<!DOCTYPE plist><plist><!-- <array><array> --><array/></plist>",
                1,
            ),
            (
                "<plist><string><![CDATA[<array><array>]]></string></plist>",
                0,
            ),
            ("<?xml version=\"1.0\"?><?pi <array><array> ?><plist/>", 0),
            // The reader can close a comment or instruction sooner than it seems.
            ("<!--><array><array></array></array>", 2),
            ("<?><array><array></array></array>", 2),
            // Unknown and mismatched end tags never reduce the count.
            ("<array></string><array></array></array>", 2),
            ("<array></arrays><array></array></array>", 2),
            // Names that merely start like a collection count (the parser refuses them).
            ("<arrayx><dictionary></dictionary></arrayx>", 2),
            // An unterminated comment hides the rest, for the reader too.
            ("<array><!-- <array><array>", 1),
        ];
        for (xml, depth) in cases {
            assert!(depth_ok(xml, depth), "{xml} within {depth}");
            if depth > 0 {
                assert!(!depth_ok(xml, depth - 1), "{xml} beyond {}", depth - 1);
            }
        }
    }

    #[test]
    fn recognises_a_leading_xml_declaration() {
        for (text, expected) in [
            ("<?xml version=\"1.0\"?><plist/>", true),
            ("\n  <?xml version=\"1.0\"?>", true),
            ("<plist/>", false),
            ("<?xml-stylesheet?>", false),
            ("\u{feff}<?xml version=\"1.0\"?>", false),
            ("(<?xml version=\"1.0\"?>)", false),
        ] {
            assert_eq!(declared(text.as_bytes()), expected, "{text:?}");
        }
    }
}
