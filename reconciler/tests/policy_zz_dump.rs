#[test]
fn dump() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/policies/bad");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        let e = emptcp::policy::load_file(&f).unwrap_err();
        println!("{}\n", e.to_string().replace(dir.to_str().unwrap(), ""));
    }
}
