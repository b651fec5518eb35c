//! The XML of S3's answers: a small tree reader and the few responses the client reads
//! (an error, a new multipart upload, a completed one, a listing of objects and one of
//! incomplete uploads), and the one document it writes (the list of parts).
//!
//! S3's answers are small, flat documents without mixed content, DTDs or namespaced
//! children, so a tree reader of a hundred lines covers them; a general XML crate would
//! cost more compile time than the whole client. Element names lose any `ns:` prefix.

use std::fmt::Write as _;

/// One element: its local name, its text (unescaped, concatenated), its child elements.
#[derive(Debug, Default, PartialEq)]
pub struct Element {
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    pub fn children<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// A child's text, trimmed; `None` when there is no such child.
    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim())
    }
}

/// Deep enough for any S3 answer; a hostile body cannot overflow the stack.
const MAX_DEPTH: usize = 32;

/// Reads a document: its root element.
pub fn parse(xml: &str) -> Result<Element, String> {
    let mut reader = Reader { s: xml.as_bytes(), xml, at: 0 };
    reader.skip_misc()?;
    let root = reader.element(0)?;
    reader.skip_misc()?;
    match reader.at == reader.s.len() {
        true => Ok(root),
        false => Err(format!("text after the root element at byte {}", reader.at)),
    }
}

struct Reader<'a> {
    s: &'a [u8],
    xml: &'a str,
    at: usize,
}

impl Reader<'_> {
    fn starts(&self, prefix: &str) -> bool {
        self.s[self.at..].starts_with(prefix.as_bytes())
    }

    /// Moves past `end`, which must come.
    fn skip_past(&mut self, end: &str) -> Result<(), String> {
        match self.xml[self.at..].find(end) {
            Some(i) => {
                self.at += i + end.len();
                Ok(())
            }
            None => Err(format!("unterminated markup: no `{end}`")),
        }
    }

    /// White space, the `<?xml ...?>` declaration, comments and a doctype.
    fn skip_misc(&mut self) -> Result<(), String> {
        loop {
            while self.at < self.s.len() && self.s[self.at].is_ascii_whitespace() {
                self.at += 1;
            }
            if self.starts("<?") {
                self.skip_past("?>")?;
            } else if self.starts("<!--") {
                self.skip_past("-->")?;
            } else if self.starts("<!") && !self.starts("<![CDATA[") {
                self.skip_past(">")?;
            } else {
                return Ok(());
            }
        }
    }

    fn name(&mut self) -> Result<String, String> {
        let start = self.at;
        while self.at < self.s.len() && !matches!(self.s[self.at], b' ' | b'\t' | b'\r' | b'\n' | b'>' | b'/') {
            self.at += 1;
        }
        let full = &self.xml[start..self.at];
        if full.is_empty() {
            return Err(format!("an element without a name at byte {start}"));
        }
        Ok(full.rsplit(':').next().unwrap_or(full).to_owned())
    }

    fn element(&mut self, depth: usize) -> Result<Element, String> {
        if depth > MAX_DEPTH {
            return Err("elements nested too deep".into());
        }
        if !self.starts("<") {
            return Err(format!("expected an element at byte {}", self.at));
        }
        self.at += 1;
        let mut element = Element { name: self.name()?, ..Element::default() };
        // Attributes (`xmlns="..."`) are skipped, quoted values included.
        let mut quote = None;
        loop {
            let Some(&byte) = self.s.get(self.at) else { return Err(format!("unterminated <{}>", element.name)) };
            self.at += 1;
            match (quote, byte) {
                (Some(q), b) if b == q => quote = None,
                (Some(_), _) => {}
                (None, b'"' | b'\'') => quote = Some(byte),
                (None, b'/') if self.s.get(self.at) == Some(&b'>') => {
                    self.at += 1;
                    return Ok(element);
                }
                (None, b'>') => break,
                (None, _) => {}
            }
        }
        loop {
            let rest = &self.xml[self.at..];
            let text_end = rest.find('<').ok_or_else(|| format!("unterminated <{}>", element.name))?;
            element.text.push_str(&unescape(&rest[..text_end])?);
            self.at += text_end;
            if self.starts("</") {
                self.at += 2;
                let name = self.name()?;
                if name != element.name {
                    return Err(format!("</{name}> closes <{}>", element.name));
                }
                self.skip_past(">")?;
                return Ok(element);
            } else if self.starts("<![CDATA[") {
                self.at += "<![CDATA[".len();
                let end = self.xml[self.at..].find("]]>").ok_or("unterminated CDATA")?;
                element.text.push_str(&self.xml[self.at..self.at + end]);
                self.at += end + 3;
            } else if self.starts("<!--") {
                self.skip_past("-->")?;
            } else if self.starts("<?") {
                self.skip_past("?>")?;
            } else {
                element.children.push(self.element(depth + 1)?);
            }
        }
    }
}

