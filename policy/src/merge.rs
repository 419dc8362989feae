//! Merging the files of a drop-in directory into one policy.
//!
//! Lists are concatenated in file order (`interfaces`, `chains`,
//! `packet_copy`); `settings` come from the one file that has them. Each
//! merged item remembers which file and which index it came from, so that
//! validation can point at it in its own file.

use super::load::SourceFile;
use super::model::{Policy, Settings};

/// Where a merged list item came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Origin {
    /// Index into the file list.
    pub file: usize,
    /// Index in that file's list.
    pub index: usize,
}

/// The merged policy and the origin of every item.
#[derive(Debug)]
pub(crate) struct Merged {
    pub policy: Policy,
    pub interfaces: Vec<Origin>,
    pub chains: Vec<Origin>,
    pub packet_copy: Vec<Origin>,
    /// Files that contain a `settings` key, in order.
    pub settings_files: Vec<usize>,
}

/// Concatenates the files' lists. `files` is not empty; consistency checks
/// (versions, settings in one file) are validation's job.
pub(crate) fn merge(files: &[SourceFile]) -> Merged {
    let mut merged = Merged {
        policy: Policy {
            version: files.first().map_or(1, |f| f.policy.version),
            settings: Settings::default(),
            interfaces: Vec::new(),
            chains: Vec::new(),
            packet_copy: Vec::new(),
        },
        interfaces: Vec::new(),
        chains: Vec::new(),
        packet_copy: Vec::new(),
        settings_files: Vec::new(),
    };
    for (file, source) in files.iter().enumerate() {
        let p = &source.policy;
        if source.tree.entry("settings").is_some() {
            if merged.settings_files.is_empty() {
                merged.policy.settings = p.settings.clone();
            }
            merged.settings_files.push(file);
        }
        let origins = |len: usize| (0..len).map(move |index| Origin { file, index });
        merged.interfaces.extend(origins(p.interfaces.len()));
        merged.chains.extend(origins(p.chains.len()));
        merged.packet_copy.extend(origins(p.packet_copy.len()));
        merged
            .policy
            .interfaces
            .extend(p.interfaces.iter().cloned());
        merged.policy.chains.extend(p.chains.iter().cloned());
        merged
            .policy
            .packet_copy
            .extend(p.packet_copy.iter().cloned());
    }
    merged
}
