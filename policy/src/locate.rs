//! Source positions of the YAML nodes, for errors found after parsing (a
//! dangling chain reference, a duplicate name, ...).
//!
//! yaml_serde keeps no spans in its `Value` and has no `Spanned` type; the
//! only place it reveals a position is the mark it attaches to an error
//! raised while deserializing a node. So [`build`] walks the document with
//! a `Deserialize` implementation that, at every scalar, records the
//! scalar's text and returns a sentinel error; yaml_serde marks it with the
//! scalar's line and column; the enclosing map or sequence visitor catches
//! it, reads the position back from the error, and carries on with the next
//! entry. A scalar is a single YAML event, so failing after it leaves the
//! event stream exactly where a successful visit would have. Containers
//! never fail (failing there would leave their end event unconsumed); their
//! position is that of their first key or item, which is where the block
//! style puts it anyway. One parse yields every position.

use super::error::Pos;
use serde::de::{self, DeserializeSeed, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
use std::fmt;

/// A YAML node with its position.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    /// Position of a scalar, or of the first key/item of a container (None
    /// for an empty container).
    pub pos: Option<Pos>,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Scalar(String),
    Null,
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// A node with no content and no position: stands in when the document
    /// could not be walked, so lookups fall back to "no position".
    pub(crate) fn empty() -> Node {
        Node {
            pos: None,
            kind: Kind::Null,
        }
    }

    /// The entry whose key is the scalar `key` (the first one, as serde
    /// reads duplicates as an error anyway).
    pub(crate) fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        match &self.kind {
            Kind::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.kind, Kind::Scalar(s) if s == key))
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    /// The `i`th item of a sequence.
    pub(crate) fn item(&self, i: usize) -> Option<&Node> {
        match &self.kind {
            Kind::Seq(items) => items.get(i),
            _ => None,
        }
    }

    /// The key nodes spelled `key` in this map, in source order.
    pub(crate) fn keys_named<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        let entries: &[(Node, Node)] = match &self.kind {
            Kind::Map(entries) => entries,
            _ => &[],
        };
        entries
            .iter()
            .map(|(k, _)| k)
            .filter(move |k| matches!(&k.kind, Kind::Scalar(s) if s == key))
    }

    /// The first map (depth first) that starts at `pos`.
    pub(crate) fn map_at(&self, pos: Pos) -> Option<&Node> {
        if matches!(self.kind, Kind::Map(_)) && self.pos == Some(pos) {
            return Some(self);
        }
        match &self.kind {
            Kind::Seq(items) => items.iter().find_map(|n| n.map_at(pos)),
            Kind::Map(entries) => entries.iter().find_map(|(_, v)| v.map_at(pos)),
            _ => None,
        }
    }
}

/// Walks `text` into a positioned tree. None when the text is not one
/// well-formed YAML document (the caller reports the parse error itself).
pub(crate) fn build(text: &str) -> Option<Node> {
    let mut scalar = None;
    let seed = NodeSeed {
        scalar: &mut scalar,
    };
    match seed.deserialize(yaml_serde::Deserializer::from_str(text)) {
        Ok(node) => Some(node),
        // A document that is a lone scalar ends in the sentinel too.
        Err(err) => caught(&err, &mut scalar),
    }
}

/// Recognises our sentinel error and turns it back into the scalar node it
/// stands for; None for a real error.
fn caught(err: &impl fmt::Display, scalar: &mut Option<Kind>) -> Option<Node> {
    let pos = sentinel_pos(&err.to_string())?;
    scalar.take().map(|kind| Node {
        pos: Some(pos),
        kind,
    })
}

/// The message of the sentinel error. Contains a NUL so that no real error
/// message can be mistaken for it.
const SENTINEL: &str = "\u{0}emptcp-locate\u{0}";

