//! Scans the bracket nesting of an OpenStep (ASCII) plist the way the plist crate tokenises it:
//! `(` and `{` open, `)` and `}` close; quoted strings (with backslash escapes), `//` and
//! `/* */` comments hide brackets; an unquoted word runs up to a space, tab, carriage return,
//! `)`, `;` or `,` and swallows anything else, brackets and quotes included. A comment ends at
//! the first `*/` (the reader may end it later, never sooner), so brackets are never missed.

use super::BoundedPlistError;

pub(super) fn check(bytes: &[u8], max_depth: usize) -> Result<(), BoundedPlistError> {
    let mut depth = 0usize;
    let mut at = 0;
    while let Some(&c) = bytes.get(at) {
        at += 1;
        match c {
            b'(' | b'{' => {
                if depth >= max_depth {
                    return Err(BoundedPlistError::TooDeep { max: max_depth });
                }
                depth += 1;
            }
            b')' | b'}' => depth = depth.saturating_sub(1),
            b'\'' | b'"' => {
                while let Some(&s) = bytes.get(at) {
                    at += if s == b'\\' { 2 } else { 1 };
                    if s == c {
                        break;
                    }
                }
            }
            b'/' if bytes.get(at) == Some(&b'/') => {
                at = find(bytes, at, b"\n").unwrap_or(bytes.len());
            }
            b'/' if bytes.get(at) == Some(&b'*') => {
                // From the opening star: `/*/` is a whole comment to the reader.
                at = find(bytes, at, b"*/").map_or(bytes.len(), |e| e + 2);
            }
            b' ' | b'\r' | b'\t' | b'\n' | b',' | b';' | b'=' => {}
            _ => {
                while bytes.get(at).is_some_and(|b| !b" \r\t);,".contains(b)) {
                    at += 1;
                }
            }
        }
    }
    Ok(())
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

    fn within(text: &str, max_depth: usize) -> bool {
        check(text.as_bytes(), max_depth).is_ok()
    }

    #[test]
    fn counts_bracket_nesting_as_the_reader_tokenises() {
        // (document, deepest nesting)
        let cases = [
            ("abc", 0),
            ("()", 1),
            ("{ a = (1, 2, {b = c;}); }", 3),
            ("( \"((((\" , '{{{{' )", 1),
            ("( \"a\\\"((((\" )", 1),
            ("( // ((((\n )", 1),
            ("( /* (((( */ )", 1),
            ("( /*/ ((( )))", 4),
            // A word swallows brackets and quotes up to a separator.
            ("( a((((b )", 1),
            ("( a\"(( (( )", 3),
            ("( /(( )", 1),
            // A newline does not end a word.
            ("( a\n(( )", 1),
        ];
        for (text, depth) in cases {
            assert!(within(text, depth), "{text:?} within {depth}");
            if depth > 0 {
                assert!(!within(text, depth - 1), "{text:?} beyond {}", depth - 1);
            }
        }
    }
}
