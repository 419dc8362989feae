//! The policy: the operator's desired state, read from one YAML file or a
//! directory of drop-in files, parsed with unknown fields rejected, and
//! validated. The reference for operators is docs/policy.md; the JSON
//! Schema (`emptcp schema`, checked in as schema/policy.schema.json) is
//! generated from [`Policy`].
//!
//! # Contract
//! - [`load_file`], [`load_dir`] and [`load_str`] return a [`Policy`] only
//!   when it is entirely valid; otherwise [`PolicyErrors`] with every
//!   problem found. A syntax error stops its file (the rest of that
//!   document cannot be trusted); value, type and unknown-field errors of a
//!   file are all collected (see `every`); semantic errors are all
//!   collected, across all files, once every file parses.
//! - Every error names its file and, whenever the problem has a place in
//!   the file, its line and column (1-based; columns in characters), and
//!   carries a hint saying what would be valid.
//! - A returned `Policy` satisfies every rule in docs/policy.md: names are
//!   unique and well-formed, references resolve, the kernel's limits
//!   (`emptcp_common::MAX_*`) hold, thresholds are ordered, and so on.
//!   Later stages may rely on that without checking again.
//! - Whether an interface exists is not a policy question: that is an
//!   observe-time fact, reported by the plan.
//! - Loading does no I/O beyond reading the given file or directory.
//!
//! # Drop-in directories
//! `*.yaml` and `*.yml` files, non-recursive, in lexical order of their
//! names; hidden entries (which includes a Kubernetes ConfigMap's `..data`)
//! are skipped; symlinks are followed. `interfaces`, `chains` and
//! `packet_copy` are concatenated in that order; every file declares the
//! same `version`; at most one file has `settings`. Names must be unique
//! across files.

mod error;
mod every;
mod load;
mod locate;
mod merge;
mod model;
mod snippet;
mod strict;
mod suggest;
mod units;
mod validate;
mod yaml_error;

pub use error::{PolicyError, PolicyErrors};
pub use load::{MAX_FILE_BYTES, open_nonblocking};
pub use model::{
    Action, Chain, Decider, Hook, IngressHook, Interface, MAX_FLOW_CAPACITY, MIN_FLOW_CAPACITY,
    Match, POLICY_VERSION, PacketCopy, Policy, Send, Settings, Thresholds, Trigger, XdpMode,
};
pub use snippet::render_snippets;
pub use strict::{MAX_WINDOW_BYTES, MIN_WINDOW_BYTES};
pub use units::{ByteSize, Duration, Percent, PortRange, UnitError};
pub use validate::MAX_PORTS_PER_CHAIN;

use load::SourceFile;
use std::path::{Path, PathBuf};

/// Loads and validates one policy file (at most [`MAX_FILE_BYTES`], UTF-8).
pub fn load_file(path: &Path) -> Result<Policy, PolicyErrors> {
    let text = load::read(path)?;
    let source = load::parse(path.to_path_buf(), &text)?;
    finish(vec![source])
}

/// Loads and validates a drop-in directory: its `*.yaml` / `*.yml` files in
/// lexical order, merged (see the module documentation). Parse errors of
/// every file are reported together; validation runs once all files parse.
pub fn load_dir(dir: &Path) -> Result<Policy, PolicyErrors> {
    let paths = load::list_dir(dir)?;
    let mut sources = Vec::with_capacity(paths.len());
    let mut errors = Vec::new();
    for path in paths {
        match load::read(&path)
            .map_err(PolicyErrors::from)
            .and_then(|text| load::parse(path, &text))
        {
            Ok(source) => sources.push(source),
            Err(found) => errors.extend(found.0),
        }
    }
    if !errors.is_empty() {
        return Err(PolicyErrors(errors));
    }
    finish(sources)
}

/// Loads and validates a policy from text; `name` stands for the file name
/// in errors. Meant for tests and for policies that do not come from disk.
pub fn load_str(name: &str, text: &str) -> Result<Policy, PolicyErrors> {
    finish(vec![load::parse(PathBuf::from(name), text)?])
}

fn finish(sources: Vec<SourceFile>) -> Result<Policy, PolicyErrors> {
    let merged = merge::merge(&sources);
    let errors = validate::validate(&sources, &merged);
    if errors.is_empty() {
        Ok(merged.policy)
    } else {
        Err(PolicyErrors(errors))
    }
}

