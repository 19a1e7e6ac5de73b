//! Event names (`peer.connect`) and the `events` filters of destinations
//! (`peer.*`, `*.delete`, `*`), parsed once into an [`EventFilter`].

use super::{Entity, Event, EventKind};

/// Every event name, in the order messages list them.
pub const EVENT_NAMES: [&str; 8] = [
    "peer.create",
    "peer.update",
    "peer.delete",
    "peer.connect",
    "peer.disconnect",
    "interface.create",
    "interface.update",
    "interface.delete",
];

/// One pattern: `None` is `*` for that part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pattern {
    entity: Option<Entity>,
    kind: Option<EventKind>,
}

impl Pattern {
    fn matches(self, entity: Entity, kind: EventKind) -> bool {
        self.entity.is_none_or(|e| e == entity) && self.kind.is_none_or(|k| k == kind)
    }
}

/// Which events a destination takes; the empty filter takes every event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventFilter {
    patterns: Vec<Pattern>,
    /// As written, for display.
    text: Vec<String>,
}

impl EventFilter {
    /// Every event.
    pub fn all() -> Self {
        Self::default()
    }

    /// A filter of patterns such as `peer.connect`, `peer.*`, `*.delete` or
    /// `*`; the first pattern that is none of these is the error, with a
    /// message that lists what is allowed.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<Self, String> {
        let mut out = Self::default();
        for p in patterns {
            out.push(p.as_ref())?;
        }
        Ok(out)
    }

    /// Adds one pattern; an unknown one is the error, the filter unchanged.
    pub fn push(&mut self, pattern: &str) -> Result<(), String> {
        self.patterns.push(parse_pattern(pattern)?);
        self.text.push(pattern.trim().to_string());
        Ok(())
    }

    /// True if the filter takes events called `name` (`peer.connect`).
    pub fn matches_name(&self, name: &str) -> bool {
        let Ok(Pattern {
            entity: Some(entity),
            kind: Some(kind),
        }) = parse_pattern(name)
        else {
            return false;
        };
        self.takes(entity, kind)
    }

    /// True if the filter takes `event`.
    pub fn matches(&self, event: &Event) -> bool {
        self.takes(event.entity, event.kind)
    }

    fn takes(&self, entity: Entity, kind: EventKind) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| p.matches(entity, kind))
    }

    /// The patterns as written; empty for every event.
    pub fn patterns(&self) -> &[String] {
        &self.text
    }

    /// True if no pattern was given: every event is taken.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

/// Compares the patterns as written (`filter == ["peer.*"]`).
impl<const N: usize> PartialEq<[&str; N]> for EventFilter {
    fn eq(&self, other: &[&str; N]) -> bool {
        self.text
            .iter()
            .map(String::as_str)
            .eq(other.iter().copied())
    }
}

/// `peer.connect`, `peer.*`, `*.delete` or `*`; a pattern that matches no
/// event name is refused.
fn parse_pattern(text: &str) -> Result<Pattern, String> {
    let text = text.trim();
    let refused = || {
        format!(
            "unknown event {text:?} (use {}, or * as a part, e.g. peer.*)",
            EVENT_NAMES.join(", ")
        )
    };
    if text == "*" {
        return Ok(Pattern {
            entity: None,
            kind: None,
        });
    }
    let (entity, kind) = text.split_once('.').ok_or_else(refused)?;
    let entity = match entity {
        "*" => None,
        "peer" => Some(Entity::Peer),
        "interface" => Some(Entity::Interface),
        _ => return Err(refused()),
    };
    let kind = match kind {
        "*" => None,
        "create" => Some(EventKind::Create),
        "update" => Some(EventKind::Update),
        "delete" => Some(EventKind::Delete),
        "connect" => Some(EventKind::Connect),
        "disconnect" => Some(EventKind::Disconnect),
        _ => return Err(refused()),
    };
    let pattern = Pattern { entity, kind };
    // `interface.connect` is well formed but names no event.
    let names_one = EVENT_NAMES.iter().any(|name| {
        let (e, k) = name.split_once('.').unwrap_or((name, ""));
        entity.is_none_or(|x| x.as_str() == e) && kind.is_none_or(|x| x.as_str() == k)
    });
    if names_one {
        Ok(pattern)
    } else {
        Err(refused())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_entities_and_kinds_with_wildcards() {
        let f = EventFilter::parse(&["peer.*", "*.delete"]).unwrap();
        assert!(f.matches_name("peer.connect"));
        assert!(f.matches_name("interface.delete"));
        assert!(!f.matches_name("interface.create"));
        assert!(EventFilter::all().matches_name("interface.update"));
        assert!(EventFilter::parse(&["*"])
            .unwrap()
            .matches_name("peer.update"));
        assert_eq!(f.patterns(), ["peer.*", "*.delete"]);
        for bad in ["peer", "peer.conect", "interface.connect", "host.*", ""] {
            assert!(EventFilter::parse(&[bad]).is_err(), "{bad:?}");
        }
    }
}
