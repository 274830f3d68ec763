//! Strict JSON input: syntax, nesting depth, duplicate keys and NUL characters are checked while
//! parsing; [`Fields`] then validates an object field by field and reports every problem at once.

use std::cell::RefCell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;
use zeta_ledger::{Amount, MAX_AMOUNT};

use crate::error::{ApiError, FieldError};

/// Deepest nesting of arrays and objects accepted.
pub const MAX_DEPTH: usize = 64;
const TOO_DEEP: &str = "nesting deeper than 64 levels";

struct Checked<'a> {
    depth: usize,
    path: String,
    problems: &'a RefCell<Vec<FieldError>>,
}

impl Checked<'_> {
    fn child(&self, segment: &str) -> Self {
        let path = if self.path.is_empty() {
            segment.to_string()
        } else {
            format!("{}.{segment}", self.path)
        };
        Checked {
            depth: self.depth + 1,
            path,
            problems: self.problems,
        }
    }

    fn field(&self) -> String {
        if self.path.is_empty() {
            "body".into()
        } else {
            self.path.clone()
        }
    }
}

impl<'de> DeserializeSeed<'de> for Checked<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Checked<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        if v.contains('\0') {
            self.problems.borrow_mut().push(FieldError::new(
                self.field(),
                "must not contain NUL characters",
            ));
        }
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        self.visit_str(&v)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(A::Error::custom(TOO_DEEP));
        }
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self.child(&out.len().to_string()))? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(A::Error::custom(TOO_DEEP));
        }
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let child = self.child(&key);
            if key.contains('\0') {
                self.problems.borrow_mut().push(FieldError::new(
                    child.field(),
                    "key must not contain NUL characters",
                ));
            }
            let value = map.next_value_seed(Checked {
                depth: child.depth,
                path: child.path.clone(),
                problems: self.problems,
            })?;
            if out.insert(key, value).is_some() {
                self.problems
                    .borrow_mut()
                    .push(FieldError::new(child.field(), "duplicate key"));
            }
        }
        Ok(Value::Object(out))
    }
}

/// Parses a request body: 400 when it is not JSON (or nests too deep). Duplicate keys and NUL
/// characters come back as field problems: they are 422s, which rank after authentication.
pub fn parse_lenient(bytes: &[u8]) -> Result<(Value, Vec<FieldError>), ApiError> {
    let problems = RefCell::new(Vec::new());
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let seed = Checked {
        depth: 0,
        path: String::new(),
        problems: &problems,
    };
    let value = seed
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    Ok((value, problems.into_inner()))
}

/// [`parse_lenient`] with the field problems as a 422.
pub fn parse(bytes: &[u8]) -> Result<Value, ApiError> {
    let (value, problems) = parse_lenient(bytes)?;
    if problems.is_empty() {
        Ok(value)
    } else {
        Err(ApiError::Validation(problems))
    }
}

/// Writes the RFC 8785 canonical form (the one the audit log hashes): equal documents, equal
/// bytes.
pub fn canonical(value: &Value, out: &mut String) {
    zeta_ledger::audit::write_canonical(value, out);
}

/// Finds a number that the databases would not give back unchanged: stored JSON keeps numbers
/// as exact decimals, and ones near the limits of a double (or `-0`) would come back different
/// or not at all. Returns its path.
fn unstorable_number(value: &Value, path: &str) -> Option<String> {
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            let magnitude = f.abs();
            let ok = f.is_finite()
                && ((f == 0.0 && f.is_sign_positive()) || (1e-300..=1e300).contains(&magnitude));
            (!ok).then(|| path.to_string())
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| unstorable_number(v, &format!("{path}.{i}"))),
        Value::Object(map) => map
            .iter()
            .find_map(|(k, v)| unstorable_number(v, &format!("{path}.{k}"))),
        _ => None,
    }
}

/// Field-by-field validation of one JSON object. Every getter removes its field; [`finish`]
/// reports the fields nobody asked for as unknown.
///
/// [`finish`]: Fields::finish
pub struct Fields {
    map: Map<String, Value>,
    prefix: String,
    errors: Vec<FieldError>,
}

impl Fields {
    /// `prefix` names the object in error fields (e.g. `transfers.3.`).
    pub fn new(value: Value, prefix: &str) -> Result<Self, FieldError> {
        match value {
            Value::Object(map) => Ok(Self {
                map,
                prefix: prefix.to_string(),
                errors: Vec::new(),
            }),
            _ => Err(FieldError::new(
                if prefix.is_empty() {
                    "body".to_string()
                } else {
                    prefix.trim_end_matches('.').to_string()
                },
                "must be a JSON object",
            )),
        }
    }