/// Text with its five named entities and numeric references resolved.
pub fn unescape(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let semi = rest[amp..].find(';').ok_or_else(|| format!("an unterminated entity in `{}`", one_line(rest)))?;
        let entity = &rest[amp + 1..amp + semi];
        let resolved = match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x").or_else(|| entity.strip_prefix("#X")) {
                    u32::from_str_radix(hex, 16).ok()
                } else {
                    entity.strip_prefix('#').and_then(|dec| dec.parse().ok())
                };
                code.and_then(char::from_u32).ok_or_else(|| format!("an unknown entity `&{entity};`"))?
            }
        };
        out.push(resolved);
        rest = &rest[amp + semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Text made safe inside an element.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn one_line(text: &str) -> String {
    text.chars().take(40).map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// An S3 error document (`<Error><Code>..</Code><Message>..</Message></Error>`).
#[derive(Debug, PartialEq)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// The error in a body, if it is one: S3 answers errors with it, and may answer a
/// CompleteMultipartUpload with `200 OK` and an error inside.
pub fn error_body(body: &str) -> Option<ErrorBody> {
    let root = parse(body).ok()?;
    (root.name == "Error").then(|| ErrorBody {
        code: root.text_of("Code").unwrap_or_default().to_owned(),
        message: root.text_of("Message").unwrap_or_default().to_owned(),
    })
}

fn root(body: &str, name: &str) -> Result<Element, String> {
    let root = parse(body)?;
    match root.name == name {
        true => Ok(root),
        false => Err(format!("expected <{name}>, got <{}>", root.name)),
    }
}

fn required<'a>(element: &'a Element, name: &str) -> Result<&'a str, String> {
    element.text_of(name).ok_or_else(|| format!("<{}> without <{name}>", element.name))
}

fn truncated(element: &Element) -> bool {
    element.text_of("IsTruncated") == Some("true")
}

/// InitiateMultipartUploadResult: the upload's id.
pub fn upload_id(body: &str) -> Result<String, String> {
    Ok(required(&root(body, "InitiateMultipartUploadResult")?, "UploadId")?.to_owned())
}

/// CompleteMultipartUploadResult: the object's ETag (whose form differs between stores).
pub fn completed_etag(body: &str) -> Result<String, String> {
    Ok(root(body, "CompleteMultipartUploadResult")?.text_of("ETag").unwrap_or_default().to_owned())
}

/// One object of a listing; `key` is the full key, prefix and all.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectEntry {
    pub key: String,
    pub size: u64,
    pub last_modified: String,
    pub etag: String,
}

/// One page of ListObjectsV2: its objects, and the token of the next page.
#[derive(Debug, PartialEq)]
pub struct ObjectPage {
    pub objects: Vec<ObjectEntry>,
    pub next: Option<String>,
}

pub fn object_page(body: &str) -> Result<ObjectPage, String> {
    let root = root(body, "ListBucketResult")?;
    let mut objects = Vec::new();
    for entry in root.children("Contents") {
        let size = required(entry, "Size")?;
        objects.push(ObjectEntry {
            key: required(entry, "Key")?.to_owned(),
            size: size.parse().map_err(|_| format!("an object size of `{size}`"))?,
            last_modified: entry.text_of("LastModified").unwrap_or_default().to_owned(),
            etag: entry.text_of("ETag").unwrap_or_default().to_owned(),
        });
    }
    let next = match truncated(&root) {
        true => Some(required(&root, "NextContinuationToken")?.to_owned()),
        false => None,
    };
    Ok(ObjectPage { objects, next })
}

