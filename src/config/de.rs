//! serde over the YAML tree: the raw settings structs of every module are
//! deserialized from [`Node`]s, and every problem of the file's *shape* is
//! reported here, each at its line and key:
//! - an unknown key (the known ones are the struct's fields, in the order
//!   they are declared: the same definitions the JSON Schema comes from),
//!   with the closest known key as a hint;
//! - a duplicate key, a key that is not a plain string;
//! - a mapping or list where a value belongs, and the reverse;
//! - an unset or malformed `${VAR}` (substituted in every scalar value).
//!
//! Problems with a *value* (a bad duration, a URL) are the business of the
//! module that owns the setting, which reads it as a [`Text`](crate::settings::Text)
//! that remembers its line and key.
//!
//! Every problem is reported, not only the first: an unknown key is
//! skipped, a scalar that cannot be read becomes an invalid `Text`, and a
//! mapping or list of the wrong kind is left out on a second pass (serde
//! stops at the first error of a struct, so the whole file is read again
//! without it; each pass leaves out one more node, so this ends).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::env::VarError;
use std::fmt;
use std::path::Path;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};

use super::yaml::{Kind, Node};
use crate::settings::{join_key, unknown_key_message, ConfigError, ONE_OR_MANY, TEXT};

/// Most passes over one file: each leaves out one more node of the wrong
/// kind, so a hostile file with thousands of them would otherwise cost
/// thousands of passes. Past this many, the problems found so far are
/// reported with a note.
const MAX_PASSES: usize = 50;

/// How `${VAR}` is looked up (the process environment, or a table in tests).
pub(super) type EnvLookup<'a> = &'a dyn Fn(&str) -> Result<String, VarError>;

/// What the passes over one file found.
pub(super) struct State<'a> {
    file: &'a Path,
    env: EnvLookup<'a>,
    errors: RefCell<Vec<ConfigError>>,
    reported: RefCell<HashSet<(usize, String, String)>>,
    /// Line of every key (and list item) seen.
    lines: RefCell<HashMap<String, usize>>,
    /// Nodes of the wrong kind, left out of the next pass.
    removed: RefCell<HashSet<String>>,
}

impl<'a> State<'a> {
    pub(super) fn new(file: &'a Path, env: EnvLookup<'a>) -> Self {
        Self {
            file,
            env,
            errors: RefCell::default(),
            reported: RefCell::default(),
            lines: RefCell::default(),
            removed: RefCell::default(),
        }
    }

    /// The problems found and the line of every key.
    pub(super) fn finish(self) -> (Vec<ConfigError>, HashMap<String, usize>) {
        (self.errors.into_inner(), self.lines.into_inner())
    }

    /// Reports a problem once, however many passes meet it.
    fn error(&self, line: usize, key: &str, message: impl Into<String>) {
        let message = message.into();
        let id = (line, key.to_string(), message.clone());
        if self.reported.borrow_mut().insert(id) {
            self.errors.borrow_mut().push(ConfigError {
                file: self.file.to_path_buf(),
                line: Some(line),
                key: key.to_string(),
                message,
            });
        }
    }

    /// Reports a node of the wrong kind and leaves it out of the next pass.
    fn reject(&self, node: &Node, key: &str, message: String) -> Error {
        self.error(node.line, key, message);
        self.removed.borrow_mut().insert(key.to_string());
        Error::Reported
    }

    /// Replaces every `${VAR}`; `$${` is a literal `${`. Reports every
    /// unset or malformed variable of the value, never the value itself.
    fn substitute(&self, text: &str, line: usize, path: &str) -> Option<String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        let mut ok = true;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let tail = &rest[pos..];
            if let Some(after) = tail.strip_prefix("$${") {
                out.push_str("${");
                rest = after;
            } else if let Some(inner) = tail.strip_prefix("${") {
                let Some(end) = inner.find('}') else {
                    self.error(
                        line,
                        path,
                        "unterminated ${ (close it with }, or write $${ for a literal ${)",
                    );
                    return None;
                };
                let name = &inner[..end];
                rest = &inner[end + 1..];
                if !is_env_name(name) {
                    let message = format!(
                        "invalid environment variable name {name:?} in ${{...}} \
                         (use letters, digits and _; write $${{ for a literal ${{)"
                    );
                    self.error(line, path, message);
                    ok = false;
                    continue;
                }
                match (self.env)(name) {
                    Ok(value) => out.push_str(&value),
                    Err(VarError::NotPresent) => {
                        let message = format!("environment variable {name} is not set");
                        self.error(line, path, message);
                        ok = false;
                    }
                    Err(VarError::NotUnicode(_)) => {
                        let message = format!("environment variable {name} is not valid UTF-8");
                        self.error(line, path, message);
                        ok = false;
                    }
                }
            } else {
                out.push('$');
                rest = &tail[1..];
            }
        }
        out.push_str(rest);
        ok.then_some(out)
    }
}