    /// The body of a request, or an empty object when the body is optional and absent.
    pub fn body(value: Option<Value>) -> Result<Self, ApiError> {
        Self::new(value.unwrap_or_else(|| Value::Object(Map::new())), "")
            .map_err(|e| ApiError::Validation(vec![e]))
    }

    fn err(&mut self, name: &str, message: impl Into<String>) {
        self.errors
            .push(FieldError::new(format!("{}{name}", self.prefix), message));
    }

    /// Takes a field; `null` counts as absent when `null_ok`.
    fn take(&mut self, name: &str, null_ok: bool) -> Option<Value> {
        match self.map.remove(name) {
            Some(Value::Null) if null_ok => None,
            other => other,
        }
    }

    pub fn amount(&mut self, name: &str) -> Option<Amount> {
        let message = format!("must be an integer from 1 to {MAX_AMOUNT} (minor units)");
        match self.take(name, false) {
            None => {
                self.err(name, "is required");
                None
            }
            Some(Value::Number(n)) => match n.as_i64().and_then(Amount::new) {
                Some(a) => Some(a),
                None => {
                    self.err(name, message);
                    None
                }
            },
            Some(_) => {
                self.err(name, message);
                None
            }
        }
    }

    /// A string of `min..=max` code points. `required`: absent is an error.
    pub fn string(&mut self, name: &str, min: usize, max: usize, required: bool) -> Option<String> {
        match self.take(name, !required) {
            None if required => {
                self.err(name, "is required");
                None
            }
            None => None,
            Some(Value::String(s)) => {
                let len = s.chars().count();
                if len < min || len > max {
                    self.err(name, format!("must be {min} to {max} characters long"));
                    None
                } else {
                    Some(s)
                }
            }
            Some(_) => {
                self.err(name, "must be a string");
                None
            }
        }
    }

    /// An optional string that may not be null (PATCH fields).
    pub fn patch_string(&mut self, name: &str, min: usize, max: usize) -> Option<String> {
        if self.map.get(name) == Some(&Value::Null) {
            self.map.remove(name);
            self.err(name, "must be a string");
            return None;
        }
        self.string(name, min, max, false)
    }

    pub fn bool(&mut self, name: &str) -> Option<bool> {
        match self.take(name, true) {
            None => None,
            Some(Value::Bool(b)) => Some(b),
            Some(_) => {
                self.err(name, "must be true or false");
                None
            }
        }
    }

    pub fn uuid(&mut self, name: &str) -> Option<Uuid> {
        match self.take(name, false) {
            None => {
                self.err(name, "is required");
                None
            }
            Some(Value::String(s)) => match Uuid::try_parse(&s) {
                Ok(id) => Some(id),
                Err(_) => {
                    self.err(name, "must be a UUID");
                    None
                }
            },
            Some(_) => {
                self.err(name, "must be a UUID string");
                None
            }
        }
    }

    /// An optional JSON object whose compact encoding is at most `max_bytes`.
    pub fn object(
        &mut self,
        name: &str,
        max_bytes: usize,
        null_ok: bool,
    ) -> Option<Map<String, Value>> {
        match self.take(name, null_ok) {
            None => None,
            Some(Value::Object(map)) => {
                let size = serde_json::to_vec(&map).map_or(usize::MAX, |v| v.len());
                if size > max_bytes {
                    self.err(name, format!("must be at most {max_bytes} bytes of JSON"));
                    None
                } else if let Some(path) = map
                    .iter()
                    .find_map(|(k, v)| unstorable_number(v, &format!("{name}.{k}")))
                {
                    self.errors.push(FieldError::new(
                        format!("{}{path}", self.prefix),
                        "numbers must be 0 or have a magnitude from 1e-300 to 1e300",
                    ));
                    None
                } else {
                    Some(map)
                }
            }
            Some(_) => {
                self.err(name, "must be a JSON object");
                None
            }
        }
    }

    /// Takes a field raw, for the caller to check (e.g. an enum or a list).
    pub fn raw(&mut self, name: &str) -> Option<Value> {
        self.map.remove(name)
    }

    /// Records an error on a field the caller checked itself.
    pub fn invalid(&mut self, name: &str, message: impl Into<String>) {
        self.err(name, message);
    }

