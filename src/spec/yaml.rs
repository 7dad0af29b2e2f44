//! The one place YAML is parsed: text → a tree of [`Node`]s that remember where they came from,
//! so every later error can name `file:line:column`. Scalars are resolved with the YAML 1.2 core
//! schema (plain `true`, `12`, `1.5e-4`, `null`, `~`; quoted scalars are always strings).

use std::collections::HashMap;

use serde_json::Value;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

pub use crate::error::Pos;

fn pos_of(m: &Marker) -> Pos {
    Pos::File { line: m.line(), col: m.col() + 1 }
}

/// A YAML value with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub kind: Kind,
}

/// The shape of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A resolved scalar (null, bool, number or string).
    Scalar(Value),
    Seq(Vec<Node>),
    /// Entries in file order; each key keeps its own position for "unknown key" errors.
    Map(Vec<(String, Pos, Node)>),
}

impl Node {
    /// The plain JSON value of this tree (positions dropped).
    pub fn to_json(&self) -> Value {
        match &self.kind {
            Kind::Scalar(v) => v.clone(),
            Kind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Kind::Map(entries) => Value::Object(entries.iter().map(|(k, _, v)| (k.clone(), v.to_json())).collect()),
        }
    }

    /// The map entry `key`, if this is a map that has it.
    pub fn get(&self, key: &str) -> Option<&(String, Pos, Node)> {
        match &self.kind {
            Kind::Map(entries) => entries.iter().find(|(k, _, _)| k == key),
            _ => None,
        }
    }

    /// Position of the node at `path` (map keys and sequence indices); the deepest existing
    /// ancestor's position when the path does not exist (e.g. a missing field).
    pub fn locate(&self, path: &[String]) -> Pos {
        let mut node = self;
        for seg in path {
            let next = match &node.kind {
                Kind::Map(entries) => entries.iter().find(|(k, _, _)| k == seg).map(|(_, _, v)| v),
                Kind::Seq(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
                Kind::Scalar(_) => None,
            };
            match next {
                Some(n) => node = n,
                None => return node.pos.clone(),
            }
        }
        node.pos.clone()
    }

    /// Position of the *key* at the end of `path` (for unknown-key errors).
    pub fn locate_key(&self, path: &[String]) -> Pos {
        let Some((last, parent)) = path.split_last() else { return self.pos.clone() };
        let mut node = self;
        for seg in parent {
            match &node.kind {
                Kind::Map(entries) => match entries.iter().find(|(k, _, _)| k == seg) {
                    Some((_, _, v)) => node = v,
                    None => return node.pos.clone(),
                },
                Kind::Seq(items) => match seg.parse::<usize>().ok().and_then(|i| items.get(i)) {
                    Some(v) => node = v,
                    None => return node.pos.clone(),
                },
                Kind::Scalar(_) => return node.pos.clone(),
            }
        }
        match node.get(last) {
            Some((_, pos, _)) => pos.clone(),
            None => node.pos.clone(),
        }
    }
}

/// A YAML syntax error with its position.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Parses one YAML document. An empty document is an empty map.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut builder, false) {
        let m = e.marker();
        return Err(SyntaxError { line: m.line(), col: m.col() + 1, message: e.info().to_string() });
    }
    if let Some(err) = builder.error {
        return Err(err);
    }
    Ok(builder.root.unwrap_or(Node { pos: Pos::File { line: 1, col: 1 }, kind: Kind::Map(Vec::new()) }))
}

/// Parses a `--set` value: a scalar or a flow collection (`[1, 2]`, `{window_rows: 8}`).
pub fn parse_override_value(text: &str, origin: &str) -> Result<Node, String> {
    let node = parse(text).map_err(|e| e.message)?;
    Ok(relabel(node, origin))
}

fn relabel(node: Node, origin: &str) -> Node {
    let pos = Pos::Override(origin.to_string());
    let kind = match node.kind {
        Kind::Scalar(v) => Kind::Scalar(v),
        Kind::Seq(items) => Kind::Seq(items.into_iter().map(|n| relabel(n, origin)).collect()),
        Kind::Map(entries) => {
            Kind::Map(entries.into_iter().map(|(k, _, v)| (k, pos.clone(), relabel(v, origin))).collect())
        }
    };
    Node { pos, kind }
}