/// Deserializes the whole file (`None`: empty) into `T`, reporting every
/// problem into `state`; `None` only when the file is not a mapping at all.
pub(super) fn deserialize<T: DeserializeOwned>(root: Option<&Node>, state: &State) -> Option<T> {
    let empty = Node {
        line: 1,
        kind: Kind::Map(Vec::new()),
    };
    let root = root.unwrap_or(&empty);
    for _ in 0..MAX_PASSES {
        let left_out = state.removed.borrow().len();
        let de = De {
            node: root,
            path: String::new(),
            state,
        };
        match T::deserialize(de) {
            Ok(value) => return Some(value),
            Err(Error::Reported) if state.removed.borrow().len() > left_out => continue,
            Err(Error::Reported) => return None,
            Err(Error::Other(message)) => {
                state.error(1, "", message);
                return None;
            }
        }
    }
    let message = format!(
        "more than {MAX_PASSES} values of the wrong kind (a list or mapping where another \
         belongs); fix these first"
    );
    state.error(1, "", message);
    None
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `Reported`: the problem is in the state already.
#[derive(Debug)]
pub(super) enum Error {
    Reported,
    Other(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Reported => f.write_str("reported"),
            Error::Other(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::Other(msg.to_string())
    }
}

/// One node and its key path.
struct De<'s, 'a> {
    node: &'s Node,
    path: String,
    state: &'s State<'a>,
}

impl<'s, 'a> De<'s, 'a> {
    fn at(&self, node: &'s Node, path: String) -> Self {
        De {
            node,
            path,
            state: self.state,
        }
    }

    fn wrong_kind(&self, expected: &str) -> Error {
        let message = format!("expected {expected}, found {}", self.node.describe());
        self.state.reject(self.node, &self.path, message)
    }

    /// A [`Text`](crate::settings::Text): the scalar with its line and key;
    /// anything else is reported and read as an invalid text.
    fn text<'de, V: Visitor<'de>>(self, fields: &[&str], visitor: V) -> Result<V::Value, Error> {
        let expected = fields.get(4).copied().unwrap_or("a string");
        let line = self.node.line;
        let value = match &self.node.kind {
            Kind::Scalar { text, .. } => self.state.substitute(text, line, &self.path),
            _ => {
                let message = format!("expected {expected}, found {}", self.node.describe());
                self.state.error(line, &self.path, message);
                None
            }
        };
        visitor.visit_seq(TextParts {
            line,
            key: Some(self.path),
            valid: Some(value.is_some()),
            value: Some(value.unwrap_or_default()),
        })
    }
}

impl<'de> de::Deserializer<'de> for De<'_, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.kind {
            Kind::Scalar { .. } if self.node.is_null() => visitor.visit_unit(),
            Kind::Scalar { text, .. } => {
                match self.state.substitute(text, self.node.line, &self.path) {
                    Some(text) => visitor.visit_string(text),
                    None => {
                        // Reported by `substitute`; left out of the next pass.
                        self.state.removed.borrow_mut().insert(self.path.clone());
                        Err(Error::Reported)
                    }
                }
            }
            Kind::Seq(_) => self.deserialize_seq(visitor),
            Kind::Map(_) => self.deserialize_map(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.node.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        if name == TEXT {
            return self.text(fields, visitor);
        }
        match &self.node.kind {
            Kind::Map(entries) => visitor.visit_map(Entries::new(&self, entries, Some(fields))),
            _ if self.node.is_null() => visitor.visit_map(Entries::new(&self, &[], Some(fields))),
            _ if self.path.is_empty() => {
                let message = format!(
                    "the file must be a mapping of {}, found {}",
                    fields.join(", "),
                    self.node.describe()
                );
                Err(self.state.reject(self.node, "", message))
            }
            _ => Err(self.wrong_kind("a mapping")),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.kind {
            Kind::Map(entries) => visitor.visit_map(Entries::new(&self, entries, None)),
            _ if self.node.is_null() => visitor.visit_map(Entries::new(&self, &[], None)),
            _ => Err(self.wrong_kind("a mapping")),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.kind {
            Kind::Seq(items) => visitor.visit_seq(Items::new(&self, items, true)),
            _ if self.node.is_null() => visitor.visit_seq(Items::new(&self, &[], true)),
            _ => Err(self.wrong_kind("a list")),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        if name != ONE_OR_MANY {
            return visitor.visit_newtype_struct(self);
        }
        match &self.node.kind {
            Kind::Seq(items) => visitor.visit_seq(Items::new(&self, items, true)),
            Kind::Scalar { .. } => {
                visitor.visit_seq(Items::new(&self, std::slice::from_ref(self.node), false))
            }
            Kind::Map(_) => Err(self.wrong_kind("a string or a list of strings")),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct tuple tuple_struct enum identifier
    }
}

/// The parts of a [`Text`](crate::settings::Text), in its field order.
struct TextParts {
    line: usize,
    key: Option<String>,
    valid: Option<bool>,
    value: Option<String>,
}

impl<'de> SeqAccess<'de> for TextParts {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if self.line != 0 {
            let line = std::mem::take(&mut self.line) as u64;
            return seed.deserialize(line.into_deserializer()).map(Some);
        }
        if let Some(key) = self.key.take() {
            return seed.deserialize(key.into_deserializer()).map(Some);
        }
        if let Some(valid) = self.valid.take() {
            return seed.deserialize(valid.into_deserializer()).map(Some);
        }
        match self.value.take() {
            Some(value) => seed.deserialize(value.into_deserializer()).map(Some),
            None => Ok(None),
        }
    }
}

/// The entries of a mapping: a struct's (`fields` known) or a free-form
/// one (keys quoted in key paths: public keys hold `/`, `+` and `=`).
struct Entries<'s, 'a> {
    entries: std::slice::Iter<'s, (Node, Node)>,
    fields: Option<&'static [&'static str]>,
    path: String,
    state: &'s State<'a>,
    seen: Vec<(String, usize)>,
    pending: Option<(&'s Node, String)>,
}

impl<'s, 'a> Entries<'s, 'a> {
    fn new(
        de: &De<'s, 'a>,
        entries: &'s [(Node, Node)],
        fields: Option<&'static [&'static str]>,
    ) -> Self {
        Self {
            entries: entries.iter(),
            fields,
            path: de.path.clone(),
            state: de.state,
            seen: Vec::new(),
            pending: None,
        }
    }
}

impl<'de> MapAccess<'de> for Entries<'_, '_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        for (key, value) in self.entries.by_ref() {
            let Kind::Scalar { text, .. } = &key.kind else {
                self.state
                    .error(key.line, &self.path, "keys must be plain strings");
                continue;
            };
            let key_path = match self.fields {
                Some(_) => join_key(&self.path, text),
                None => format!("{}.{text:?}", self.path),
            };
            if let Some((_, first)) = self.seen.iter().find(|(k, _)| k == text) {
                let message = format!("duplicate key (first at line {first})");
                self.state.error(key.line, &key_path, message);
                continue;
            }
            if let Some(fields) = self.fields {
                if !fields.contains(&text.as_str()) {
                    let message = unknown_key_message(text, fields);
                    self.state.error(key.line, &key_path, message);
                    continue;
                }
            }
            self.seen.push((text.clone(), key.line));
            self.state
                .lines
                .borrow_mut()
                .insert(key_path.clone(), key.line);
            if self.state.removed.borrow().contains(&key_path) {
                continue;
            }
            self.pending = Some((value, key_path));
            return seed.deserialize(text.clone().into_deserializer()).map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let (node, path) = self
            .pending
            .take()
            .ok_or_else(|| Error::Other("a value without its key".into()))?;
        seed.deserialize(De {
            node,
            path,
            state: self.state,
        })
    }
}

/// The items of a list (`indexed`: `key[i]`), or a single value read as a
/// list of one (same key).
struct Items<'s, 'a> {
    items: std::iter::Enumerate<std::slice::Iter<'s, Node>>,
    indexed: bool,
    de: De<'s, 'a>,
}

impl<'s, 'a> Items<'s, 'a> {
    fn new(de: &De<'s, 'a>, items: &'s [Node], indexed: bool) -> Self {
        Self {
            items: items.iter().enumerate(),
            indexed,
            de: de.at(de.node, de.path.clone()),
        }
    }
}

impl<'de> SeqAccess<'de> for Items<'_, '_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        for (i, item) in self.items.by_ref() {
            let path = if self.indexed {
                format!("{}[{i}]", self.de.path)
            } else {
                self.de.path.clone()
            };
            if self.indexed {
                self.de
                    .state
                    .lines
                    .borrow_mut()
                    .insert(path.clone(), item.line);
            }
            if self.de.state.removed.borrow().contains(&path) {
                continue;
            }
            return seed.deserialize(self.de.at(item, path)).map(Some);
        }
        Ok(None)
    }
}
