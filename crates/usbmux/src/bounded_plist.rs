//! The one way cartprep turns untrusted bytes (a socket, a file) into a plist.
//!
//! The plist crate turns bytes into a value without recursion, but serde deserialisation, `Drop`,
//! `Clone` and the writers of a `plist::Value` recurse once per nesting level: a plist nested a
//! few thousand levels deep aborts the whole process with a stack overflow. Real messages nest
//! fewer than 10 levels. So before the parser runs, an iterative scan proves the nesting is
//! within [`Limits::max_depth`]:
//! - binary plists: the object table is walked with an explicit stack ([`binary`]), refusing
//!   reference cycles and references or offsets outside the file; as one object may be
//!   referenced from many places, a small file could expand into an enormous tree, so the
//!   expanded number of values and bytes of strings and data are bounded too;
//! - XML plists: the `<array>`/`<dict>` element nesting is scanned ([`xml`]), skipping
//!   comments, CDATA, processing instructions and declarations;
//! - OpenStep plists, which the plist crate falls back to for text that is not XML: the
//!   bracket nesting is scanned ([`openstep`]).
//!
//! The scans err on the side of counting too deep: wherever they could disagree with the parser
//! about where a comment, string or tag ends, they stop it at the earliest possible point and
//! keep counting.

mod binary;
mod openstep;
mod xml;

use std::io::Cursor;
use std::path::Path;

use plist::{Dictionary, Value};

/// Nesting depth allowed by default: real messages nest fewer than 10 levels.
pub const DEFAULT_MAX_DEPTH: usize = 64;
/// Values (scalars, keys and collections) allowed by default in one binary plist.
pub const DEFAULT_MAX_VALUES: usize = 1 << 20;

/// The bounds of one parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest input, in bytes; also caps the strings and data of a binary plist once expanded
    /// (it can reference one string many times).
    pub max_bytes: usize,
    /// Deepest nesting of arrays and dictionaries; the top-level collection is level 1.
    pub max_depth: usize,
    /// Most values a binary plist expands to, counting each array, dictionary, key and scalar
    /// once per place it appears. (Text plists cannot expand: one value takes a few bytes.)
    pub max_values: usize,
}

impl Limits {
    /// `max_bytes` with the default depth and value count.
    pub const fn new(max_bytes: usize) -> Self {
        Limits {
            max_bytes,
            max_depth: DEFAULT_MAX_DEPTH,
            max_values: DEFAULT_MAX_VALUES,
        }
    }

    pub const fn with_max_depth(self, max_depth: usize) -> Self {
        Limits { max_depth, ..self }
    }

