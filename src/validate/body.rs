//! Shape check of a callback body against the catalog (SPEC 4.1).
//!
//! Runs on every callback before anything is forwarded, so it is one streaming
//! pass over the body with no `serde_json::Value` tree: the top-level object's
//! keys are matched against the command's (short) required-field list and each
//! value's JSON type is probed while its contents are skipped. The whole
//! document is always read to the end first, so the precedence of SPEC 4.1
//! holds: invalid JSON, then not an object, then a `CallbackCommand` mismatch,
//! then the first missing or mistyped field in catalog order.
//!
//! Lenient by design: unknown fields pass, nested values are not inspected,
//! and `EventTime`-style fields accept numeric strings. Limits inherited from
//! `serde_json`: more than 128 levels of nesting *on the checked path* (top
//! object, `Events`, an event) and numbers beyond `f64` range in a checked
//! field read as invalid JSON; skipped values have no depth limit.

use serde::de::{DeserializeSeed, Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::catalog::{Command, Field, JsonType, Shape};

/// Why a body was rejected; `Display` is the `ErrorInfo` sent back to IM.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BodyError {
    /// Not valid UTF-8 JSON, anywhere in the document (or trailing bytes).
    #[error("body is not valid JSON")]
    NotJson,
    /// Valid JSON whose top-level value is not an object.
    #[error("body is not a JSON object")]
    NotObject,
    /// A `CallbackCommand` (top level, or in a batch event) that is not the
    /// query's; `found` is its text (truncated) or a short rendering of a
    /// non-string value.
    #[error("body CallbackCommand \"{found}\" does not match the query's")]
    CommandMismatch { found: String },
    /// A required field is absent (`Events[3].PushID` style inside batches).
    #[error("missing required field {field}")]
    MissingField { field: String },
    /// A required field has the wrong JSON type (`null` included).
    #[error("field {field} must be {}", with_article(.expected))]
    MistypedField {
        field: String,
        expected: &'static str,
    },
}

fn with_article(expected: &str) -> String {
    let article = if expected.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {expected}")
}

/// Longest `found` text echoed back in a mismatch (keeps `ErrorInfo` small).
const MAX_FOUND_CHARS: usize = 100;
/// Field bitmaps are `u64`; the catalog test keeps every list within this.
const MAX_FIELDS: usize = 64;

