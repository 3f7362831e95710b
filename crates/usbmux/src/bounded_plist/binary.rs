//! Walks a binary plist's object graph without recursion and measures what the parser would
//! build from it: nesting depth, number of values and bytes of strings and data, each counted
//! once per place an object is referenced.
//!
//! Layout (bplist00): the magic, the objects, a table of object offsets, and a 32-byte trailer
//! (6 unused bytes, offset size, reference size, object count, root object, table offset).
//! Arrays and dictionaries hold references (indexes into the offset table) to their members.

use super::{BoundedPlistError, Limits};

pub(super) const MAGIC: &[u8] = b"bplist00";
const TRAILER_LEN: usize = 32;

/// What one object expands to.
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    /// Collections on the deepest path, this one included.
    depth: usize,
    values: usize,
    content: usize,
}

/// A collection whose members are being measured.
struct Open {
    object: usize,
    members: Vec<usize>,
    next: usize,
    size: Size,
}

#[derive(Clone, Copy)]
enum Mark {
    New,
    /// On the current path: meeting it again is a cycle.
    Open,
    Done(Size),
}

pub(super) fn check(bytes: &[u8], limits: Limits) -> Result<(), BoundedPlistError> {
    let table = Table::read(bytes)?;
    let mut marks = vec![Mark::New; table.count];
    let mut path: Vec<Open> = Vec::new();
    let root_size = match table.object(table.root)? {
        Object::Scalar(size) => size,
        Object::Collection(members) => {
            marks[table.root] = Mark::Open;
            path.push(open(table.root, members, limits)?);
            loop {
                let Some(top) = path.last_mut() else {
                    unreachable!("the loop returns when the root closes")
                };
                let Some(&member) = top.members.get(top.next) else {
                    // Every member measured: close this collection.
                    let Some(done) = path.pop() else {
                        unreachable!("checked by last_mut above")
                    };
                    marks[done.object] = Mark::Done(done.size);
                    let depth = path.len();
                    match path.last_mut() {
                        Some(parent) => add(&mut parent.size, done.size, depth, limits)?,
                        None => break done.size,
                    }
                    continue;
                };
                top.next += 1;
                let member = table.index(member as u64)?;
                match marks[member] {
                    Mark::Open => {
                        return Err(malformed("an object contains itself (reference cycle)"));
                    }
                    Mark::Done(size) => {
                        let depth = path.len();
                        if let Some(top) = path.last_mut() {
                            add(&mut top.size, size, depth, limits)?;
                        }
                    }
                    Mark::New => match table.object(member)? {
                        Object::Scalar(size) => {
                            marks[member] = Mark::Done(size);
                            let depth = path.len();
                            if let Some(top) = path.last_mut() {
                                add(&mut top.size, size, depth, limits)?;
                            }
                        }
                        Object::Collection(members) => {
                            if path.len() >= limits.max_depth {
                                return Err(BoundedPlistError::TooDeep {
                                    max: limits.max_depth,
                                });
                            }
                            marks[member] = Mark::Open;
                            path.push(open(member, members, limits)?);
                        }
                    },
                }
            }
        }
    };
    within(root_size, 0, limits)
}

fn open(object: usize, members: Vec<usize>, limits: Limits) -> Result<Open, BoundedPlistError> {
    let size = Size {
        depth: 1,
        values: 1,
        content: 0,
    };
    within(size, 0, limits)?;
    Ok(Open {
        object,
        members,
        next: 0,
        size,
    })
}

/// Adds a member's size to its collection's, `depth` collections below the top.
fn add(
    total: &mut Size,
    member: Size,
    depth: usize,
    limits: Limits,
) -> Result<(), BoundedPlistError> {
    total.depth = total.depth.max(member.depth + 1);
    total.values = total.values.saturating_add(member.values);
    total.content = total.content.saturating_add(member.content);
    within(*total, depth.saturating_sub(1), limits)
}

/// Whether an object of `size`, nested in `above` collections, fits the limits.
fn within(size: Size, above: usize, limits: Limits) -> Result<(), BoundedPlistError> {
    if above + size.depth > limits.max_depth {
        return Err(BoundedPlistError::TooDeep {
            max: limits.max_depth,
        });
    }
    if size.values > limits.max_values {
        return Err(BoundedPlistError::TooManyValues {
            max: limits.max_values,
        });
    }
    if size.content > limits.max_bytes {
        return Err(BoundedPlistError::TooMuchContent {
            max: limits.max_bytes,
        });
    }
    Ok(())
}