    pub const fn with_max_values(self, max_values: usize) -> Self {
        Limits { max_values, ..self }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BoundedPlistError {
    #[error("plist of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("plist nests deeper than {max} levels")]
    TooDeep { max: usize },
    #[error("plist holds more than {max} values")]
    TooManyValues { max: usize },
    #[error("plist expands to more than {max} bytes of strings and data")]
    TooMuchContent { max: usize },
    #[error("malformed plist: {0}")]
    Malformed(String),
    #[error("the plist's top level is {found}, not a dictionary")]
    NotADictionary { found: &'static str },
    #[error("plist does not have the expected shape: {0}")]
    Shape(String),
    #[error("cannot read the plist file: {0}")]
    Io(#[from] std::io::Error),
}

/// Parses a plist (binary, XML or OpenStep) within `limits`.
pub fn from_bytes(bytes: &[u8], limits: Limits) -> Result<Value, BoundedPlistError> {
    if bytes.len() > limits.max_bytes {
        return Err(BoundedPlistError::TooLarge {
            len: bytes.len(),
            max: limits.max_bytes,
        });
    }
    if bytes.starts_with(binary::MAGIC) {
        binary::check(bytes, limits)?;
    } else {
        xml::check(bytes, limits.max_depth)?;
        // Text that does not open with an XML declaration may be read as OpenStep instead.
        if !xml::declared(bytes) {
            openstep::check(bytes, limits.max_depth)?;
        }
    }
    // The crate's own reader builds the value without serde; the depth is known to be bounded.
    Value::from_reader(Cursor::new(bytes)).map_err(|e| BoundedPlistError::Malformed(e.to_string()))
}

/// [`from_bytes`] for a plist whose top level must be a dictionary (every message, record and
/// profile cartprep reads).
pub fn dictionary_from_bytes(
    bytes: &[u8],
    limits: Limits,
) -> Result<Dictionary, BoundedPlistError> {
    match from_bytes(bytes, limits)? {
        Value::Dictionary(d) => Ok(d),
        other => Err(BoundedPlistError::NotADictionary {
            found: kind(&other),
        }),
    }
}

/// [`from_bytes`], then serde into `T` (safe: the value's depth is bounded by then).
pub fn deserialize<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    limits: Limits,
) -> Result<T, BoundedPlistError> {
    let value = from_bytes(bytes, limits)?;
    plist::from_value(&value).map_err(|e| BoundedPlistError::Shape(e.to_string()))
}

/// Reads at most `limits.max_bytes` from `path` (never the whole of an oversized file) and
/// parses it with [`from_bytes`].
pub fn from_file(path: &Path, limits: Limits) -> Result<Value, BoundedPlistError> {
    from_bytes(&read_file(path, limits.max_bytes)?, limits)
}

/// The bytes of `path`, refusing a file longer than `max_bytes` without reading all of it.
pub fn read_file(path: &Path, max_bytes: usize) -> Result<Vec<u8>, BoundedPlistError> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    // One byte more than allowed tells an oversized file from one exactly at the limit.
    let cap = u64::try_from(max_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    file.take(cap).read_to_end(&mut bytes)?;
    if bytes.len() > max_bytes {
        return Err(BoundedPlistError::TooLarge {
            len: bytes.len(),
            max: max_bytes,
        });
    }
    Ok(bytes)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Array(_) => "an array",
        Value::Dictionary(_) => "a dictionary",
        Value::Boolean(_) => "a boolean",
        Value::Data(_) => "data",
        Value::Date(_) => "a date",
        Value::Real(_) => "a real",
        Value::Integer(_) => "an integer",
        Value::String(_) => "a string",
        Value::Uid(_) => "a UID",
        _ => "an unknown value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{
        Format, binary_cycle, binary_nested, binary_out_of_range_offset,
        binary_out_of_range_reference, binary_shared_fanout, dict_with_deep_array, openstep_nested,
        xml_nested,
    };

    const LIMITS: Limits = Limits::new(1 << 20);

    fn depth_of(value: &Value) -> usize {
        // Iterative: the values tested here may be as deep as the limit allows.
        let mut deepest = 0;
        let mut todo = vec![(value, 0usize)];
        while let Some((v, d)) = todo.pop() {
            let children: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                Value::Dictionary(m) => m.values().collect(),
                _ => {
                    deepest = deepest.max(d);
                    continue;
                }
            };
            deepest = deepest.max(d + 1);
            todo.extend(children.into_iter().map(|c| (c, d + 1)));
        }
        deepest
    }

    #[test]
    fn nesting_up_to_the_limit_parses_and_one_more_level_is_refused() {
        for (format, build) in [
            ("binary", binary_nested as fn(usize) -> Vec<u8>),
            ("xml", xml_nested),
            ("openstep", openstep_nested),
        ] {
            let at_limit = from_bytes(&build(DEFAULT_MAX_DEPTH), LIMITS)
                .unwrap_or_else(|e| panic!("{format}: {e}"));
            assert_eq!(depth_of(&at_limit), DEFAULT_MAX_DEPTH, "{format}");
            assert!(
                matches!(
                    from_bytes(&build(DEFAULT_MAX_DEPTH + 1), LIMITS),
                    Err(BoundedPlistError::TooDeep {
                        max: DEFAULT_MAX_DEPTH
                    })
                ),
                "{format}"
            );
        }
    }

    #[test]
    fn ten_thousand_levels_are_a_typed_error_not_a_stack_overflow() {
        for (format, bytes) in [
            ("binary", binary_nested(10_000)),
            ("xml", xml_nested(10_000)),
            ("openstep", openstep_nested(10_000)),
        ] {
            assert!(
                matches!(
                    from_bytes(&bytes, LIMITS),
                    Err(BoundedPlistError::TooDeep { .. })
                ),
                "{format}"
            );
        }
    }

    #[test]
    fn a_message_with_a_deep_value_is_refused_and_a_shallow_one_read() {
        let entries = [
            ("MessageType", "Listen"),
            ("ProgName", "a-rather-long-program-name"),
        ];
        for format in [Format::Binary, Format::Xml] {
            let deep = dict_with_deep_array(format, &entries, 10_000);
            assert!(
                matches!(
                    dictionary_from_bytes(&deep, LIMITS),
                    Err(BoundedPlistError::TooDeep { .. })
                ),
                "{format:?}"
            );
            // Within the limit: the dict, then 63 arrays.
            let shallow = dict_with_deep_array(format, &entries, DEFAULT_MAX_DEPTH - 1);
            let dict = dictionary_from_bytes(&shallow, LIMITS).expect("within the limit");
            assert_eq!(
                dict["MessageType"].as_string(),
                Some("Listen"),
                "{format:?}"
            );
            assert_eq!(
                dict["ProgName"].as_string(),
                Some("a-rather-long-program-name")
            );
            assert_eq!(depth_of(&Value::Dictionary(dict)), DEFAULT_MAX_DEPTH);
        }
    }

    #[test]
    fn the_depth_limit_is_the_callers() {
        let shallow = LIMITS.with_max_depth(3);
        assert!(from_bytes(&xml_nested(3), shallow).is_ok());
        assert!(matches!(
            from_bytes(&xml_nested(4), shallow),
            Err(BoundedPlistError::TooDeep { max: 3 })
        ));
    }

    #[test]
    fn xml_comments_cdata_instructions_and_empty_elements_are_not_nesting() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<!-- <array><array><array> -->
<?cartprep <array><array> ?>
<dict>
  <key>A</key><array><true/><dict/><array/></array>
  <key><![CDATA[<dict><dict>]]></key><string><![CDATA[<array><array><array>]]></string>
</dict>
</plist>"#;
        // dict > array > empty dict: three levels, whatever the comments and strings hold.
        let value = from_bytes(xml, LIMITS.with_max_depth(3)).expect("depth 3 as written");
        let dict = value.as_dictionary().expect("dict");
        assert_eq!(
            dict.get("A").and_then(Value::as_array).map(Vec::len),
            Some(3)
        );
        assert!(matches!(
            from_bytes(xml, LIMITS.with_max_depth(2)),
            Err(BoundedPlistError::TooDeep { max: 2 })
        ));
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        let bytes = xml_nested(1);
        assert!(matches!(
            from_bytes(&bytes, Limits::new(bytes.len() - 1)),
            Err(BoundedPlistError::TooLarge { .. })
        ));
        assert!(from_bytes(&bytes, Limits::new(bytes.len())).is_ok());
    }