/// Checks `body` against SPEC 4.1: valid JSON, an object, `CallbackCommand`
/// (top level, and per event for batches) equal to `query_command` when
/// present, and `spec`'s required fields with their JSON types.
/// `spec == None` (command not catalogued) checks only the top-level command.
///
/// # Errors
/// The first problem by SPEC 4.1's precedence, as a [`BodyError`].
pub fn check_body(
    body: &[u8],
    query_command: &str,
    spec: Option<&Command>,
) -> Result<(), BodyError> {
    // serde_json does not validate UTF-8 inside skipped strings; checking up
    // front (fast) lets the parser below run on &str and skip that work.
    let text = std::str::from_utf8(body).map_err(|_| BodyError::NotJson)?;
    let mut de = serde_json::Deserializer::from_str(text);

    let first = text
        .bytes()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(b'{') {
        // Still has to be valid JSON as a whole to be "not an object".
        return match serde::Deserialize::deserialize(&mut de).and_then(|IgnoredAny| de.end()) {
            Ok(()) => Err(BodyError::NotObject),
            Err(_) => Err(BodyError::NotJson),
        };
    }

    let (fields, batch) = match spec {
        Some(c) => (c.fields, c.shape == Shape::Batch),
        None => (&[][..], false),
    };
    let ctx = Ctx {
        query: query_command,
        fields,
    };
    let mut findings = Findings::default();
    let top = ObjectVisitor {
        ctx: &ctx,
        findings: &mut findings,
        // A batch's required fields live in its events, not at the top.
        fields: if batch { &[] } else { fields },
        events_here: batch,
    };
    let status = (&mut de)
        .deserialize_map(top)
        .and_then(|status| de.end().map(|()| status))
        .map_err(|_| BodyError::NotJson)?;

    if let Some(found) = findings.mismatch {
        return Err(BodyError::CommandMismatch { found });
    }
    if batch {
        if findings.events_bad {
            return Err(BodyError::MistypedField {
                field: "Events".to_owned(),
                expected: JsonType::Arr.describe(),
            });
        }
        if !findings.events_seen {
            return Err(BodyError::MissingField {
                field: "Events".to_owned(),
            });
        }
        return match findings.event_error {
            Some(e) => Err(e),
            None => Ok(()),
        };
    }
    match status.first_error(fields, "") {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

struct Ctx<'q> {
    query: &'q str,
    fields: &'static [Field],
}

/// What the pass noticed; turned into at most one error once the whole
/// document is known to be valid JSON.
#[derive(Default)]
struct Findings {
    /// First `CallbackCommand` that differs from the query, in document order.
    mismatch: Option<String>,
    /// Batch only: some `Events` value was an array / was not an array.
    events_seen: bool,
    events_bad: bool,
    /// Batch only: the first event (in array order) with a field problem.
    event_error: Option<BodyError>,
}

/// Required fields of one object: seen at least once / seen with a wrong type.
#[derive(Default)]
struct FieldStatus {
    found: u64,
    bad: u64,
}

impl FieldStatus {
    /// The first required field, in catalog order, that is mistyped or absent.
    fn first_error(&self, fields: &[Field], prefix: impl std::fmt::Display) -> Option<BodyError> {
        let (idx, f) = fields
            .iter()
            .take(MAX_FIELDS)
            .enumerate()
            .find(|(idx, f)| {
                let bit = 1u64 << idx;
                self.bad & bit != 0 || (f.required && self.found & bit == 0)
            })?;
        let field = format!("{prefix}{}", f.name);
        Some(if self.bad & (1u64 << idx) != 0 {
            BodyError::MistypedField {
                field,
                expected: f.ty.describe(),
            }
        } else {
            BodyError::MissingField { field }
        })
    }
}

/// Visits one object (the body, or one event of a batch).
struct ObjectVisitor<'a, 'q> {
    ctx: &'a Ctx<'q>,
    findings: &'a mut Findings,
    fields: &'static [Field],
    events_here: bool,
}

impl<'de> Visitor<'de> for ObjectVisitor<'_, '_> {
    type Value = FieldStatus;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FieldStatus, A::Error> {
        let mut status = FieldStatus::default();
        let key_seed = KeySeed {
            fields: self.fields,
            events_here: self.events_here,
        };
        while let Some(key) = map.next_key_seed(key_seed)? {
            match key {
                Key::Command => {
                    let checked = map.next_value_seed(CommandSeed {
                        query: self.ctx.query,
                    })?;
                    if let Err(found) = checked {
                        self.findings.mismatch.get_or_insert(found);
                    }
                }
                Key::Field(idx) => {
                    let ok = map.next_value_seed(TypeSeed(self.fields[idx].ty))?;
                    let bit = 1u64 << idx;
                    status.found |= bit;
                    if !ok {
                        status.bad |= bit;
                    }
                }
                Key::Events => {
                    let is_array = map.next_value_seed(EventsSeed {
                        ctx: self.ctx,
                        findings: &mut *self.findings,
                    })?;
                    if is_array {
                        self.findings.events_seen = true;
                    } else {
                        self.findings.events_bad = true;
                    }
                }
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(status)
    }
}

#[derive(Clone, Copy)]
enum Key {
    Command,
    Field(usize),
    Events,
    Other,
}

/// Classifies a key without allocating (escaped keys arrive decoded in a
/// scratch buffer via `visit_str`).
#[derive(Clone, Copy)]
struct KeySeed {
    fields: &'static [Field],
    events_here: bool,
}

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = Key;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Key, E> {
        let key = key.as_bytes();
        if short_eq(key, b"CallbackCommand") {
            return Ok(Key::Command);
        }
        if self.events_here && short_eq(key, b"Events") {
            return Ok(Key::Events);
        }
        for (idx, f) in self.fields.iter().enumerate() {
            if short_eq(key, f.name.as_bytes()) {
                return Ok(if idx < MAX_FIELDS {
                    Key::Field(idx)
                } else {
                    Key::Other
                });
            }
        }
        Ok(Key::Other)
    }
}

/// Equality for short keys: an inline byte loop beats a `memcmp` call here
/// (keys are 6–20 bytes and usually differ in length or early).
#[inline]
fn short_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// Reads a `CallbackCommand` value: `Ok(())` when it is the query's command,
/// else `Err(text to report)`.
struct CommandSeed<'q> {
    query: &'q str,
}

impl<'de> DeserializeSeed<'de> for CommandSeed<'_> {
    type Value = Result<(), String>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

fn truncated(s: &str) -> String {
    match s.char_indices().nth(MAX_FOUND_CHARS) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_owned(),
    }
}

