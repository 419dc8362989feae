//! Semantic validation: every rule a well-formed YAML policy must also
//! satisfy. All problems are collected (not just the first), each located
//! in its source file and given a hint.

mod chains;
mod files;
mod interfaces;
mod matches;
mod names;
mod packet_copy;

pub use matches::MAX_PORTS_PER_CHAIN;

use super::error::{PolicyError, describe_location};
use super::load::SourceFile;
use super::locate::Spot;
use super::merge::{Merged, Origin};

/// Checks the merged policy; returns the errors sorted by file and position.
pub(crate) fn validate(files: &[SourceFile], merged: &Merged) -> Vec<PolicyError> {
    let mut ctx = Ctx {
        files,
        merged,
        errors: Vec::new(),
    };
    files::check(&mut ctx);
    names::check(&mut ctx);
    chains::check(&mut ctx);
    interfaces::check(&mut ctx);
    packet_copy::check(&mut ctx);

    let mut keyed: Vec<(usize, PolicyError)> = ctx.errors;
    // Stable: errors at the same place keep the order the rules found them.
    keyed.sort_by_key(|(file, e)| (*file, e.line.is_none(), e.line, e.column));
    keyed.into_iter().map(|(_, e)| e).collect()
}

/// The top-level lists of a policy.
#[derive(Debug, Clone, Copy)]
enum List {
    Interfaces,
    Chains,
    PacketCopy,
}

/// What the rules read, and where they put what they find.
pub(crate) struct Ctx<'a> {
    files: &'a [SourceFile],
    merged: &'a Merged,
    /// Each error with the index of its file, for sorting.
    errors: Vec<(usize, PolicyError)>,
}

impl<'a> Ctx<'a> {
    fn policy(&self) -> &'a super::model::Policy {
        &self.merged.policy
    }

    fn root(&self, file: usize) -> Spot<'a> {
        Spot::root(file, &self.files[file].tree)
    }

    fn item(&self, list: &str, origin: Origin) -> Spot<'a> {
        self.root(origin.file).get(list).item(origin.index)
    }

    /// The `i`th merged item of `list`, in its own file.
    fn list_item(&self, list: List, i: usize) -> Spot<'a> {
        match list {
            List::Interfaces => self.interface(i),
            List::Chains => self.chain(i),
            List::PacketCopy => self.packet_copy(i),
        }
    }

    /// The `i`th merged chain, in its own file.
    fn chain(&self, i: usize) -> Spot<'a> {
        self.item("chains", self.merged.chains[i])
    }

    /// The `i`th merged interface, in its own file.
    fn interface(&self, i: usize) -> Spot<'a> {
        self.item("interfaces", self.merged.interfaces[i])
    }

    /// The `i`th merged packet_copy rule, in its own file.
    fn packet_copy(&self, i: usize) -> Spot<'a> {
        self.item("packet_copy", self.merged.packet_copy[i])
    }

    /// `file:line:column` of a spot, for messages that cite a second place.
    fn describe(&self, spot: Spot<'_>) -> String {
        describe_location(&self.files[spot.file].path, spot.pos())
    }

    fn report(&mut self, spot: Spot<'_>, message: impl Into<String>, hint: impl Into<String>) {
        let error = PolicyError::new(&self.files[spot.file].path, message)
            .at(spot.pos())
            .hint(hint);
        self.errors.push((spot.file, error));
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Helpers for the rule tests: load a policy from text and look at the
    //! errors it produces.

    use crate::{PolicyError, load_str};

    /// Loads `text` and returns its errors (empty when valid).
    pub(crate) fn errors(text: &str) -> Vec<PolicyError> {
        match load_str("p.yaml", text) {
            Ok(_) => Vec::new(),
            Err(e) => e.0,
        }
    }

    /// Asserts that exactly one error contains `needle`, and returns it.
    #[track_caller]
    pub(crate) fn one_error(text: &str, needle: &str) -> PolicyError {
        let all = errors(text);
        let found: Vec<_> = all.iter().filter(|e| e.message.contains(needle)).collect();
        assert_eq!(
            found.len(),
            1,
            "want one error with {needle:?}, got: {all:#?}"
        );
        found[0].clone()
    }

    /// Asserts the error is at `line:column`.
    #[track_caller]
    pub(crate) fn assert_at(e: &PolicyError, line: usize, column: usize) {
        assert_eq!((e.line, e.column), (Some(line), Some(column)), "{e}");
    }

    /// A valid policy, as a starting point for the tests.
    pub(crate) const BASE: &str = "\
version: 1
interfaces:
  - name: eth0
    chains: [c1]
chains:
  - name: c1
    actions: [count]
";
}