enum Object {
    Scalar(Size),
    /// Member object indexes (a dictionary's keys, then its values).
    Collection(Vec<usize>),
}

struct Table<'a> {
    /// The file up to the trailer: every object and the offset table lie inside it.
    body: &'a [u8],
    offset_size: usize,
    ref_size: usize,
    count: usize,
    root: usize,
    table_start: usize,
}

impl<'a> Table<'a> {
    fn read(bytes: &'a [u8]) -> Result<Self, BoundedPlistError> {
        let trailer_start = bytes
            .len()
            .checked_sub(TRAILER_LEN)
            .filter(|&start| start >= MAGIC.len())
            .ok_or_else(|| malformed("too short for a binary plist"))?;
        let body = &bytes[..trailer_start];
        let trailer = &bytes[trailer_start..];
        let size = |b: u8| match b {
            1 | 2 | 3 | 4 | 8 => Ok(usize::from(b)),
            _ => Err(malformed("bad offset or reference size in the trailer")),
        };
        let offset_size = size(trailer[6])?;
        let ref_size = size(trailer[7])?;
        let u64_at = |at: usize| be(&trailer[at..at + 8]);
        let count = u64_at(8);
        let root = u64_at(16);
        let table_start = u64_at(24);
        // The offset table must fit before the trailer, which also bounds the object count by
        // the file size.
        let table_len = count.checked_mul(offset_size as u64);
        let table_end = table_len.and_then(|len| table_start.checked_add(len));
        if table_end.is_none_or(|end| end > body.len() as u64) {
            return Err(malformed("the offset table lies outside the file"));
        }
        let count = usize::try_from(count).map_err(|_| malformed("object count"))?;
        let table_start = usize::try_from(table_start).map_err(|_| malformed("table offset"))?;
        let mut table = Table {
            body,
            offset_size,
            ref_size,
            count,
            root: 0,
            table_start,
        };
        table.root = table.index(root)?;
        Ok(table)
    }

    /// A reference, checked against the object count.
    fn index(&self, reference: u64) -> Result<usize, BoundedPlistError> {
        usize::try_from(reference)
            .ok()
            .filter(|&i| i < self.count)
            .ok_or_else(|| malformed("a reference points past the object table"))
    }

    fn object(&self, index: usize) -> Result<Object, BoundedPlistError> {
        let entry = self.table_start + index * self.offset_size;
        let offset = be(&self.body[entry..entry + self.offset_size]);
        let mut at = usize::try_from(offset)
            .ok()
            .filter(|&o| o < self.body.len())
            .ok_or_else(|| malformed("an object offset points past the objects"))?;
        let marker = self.body[at];
        at += 1;
        let (kind, low) = (marker >> 4, marker & 0x0f);
        let scalar = |content: usize| {
            Object::Scalar(Size {
                depth: 0,
                values: 1,
                content,
            })
        };
        Ok(match kind {
            // Data and ASCII strings: one byte each; UTF-16 strings: up to 3 bytes of UTF-8 per
            // unit once decoded.
            0x4..=0x6 => {
                let len = self.length(low, &mut at)?;
                let (unit, grows) = if kind == 0x6 { (2, 3) } else { (1, 1) };
                self.span(at, len, unit)?;
                scalar(len.saturating_mul(grows))
            }
            0xA | 0xD => {
                let len = self.length(low, &mut at)?;
                let refs = if kind == 0xD {
                    len.checked_mul(2)
                        .ok_or_else(|| malformed("dictionary length"))?
                } else {
                    len
                };
                let members = self.span(at, refs, self.ref_size)?;
                let members = members
                    .chunks_exact(self.ref_size)
                    .map(|r| self.index(be(r)))
                    .collect::<Result<Vec<_>, _>>()?;
                Object::Collection(members)
            }
            // Booleans, integers, reals, dates, UIDs: fixed sizes, checked by the parser.
            _ => scalar(0),
        })
    }

    /// A length in the marker's low bits, or (0xF) in the integer object that follows.
    fn length(&self, low: u8, at: &mut usize) -> Result<usize, BoundedPlistError> {
        if low != 0x0f {
            return Ok(usize::from(low));
        }
        let marker = *self
            .body
            .get(*at)
            .ok_or_else(|| malformed("truncated length"))?;
        let width = 1usize << (marker & 0x03);
        let bytes = self.span(*at + 1, width, 1)?;
        *at += 1 + width;
        usize::try_from(be(bytes)).map_err(|_| malformed("length"))
    }

