//! Every value error of a file, not only the first.
//!
//! yaml_serde stops at the first error of a document. When the document is
//! well-formed YAML (the error is a wrong value, an unknown field or a bad
//! unit, not a syntax error), the rest of it can still be checked: the
//! element the error is in is cut out of a copy of the document, the copy
//! is parsed again, and the next error found is carried back to its place
//! in the original file through its path in the tree (positions in the
//! copy mean nothing to the operator). This repeats until the copy parses.
//!
//! The element cut is the innermost list item around the error (one action,
//! one prefix, one port, one chain), or the innermost mapping entry when
//! the error is in no list. A "missing field" that the cut itself caused is
//! not reported; collecting stops there.

use super::error::{PolicyError, Pos};
use super::locate::{self, Kind, Node};
use super::model::Policy;
use super::yaml_error;
use std::path::Path;
use yaml_serde::Value;

/// Errors reported from one file at most: past this, more lines of errors
/// help nobody and the loop (one parse each) must end anyway.
const MAX_ERRORS: usize = 50;

/// One step from a node to a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Item(usize),
    Key(usize),
    Value(usize),
}

/// The errors of `text`, whose first parse failed with `first`, sorted by
/// position (errors without one last).
pub(crate) fn every_error(file: &Path, text: &str, first: &yaml_serde::Error) -> Vec<PolicyError> {
    let mut errors = vec![yaml_error::convert(file, text, first)];
    if let (Some(tree), Ok(value)) = (locate::build(text), yaml_serde::from_str::<Value>(text)) {
        let at = first.location().map(|l| Pos::new(l.line(), l.column()));
        collect_rest(file, tree, value, at, &mut errors);
    }
    errors.sort_by_key(|e| (e.line.is_none(), e.line, e.column));
    errors
}

/// Cuts the element at `at` and parses again, until the copy parses, an
/// error cannot be placed, or [`MAX_ERRORS`].
fn collect_rest(
    file: &Path,
    mut original: Node,
    mut value: Value,
    mut at: Option<Pos>,
    errors: &mut Vec<PolicyError>,
) {
    // Positions of the text the last error was found in (the original text
    // first, then each copy).
    let mut current = original.clone();
    let unpruned = original.clone();
    let mut cuts: Vec<Vec<Step>> = Vec::new();
    let mut cut_keys: Vec<String> = Vec::new();
    while errors.len() < MAX_ERRORS {
        let Some(path) = at.and_then(|p| path_to(&current, p)) else {
            return;
        };
        let Some(cut) = cut_at(&path) else { return };
        if let Some(key) = key_name(&original, cut) {
            cut_keys.push(key);
        }
        if !cut_value(&mut value, cut) || !cut_node(&mut original, cut) {
            return;
        }
        cuts.push(cut.to_vec());
        let Ok(copy) = yaml_serde::to_string(&value) else {
            return;
        };
        let Err(e) = yaml_serde::from_str::<Policy>(&copy) else {
            return;
        };
        let Some(copy_tree) = locate::build(&copy) else {
            return;
        };
        at = e.location().map(|l| Pos::new(l.line(), l.column()));
        let Some(copy_path) = at.and_then(|p| path_to(&copy_tree, p)) else {
            return;
        };
        let Some(pos) = node_at(&original, &copy_path).and_then(|n| n.pos) else {
            return;
        };
        let mut error = yaml_error::convert(file, &copy, &e).at(Some(pos));
        // yaml_serde starts its message with the path in the copy, whose
        // indices moved with the cuts: name the path of the original.
        // The path is of the scalar or of a mapping around it (an unknown
        // or missing field is reported at its mapping).
        let original_path = uncut(&copy_path, &cuts);
        for n in (1..=copy_path.len()).rev() {
            let in_copy = format!("{}: ", describe_path(&copy_tree, &copy_path[..n]));
            if let Some(rest) = error.message.strip_prefix(&in_copy) {
                let in_original = describe_path(&unpruned, &original_path[..n]);
                error.message = format!("{in_original}: {rest}");
                break;
            }
        }
        if cut_keys
            .iter()
            .any(|k| error.message.contains(&format!("missing field `{k}`")))
            || errors.contains(&error)
        {
            return;
        }
        error.file = file.to_path_buf();
        errors.push(error);
        current = copy_tree;
    }
}

