//! Just enough JSON for `--json` output: strings escaped, objects and arrays built in order.

use std::fmt::Write;

/// A JSON string literal.
pub fn string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn array(items: impl IntoIterator<Item = String>) -> String {
    format!("[{}]", items.into_iter().collect::<Vec<_>>().join(","))
}

/// An object whose fields keep the order they were added in.
#[derive(Default)]
pub struct Object {
    fields: Vec<String>,
}

impl Object {
    pub fn new() -> Object {
        Object::default()
    }

    /// A field whose value is already JSON (a number, `true`, an array, an object).
    pub fn raw(mut self, key: &str, value: impl ToString) -> Object {
        self.fields.push(format!("{}:{}", string(key), value.to_string()));
        self
    }

    pub fn str(self, key: &str, value: &str) -> Object {
        self.raw(key, string(value))
    }

    pub fn opt_str(self, key: &str, value: Option<&str>) -> Object {
        self.raw(key, value.map_or("null".to_owned(), string))
    }

    pub fn build(self) -> String {
        format!("{{{}}}", self.fields.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_builds() {
        assert_eq!(string("a\"b\\c\nd\u{1}é"), r#""a\"b\\c\nd\u0001é""#);
        let object = Object::new().str("path", "/x y").raw("size", 12).raw("ok", true).opt_str("rev", None);
        assert_eq!(object.build(), r#"{"path":"/x y","size":12,"ok":true,"rev":null}"#);
        assert_eq!(array(["1".to_owned(), string("x")]), r#"[1,"x"]"#);
        assert_eq!(array(Vec::new()), "[]");
    }
}
