//! YAML text -> a tree of scalars, lists and mappings that remembers the
//! line of every node. YAML syntax errors stop here: nothing after a syntax
//! error can be trusted. The tree is what [`super::de`] deserializes.

use std::collections::HashMap;

use serde_saphyr::granit_parser::{Event, Options, Parser, ScalarStyle};

/// Most nodes a document may have (aliases included): a bound on what a
/// hostile file can make us build.
const MAX_NODES: usize = 100_000;

/// A YAML node and the line it starts on. Deliberately not `Debug`: scalars
/// may hold secrets.
#[derive(Clone)]
pub(super) struct Node {
    pub(super) line: usize,
    pub(super) kind: Kind,
}

#[derive(Clone)]
pub(super) enum Kind {
    /// The text as written (after YAML escapes); `plain` when unquoted, which
    /// is what makes `null`, `~` and the empty scalar mean "nothing".
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    pub(super) fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { text, plain: true }
            if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// Number of nodes in this subtree.
    fn size(&self) -> usize {
        match &self.kind {
            Kind::Scalar { .. } => 1,
            Kind::Seq(items) => 1 + items.iter().map(Node::size).sum::<usize>(),
            Kind::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| k.size() + v.size())
                    .sum::<usize>()
            }
        }
    }

    /// What kind of value this is, for "expected X, found Y" (never the value
    /// itself, which could be a misplaced secret).
    pub(super) fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Scalar { .. } if self.is_null() => "nothing",
            Kind::Scalar { .. } => "a single value",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }
}

/// A collection being built while its events arrive.
struct Frame {
    line: usize,
    anchor: usize,
    kind: FrameKind,
}

enum FrameKind {
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>, Option<Node>),
}

impl Frame {
    fn push(&mut self, node: Node) {
        match &mut self.kind {
            FrameKind::Seq(items) => items.push(node),
            FrameKind::Map(entries, pending) => match pending.take() {
                Some(key) => entries.push((key, node)),
                None => *pending = Some(node),
            },
        }
    }

    fn finish(self) -> Node {
        let kind = match self.kind {
            FrameKind::Seq(items) => Kind::Seq(items),
            FrameKind::Map(entries, _) => Kind::Map(entries),
        };
        Node {
            line: self.line,
            kind,
        }
    }
}

/// Parses one YAML document into a tree. `Ok(None)` for an empty file.
/// On a syntax error returns its line and message.
pub(super) fn parse_tree(text: &str) -> Result<Option<Node>, (usize, String)> {
    let mut options = Options::default();
    options.set_emit_comments(false);
    let parser = Parser::new_from_str_with_options(text, options);
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut root = None;
    let mut documents = 0;
    let mut nodes = 0usize;
    for item in parser {
        let (event, span) = item.map_err(|e| {
            (
                e.marker().line(),
                format!(
                    "invalid YAML: {} (column {})",
                    e.info().replace('\n', "; "),
                    e.marker().col() + 1
                ),
            )
        })?;
        let line = span.start.line();
        let (node, anchor) = match event {
            Event::DocumentStart(..) => {
                documents += 1;
                if documents > 1 {
                    return Err((line, "only one YAML document is allowed per file".into()));
                }
                continue;
            }
            Event::Scalar(text, style, anchor, _) => {
                let kind = Kind::Scalar {
                    text: text.into_owned(),
                    plain: style == ScalarStyle::Plain,
                };
                (Node { line, kind }, anchor)
            }
            Event::SequenceStart(_, anchor, _) => {
                stack.push(Frame {
                    line,
                    anchor,
                    kind: FrameKind::Seq(Vec::new()),
                });
                continue;
            }
            Event::MappingStart(_, anchor, _) => {
                stack.push(Frame {
                    line,
                    anchor,
                    kind: FrameKind::Map(Vec::new(), None),
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = stack.pop() else {
                    return Err((line, "invalid YAML: unbalanced collection".into()));
                };
                let anchor = frame.anchor;
                (frame.finish(), anchor)
            }
            Event::Alias(id) => {
                let Some(target) = anchors.get(&id) else {
                    return Err((line, "invalid YAML: alias to an unknown anchor".into()));
                };
                nodes += target.size();
                if nodes > MAX_NODES {
                    return Err((line, "the document is too large (aliases?)".into()));
                }
                let mut node = target.clone();
                node.line = line;
                (node, 0)
            }
            _ => continue,
        };
        nodes += 1;
        if nodes > MAX_NODES {
            return Err((line, "the document is too large".into()));
        }
        if anchor != 0 {
            anchors.insert(anchor, node.clone());
        }
        match stack.last_mut() {
            Some(frame) => frame.push(node),
            None => root = Some(node),
        }
    }
    Ok(root)
}
