//! Drop-in directories: which files are read, in which order, how they
//! merge, and how a Kubernetes ConfigMap mount (symlinks through `..data`)
//! is read.

use emptcp::policy::load_dir;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

fn write(dir: &Path, name: &str, text: &str) {
    fs::write(dir.join(name), text).expect("write test file");
}

const CHAIN_A: &str = "version: 1\nchains: [{name: a, actions: [count]}]\n";
const CHAIN_B: &str = "version: 1\nchains: [{name: b, actions: [count]}]\n";

fn chain_names(dir: &Path) -> Vec<String> {
    let policy = load_dir(dir).unwrap_or_else(|e| panic!("{e}"));
    policy.chains.into_iter().map(|c| c.name).collect()
}

#[test]
fn files_merge_in_lexical_order_of_their_names() {
    let dir = tempfile::tempdir().unwrap();
    // Created in the opposite order, to show that creation order is ignored.
    write(dir.path(), "20-b.yaml", CHAIN_B);
    write(dir.path(), "10-a.yaml", CHAIN_A);
    assert_eq!(chain_names(dir.path()), ["a", "b"]);
}

#[test]
fn only_visible_yaml_files_are_read() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "10-a.yml", CHAIN_A);
    write(dir.path(), "20-b.yaml", CHAIN_B);
    // None of these is read; each would be an error if it were.
    write(dir.path(), ".20-b.yaml.swp", "not yaml");
    write(dir.path(), ".hidden.yaml", CHAIN_A);
    write(dir.path(), "README.md", "# notes");
    write(dir.path(), "30-c.yaml.bak", CHAIN_A);
    fs::create_dir(dir.path().join("sub")).unwrap();
    write(&dir.path().join("sub"), "40-d.yaml", CHAIN_A);
    assert_eq!(chain_names(dir.path()), ["a", "b"]);
}

#[test]
fn a_configmap_mount_is_read_through_its_symlinks() {
    // The layout the kubelet creates: the keys are symlinks to `..data/KEY`,
    // `..data` is a symlink to a timestamped directory, swapped atomically.
    let dir = tempfile::tempdir().unwrap();
    let stamp = dir.path().join("..2024_05_01_12_00_00.123456789");
    fs::create_dir(&stamp).unwrap();
    write(&stamp, "10-a.yaml", CHAIN_A);
    write(&stamp, "20-b.yaml", CHAIN_B);
    symlink(&stamp, dir.path().join("..data")).unwrap();
    for key in ["10-a.yaml", "20-b.yaml"] {
        symlink(Path::new("..data").join(key), dir.path().join(key)).unwrap();
    }
    assert_eq!(chain_names(dir.path()), ["a", "b"]);

    // After the swap to a new timestamped directory, the new content is read.
    let next = dir.path().join("..2024_05_01_12_05_00.987654321");
    fs::create_dir(&next).unwrap();
    write(
        &next,
        "10-a.yaml",
        "version: 1\nchains: [{name: a2, actions: [count]}]\n",
    );
    write(&next, "20-b.yaml", CHAIN_B);
    let tmp = dir.path().join("..data_tmp");
    symlink(&next, &tmp).unwrap();
    fs::rename(&tmp, dir.path().join("..data")).unwrap();
    assert_eq!(chain_names(dir.path()), ["a2", "b"]);
}

#[test]
fn references_resolve_across_files_and_settings_come_from_one_file() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "10-ifaces.yaml",
        "version: 1\nsettings: {flow_capacity: 4096}\ninterfaces: [{name: eth0, chains: [b, a]}]\n",
    );
    write(dir.path(), "20-a.yaml", CHAIN_A);
    write(
        dir.path(),
        "30-b.yaml",
        "version: 1\nchains: [{name: b, actions: [count]}]\npacket_copy:\n  - {name: r, interface: eth0, chain: b, when: {subflow_idle: 1s}, send: {mp_prio: {backup: true}}}\n",
    );
    let policy = load_dir(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.settings.flow_capacity, 4096);
    assert_eq!(policy.interfaces[0].chains, ["b", "a"]);
    assert_eq!(policy.packet_copy.len(), 1);
}

#[test]
fn errors_name_the_file_they_come_from() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "10-ifaces.yaml",
        "version: 1\ninterfaces: [{name: eth0, chains: [a, missing]}]\n",
    );
    write(dir.path(), "20-a.yaml", CHAIN_A);
    write(
        dir.path(),
        "30-bad.yaml",
        "version: 1\nchains: [{name: b, actions: [drop, count]}]\n",
    );
    let errors = load_dir(dir.path()).unwrap_err();
    let files: Vec<String> = errors
        .iter()
        .map(|e| e.file.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["10-ifaces.yaml", "30-bad.yaml"], "{errors}");
    let text = errors.to_string();
    assert!(
        text.contains("10-ifaces.yaml:2:39: interface 'eth0' refers to unknown chain 'missing'"),
        "{text}"
    );
}

#[test]
fn a_file_without_version_is_an_error_even_in_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "10-a.yaml", CHAIN_A);
    write(
        dir.path(),
        "20-b.yaml",
        "chains: [{name: b, actions: [count]}]\n",
    );
    let errors = load_dir(dir.path()).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(errors.0[0].message.contains("missing field `version`"));
    assert!(errors.0[0].file.ends_with("20-b.yaml"));
}

#[test]
fn a_dangling_symlink_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "10-a.yaml", CHAIN_A);
    symlink(dir.path().join("gone.yaml"), dir.path().join("20-b.yaml")).unwrap();
    let errors = load_dir(dir.path()).unwrap_err();
    assert!(
        errors.0[0].message.starts_with("cannot read policy file"),
        "{errors}"
    );
}