/// Resolves a plain scalar with the YAML 1.2 core schema.
pub fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = s.parse::<i64>() {
            return Value::from(i);
        }
        if let Ok(u) = s.parse::<u64>() {
            return Value::from(u);
        }
    }
    if let Some(hex) = s.strip_prefix("0x") {
        if let Ok(u) = u64::from_str_radix(hex, 16) {
            return Value::from(u);
        }
    }
    let looks_numeric = digits.bytes().next().is_some_and(|b| b.is_ascii_digit() || b == b'.')
        && digits.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if looks_numeric {
        if let Ok(f) = s.parse::<f64>() {
            if let Some(n) = serde_json::Number::from_f64(f) {
                return Value::Number(n);
            }
        }
    }
    match s {
        ".inf" | ".Inf" | "+.inf" | "-.inf" | ".nan" | ".NaN" => Value::String(s.to_string()),
        _ => Value::String(s.to_string()),
    }
}

enum Frame {
    Seq { pos: Pos, anchor: usize, items: Vec<Node> },
    Map { pos: Pos, anchor: usize, entries: Vec<(String, Pos, Node)>, key: Option<(String, Pos)> },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    error: Option<SyntaxError>,
}

impl Builder {
    fn push_value(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => match node.kind {
                    Kind::Scalar(v) => {
                        let k = match v {
                            Value::String(s) => s,
                            Value::Null => String::new(),
                            other => other.to_string(),
                        };
                        if entries.iter().any(|(e, _, _)| *e == k) && self.error.is_none() {
                            if let Pos::File { line, col } = node.pos {
                                self.error = Some(SyntaxError { line, col, message: format!("duplicate key `{k}`") });
                            }
                        }
                        *key = Some((k, node.pos));
                    }
                    _ => {
                        if self.error.is_none() {
                            if let Pos::File { line, col } = node.pos {
                                self.error = Some(SyntaxError {
                                    line,
                                    col,
                                    message: "a mapping key must be a plain scalar".into(),
                                });
                            }
                        }
                        *key = Some((String::new(), node.pos));
                    }
                },
                Some((k, kpos)) => entries.push((k, kpos, node)),
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = pos_of(&mark);
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                let value = match style {
                    TScalarStyle::Plain => resolve_plain(&text),
                    _ => Value::String(text),
                };
                self.push_value(Node { pos, kind: Kind::Scalar(value) }, anchor);
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq { pos, anchor, items: Vec::new() }),
            Event::MappingStart(anchor, _) => {
                self.stack.push(Frame::Map { pos, anchor, entries: Vec::new(), key: None })
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq { pos, anchor, items }) => (Node { pos, kind: Kind::Seq(items) }, anchor),
                    Some(Frame::Map { pos, anchor, entries, .. }) => (Node { pos, kind: Kind::Map(entries) }, anchor),
                    None => return,
                };
                self.push_value(node, anchor);
            }
            Event::Alias(id) => {
                let node = self.anchors.get(&id).cloned().map(|mut n| {
                    n.pos = pos.clone();
                    n
                });
                match node {
                    Some(n) => self.push_value(n, 0),
                    None => self.push_value(Node { pos, kind: Kind::Scalar(Value::Null) }, 0),
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_core_schema_scalars_and_positions() {
        let node = parse("a: 1\nb: '1'\nc: 1.5e-4\nd: ~\ne: [true, x]\n").unwrap();
        assert_eq!(node.to_json(), serde_json::json!({"a": 1, "b": "1", "c": 1.5e-4, "d": null, "e": [true, "x"]}));
        assert_eq!(node.locate(&["c".into()]), Pos::File { line: 3, col: 4 });
        assert_eq!(node.locate_key(&["e".into()]), Pos::File { line: 5, col: 1 });
    }

    #[test]
    fn reports_syntax_errors_and_duplicate_keys() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.line >= 1, "{err:?}");
        let err = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!((err.line, err.col), (2, 1));
        assert!(err.message.contains("duplicate key `a`"));
    }

    #[test]
    fn aliases_copy_the_anchored_value() {
        let node = parse("a: &x {k: 1}\nb: *x\n").unwrap();
        assert_eq!(node.to_json()["b"], serde_json::json!({"k": 1}));
    }
}