impl<'de> Visitor<'de> for CommandSeed<'_> {
    type Value = Result<(), String>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a command name")
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(if v == self.query {
            Ok(())
        } else {
            Err(truncated(v))
        })
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Err(v.to_string()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Err(v.to_string()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Err(v.to_string()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Err(v.to_string()))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Err("null".to_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        IgnoredAny.visit_seq(seq)?;
        Ok(Err("[...]".to_owned()))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        IgnoredAny.visit_map(map)?;
        Ok(Err("{...}".to_owned()))
    }
}

/// Probes one value's JSON type against `JsonType`, skipping its contents.
struct TypeSeed(JsonType);

impl<'de> DeserializeSeed<'de> for TypeSeed {
    type Value = bool;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TypeSeed {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E>(self, v: &str) -> Result<bool, E> {
        Ok(match self.0 {
            JsonType::Str => true,
            JsonType::IntOrStr => !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()),
            _ => false,
        })
    }
    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(self.is_number())
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(self.is_number())
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(self.is_number())
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<bool, A::Error> {
        IgnoredAny.visit_seq(seq)?;
        Ok(self.0 == JsonType::Arr)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        IgnoredAny.visit_map(map)?;
        Ok(self.0 == JsonType::Obj)
    }
}

impl TypeSeed {
    fn is_number(&self) -> bool {
        matches!(self.0, JsonType::Int | JsonType::IntOrStr)
    }
}

/// A batch's `Events` value: `true` when it is an array (its events are
/// checked on the way), `false` for anything else.
struct EventsSeed<'a, 'q> {
    ctx: &'a Ctx<'q>,
    findings: &'a mut Findings,
}

impl<'de> DeserializeSeed<'de> for EventsSeed<'_, '_> {
    type Value = bool;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EventsSeed<'_, '_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of events")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut index = 0usize;
        while seq
            .next_element_seed(EventSeed {
                ctx: self.ctx,
                findings: &mut *self.findings,
                index,
            })?
            .is_some()
        {
            index += 1;
        }
        Ok(true)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        IgnoredAny.visit_map(map)?;
        Ok(false)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
}

/// One element of `Events`: must be an object with the command's fields.
struct EventSeed<'a, 'q> {
    ctx: &'a Ctx<'q>,
    findings: &'a mut Findings,
    index: usize,
}

impl EventSeed<'_, '_> {
    fn not_an_object(self) {
        self.findings
            .event_error
            .get_or_insert_with(|| BodyError::MistypedField {
                field: format!("Events[{}]", self.index),
                expected: JsonType::Obj.describe(),
            });
    }
}

impl<'de> DeserializeSeed<'de> for EventSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EventSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an event object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let fields = self.ctx.fields;
        let status = ObjectVisitor {
            ctx: self.ctx,
            findings: &mut *self.findings,
            fields,
            events_here: false,
        }
        .visit_map(map)?;
        if self.findings.event_error.is_none() {
            self.findings.event_error =
                status.first_error(fields, format_args!("Events[{}].", self.index));
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        IgnoredAny.visit_seq(seq)?;
        self.not_an_object();
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        self.not_an_object();
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.not_an_object();
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        self.not_an_object();
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        self.not_an_object();
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        self.not_an_object();
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.not_an_object();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