/// The JSON Schema (draft 2020-12) of a policy file, pretty-printed, with a
/// trailing newline: what `emptcp schema` prints and
/// schema/policy.schema.json holds.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(Policy);
    // Serializing a JSON value to a string cannot fail.
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = "\
version: 1
settings: {flow_capacity: 2000000}
interfaces:
  - name: eth0
    xdp_mode: native
    chains: [keep-short, bulk-backup]
chains:
  - name: keep-short
    match:
      remote: [203.0.113.0/24, \"2001:db8::/32\"]
      local_ports: [443, 8000-8100]
    thresholds:
      remove_below: 1MiB
      recover_at: 4MiB
      decider: {cpu_usage: {interval: 1s, busy_above: 80%, busy_recover_at: 64MiB}}
    actions: [record_flow, strip_add_addr, recover_add_addr]
  - name: bulk-backup
    hook: egress
    match: {remote_ports: [5201]}
    actions:
      - set_backup: {backup: true}
      - set_window: {bytes: 64KiB}
      - count
packet_copy:
  - name: revive
    interface: eth0
    chain: bulk-backup
    when: {subflow_idle: 500ms}
    send: {mp_prio: {backup: false}}
  - name: announce
    interface: eth0
    chain: keep-short
    when: {flow_bytes_at: 4MiB}
    send: {add_addr: {address: \"2001:db8::2\", id: 3}}
";

    #[test]
    fn loads_every_feature() {
        let p = load_str("full.yaml", FULL).unwrap();
        assert_eq!(p.version, 1);
        assert_eq!(p.settings.flow_capacity, 2_000_000);
        assert_eq!(p.interfaces[0].xdp_mode, XdpMode::Native);
        let keep = p.chain("keep-short").unwrap();
        assert_eq!(keep.hook, Hook::Ingress);
        assert_eq!(
            keep.r#match.local_ports[1],
            PortRange {
                start: 8000,
                end: 8100
            }
        );
        let t = keep.thresholds.as_ref().unwrap();
        assert_eq!(t.recover_at, ByteSize(4 << 20));
        assert_eq!(
            t.decider,
            Decider::CpuUsage {
                interval: Duration::from_millis(1000),
                busy_above: Percent(80),
                busy_recover_at: ByteSize(64 << 20)
            }
        );
        let bulk = p.chain("bulk-backup").unwrap();
        assert_eq!(
            bulk.actions,
            [
                Action::SetBackup { backup: true },
                Action::SetWindow { bytes: 65536 },
                Action::Count
            ]
        );
        assert_eq!(
            p.packet_copy[0].when,
            Trigger::SubflowIdle(Duration::from_millis(500))
        );
        assert_eq!(
            p.packet_copy[1].send,
            Send::AddAddr {
                address: "2001:db8::2".parse().unwrap(),
                id: 3,
                port: None
            }
        );
    }

    #[test]
    fn defaults() {
        let p = load_str("p", "version: 1\nchains: [{name: c, actions: [count]}]\n").unwrap();
        assert_eq!(
            p.settings.flow_capacity,
            emptcp_common::DEFAULT_FLOW_CAPACITY
        );
        assert_eq!(p.chains[0].hook, Hook::Ingress);
        assert!(p.chains[0].r#match.is_empty());
        let p = load_str("p", "version: 1\ninterfaces: [{name: e, chains: [c]}]\nchains: [{name: c, actions: [count]}]\n").unwrap();
        assert_eq!(p.interfaces[0].xdp_mode, XdpMode::Auto);
        let t = load_str(
            "p",
            "version: 1\nchains: [{name: c, actions: [record_flow, strip_add_addr], thresholds: {remove_below: 1, recover_at: 2}}]\n",
        )
        .unwrap();
        assert_eq!(
            t.chains[0].thresholds.as_ref().unwrap().decider,
            Decider::Constant
        );
    }

    #[test]
    fn canonical_yaml_round_trips() {
        let p = load_str("full.yaml", FULL).unwrap();
        let yaml = yaml_serde::to_string(&p).unwrap();
        assert!(yaml.contains("- set_window:\n"), "{yaml}");
        assert!(yaml.contains("bytes: 64KiB"), "{yaml}");
        assert!(yaml.contains("- 8000-8100"), "{yaml}");
        assert!(yaml.contains("subflow_idle: 500ms"), "{yaml}");
        assert_eq!(load_str("again.yaml", &yaml).unwrap(), p);
        // JSON too: the externally tagged enums are single-key objects there.
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Policy>(&json).unwrap(), p);
    }

    #[test]
    fn action_names_match_the_kernel_programs() {
        let actions = [
            ("record_flow", Action::RecordFlow),
            ("strip_add_addr", Action::StripAddAddr),
            ("recover_add_addr", Action::RecoverAddAddr),
            ("set_backup", Action::SetBackup { backup: true }),
            ("set_window", Action::SetWindow { bytes: 65536 }),
            ("count", Action::Count),
            ("drop", Action::Drop),
        ];
        for (name, action) in actions {
            assert_eq!(action.name(), name);
        }
        assert_eq!(actions.len(), emptcp_common::Action::ALL.len());
    }

    #[test]
    fn errors_are_collected_and_sorted() {
        let text = "\
version: 1
interfaces:
  - name: eth0
    chains: [nope, c]
chains:
  - name: c
    actions: [drop, count]
  - name: c
    actions: [count]
";
        let errors = load_str("p.yaml", text).unwrap_err();
        let lines: Vec<_> = errors.iter().map(|e| e.line.unwrap()).collect();
        assert_eq!(lines, [4, 7, 8], "{errors}");
    }

    #[test]
    fn window_range_is_checked_at_parse_time() {
        let text = "version: 1\nchains: [{name: c, actions: [set_window: {bytes: 2GiB}]}]\n";
        let e = &load_str("p", text).unwrap_err().0[0];
        assert!(e.message.contains("window of 2GiB is out of range"), "{e}");
        assert!(e.hint.as_deref().unwrap().contains("1073725440"));
        let text = "version: 1\nchains: [{name: c, actions: [set_window: {bytes: 0}]}]\n";
        assert!(load_str("p", text).is_err());
        let text =
            "version: 1\nchains: [{name: c, actions: [record_flow, set_window: {bytes: 16KiB}]}]\n";
        assert!(load_str("p", text).is_ok());
        let text = "version: 1\nchains: [{name: c, actions: [record_flow, set_window: {bytes: 1073725440}]}]\n";
        assert!(load_str("p", text).is_ok());
    }

    #[test]
    fn windows_that_would_scale_to_zero_are_refused() {
        // 16383 >> 14 == 0: the datapath would write a zero window.
        for bytes in ["1", "16383", "8KiB"] {
            let text = format!(
                "version: 1\nchains: [{{name: c, actions: [record_flow, set_window: {{bytes: {bytes}}}]}}]\n"
            );
            let e = &load_str("p", &text).unwrap_err().0[0];
            assert!(e.message.contains("would advertise a zero window"), "{e}");
            assert!(e.hint.as_deref().unwrap().contains("at least 16KiB"), "{e}");
        }
        assert_eq!(MIN_WINDOW_BYTES >> 14, 1);
        assert_eq!((MIN_WINDOW_BYTES - 1) >> 14, 0);
    }

    #[test]
    fn names_must_be_strings() {
        let e = &load_str("p", "version: 1\nchains: [{name: 5, actions: [count]}]\n")
            .unwrap_err()
            .0[0];
        assert!(
            e.message
                .contains("invalid type: integer `5`, expected a name"),
            "{e}"
        );
        assert_eq!(
            e.hint.as_deref(),
            Some("quote it if it is meant as a name: \"5\"")
        );
        assert!(
            load_str(
                "p",
                "version: 1\nchains: [{name: \"5\", actions: [count]}]\n"
            )
            .is_ok()
        );
    }

    #[test]
    fn schema_is_pretty_json_with_trailing_newline() {
        let schema = schema_json();
        assert!(schema.ends_with("}\n"));
        let value: serde_json::Value = serde_json::from_str(&schema).unwrap();
        assert_eq!(value["title"], "emptcp policy (version 1)");
        assert_eq!(value["additionalProperties"], false);
    }
}
