//! The subject of an X.509 certificate (DER), as a distinguished name in RFC 2253's form
//! (`CN=client,OU=ops,O=Example,C=US`: the most specific part first, Java's
//! `X500Principal.getName()`, which Kafka's default principal builder uses for TLS client
//! certificates: `User:` + this).
//!
//! Only what that needs is read: the certificate's `tbsCertificate` up to its `subject`,
//! and the subject's attributes. Every length is checked against the bytes there; any
//! malformation is an error, never a panic. Attribute types RFC 2253 names (CN, C, L, ST,
//! O, OU, STREET, DC, UID) are written by name, others as a dotted OID; string values are
//! escaped as RFC 2253 says, other values written `#` and their DER in hex.

/// One DER element: its tag and its contents.
struct Element<'a> {
    tag: u8,
    contents: &'a [u8],
}

/// Reads one element from the front of `bytes`; the rest after it.
fn element(bytes: &[u8]) -> Result<(Element<'_>, &[u8]), String> {
    let (&tag, rest) = bytes.split_first().ok_or("a DER element is missing")?;
    let (&first, rest) = rest.split_first().ok_or("a DER element has no length")?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return Err(format!("a DER length of {count} bytes"));
        }
        let len = rest[..count].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return Err(format!("a DER element of {len} bytes with {} left", rest.len()));
    }
    let (contents, rest) = rest.split_at(len);
    Ok((Element { tag, contents }, rest))
}

/// Reads an element that must have `tag`.
fn expect<'a>(bytes: &'a [u8], tag: u8, what: &str) -> Result<(Element<'a>, &'a [u8]), String> {
    let (e, rest) = element(bytes)?;
    if e.tag != tag {
        return Err(format!("{what}: tag {:#04x}, not {tag:#04x}", e.tag));
    }
    Ok((e, rest))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;

/// The subject of the certificate `der`, in RFC 2253's form.
pub fn subject(der: &[u8]) -> Result<String, String> {
    let (certificate, _) = expect(der, SEQUENCE, "the certificate")?;
    let (tbs, _) = expect(certificate.contents, SEQUENCE, "tbsCertificate")?;
    let mut rest = tbs.contents;
    // version [0] EXPLICIT, optional.
    if rest.first() == Some(&0xa0) {
        rest = element(rest)?.1;
    }
    let (_, rest) = expect(rest, 0x02, "serialNumber")?;
    let (_, rest) = expect(rest, SEQUENCE, "signature")?;
    let (_, rest) = expect(rest, SEQUENCE, "issuer")?;
    let (_, rest) = expect(rest, SEQUENCE, "validity")?;
    let (name, _) = expect(rest, SEQUENCE, "subject")?;
    distinguished_name(name.contents)
}

/// A Name's RDNSequence (its contents) in RFC 2253's form: RDNs last to first, the
/// attributes of one RDN joined with `+`.
fn distinguished_name(mut rdns: &[u8]) -> Result<String, String> {
    let mut parts = Vec::new();
    while !rdns.is_empty() {
        let (rdn, rest) = expect(rdns, SET, "a relative distinguished name")?;
        rdns = rest;
        let mut attributes = Vec::new();
        let mut set = rdn.contents;
        while !set.is_empty() {
            let (pair, rest) = expect(set, SEQUENCE, "an attribute")?;
            set = rest;
            let (oid, value_bytes) = expect(pair.contents, OID, "an attribute type")?;
            let (value, trailing) = element(value_bytes)?;
            if !trailing.is_empty() {
                return Err("bytes after an attribute's value".to_string());
            }
            let (name, known) = attribute_name(oid.contents)?;
            // RFC 2253 (2.4), as Java writes it: a type named by its OID, or a value that
            // is not a string, is the value's DER in hex.
            let text = match string_value(&value).filter(|_| known) {
                Some(text) => escape(&text),
                None => format!("#{}", hex(&value_bytes[..value_bytes.len() - trailing.len()])),
            };
            attributes.push(format!("{name}={text}"));
        }
        if attributes.is_empty() {
            return Err("an empty relative distinguished name".to_string());
        }
        parts.push(attributes.join("+"));
    }
    parts.reverse();
    Ok(parts.join(","))
}

/// RFC 2253's keyword for an attribute type (and `true`), else its dotted OID.
fn attribute_name(oid: &[u8]) -> Result<(String, bool), String> {
    let dotted = dotted(oid)?;
    let known = match dotted.as_str() {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return Ok((dotted, false)),
    };
    Ok((known.to_string(), true))
}

/// An OID's contents as dotted decimal.
fn dotted(oid: &[u8]) -> Result<String, String> {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value: u64 = 0;
    let mut pending = false;
    for &b in oid {
        if value > (u64::MAX >> 7) {
            return Err("an OID arc too large".to_string());
        }
        value = (value << 7) | u64::from(b & 0x7f);
        pending = true;
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - 40 * first);
            } else {
                arcs.push(value);
            }
            value = 0;
            pending = false;
        }
    }
    if pending || arcs.is_empty() {
        return Err("a truncated OID".to_string());
    }
    Ok(arcs.iter().map(u64::to_string).collect::<Vec<_>>().join("."))
}