/// A path of the cut tree as a path of the tree before the cuts: undoes
/// the cuts, latest first, shifting the indices that came after each.
fn uncut(path: &[Step], cuts: &[Vec<Step>]) -> Vec<Step> {
    let mut path = path.to_vec();
    for cut in cuts.iter().rev() {
        let (last, parent) = cut.split_last().expect("cuts are never empty");
        let depth = parent.len();
        if path.len() > depth && same_place(&path[..depth], parent) {
            path[depth] = match (path[depth], *last) {
                (Step::Item(i), Step::Item(c)) if i >= c => Step::Item(i + 1),
                (Step::Key(i), Step::Key(c) | Step::Value(c)) if i >= c => Step::Key(i + 1),
                (Step::Value(i), Step::Key(c) | Step::Value(c)) if i >= c => Step::Value(i + 1),
                (step, _) => step,
            };
        }
    }
    path
}

/// Whether two paths lead to the same node (a key and its value's entry
/// count as the same entry).
fn same_place(a: &[Step], b: &[Step]) -> bool {
    a.iter().zip(b).all(|(x, y)| match (*x, *y) {
        (Step::Item(i), Step::Item(j)) => i == j,
        (Step::Key(i) | Step::Value(i), Step::Key(j) | Step::Value(j)) => i == j,
        _ => false,
    })
}

/// `chains[0].actions[1]`, as yaml_serde writes a path.
fn describe_path(root: &Node, path: &[Step]) -> String {
    let mut out = String::new();
    let mut node = Some(root);
    for step in path {
        match *step {
            Step::Item(i) => out.push_str(&format!("[{i}]")),
            Step::Key(i) | Step::Value(i) => {
                let key = match node.map(|n| &n.kind) {
                    Some(Kind::Map(entries)) => match entries.get(i).map(|(k, _)| &k.kind) {
                        Some(Kind::Scalar(s)) => s.clone(),
                        _ => "?".to_string(),
                    },
                    _ => "?".to_string(),
                };
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&key);
            }
        }
        node = node.and_then(|n| node_at(n, std::slice::from_ref(step)));
    }
    out
}

/// The path to the first scalar (key or value, depth first) at `pos`.
fn path_to(node: &Node, pos: Pos) -> Option<Vec<Step>> {
    let mut path = Vec::new();
    find(node, pos, &mut path).then_some(path)
}

fn find(node: &Node, pos: Pos, path: &mut Vec<Step>) -> bool {
    match &node.kind {
        Kind::Scalar(_) | Kind::Null => node.pos == Some(pos),
        Kind::Seq(items) => items.iter().enumerate().any(|(i, item)| {
            path.push(Step::Item(i));
            find(item, pos, path) || {
                path.pop();
                false
            }
        }),
        Kind::Map(entries) => entries.iter().enumerate().any(|(i, (k, v))| {
            for (step, child) in [(Step::Key(i), k), (Step::Value(i), v)] {
                path.push(step);
                if find(child, pos, path) {
                    return true;
                }
                path.pop();
            }
            false
        }),
    }
}

/// The part of `path` to cut: up to its last list item, or else up to its
/// last mapping entry.
fn cut_at(path: &[Step]) -> Option<&[Step]> {
    let end = path
        .iter()
        .rposition(|s| matches!(s, Step::Item(_)))
        .or_else(|| path.len().checked_sub(1))?;
    Some(&path[..=end])
}

fn node_at<'a>(node: &'a Node, path: &[Step]) -> Option<&'a Node> {
    path.iter()
        .try_fold(node, |n, step| match (&n.kind, *step) {
            (Kind::Seq(items), Step::Item(i)) => items.get(i),
            (Kind::Map(entries), Step::Key(i)) => entries.get(i).map(|(k, _)| k),
            (Kind::Map(entries), Step::Value(i)) => entries.get(i).map(|(_, v)| v),
            _ => None,
        })
}

