//! Hostile plists for tests of every parser entry point (usbmux frames, lockdownd messages,
//! pair records, profiles…), built here once. Enabled by the `test-support` feature.

/// A binary plist of `depth` arrays, each holding the next; the innermost is empty.
pub fn binary_nested(depth: usize) -> Vec<u8> {
    let depth = depth.max(1);
    let objects = (0..depth)
        .map(|i| {
            if i + 1 < depth {
                Object::Array(vec![i + 1])
            } else {
                Object::Array(vec![])
            }
        })
        .collect();
    binary(objects, 0)
}

/// An XML plist of `depth` nested arrays.
pub fn xml_nested(depth: usize) -> Vec<u8> {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \
         \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n<plist version=\"1.0\">",
    );
    out.push_str(&"<array>".repeat(depth));
    out.push_str(&"</array>".repeat(depth));
    out.push_str("</plist>\n");
    out.into_bytes()
}

/// An XML plist of `depth` opening `<array>` tags and nothing else: the shape of an attack that
/// must fit in a 64 KiB usbmuxd request (9 000 levels do); the depth limit stops it long before
/// the missing end tags matter.
pub fn xml_nested_open(depth: usize) -> Vec<u8> {
    let mut out = String::from("<?xml version=\"1.0\"?><plist version=\"1.0\">");
    out.push_str(&"<array>".repeat(depth));
    out.into_bytes()
}

/// An OpenStep (ASCII) plist of `depth` nested arrays: `((…))`.
pub fn openstep_nested(depth: usize) -> Vec<u8> {
    let mut out = "(".repeat(depth);
    out.push_str(&")".repeat(depth));
    out.into_bytes()
}

/// The binary and the XML plist of `depth` nested arrays, named, for tests that feed both.
pub fn nested_plists(depth: usize) -> [(&'static str, Vec<u8>); 2] {
    [("binary", binary_nested(depth)), ("xml", xml_nested(depth))]
}

/// A binary plist whose only array contains itself.
pub fn binary_cycle() -> Vec<u8> {
    binary(vec![Object::Array(vec![0])], 0)
}

/// A binary plist whose only array references object 5 of 1.
pub fn binary_out_of_range_reference() -> Vec<u8> {
    binary(vec![Object::Array(vec![5])], 0)
}

/// A binary plist whose offset table points past the object area.
pub fn binary_out_of_range_offset() -> Vec<u8> {
    let mut bytes = binary(vec![Object::Array(vec![])], 0);
    // The offset table (one 2-byte entry) sits right before the 32-byte trailer.
    let entry = bytes.len() - 32 - 2;
    bytes[entry..entry + 2].copy_from_slice(&0xFFF0u16.to_be_bytes());
    bytes
}

/// A binary plist of `levels` arrays, each referencing the next one twice: a few bytes that
/// expand into 2^levels values.
pub fn binary_shared_fanout(levels: usize) -> Vec<u8> {
    let levels = levels.max(1);
    let objects = (0..levels)
        .map(|i| {
            if i + 1 < levels {
                Object::Array(vec![i + 1, i + 1])
            } else {
                Object::Array(vec![])
            }
        })
        .collect();
    binary(objects, 0)
}

enum Object {
    /// References to other objects by index (fewer than 15).
    Array(Vec<usize>),
    /// Key and value references (fewer than 15 pairs).
    Dict(Vec<(usize, usize)>),
    /// An ASCII string (shorter than 15 bytes, or up to 255 with a length byte).
    Ascii(String),
}

/// Wire formats the builders produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Binary,
    Xml,
}

/// A dictionary of the string `entries` plus `"Deep"`: `depth` nested arrays. Well formed, so
/// a reader without a depth bound would accept it as a valid message; XML takes 15 bytes a
/// level, binary 5.
pub fn dict_with_deep_array(format: Format, entries: &[(&str, &str)], depth: usize) -> Vec<u8> {
    match format {
        Format::Xml => {
            let mut out = String::from(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict>",
            );
            for (k, v) in entries {
                out.push_str(&format!("<key>{k}</key><string>{v}</string>"));
            }
            out.push_str("<key>Deep</key>");
            out.push_str(&"<array>".repeat(depth));
            out.push_str(&"</array>".repeat(depth));
            out.push_str("</dict></plist>\n");
            out.into_bytes()
        }
        Format::Binary => {
            // Object 0: the dict; then key and value strings; then "Deep" and its arrays.
            let mut objects = vec![Object::Dict(Vec::new())];
            let mut pairs = Vec::new();
            for (k, v) in entries {
                pairs.push((objects.len(), objects.len() + 1));
                objects.push(Object::Ascii((*k).to_owned()));
                objects.push(Object::Ascii((*v).to_owned()));
            }
            pairs.push((objects.len(), objects.len() + 1));
            objects.push(Object::Ascii("Deep".into()));
            let first = objects.len();
            for i in 0..depth.max(1) {
                objects.push(if i + 1 < depth {
                    Object::Array(vec![first + i + 1])
                } else {
                    Object::Array(vec![])
                });
            }
            objects[0] = Object::Dict(pairs);
            binary(objects, 0)
        }
    }
}

fn reference(index: usize) -> [u8; 2] {
    u16::try_from(index)
        .expect("fits 2-byte references")
        .to_be_bytes()
}

/// Lays out `objects` as a bplist00 file with 2-byte object references and offsets (compact
/// enough for 10 000 levels to fit in one 64 KiB usbmuxd request).
fn binary(objects: Vec<Object>, root: usize) -> Vec<u8> {
    const REF_SIZE: u8 = 2;
    const OFFSET_SIZE: u8 = 2;
    let mut out = b"bplist00".to_vec();
    let mut offsets = Vec::with_capacity(objects.len());
    for object in &objects {
        offsets.push(u16::try_from(out.len()).expect("fits 2-byte offsets"));
        match object {
            Object::Array(refs) => {
                assert!(refs.len() < 15, "short arrays only");
                out.push(0xA0 | refs.len() as u8);
                for r in refs {
                    out.extend_from_slice(&reference(*r));
                }
            }
            Object::Dict(pairs) => {
                assert!(pairs.len() < 15, "short dictionaries only");
                out.push(0xD0 | pairs.len() as u8);
                for (k, _) in pairs {
                    out.extend_from_slice(&reference(*k));
                }
                for (_, v) in pairs {
                    out.extend_from_slice(&reference(*v));
                }
            }
            Object::Ascii(text) => {
                assert!(
                    text.is_ascii() && text.len() < 256,
                    "short ASCII strings only"
                );
                if text.len() < 15 {
                    out.push(0x50 | text.len() as u8);
                } else {
                    out.extend_from_slice(&[0x5F, 0x10, text.len() as u8]);
                }
                out.extend_from_slice(text.as_bytes());
            }
        }
    }
    let table = out.len() as u64;
    for offset in offsets {
        out.extend_from_slice(&offset.to_be_bytes());
    }
    out.extend_from_slice(&[0; 6]);
    out.push(OFFSET_SIZE);
    out.push(REF_SIZE);
    out.extend_from_slice(&(objects.len() as u64).to_be_bytes());
    out.extend_from_slice(&(root as u64).to_be_bytes());
    out.extend_from_slice(&table.to_be_bytes());
    out
}
