//! One page of a `ListObjectsV2` answer, read for the three things the agent uses.
//!
//! rusty-s3 signs the request and can parse this answer too, into every field S3
//! lists (modification time, storage class, owner), each its own allocation. At
//! 5,000 images a listing is some 20,000 objects, and that parse was most of the S3
//! phase of a steady scan (BENCHMARKS.md, "The steady scan at 5,000"). This reads the
//! page with quick-xml's borrowing reader and keeps only the key, the ETag and the
//! size. The rules are rusty-s3's, and the tests hold the two to the same answer:
//!
//! - a key is required in each `<Contents>`; a size, when given, must be a number;
//! - `<IsTruncated>true</IsTruncated>` without a non-empty `<NextContinuationToken>`
//!   is an error (following nothing would end the listing early);
//!   `<IsTruncated>false</IsTruncated>` ends the listing whatever token is given;
//! - with `<EncodingType>url</EncodingType>` (the agent always asks for it) each key
//!   is decoded as a form does (`+` is a space, then `%XX`); a key that does not
//!   decode to UTF-8 is kept as listed.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;
use quick_xml::escape::unescape;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::inventory::{strip_etag_quotes, S3Object};

/// Appends the page's objects to `out` and returns the token of the next page, if
/// the listing goes on. On error `out` may hold part of the page; the caller drops
/// the whole listing then.
pub fn parse_page(xml: &str, out: &mut Vec<S3Object>) -> Result<Option<String>, String> {
    let mut page = Page::new(xml);
    page.head()?;
    page.rest(out)
}

/// A page read in two steps, so that the next page can be asked for while this one
/// is read: [`Page::head`] reads up to the first object and tells the token the page
/// names before it (AWS S3 and recent Ceph RGW releases write it there; moto and older
/// RGW releases write it after the objects), [`Page::rest`] reads the objects and
/// gives the page's answer, which is the one to follow.
pub struct Page<'x> {
    reader: Reader<&'x [u8]>,
    fields: PageFields,
    /// The first `<Contents>`, read by [`Page::head`].
    first: Option<S3Object>,
    /// Whether `</ListBucketResult>` has been read.
    ended: bool,
}