/// The key of the mapping entry `cut` ends in, if it ends in one.
fn key_name(node: &Node, cut: &[Step]) -> Option<String> {
    let (Step::Key(i) | Step::Value(i)) = *cut.last()? else {
        return None;
    };
    match &node_at(node, &cut[..cut.len() - 1])?.kind {
        Kind::Map(entries) => match &entries.get(i)?.0.kind {
            Kind::Scalar(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

fn cut_node(node: &mut Node, cut: &[Step]) -> bool {
    let Some((last, parent)) = cut.split_last() else {
        return false;
    };
    let mut n = node;
    for step in parent {
        n = match (&mut n.kind, *step) {
            (Kind::Seq(items), Step::Item(i)) if i < items.len() => &mut items[i],
            (Kind::Map(entries), Step::Value(i)) if i < entries.len() => &mut entries[i].1,
            _ => return false,
        };
    }
    match (&mut n.kind, *last) {
        (Kind::Seq(items), Step::Item(i)) if i < items.len() => {
            items.remove(i);
        }
        (Kind::Map(entries), Step::Key(i) | Step::Value(i)) if i < entries.len() => {
            entries.remove(i);
        }
        _ => return false,
    }
    true
}

/// Follows a tag (`!t value`) to its value, as the positioned tree does.
fn untagged(mut v: &mut Value) -> &mut Value {
    while let Value::Tagged(t) = v {
        v = &mut t.value;
    }
    v
}

fn cut_value(value: &mut Value, cut: &[Step]) -> bool {
    let Some((last, parent)) = cut.split_last() else {
        return false;
    };
    let mut v = untagged(value);
    for step in parent {
        v = match (v, *step) {
            (Value::Sequence(items), Step::Item(i)) if i < items.len() => untagged(&mut items[i]),
            (Value::Mapping(map), Step::Value(i)) => match map.iter_mut().nth(i) {
                Some((_, child)) => untagged(child),
                None => return false,
            },
            _ => return false,
        };
    }
    match (v, *last) {
        (Value::Sequence(items), Step::Item(i)) if i < items.len() => {
            items.remove(i);
        }
        (Value::Mapping(map), Step::Key(i) | Step::Value(i)) => {
            let Some(key) = map.keys().nth(i).cloned() else {
                return false;
            };
            map.shift_remove(&key);
        }
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<PolicyError> {
        let first = yaml_serde::from_str::<Policy>(text).unwrap_err();
        every_error(Path::new("p.yaml"), text, &first)
    }

    #[test]
    fn every_value_error_is_listed_in_order() {
        let text = "\
version: 1
interfaces:
  - name: eth0
    xdp_mode: turbo
    chains: [c]
chains:
  - name: c
    match:
      remote: [203.0.113.0/33]
      local_ports: [70000]
    actions: [count, frobnicate]
";
        let messages: Vec<_> = errors(text).iter().map(|e| e.message.clone()).collect();
        assert!(
            messages[3].starts_with("chains[0].actions[1]: unknown variant `frobnicate`"),
            "{messages:#?}"
        );
        let found: Vec<_> = errors(text)
            .iter()
            .map(|e| (e.line.unwrap(), e.column.unwrap()))
            .collect();
        assert_eq!(
            found,
            [(4, 15), (9, 16), (10, 21), (11, 22)],
            "{:#?}",
            errors(text)
        );
    }

    #[test]
    fn a_cut_required_field_is_not_reported() {
        let text = "version: \"1\"\nchains: [{name: c, actions: [nope]}]\n";
        let e = errors(text);
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(e.iter().all(|e| !e.message.contains("missing field")));
    }

    #[test]
    fn paths_name_the_original_indices() {
        let text = "version: 1\nchains:\n  - {name: a, actions: [bad1]}\n  - {name: b, actions: [count, bad2]}\n";
        let e = errors(text);
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(e[1].message.starts_with("chains[1].actions[1]: "), "{e:#?}");
        assert_eq!((e[1].line, e[1].column), (Some(4), Some(32)));
    }

    #[test]
    fn syntax_errors_stay_single() {
        assert_eq!(errors("version: 1\nchains: [\n").len(), 1);
    }
}