    #[test]
    fn binary_reference_cycles_and_bad_offsets_are_malformed() {
        for (what, bytes) in [
            ("cycle", binary_cycle()),
            ("offset past the table", binary_out_of_range_offset()),
            ("reference past the table", binary_out_of_range_reference()),
        ] {
            assert!(
                matches!(
                    from_bytes(&bytes, LIMITS),
                    Err(BoundedPlistError::Malformed(_))
                ),
                "{what}"
            );
        }
    }

    #[test]
    fn a_small_binary_plist_cannot_expand_into_a_huge_tree() {
        // 40 levels, each an array referencing the level below twice: 2^40 values if expanded.
        let bytes = binary_shared_fanout(40);
        assert!(bytes.len() < 1024);
        assert!(matches!(
            from_bytes(&bytes, LIMITS),
            Err(BoundedPlistError::TooManyValues { .. })
        ));
    }

    #[test]
    fn shared_strings_count_against_the_content_budget() {
        let mut dict = Dictionary::new();
        let long = "x".repeat(1000);
        for i in 0..100 {
            dict.insert(format!("k{i}"), Value::String(long.clone()));
        }
        let mut bytes = Vec::new();
        Value::Dictionary(dict)
            .to_writer_binary(&mut bytes)
            .expect("binary");
        // The writer stores the string once; expanded it is 100 000 bytes.
        assert!(bytes.len() < 5_000, "{}", bytes.len());
        assert!(matches!(
            from_bytes(&bytes, Limits::new(50_000)),
            Err(BoundedPlistError::TooMuchContent { max: 50_000 })
        ));
        assert!(from_bytes(&bytes, Limits::new(200_000)).is_ok());
    }

    #[test]
    fn values_round_trip_in_every_format() {
        let mut inner = Dictionary::new();
        inner.insert("Data".into(), Value::Data(vec![0, 1, 2]));
        inner.insert("Real".into(), Value::Real(1.5));
        inner.insert("Neg".into(), Value::Integer((-3).into()));
        let mut dict = Dictionary::new();
        dict.insert("MessageType".into(), "Attached".into());
        dict.insert(
            "List".into(),
            Value::Array(vec![true.into(), Value::Dictionary(inner), "s".into()]),
        );
        let value = Value::Dictionary(dict);
        let mut xml = Vec::new();
        value.to_writer_xml(&mut xml).expect("xml");
        let mut binary = Vec::new();
        value.to_writer_binary(&mut binary).expect("binary");
        assert_eq!(from_bytes(&xml, LIMITS).expect("xml"), value);
        assert_eq!(from_bytes(&binary, LIMITS).expect("binary"), value);
    }

    #[test]
    fn malformed_inputs_are_errors() {
        for (what, bytes) in [
            ("empty", &b""[..]),
            ("truncated xml", b"<plist><dict><key>A</key>"),
            (
                "key without value",
                b"<plist><dict><key>A</key></dict></plist>",
            ),
            ("non-string key", b"<plist><dict><true/></dict></plist>"),
            ("two roots", b"<plist><true/><false/></plist>"),
            ("bad binary", b"bplist00garbage"),
        ] {
            assert!(
                matches!(
                    from_bytes(bytes, LIMITS),
                    Err(BoundedPlistError::Malformed(_))
                ),
                "{what}: {:?}",
                from_bytes(bytes, LIMITS)
            );
        }
    }

    #[test]
    fn dictionary_from_bytes_names_what_it_found() {
        assert!(matches!(
            dictionary_from_bytes(b"<plist><array/></plist>", LIMITS),
            Err(BoundedPlistError::NotADictionary { found: "an array" })
        ));
    }

    #[test]
    fn read_file_refuses_an_oversized_file() {
        let dir = std::env::temp_dir().join(format!("bounded-plist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("big.plist");
        std::fs::write(&path, vec![b' '; 100]).expect("write");
        assert!(matches!(
            read_file(&path, 99),
            Err(BoundedPlistError::TooLarge { len: 100, max: 99 })
        ));
        assert_eq!(read_file(&path, 100).expect("at the limit").len(), 100);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