/// An incomplete multipart upload; `key` is the full key.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadEntry {
    pub key: String,
    pub upload_id: String,
    pub initiated: String,
}

/// One page of ListMultipartUploads: its uploads, and the markers of the next page.
#[derive(Debug, PartialEq)]
pub struct UploadPage {
    pub uploads: Vec<UploadEntry>,
    pub next: Option<(String, String)>,
}

pub fn upload_page(body: &str) -> Result<UploadPage, String> {
    let root = root(body, "ListMultipartUploadsResult")?;
    let mut uploads = Vec::new();
    for entry in root.children("Upload") {
        uploads.push(UploadEntry {
            key: required(entry, "Key")?.to_owned(),
            upload_id: required(entry, "UploadId")?.to_owned(),
            initiated: entry.text_of("Initiated").unwrap_or_default().to_owned(),
        });
    }
    let next = match truncated(&root) {
        true => Some((
            root.text_of("NextKeyMarker").unwrap_or_default().to_owned(),
            root.text_of("NextUploadIdMarker").unwrap_or_default().to_owned(),
        )),
        false => None,
    };
    Ok(UploadPage { uploads, next })
}

/// The body of CompleteMultipartUpload: every part's number and ETag, in order.
pub fn complete_body(parts: &[(u32, String)]) -> String {
    let mut xml = String::from("<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    for (number, etag) in parts {
        let _ = write!(xml, "<Part><PartNumber>{number}</PartNumber><ETag>{}</ETag></Part>", escape(etag));
    }
    xml.push_str("</CompleteMultipartUpload>");
    xml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_error_with_its_code_and_message() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<Error>
  <Code>NoSuchBucket</Code>
  <Message>The specified bucket does not exist</Message>
  <BucketName>backups</BucketName>
  <RequestId>4442587FB7D0A2F9</RequestId>
</Error>"#;
        assert_eq!(
            error_body(body),
            Some(ErrorBody { code: "NoSuchBucket".into(), message: "The specified bucket does not exist".into() })
        );
        assert_eq!(error_body("<InitiateMultipartUploadResult/>"), None);
        assert_eq!(error_body("not xml"), None);
        assert_eq!(error_body(""), None);
    }

    #[test]
    fn reads_a_new_uploads_id_whatever_its_characters() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<InitiateMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>example-bucket</Bucket><Key>example-object</Key>
  <UploadId>VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA&amp;+/=</UploadId>
</InitiateMultipartUploadResult>"#;
        assert_eq!(upload_id(body).unwrap(), "VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA&+/=");
        assert!(upload_id("<Error><Code>x</Code></Error>").is_err());
    }

    #[test]
    fn reads_a_listing_page_and_its_continuation() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>bucket</Name><Prefix>db/</Prefix><KeyCount>2</KeyCount><MaxKeys>2</MaxKeys>
  <IsTruncated>true</IsTruncated>
  <NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>
  <Contents>
    <Key>db/hindsight_db_backup_20261125_100000_3f2a.sql.zst</Key>
    <LastModified>2026-11-25T10:00:05.000Z</LastModified>
    <ETag>&quot;3858f62230ac3c915f300c664312c11f-9&quot;</ETag>
    <Size>71680</Size><StorageClass>STANDARD</StorageClass>
  </Contents>
  <Contents>
    <Key>db/a &amp; b &lt;c&gt;.sql</Key><LastModified>2026-11-25T11:00:05.000Z</LastModified>
    <ETag>"abc"</ETag><Size>0</Size>
  </Contents>
  <CommonPrefixes><Prefix>db/old/</Prefix></CommonPrefixes>
