//! What a [`Text`](super::Text) should hold: its JSON Schema (what editors
//! check) and the words of "expected ..., found a list".

use schemars::{json_schema, Schema};

/// What a scalar should hold.
pub trait Kind {
    /// The schema's name for it.
    const NAME: &'static str;
    /// The fields the deserializer fills (line, key, valid, value), then
    /// what is expected, in words ("a duration").
    const FIELDS: &'static [&'static str];
    /// Its JSON Schema.
    fn schema() -> Schema;
}

macro_rules! kind {
    ($(#[$doc:meta])* $name:ident, $expected:literal, $schema:tt) => {
        $(#[$doc])*
        pub struct $name;
        impl Kind for $name {
            const NAME: &'static str = stringify!($name);
            const FIELDS: &'static [&'static str] = &["line", "key", "valid", "value", $expected];
            fn schema() -> Schema {
                json_schema!($schema)
            }
        }
    };
}

/// `${...}` anywhere in a string: editors cannot know what it becomes.
const VARIABLE: &str = r"\$\{";

kind!(
    /// Free text.
    Str,
    "a string",
    { "type": "string" }
);
kind!(
    /// A template (minijinja) rendered per event.
    Tmpl,
    "a string (a template)",
    { "type": "string" }
);
kind!(
    /// A key given alone or in a list (`signing_secret`).
    Strs,
    "a string or a list of strings",
    { "type": "string" }
);
kind!(
    /// `true` or `false`.
    Flag,
    "true or false",
    { "type": "boolean" }
);

/// A duration: `500ms`, `5s`, `1h30m` (Go's units) or a bare number of seconds.
pub struct Dur;
impl Kind for Dur {
    const NAME: &'static str = "Duration";
    const FIELDS: &'static [&'static str] = &["line", "key", "valid", "value", "a duration"];
    fn schema() -> Schema {
        let units = r"^\s*(\d+|(\d*\.?\d+(ns|us|µs|ms|s|m|h))+)\s*$";
        json_schema!({
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": format!("{units}|{VARIABLE}") }
            ]
        })
    }
}

/// A whole number.
pub struct Num;
impl Kind for Num {
    const NAME: &'static str = "Number";
    const FIELDS: &'static [&'static str] = &["line", "key", "valid", "value", "a number"];
    fn schema() -> Schema {
        json_schema!({
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": format!(r"^\s*[0-9_]+\s*$|{VARIABLE}") }
            ]
        })
    }
}

/// An HTTP method: `POST`, `GET` or `PUT`, in any case.
pub struct Method;
impl Kind for Method {
    const NAME: &'static str = "Method";
    const FIELDS: &'static [&'static str] = &["line", "key", "valid", "value", "a string"];
    fn schema() -> Schema {
        json_schema!({
            "type": "string",
            "pattern": format!(r"^\s*([Pp][Oo][Ss][Tt]|[Gg][Ee][Tt]|[Pp][Uu][Tt])\s*$|{VARIABLE}")
        })
    }
}

/// A setting with a fixed set of values, each with the name the file uses.
pub trait Named: Copy + 'static {
    /// Every value, in the order messages list them.
    const ALL: &'static [Self];
    /// The name in the file.
    fn name(self) -> &'static str;
}

/// One of `T`'s names.
pub struct Pick<T>(std::marker::PhantomData<T>);
impl<T: Named> Kind for Pick<T> {
    const NAME: &'static str = "Choice";
    const FIELDS: &'static [&'static str] = &["line", "key", "valid", "value", "a string"];
    fn schema() -> Schema {
        let names: Vec<&str> = T::ALL.iter().map(|v| v.name()).collect();
        json_schema!({ "type": "string", "enum": names })
    }
}