/// A directory string's text (UTF8String, PrintableString, IA5String, TeletexString as
/// Latin-1, BMPString as UTF-16, UniversalString as UTF-32); `None` for other types.
fn string_value(value: &Element<'_>) -> Option<String> {
    match value.tag {
        0x0c | 0x13 | 0x16 => std::str::from_utf8(value.contents).ok().map(str::to_string),
        0x14 => Some(value.contents.iter().map(|b| char::from(*b)).collect()),
        0x1e => {
            if !value.contents.len().is_multiple_of(2) {
                return None;
            }
            let units: Vec<u16> = value.contents.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            String::from_utf16(&units).ok()
        }
        0x1c => {
            if !value.contents.len().is_multiple_of(4) {
                return None;
            }
            value.contents.chunks(4).map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))).collect()
        }
        _ => None,
    }
}

/// RFC 2253's escaping of a value as Java's `X500Principal` writes it: `,=+<>#;"\`
/// anywhere with a backslash, and a leading or trailing space.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let last = text.chars().count().saturating_sub(1);
    for (i, c) in text.chars().enumerate() {
        let special =
            matches!(c, ',' | '=' | '+' | '<' | '>' | '#' | ';' | '"' | '\\') || ((i == 0 || i == last) && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// DER of one element.
    fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if contents.len() < 0x80 {
            out.push(contents.len() as u8);
        } else {
            out.push(0x82);
            out.extend_from_slice(&(contents.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(contents);
        out
    }

    fn attribute(oid: &[u8], tag: u8, value: &[u8]) -> Vec<u8> {
        tlv(SEQUENCE, &[tlv(OID, oid), tlv(tag, value)].concat())
    }

    fn certificate(name: &[u8]) -> Vec<u8> {
        let tbs = [
            tlv(0xa0, &tlv(0x02, &[2])),
            tlv(0x02, &[1, 2, 3]),
            tlv(SEQUENCE, &tlv(OID, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 4, 3, 2])),
            tlv(SEQUENCE, &[]),
            tlv(SEQUENCE, &[]),
            tlv(SEQUENCE, name),
            tlv(SEQUENCE, &[]),
        ]
        .concat();
        tlv(SEQUENCE, &[tlv(SEQUENCE, &tbs), tlv(SEQUENCE, &[]), tlv(0x03, &[0])].concat())
    }

    const CN: &[u8] = &[0x55, 4, 3];
    const O: &[u8] = &[0x55, 4, 10];
    const C: &[u8] = &[0x55, 4, 6];
    const EMAIL: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 1, 9, 1];

    #[test]
    fn the_subject_reads_most_specific_first_with_rfc_2253_escapes() {
        let name = [
            tlv(SET, &attribute(C, 0x13, b"US")),
            tlv(SET, &attribute(O, 0x0c, b"Acme, Inc.")),
            tlv(SET, &[attribute(CN, 0x0c, b"client"), attribute(EMAIL, 0x16, b"a@b")].concat()),
        ]
        .concat();
        assert_eq!(
            subject(&certificate(&name)).unwrap(),
            "CN=client+1.2.840.113549.1.9.1=#1603614062,O=Acme\\, Inc.,C=US"
        );
        let odd = [tlv(SET, &attribute(CN, 0x0c, b" a=b#c ")), tlv(SET, &attribute(O, 0x02, &[5]))].concat();
        assert_eq!(subject(&certificate(&odd)).unwrap(), "O=#020105,CN=\\ a\\=b\\#c\\ ");
        let bmp = tlv(SET, &attribute(CN, 0x1e, &[0, b'h', 0, b'i']));
        assert_eq!(subject(&certificate(&bmp)).unwrap(), "CN=hi");
    }

    /// A certificate openssl made (`openssl req -x509 -subj "/C=US/O=Acme, Inc./OU=ops/CN=client"`),
    /// kept in the fuzzing corpus.
    #[test]
    fn an_openssl_certificate_reads_as_java_writes_it() {
        let der = include_bytes!("../../fuzz/corpus/certificate_subject/openssl-client");
        assert_eq!(subject(der).unwrap(), "CN=client,OU=ops,O=Acme\\, Inc.,C=US");
    }

    #[test]
    fn malformed_certificates_are_errors_not_panics() {
        let good = certificate(&tlv(SET, &attribute(CN, 0x0c, b"client")));
        for cut in 0..good.len() {
            assert!(subject(&good[..cut]).is_err(), "cut at {cut}");
        }
        for bad in [&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff][..], &[0x30, 0x80], &[0x31, 0], &[]] {
            assert!(subject(bad).is_err(), "{bad:?}");
        }
        let empty_rdn = certificate(&tlv(SET, &[]));
        assert!(subject(&empty_rdn).is_err());
        assert!(dotted(&[0x86]).is_err(), "a truncated arc");
        assert_eq!(dotted(&[0x55, 4, 3]).unwrap(), "2.5.4.3");
    }
}