    /// `count` items of `unit` bytes at `at`, which must lie before the trailer.
    fn span(&self, at: usize, count: usize, unit: usize) -> Result<&'a [u8], BoundedPlistError> {
        count
            .checked_mul(unit)
            .and_then(|len| at.checked_add(len))
            .and_then(|end| self.body.get(at..end))
            .ok_or_else(|| malformed("an object runs past the objects"))
    }
}

/// A big-endian unsigned integer of 1 to 8 bytes.
fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |n, &b| (n << 8) | u64::from(b))
}

fn malformed(what: &str) -> BoundedPlistError {
    BoundedPlistError::Malformed(format!("binary plist: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{
        binary_cycle, binary_nested, binary_out_of_range_offset, binary_out_of_range_reference,
        binary_shared_fanout,
    };

    const LIMITS: Limits = Limits::new(1 << 20);

    fn outcome(bytes: &[u8], limits: Limits) -> &'static str {
        match check(bytes, limits) {
            Ok(()) => "ok",
            Err(BoundedPlistError::TooDeep { .. }) => "too deep",
            Err(BoundedPlistError::TooManyValues { .. }) => "too many values",
            Err(BoundedPlistError::TooMuchContent { .. }) => "too much content",
            Err(BoundedPlistError::Malformed(_)) => "malformed",
            Err(_) => "other",
        }
    }

    #[test]
    fn walks_object_graphs() {
        let cases: &[(&str, Vec<u8>, Limits, &str)] = &[
            ("64 levels", binary_nested(64), LIMITS, "ok"),
            ("65 levels", binary_nested(65), LIMITS, "too deep"),
            ("10 000 levels", binary_nested(10_000), LIMITS, "too deep"),
            (
                "3 levels, limit 3",
                binary_nested(3),
                LIMITS.with_max_depth(3),
                "ok",
            ),
            (
                "4 levels, limit 3",
                binary_nested(4),
                LIMITS.with_max_depth(3),
                "too deep",
            ),
            (
                "array containing itself",
                binary_cycle(),
                LIMITS,
                "malformed",
            ),
            (
                "reference past the table",
                binary_out_of_range_reference(),
                LIMITS,
                "malformed",
            ),
            (
                "offset past the objects",
                binary_out_of_range_offset(),
                LIMITS,
                "malformed",
            ),
            (
                "2^10 shared, limit 2^11",
                binary_shared_fanout(10),
                LIMITS.with_max_values(1 << 11),
                "ok",
            ),
            (
                "2^20 shared, limit 2^11",
                binary_shared_fanout(20),
                LIMITS.with_max_values(1 << 11),
                "too many values",
            ),
            (
                "2^60 shared",
                binary_shared_fanout(60),
                LIMITS,
                "too many values",
            ),
            (
                "shorter than the trailer",
                b"bplist00".to_vec(),
                LIMITS,
                "malformed",
            ),
        ];
        for (what, bytes, limits, expected) in cases {
            assert_eq!(outcome(bytes, *limits), *expected, "{what}");
        }
    }

    #[test]
    fn shared_levels_count_once_per_reference() {
        // levels L: 2^L - 1 arrays in the expanded tree.
        let bytes = binary_shared_fanout(10);
        assert_eq!(outcome(&bytes, LIMITS.with_max_values(1023)), "ok");
        assert_eq!(
            outcome(&bytes, LIMITS.with_max_values(1022)),
            "too many values"
        );
    }

    #[test]
    fn agrees_with_the_parser_on_what_it_writes() {
        let mut inner = plist::Dictionary::new();
        inner.insert("Data".into(), plist::Value::Data(vec![7; 300]));
        inner.insert("Text".into(), "é".repeat(20).into());
        inner.insert("Int".into(), 1_000_000u64.into());
        let value = plist::Value::Array(vec![
            plist::Value::Dictionary(inner),
            true.into(),
            plist::Value::Array((0..20u64).map(Into::into).collect()),
        ]);
        let mut bytes = Vec::new();
        value.to_writer_binary(&mut bytes).expect("binary");
        assert_eq!(outcome(&bytes, LIMITS), "ok");
        assert_eq!(outcome(&bytes, LIMITS.with_max_depth(2)), "ok");
        assert_eq!(outcome(&bytes, LIMITS.with_max_depth(1)), "too deep");
    }
}
