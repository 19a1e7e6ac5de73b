//! Values as they were written: [`Text`], [`OneOrMany`] and [`Secret`].

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};

use super::kind::Kind;

/// The name under which a [`Text`] asks the configuration's deserializer
/// for its line and key (the way `serde_spanned` asks for a span).
pub const TEXT: &str = "$wghook::private::Text";
/// The name under which a [`OneOrMany`] asks for one value or a list.
pub const ONE_OR_MANY: &str = "$wghook::private::OneOrMany";

/// A scalar value as written in the configuration file, `${VAR}` already
/// substituted, with the line and key it stood at; `K` says what it should
/// hold (a duration, a flag, ...) for the schema and for type errors.
///
/// `Debug` never shows the value: any scalar may be a misplaced secret.
pub struct Text<K = super::kind::Str> {
    /// 1-based line of the value.
    pub line: usize,
    /// Dotted path of the key, e.g. `webhooks[1].url`.
    pub key: String,
    /// `None` when the value could not be read (not a scalar, an unset
    /// variable): the problem has been reported already.
    value: Option<String>,
    kind: PhantomData<K>,
}

impl<K> Text<K> {
    /// A value written at `line` under `key` (for tests and defaults).
    pub fn new(line: usize, key: &str, value: Option<String>) -> Self {
        Self {
            line,
            key: key.to_string(),
            value,
            kind: PhantomData,
        }
    }

    /// The text, unless it could not be read (already reported).
    pub fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }
}

impl<K> Clone for Text<K> {
    fn clone(&self) -> Self {
        Self::new(self.line, &self.key, self.value.clone())
    }
}

impl<K> fmt::Debug for Text<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Text({}:{})", self.line, self.key)
    }
}

impl<'de, K: Kind> Deserialize<'de> for Text<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor<K>(PhantomData<K>);
        impl<'de, K> Visitor<'de> for TextVisitor<K> {
            type Value = Text<K>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a located scalar")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text<K>, A::Error> {
                let missing = || de::Error::custom("incomplete located scalar");
                let line: u64 = seq.next_element()?.ok_or_else(missing)?;
                let key: String = seq.next_element()?.ok_or_else(missing)?;
                let valid: bool = seq.next_element()?.ok_or_else(missing)?;
                let value: String = seq.next_element()?.ok_or_else(missing)?;
                Ok(Text::new(line as usize, &key, valid.then_some(value)))
            }
        }
        d.deserialize_struct(TEXT, K::FIELDS, TextVisitor(PhantomData))
    }
}

impl<K: Kind> JsonSchema for Text<K> {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        K::NAME.into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        K::schema()
    }
}

/// One value or a list of them (`signing_secret: whsec_...` or a list while
/// keys rotate). A single value keeps its key; list items get `[i]`.
#[derive(Debug, Clone)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ManyVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ManyVisitor<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("one value or a list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany<T>, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element()? {
                    out.push(item);
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_newtype_struct(ONE_OR_MANY, ManyVisitor(PhantomData))
    }
}

impl<T: JsonSchema> JsonSchema for OneOrMany<T> {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        format!("OneOrMany_{}", T::schema_name()).into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let one = generator.subschema_for::<T>();
        json_schema!({ "anyOf": [one, { "type": "array", "items": one }] })
    }
}

/// A value that must never be printed: `Debug` and `Display` show `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The value itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}