impl<'x> Page<'x> {
    pub fn new(xml: &'x str) -> Page<'x> {
        let mut reader = Reader::from_str(xml);
        reader.config_mut().expand_empty_elements = true;
        Page {
            reader,
            fields: PageFields::default(),
            first: None,
            ended: false,
        }
    }

    /// Reads up to the first object and returns the next page's token as far as
    /// the page has said by then: a guess, which [`Page::rest`] may overrule (an
    /// `<IsTruncated>false</IsTruncated>` after the objects, say).
    pub fn head(&mut self) -> Result<Option<String>, String> {
        loop {
            match next(&mut self.reader)? {
                Event::Start(root) if root.local_name().as_ref() == "ListBucketResult" => break,
                Event::Start(other) => {
                    return Err(format!(
                        "expected <ListBucketResult>, found <{}>",
                        other.name().as_ref()
                    ))
                }
                Event::Eof => return Err("no <ListBucketResult> element".into()),
                _ => {}
            }
        }
        self.first = self.read_root()?;
        Ok(self.fields.next().ok().flatten().map(str::to_string))
    }

    /// Reads the rest of the page: appends its objects to `out`, keys decoded, and
    /// returns the token of the next page, if the listing goes on.
    pub fn rest(mut self, out: &mut Vec<S3Object>) -> Result<Option<String>, String> {
        let first = out.len();
        out.extend(self.first.take());
        if !self.ended {
            while let Some(object) = self.read_root()? {
                out.push(object);
            }
        }
        if self.fields.encoding_type.as_deref() == Some("url") {
            for object in &mut out[first..] {
                url_decode_in_place(&mut object.key);
            }
        }
        self.fields.next().map(|t| t.map(str::to_string))
    }

    /// The children of `<ListBucketResult>` up to the next object, which it returns;
    /// `None` at `</ListBucketResult>`.
    fn read_root(&mut self) -> Result<Option<S3Object>, String> {
        let reader = &mut self.reader;
        let page = &mut self.fields;
        loop {
            match next(reader)? {
                Event::Start(e) => match e.local_name().as_ref() {
                    "Contents" => return read_contents(reader).map(Some),
                    "IsTruncated" => {
                        let text = leaf_text(reader, &e)?;
                        page.is_truncated = Some(parse_bool(&text)?);
                    }
                    "NextContinuationToken" => {
                        page.next_token = Some(leaf_text(reader, &e)?.into_owned())
                    }
                    "EncodingType" => {
                        page.encoding_type = Some(leaf_text(reader, &e)?.into_owned())
                    }
                    _ => skip(reader, &e)?,
                },
                Event::End(_) => {
                    self.ended = true;
                    return Ok(None);
                }
                Event::Eof => return Err("the page ends before </ListBucketResult>".into()),
                _ => {}
            }
        }
    }
}

/// What the page says about the listing as a whole.
#[derive(Default)]
struct PageFields {
    is_truncated: Option<bool>,
    next_token: Option<String>,
    encoding_type: Option<String>,
}

impl PageFields {
    /// The next page's token, by what has been read: none once the page says the
    /// listing is not truncated, nor for an empty one; an error for a truncated page
    /// that names none.
    fn next(&self) -> Result<Option<&str>, String> {
        match (self.is_truncated, self.next_token.as_deref()) {
            (Some(false), _) => Ok(None),
            (_, Some(token)) if !token.is_empty() => Ok(Some(token)),
            (Some(true), _) => Err("a truncated page without a NextContinuationToken".into()),
            (None, _) => Ok(None),
        }
    }
}

/// One `<Contents>`, up to its end tag.
fn read_contents(reader: &mut Reader<&[u8]>) -> Result<S3Object, String> {
    let mut key = None;
    let mut etag = String::new();
    let mut size = 0;
    loop {
        match next(reader)? {
            Event::Start(e) => match e.local_name().as_ref() {
                "Key" => key = Some(leaf_text(reader, &e)?.into_owned()),
                "ETag" => etag = strip_etag_quotes(&leaf_text(reader, &e)?).to_string(),
                "Size" => {
                    let text = leaf_text(reader, &e)?;
                    size = text
                        .trim()
                        .parse()
                        .map_err(|_| format!("<Size> is not a byte count: {text:?}"))?;
                }
                _ => skip(reader, &e)?,
            },
            Event::End(_) => break,
            Event::Eof => return Err("the page ends inside <Contents>".into()),
            _ => {}
        }
    }
    let key = key.ok_or("a <Contents> without a <Key>")?;
    Ok(S3Object { key, etag, size })
}

/// The text of an element that holds only text, entities resolved.
fn leaf_text<'x>(
    reader: &mut Reader<&'x [u8]>,
    start: &BytesStart,
) -> Result<Cow<'x, str>, String> {
    let what = start.name();
    let raw = reader
        .read_text(what)
        .map_err(|e| format!("<{}>: {e}", what.as_ref()))?
        .into_inner();
    if raw.contains('<') {
        return Err(format!("<{}> holds markup, not text", what.as_ref()));
    }
    match raw {
        Cow::Borrowed(raw) => unescape(raw),
        Cow::Owned(raw) => unescape(&raw).map(|s| Cow::Owned(s.into_owned())),
    }
    .map_err(|e| format!("<{}>: {e}", what.as_ref()))
}

/// Steps over an element the agent does not read, children included.
fn skip(reader: &mut Reader<&[u8]>, start: &BytesStart) -> Result<(), String> {
    reader
        .read_to_end(start.name())
        .map(drop)
        .map_err(|e| format!("<{}>: {e}", start.name().as_ref()))
}

fn next<'x>(reader: &mut Reader<&'x [u8]>) -> Result<Event<'x>, String> {
    reader
        .read_event()
        .map_err(|e| format!("{e} (at byte {})", reader.error_position()))
}

/// `xs:boolean`, as S3 and instant-xml write and read it.
fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(format!("<IsTruncated> is not a boolean: {other:?}")),
    }
}