    pub fn errors(&self) -> &[FieldError] {
        &self.errors
    }

    /// All problems, unknown fields included; `Ok` only when there are none.
    pub fn finish(mut self) -> Result<(), Vec<FieldError>> {
        let unknown: Vec<String> = self.map.keys().cloned().collect();
        for name in unknown {
            self.err(&name, "unknown field");
        }
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.errors)
        }
    }
}

/// Parsed query parameters: duplicates and unknown names are refused.
pub struct Query {
    pairs: Vec<(String, String)>,
    errors: Vec<FieldError>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = match raw {
            None | Some("") => Vec::new(),
            Some(q) => serde_urlencoded::from_str(q)
                .map_err(|_| ApiError::validation("query", "is not a valid query string"))?,
        };
        let mut errors = Vec::new();
        for (i, (name, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(n, _)| n == name) {
                errors.push(FieldError::new(name.clone(), "is given more than once"));
            }
        }
        Ok(Self { pairs, errors })
    }

    pub fn take(&mut self, name: &str) -> Option<String> {
        let pos = self.pairs.iter().position(|(n, _)| n == name)?;
        Some(self.pairs.remove(pos).1)
    }

    pub fn invalid(&mut self, name: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(name, message));
    }

    /// `limit`: 1..=200, default 50.
    pub fn limit(&mut self) -> u32 {
        match self.take("limit") {
            None => 50,
            Some(v) => match v.parse::<u32>() {
                Ok(n @ 1..=200) if v.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => {
                    self.invalid("limit", "must be an integer from 1 to 200");
                    50
                }
            },
        }
    }

    pub fn time(&mut self, name: &str) -> Option<OffsetDateTime> {
        let v = self.take(name)?;
        match OffsetDateTime::parse(&v, &Rfc3339) {
            Ok(t) => Some(t),
            Err(_) => {
                self.invalid(name, "must be an RFC 3339 date-time");
                None
            }
        }
    }

    pub fn enumerated<T>(&mut self, name: &str, parse: fn(&str) -> Option<T>) -> Option<T> {
        let v = self.take(name)?;
        let parsed = parse(&v);
        if parsed.is_none() {
            self.invalid(name, format!("unknown value {v:?}"));
        }
        parsed
    }

    pub fn finish(mut self) -> Result<(), ApiError> {
        for (name, _) in std::mem::take(&mut self.pairs) {
            self.errors
                .push(FieldError::new(name, "unknown query parameter"));
        }
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_and_depth_are_malformed() {
        for bad in [&b"{"[..], b"", b"{\"a\":1}x", b"\"\\ud800\"", b"[1,]"] {
            assert!(
                matches!(parse(bad), Err(ApiError::MalformedJson(_))),
                "{bad:?}"
            );
        }
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert!(matches!(
            parse(deep.as_bytes()),
            Err(ApiError::MalformedJson(_))
        ));
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(parse(ok.as_bytes()).is_ok());
    }

    #[test]
    fn duplicates_and_nul_are_invalid() {
        let Err(ApiError::Validation(e)) = parse(br#"{"a":1,"b":{"c":1,"c":2}}"#) else {
            panic!("duplicate key must be refused")
        };
        assert_eq!(e, vec![FieldError::new("b.c", "duplicate key")]);
        let Err(ApiError::Validation(e)) = parse(br#"{"a":"x\u0000"}"#) else {
            panic!("NUL must be refused")
        };
        assert_eq!(e[0].field, "a");
    }

    #[test]
    fn canonical_sorts_keys() {
        let v = parse(br#"{"b":1,"a":{"d":[1,{"z":1,"y":2}],"c":null}}"#).unwrap();
        let mut s = String::new();
        canonical(&v, &mut s);
        assert_eq!(s, r#"{"a":{"c":null,"d":[1,{"y":2,"z":1}]},"b":1}"#);
    }

    #[test]
    fn amounts() {
        for (body, ok) in [
            ("1", true),
            ("9007199254740991", true),
            ("9007199254740992", false),
            ("0", false),
            ("-5", false),
            ("1.5", false),
            ("1.0", false),
            ("1e3", false),
            ("\"10\"", false),
            ("null", false),
            ("18446744073709551616", false),
        ] {
            let v = parse(format!("{{\"amount\":{body}}}").as_bytes()).unwrap();
            let mut f = Fields::new(v, "").unwrap();
            assert_eq!(f.amount("amount").is_some(), ok, "{body}");
        }
    }
}
