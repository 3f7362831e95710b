//! A minimal BER reader for the one thing the DER-only `cms` crate cannot do: read the content
//! and certificates of a SignedData encoded with indefinite lengths and chunked (constructed)
//! OCTET STRINGs, as macOS `security cms` and OpenSSL's streaming mode write them. It also gives
//! the certificates in wire order. No signature is checked here.

/// Nesting deeper than this is refused (CMS needs about 6 levels).
const MAX_DEPTH: usize = 32;

const OID_SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];

/// What [`signed_data`] extracts.
pub(crate) struct BerSignedData {
    /// eContent bytes (chunks joined), or `None` for detached content.
    pub content: Option<Vec<u8>>,
    /// Each certificate's encoding, in wire order.
    pub certificates: Vec<Vec<u8>>,
}

/// One element: identifier octet, and its contents (without an end-of-contents marker).
#[derive(Clone, Copy)]
struct Element<'a> {
    tag: u8,
    contents: &'a [u8],
    /// The whole encoding (identifier, length, contents, end-of-contents).
    raw: &'a [u8],
}

/// Reads a CMS ContentInfo holding a SignedData; `None` if the bytes are not one.
pub(crate) fn signed_data(bytes: &[u8]) -> Option<BerSignedData> {
    let (content_info, _) = element(bytes, 0)?;
    if content_info.tag != 0x30 {
        return None;
    }
    let mut ci = children(content_info.contents, 1)?.into_iter();
    let oid = ci.next()?;
    if oid.tag != 0x06 || oid.contents != OID_SIGNED_DATA {
        return None;
    }
    let explicit = ci.next()?;
    if explicit.tag != 0xa0 {
        return None;
    }
    let signed = *children(explicit.contents, 2)?.first()?;
    if signed.tag != 0x30 {
        return None;
    }
    let fields = children(signed.contents, 3)?;
    // version INTEGER, digestAlgorithms SET, encapContentInfo SEQUENCE, [0] certificates, …
    let encap = fields.get(2)?;
    if fields.first()?.tag != 0x02 || fields.get(1)?.tag != 0x31 || encap.tag != 0x30 {
        return None;
    }
    let encap_fields = children(encap.contents, 4)?;
    if encap_fields.first()?.tag != 0x06 {
        return None;
    }
    let content = match encap_fields.get(1) {
        Some(explicit) if explicit.tag == 0xa0 => {
            let octets = *children(explicit.contents, 5)?.first()?;
            Some(octet_string(octets, 6)?)
        }
        Some(_) => return None,
        None => None,
    };
    let certificates = match fields.get(3) {
        Some(certs) if certs.tag == 0xa0 => children(certs.contents, 4)?
            .into_iter()
            .map(|c| c.raw.to_vec())
            .collect(),
        _ => Vec::new(),
    };
    Some(BerSignedData {
        content,
        certificates,
    })
}

/// The bytes of an OCTET STRING, primitive or constructed (chunks joined).
fn octet_string(e: Element<'_>, depth: usize) -> Option<Vec<u8>> {
    match e.tag {
        0x04 => Some(e.contents.to_vec()),
        0x24 if depth < MAX_DEPTH => {
            let mut out = Vec::new();
            for chunk in children(e.contents, depth + 1)? {
                out.extend(octet_string(chunk, depth + 1)?);
            }
            Some(out)
        }
        _ => None,
    }
}

/// The elements inside a constructed element's contents.
fn children(mut contents: &[u8], depth: usize) -> Option<Vec<Element<'_>>> {
    let mut out = Vec::new();
    while !contents.is_empty() {
        let (e, rest) = element(contents, depth)?;
        out.push(e);
        contents = rest;
    }
    Some(out)
}

/// Reads one element at the start of `input`; returns it and the rest.
fn element(input: &[u8], depth: usize) -> Option<(Element<'_>, &[u8])> {
    if depth > MAX_DEPTH {
        return None;
    }
    let tag = *input.first()?;
    if tag & 0x1f == 0x1f {
        return None; // high tag numbers do not occur in CMS
    }
    let first_len = *input.get(1)?;
    let mut pos = 2usize;
    if first_len == 0x80 {
        // Indefinite length: constructed only, ends with 00 00 at this level.
        if tag & 0x20 == 0 {
            return None;
        }
        let start = pos;
        loop {
            let rest = input.get(pos..)?;
            if rest.starts_with(&[0, 0]) {
                let contents = &input[start..pos];
                let end = pos + 2;
                let e = Element {
                    tag,
                    contents,
                    raw: &input[..end],
                };
                return Some((e, &input[end..]));
            }
            let (_, after) = element(rest, depth + 1)?;
            pos = input.len() - after.len();
        }
    }
    let len = if first_len & 0x80 == 0 {
        usize::from(first_len)
    } else {
        let n = usize::from(first_len & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*input.get(pos + i)?);
        }
        pos += n;
        len
    };
    let end = pos.checked_add(len)?;
    let contents = input.get(pos..end)?;
    let e = Element {
        tag,
        contents,
        raw: &input[..end],
    };
    Some((e, &input[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ContentInfo { signedData, [0] SignedData { 1, {}, { id-data, [0] OCTET STRING },
    /// [0] { cert } , {} } } written with indefinite lengths and a chunked content.
    fn ber_signed(chunks: &[&[u8]], cert: &[u8]) -> Vec<u8> {
        let mut octets = vec![0x24, 0x80];
        for c in chunks {
            octets.push(0x04);
            octets.push(c.len() as u8);
            octets.extend_from_slice(c);
        }
        octets.extend_from_slice(&[0, 0]);
        let mut encap = vec![0x30, 0x80, 0x06, 0x09];
        encap.extend_from_slice(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01]);
        encap.extend_from_slice(&[0xa0, 0x80]);
        encap.extend(octets);
        encap.extend_from_slice(&[0, 0, 0, 0]);
        let mut sd = vec![0x30, 0x80, 0x02, 0x01, 0x01, 0x31, 0x00];
        sd.extend(encap);
        sd.extend_from_slice(&[0xa0, 0x80]);
        sd.extend_from_slice(cert);
        sd.extend_from_slice(&[0, 0]);
        sd.extend_from_slice(&[0x31, 0x00, 0, 0]);
        let mut ci = vec![0x30, 0x80, 0x06, 0x09];
        ci.extend_from_slice(OID_SIGNED_DATA);
        ci.extend_from_slice(&[0xa0, 0x80]);
        ci.extend(sd);
        ci.extend_from_slice(&[0, 0, 0, 0]);
        ci
    }

    #[test]
    fn indefinite_lengths_and_chunks() {
        let cert = [0x30, 0x03, 0x02, 0x01, 0x07];
        let ber = ber_signed(&[b"<plist>", b"\r\n", b"</plist>"], &cert);
        let s = signed_data(&ber).expect("parsed");
        assert_eq!(s.content.as_deref(), Some(&b"<plist>\r\n</plist>"[..]));
        assert_eq!(s.certificates, vec![cert.to_vec()]);
    }

    #[test]
    fn truncated_or_wrong_input_is_none() {
        let ber = ber_signed(&[b"abc"], &[0x30, 0x00]);
        for cut in 0..ber.len() - 1 {
            assert!(signed_data(&ber[..cut]).is_none(), "cut at {cut}");
        }
        assert!(signed_data(b"").is_none());
        assert!(signed_data(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
        // Deep nesting is refused without overflowing the stack.
        let mut deep = Vec::new();
        for _ in 0..10_000 {
            deep.extend_from_slice(&[0x30, 0x80]);
        }
        assert!(signed_data(&deep).is_none());
    }
}