/// A key as `encoding-type=url` lists it, decoded as rusty-s3 decodes it: `+` is a
/// space (AWS and MinIO encode like a form), then `%XX`; left as listed if the bytes
/// are not UTF-8.
fn url_decode_in_place(key: &mut String) {
    if !key.contains(['+', '%']) {
        return;
    }
    let plus_decoded = key.replace('+', " ");
    if let Ok(decoded) = percent_decode_str(&plus_decoded).decode_utf8() {
        *key = decoded.into_owned();
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rusty_s3::actions::ListObjectsV2;

    use super::*;

    /// One listed object as the test writes it.
    #[derive(Debug, Clone)]
    struct Listed {
        key: String,
        etag: String,
        size: Option<u64>,
        owner: bool,
    }

    /// A page as S3 (or moto, or Ceph RGW) writes one.
    #[derive(Debug, Clone)]
    struct Written {
        objects: Vec<Listed>,
        url: bool,
        truncated: Option<bool>,
        token: Option<String>,
        summary_last: bool,
        pretty: bool,
    }

    fn xml_escape(s: &str) -> String {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&apos;")
    }

    /// `encoding-type=url` as AWS writes it: a space is `+`, the rest of the reserved
    /// bytes `%XX`.
    fn form_encode(s: &str) -> String {
        let mut out = String::new();
        for b in s.bytes() {
            match b {
                b' ' => out.push('+'),
                b if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) => out.push(b as char),
                b => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    }

    fn write(page: &Written) -> String {
        let nl = if page.pretty { "\n  " } else { "" };
        let mut summary = String::new();
        if page.url {
            summary += &format!("{nl}<EncodingType>url</EncodingType>");
        }
        if let Some(t) = page.truncated {
            summary += &format!("{nl}<IsTruncated>{t}</IsTruncated>");
        }
        if let Some(t) = &page.token {
            summary += &format!("{nl}<NextContinuationToken>{t}</NextContinuationToken>");
        }
        let mut contents = String::new();
        for o in &page.objects {
            let key = if page.url {
                form_encode(&o.key)
            } else {
                xml_escape(&o.key)
            };
            contents += &format!(
                "{nl}<Contents><Key>{key}</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>&quot;{}&quot;</ETag>",
                o.etag
            );
            if let Some(size) = o.size {
                contents += &format!("<Size>{size}</Size>");
            }
            if o.owner {
                contents += "<Owner><ID>abc</ID><DisplayName>webfile</DisplayName></Owner>";
            }
            contents += "<StorageClass>STANDARD</StorageClass></Contents>";
        }
        let (a, b) = if page.summary_last {
            (contents, summary)
        } else {
            (summary, contents)
        };
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>boot-images</Name><Prefix></Prefix><MaxKeys>1000</MaxKeys>{a}{b}{nl}</ListBucketResult>"
        )
    }

    /// What rusty-s3 makes of a page, in the agent's terms.
    fn rusty(xml: &str) -> Result<(Vec<S3Object>, Option<String>), String> {
        let parsed = ListObjectsV2::parse_response(xml).map_err(|e| e.to_string())?;
        let objects = parsed
            .contents
            .into_iter()
            .map(|c| S3Object {
                etag: c
                    .etag
                    .as_deref()
                    .map(strip_etag_quotes)
                    .unwrap_or("")
                    .into(),
                size: c.size.unwrap_or(0),
                key: c.key,
            })
            .collect();
        Ok((objects, parsed.next_continuation_token))
    }

    fn ours(xml: &str) -> Result<(Vec<S3Object>, Option<String>), String> {
        let mut out = Vec::new();
        let next = parse_page(xml, &mut out)?;
        Ok((out, next))
    }

    fn listed() -> impl Strategy<Value = Listed> {
        (
            "[a-zA-Z0-9 /+%&<>\"'._~é-]{1,24}",
            "[0-9a-f]{32}(-[1-9])?",
            prop::option::weighted(0.9, any::<u64>()),
            any::<bool>(),
        )
            .prop_map(|(key, etag, size, owner)| Listed {
                key,
                etag,
                size,
                owner,
            })
    }

    fn written() -> impl Strategy<Value = Written> {
        (
            prop::collection::vec(listed(), 0..6),
            any::<bool>(),
            prop::option::of(any::<bool>()),
            prop::option::of("[a-zA-Z0-9]{0,12}"),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                |(objects, url, truncated, token, summary_last, pretty)| Written {
                    objects,
                    url,
                    truncated,
                    token,
                    summary_last,
                    pretty,
                },
            )
    }

    proptest! {
        /// Whatever rusty-s3 reads from a page, this reads the same: the objects in
        /// order, their keys decoded, and the next token; and it refuses what
        /// rusty-s3 refuses.
        #[test]
        fn reads_what_rusty_s3_reads(page in written()) {
            let xml = write(&page);
            match (rusty(&xml), ours(&xml)) {
                (Ok(theirs), Ok(ours)) => {
                    prop_assert_eq!(&ours, &theirs);
                    let keys: Vec<_> = page.objects.iter().map(|o| o.key.as_str()).collect();
                    let read: Vec<_> = ours.0.iter().map(|o| o.key.as_str()).collect();
                    prop_assert_eq!(read, keys, "the keys as they were stored");
                }
                (Err(_), Err(_)) => {}
                (theirs, ours) => prop_assert!(false, "rusty-s3: {theirs:?}\nours: {ours:?}\n{xml}"),
            }
        }
    }

    fn page(inner: &str) -> String {
        format!("<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">{inner}</ListBucketResult>")
    }

    #[test]
    fn reads_the_three_fields_and_the_token() {
        let xml = page(
            "<IsTruncated>true</IsTruncated><NextContinuationToken>t1</NextContinuationToken>\
             <Contents><Key>img/a b&amp;c</Key><ETag>&quot;abc-2&quot;</ETag><Size>250</Size>\
             <Owner><ID>x</ID></Owner><ChecksumAlgorithm>CRC32</ChecksumAlgorithm></Contents>\
             <Contents><Key>img/rootfs</Key></Contents>",
        );
        let (objects, next) = ours(&xml).unwrap();
        assert_eq!(next.as_deref(), Some("t1"));
        assert_eq!(
            objects,
            [
                S3Object {
                    key: "img/a b&c".into(),
                    etag: "abc-2".into(),
                    size: 250
                },
                S3Object {
                    key: "img/rootfs".into(),
                    etag: String::new(),
                    size: 0
                },
            ]
        );
    }

    #[test]
    fn url_encoded_keys_are_decoded_and_bad_utf8_kept_as_listed() {
        let xml = page(
            "<Contents><Key>a+b%2Bc%C3%A9</Key></Contents><Contents><Key>x%FFy</Key></Contents>\
             <EncodingType>url</EncodingType>",
        );
        let (objects, next) = ours(&xml).unwrap();
        assert_eq!(next, None);
        assert_eq!(objects[0].key, "a b+cé");
        assert_eq!(objects[1].key, "x%FFy");
    }

    #[test]
    fn a_finished_listing_ignores_its_token_and_an_empty_token_ends_it() {
        let done = page(
            "<IsTruncated>false</IsTruncated><NextContinuationToken>t</NextContinuationToken>",
        );
        assert_eq!(ours(&done).unwrap().1, None);
        let empty = page("<NextContinuationToken></NextContinuationToken>");
        assert_eq!(ours(&empty).unwrap().1, None);
        assert_eq!(ours(&page("")).unwrap(), (vec![], None));
    }

    /// The head tells the token a page names before its first object, and only that.
    #[test]
    fn the_head_tells_the_token_named_before_the_objects() {
        let head = |inner: &str| Page::new(&page(inner)).head().unwrap();
        let obj = "<Contents><Key>k</Key></Contents>";
        let t = "<NextContinuationToken>t</NextContinuationToken>";
        assert_eq!(head(&format!("{t}{obj}")).as_deref(), Some("t"));
        assert_eq!(
            head(&format!("<IsTruncated>true</IsTruncated>{t}{obj}")).as_deref(),
            Some("t")
        );
        assert_eq!(head(&format!("{obj}{t}")), None);
        assert_eq!(
            head(&format!("<IsTruncated>false</IsTruncated>{t}{obj}")),
            None
        );
        assert_eq!(
            head("<NextContinuationToken></NextContinuationToken>"),
            None
        );
        // Whatever the head guessed, the rest gives the page's answer.
        let xml = page(&format!("{t}{obj}<IsTruncated>false</IsTruncated>"));
        let mut p = Page::new(&xml);
        assert_eq!(p.head().unwrap().as_deref(), Some("t"));
        let mut out = Vec::new();
        assert_eq!(p.rest(&mut out).unwrap(), None);
        assert_eq!(out.len(), 1);
    }

    /// Each refusal says what was wrong, so the scan's error names it.
    #[test]
    fn refuses_what_would_lose_or_invent_objects() {
        let cases = [
            ("", "no <ListBucketResult>"),
            ("not xml at all", "no <ListBucketResult>"),
            (
                "<Error><Code>AccessDenied</Code></Error>",
                "expected <ListBucketResult>, found <Error>",
            ),
            (
                &page("<Contents><Size>1</Size></Contents>"),
                "without a <Key>",
            ),
            (
                &page("<Contents><Key>k</Key><Size>ten</Size></Contents>"),
                "not a byte count",
            ),
            (
                &page("<Contents><Key>k</Key><Size>-1</Size></Contents>"),
                "not a byte count",
            ),
            (
                &page("<IsTruncated>true</IsTruncated>"),
                "without a NextContinuationToken",
            ),
            (&page("<IsTruncated>yes</IsTruncated>"), "not a boolean"),
            (
                &page("<Contents><Key>k<b/></Key></Contents>"),
                "holds markup",
            ),
            (&page("<Contents><Key>a&bogus;</Key></Contents>"), "<Key>"),
            (
                "<ListBucketResult><Contents><Key>k</Key></Contents>",
                "ends before </ListBucketResult>",
            ),
            (
                "<ListBucketResult><Contents><Key>k</Key>",
                "ends inside <Contents>",
            ),
            (
                "<ListBucketResult><Contents></Key></Contents></ListBucketResult>",
                "",
            ),
        ];
        for (xml, says) in cases {
            let e = ours(xml).expect_err(xml);
            assert!(e.contains(says), "{xml}: {e}");
        }
    }
}