/// yaml_serde displays a marked error as `PATH: MESSAGE at line L column C`,
/// leaving out the position when it is line 1 column 1.
fn sentinel_pos(display: &str) -> Option<Pos> {
    let (_, after) = display.split_once(SENTINEL)?;
    let Some(rest) = after.strip_prefix(" at line ") else {
        return Some(Pos::new(1, 1));
    };
    let (line, column) = rest.split_once(" column ")?;
    Some(Pos::new(
        line.trim().parse().ok()?,
        column.trim().parse().ok()?,
    ))
}

struct NodeSeed<'a> {
    /// Where a scalar leaves its content before failing with the sentinel.
    scalar: &'a mut Option<Kind>,
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = Node;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(NodeVisitor {
            scalar: self.scalar,
        })
    }
}

struct NodeVisitor<'a> {
    scalar: &'a mut Option<Kind>,
}

impl NodeVisitor<'_> {
    fn scalar<E: de::Error>(self, kind: Kind) -> Result<Node, E> {
        *self.scalar = Some(kind);
        Err(E::custom(SENTINEL))
    }
}

/// Runs `next` (which deserializes one node with a fresh slot) and returns
/// the node, whether it came back as a value (container) or as the
/// sentinel (scalar). Real errors pass through.
fn next_node<E: de::Error>(
    next: impl FnOnce(&mut Option<Kind>) -> Result<Option<Node>, E>,
) -> Result<Option<Node>, E> {
    let mut slot = None;
    match next(&mut slot) {
        Ok(node) => Ok(node),
        Err(err) => caught(&err, &mut slot).map(Some).ok_or(err),
    }
}

impl<'de> Visitor<'de> for NodeVisitor<'_> {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        self.scalar(Kind::Scalar(v.to_string()))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        self.scalar(Kind::Scalar(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        self.scalar(Kind::Scalar(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        self.scalar(Kind::Scalar(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        self.scalar(Kind::Scalar(v.to_string()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        self.scalar(Kind::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        self.scalar(Kind::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = next_node(|slot| seq.next_element_seed(NodeSeed { scalar: slot }))? {
            items.push(item);
        }
        Ok(Node {
            pos: items.first().and_then(|n| n.pos),
            kind: Kind::Seq(items),
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = next_node(|slot| map.next_key_seed(NodeSeed { scalar: slot }))? {
            let value = next_node(|slot| map.next_value_seed(NodeSeed { scalar: slot }).map(Some))?
                .unwrap_or_else(Node::empty);
            entries.push((key, value));
        }
        Ok(Node {
            pos: entries.first().and_then(|(k, _)| k.pos),
            kind: Kind::Map(entries),
        })
    }

    /// A tagged node (`!tag value`): keep the value, drop the tag.
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Node, A::Error> {
        let (_tag, variant) = data.variant::<de::IgnoredAny>()?;
        variant.newtype_variant_seed(NodeSeed {
            scalar: self.scalar,
        })
    }
}

/// A place in one source file: the node an error is about (when found) and
/// its best known position. Lookups that miss keep the position of the
/// nearest ancestor found, so every error still points somewhere useful
/// (e.g. a value that came from a YAML merge key `<<`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spot<'a> {
    pub file: usize,
    node: Option<&'a Node>,
    pos: Option<Pos>,
}

impl<'a> Spot<'a> {
    pub(crate) fn root(file: usize, node: &'a Node) -> Self {
        Spot {
            file,
            node: Some(node),
            pos: node.pos,
        }
    }