</ListBucketResult>"#;
        let page = object_page(body).unwrap();
        assert_eq!(page.next.as_deref(), Some("1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM="));
        assert_eq!(page.objects.len(), 2);
        assert_eq!(page.objects[0].key, "db/hindsight_db_backup_20261125_100000_3f2a.sql.zst");
        assert_eq!(page.objects[0].size, 71680);
        assert_eq!(page.objects[0].etag, "\"3858f62230ac3c915f300c664312c11f-9\"");
        assert_eq!(page.objects[1].key, "db/a & b <c>.sql");
        assert_eq!(page.objects[1].size, 0);

        let last = "<ListBucketResult><IsTruncated>false</IsTruncated><KeyCount>0</KeyCount></ListBucketResult>";
        assert_eq!(object_page(last).unwrap(), ObjectPage { objects: vec![], next: None });
        let broken = "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>";
        assert!(object_page(broken).is_err(), "a truncated page must say where to go on");
        let bad_size = "<ListBucketResult><Contents><Key>k</Key><Size>-1</Size></Contents></ListBucketResult>";
        assert!(object_page(bad_size).is_err());
    }

    #[test]
    fn reads_the_incomplete_uploads_and_the_next_markers() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>bucket</Bucket><KeyMarker></KeyMarker><UploadIdMarker/>
  <NextKeyMarker>db/b.sql</NextKeyMarker>
  <NextUploadIdMarker>b-id</NextUploadIdMarker>
  <MaxUploads>2</MaxUploads>
  <IsTruncated>true</IsTruncated>
  <Upload>
    <Key>db/a.sql</Key><UploadId>a-id</UploadId>
    <Initiator><ID>x</ID><DisplayName>x</DisplayName></Initiator>
    <Owner><ID>x</ID><DisplayName>x</DisplayName></Owner>
    <StorageClass>STANDARD</StorageClass><Initiated>2026-11-25T10:00:00.000Z</Initiated>
  </Upload>
  <Upload><Key>db/b.sql</Key><UploadId>b-id</UploadId><Initiated>2026-11-25T11:00:00.000Z</Initiated></Upload>
</ListMultipartUploadsResult>"#;
        let page = upload_page(body).unwrap();
        assert_eq!(page.next, Some(("db/b.sql".into(), "b-id".into())));
        assert_eq!(page.uploads.len(), 2);
        assert_eq!(
            page.uploads[0],
            UploadEntry {
                key: "db/a.sql".into(),
                upload_id: "a-id".into(),
                initiated: "2026-11-25T10:00:00.000Z".into()
            }
        );
        let none = "<ListMultipartUploadsResult><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>";
        assert_eq!(upload_page(none).unwrap(), UploadPage { uploads: vec![], next: None });
    }

    #[test]
    fn reads_a_completed_uploads_etag() {
        let body = "<CompleteMultipartUploadResult><Location>http://x/b/k</Location><Bucket>b</Bucket><Key>k</Key>\
                    <ETag>\"3858f62230ac3c915f300c664312c11f-9\"</ETag></CompleteMultipartUploadResult>";
        assert_eq!(completed_etag(body).unwrap(), "\"3858f62230ac3c915f300c664312c11f-9\"");
    }

    #[test]
    fn the_parts_list_round_trips_through_the_reader() {
        let parts = vec![(1, "\"a1\"".to_owned()), (2, "\"b<2>&\"".to_owned())];
        let root = parse(&complete_body(&parts)).unwrap();
        assert_eq!(root.name, "CompleteMultipartUpload");
        let read: Vec<(u32, String)> = root
            .children("Part")
            .map(|p| (p.text_of("PartNumber").unwrap().parse().unwrap(), p.text_of("ETag").unwrap().to_owned()))
            .collect();
        assert_eq!(read, parts);
    }

    #[test]
    fn entities_cdata_comments_and_namespaces() {
        let root = parse(
            "<s3:R xmlns:s3='u'><!-- c --><s3:A>&#65;&#x42;&amp;&apos;</s3:A><B><![CDATA[<raw>&]]></B><C/></s3:R>",
        )
        .unwrap();
        assert_eq!(root.name, "R");
        assert_eq!(root.text_of("A"), Some("AB&'"));
        assert_eq!(root.text_of("B"), Some("<raw>&"));
        assert_eq!(root.text_of("C"), Some(""));
        assert_eq!(root.text_of("D"), None);
    }

    #[test]
    fn malformed_documents_are_errors_not_panics() {
        for bad in [
            "",
            "<",
            "<A>",
            "<A></B>",
            "<A>&bogus;</A>",
            "<A>&amp</A>",
            "<A attr=\"unterminated></A>",
            "<A></A>trailing",
            "<A><!-- open</A>",
            "<>",
            "<A>&#xD800;</A>",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(parse(&deep).is_err(), "nesting is bounded");
    }
}