    /// The value of `key`; for an empty container value (`actions: []`),
    /// positioned at the key.
    pub(crate) fn get(self, key: &str) -> Spot<'a> {
        match self.node.and_then(|n| n.entry(key)) {
            Some((k, v)) => Spot {
                file: self.file,
                node: Some(v),
                pos: v.pos.or(k.pos).or(self.pos),
            },
            None => Spot { node: None, ..self },
        }
    }

    /// The key `key` itself (for errors about the whole entry).
    pub(crate) fn key(self, key: &str) -> Spot<'a> {
        match self.node.and_then(|n| n.entry(key)) {
            Some((k, _)) => Spot {
                file: self.file,
                node: Some(k),
                pos: k.pos.or(self.pos),
            },
            None => Spot { node: None, ..self },
        }
    }

    /// The `i`th item of a sequence.
    pub(crate) fn item(self, i: usize) -> Spot<'a> {
        match self.node.and_then(|n| n.item(i)) {
            Some(n) => Spot {
                file: self.file,
                node: Some(n),
                pos: n.pos.or(self.pos),
            },
            None => Spot { node: None, ..self },
        }
    }

    pub(crate) fn pos(self) -> Option<Pos> {
        self.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(node: &Node) -> (usize, usize) {
        let p = node.pos.expect("position");
        (p.line, p.column)
    }

    #[test]
    fn positions_of_block_and_flow_nodes() {
        let text = "\
# comment
version: 1
chains:
  - name: a
    actions: [record_flow, {set_backup: {backup: true}}]
    match:
      remote: [\"2001:db8::/32\"]
  - name: b
    actions: []
";
        let root = build(text).unwrap();
        assert_eq!(at(&root), (2, 1));
        assert_eq!(at(root.entry("version").unwrap().1), (2, 10));
        let chains = root.entry("chains").unwrap().1;
        assert_eq!(at(chains), (4, 5));
        let a = chains.item(0).unwrap();
        assert_eq!(at(a.entry("name").unwrap().0), (4, 5));
        assert_eq!(at(a.entry("name").unwrap().1), (4, 11));
        let actions = a.entry("actions").unwrap().1;
        assert_eq!(at(actions.item(0).unwrap()), (5, 15));
        assert_eq!(at(actions.item(1).unwrap()), (5, 29));
        let remote = a.entry("match").unwrap().1.entry("remote").unwrap().1;
        assert_eq!(at(remote.item(0).unwrap()), (7, 16));
        assert_eq!(
            remote.item(0).unwrap().kind,
            Kind::Scalar("2001:db8::/32".into())
        );
        let b = chains.item(1).unwrap();
        assert_eq!(b.entry("actions").unwrap().1.pos, None);
        let spot = Spot::root(0, &root).get("chains").item(1).get("actions");
        assert_eq!(spot.pos(), Some(Pos::new(9, 5)));
    }

    #[test]
    fn missing_paths_fall_back_to_the_nearest_ancestor() {
        let root = build("chains:\n  - name: a\n").unwrap();
        let spot = Spot::root(0, &root)
            .get("chains")
            .item(0)
            .get("thresholds")
            .get("x");
        assert_eq!(spot.pos(), Some(Pos::new(2, 5)));
    }

    #[test]
    fn scalars_of_every_type_and_nulls() {
        let root = build("a: true\nb: -3\nc: 1.5\nd: ~\ne:\nf: !tag x\n").unwrap();
        let scalar = |k: &str| root.entry(k).unwrap().1.clone();
        assert_eq!(scalar("a").kind, Kind::Scalar("true".into()));
        assert_eq!(scalar("b").kind, Kind::Scalar("-3".into()));
        assert_eq!(scalar("c").kind, Kind::Scalar("1.5".into()));
        assert_eq!(scalar("d").kind, Kind::Null);
        assert_eq!(scalar("e").kind, Kind::Null);
        assert_eq!(scalar("f").kind, Kind::Scalar("x".into()));
        assert_eq!(at(&scalar("f")), (6, 4));
    }

    #[test]
    fn a_lone_scalar_document_and_invalid_yaml() {
        assert_eq!(build("hello").unwrap().kind, Kind::Scalar("hello".into()));
        assert!(build("a: [").is_none());
    }

    #[test]
    fn duplicate_keys_are_all_kept() {
        let root = build("x: 1\ny: 2\nx: 3\n").unwrap();
        let xs: Vec<_> = root.keys_named("x").map(at).collect();
        assert_eq!(xs, vec![(1, 1), (3, 1)]);
        assert!(root.map_at(Pos::new(1, 1)).is_some());
    }
}
