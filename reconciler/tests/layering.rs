//! The layering rule of docs/architecture.md, checked on the source: a
//! module may use modules of its own layer or of a layer below it, never
//! one above, and the modules never form an import circle. The layers,
//! from the bottom:
//!
//! foundation -> policy -> desired -> observe -> plan -> apply ->
//! beside the pipeline -> drivers (watch, simulate) -> status -> cli.
//!
//! `emptcp-common` (the types shared with the kernel) and `emptcp-policy`
//! (the policy stage, re-exported as `emptcp::policy`) are crates of their
//! own that depend on nothing of the reconciler: Cargo enforces that, and
//! an import of `crate::policy` from any module here looks down. A module
//! that is in no layer fails the check: a new module has to be placed on
//! purpose.
//!
//! Imports are read from the text (`crate::x`, `use crate::{x, y::z}`,
//! `super::` that reaches the crate root, `emptcp::x` in the binaries),
//! with comments and string literals skipped; a self-test below proves the
//! reader on the forms it must see.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top: (layer, its top-level modules).
const LAYERS: &[(&str, &[&str])] = &[
    (
        "foundation",
        &[
            "layout",
            "sys",
            "netns",
            "netdev",
            "nlmsg",
            "xdp_features",
            "kernel",
            "identity",
            "state",
            "codec",
            "object",
            "packet",
            "xsk",
            "privilege",
        ],
    ),
    ("desired", &["desired"]),
    ("observe", &["observe", "counters", "table_fill"]),
    ("plan", &["plan"]),
    ("apply", &["apply"]),
    ("beside the pipeline", &["agent", "copy", "flows"]),
    ("drivers", &["watch", "simulate"]),
    ("status", &["status"]),
    // The binaries (src/main.rs, src/bin/*) count as cli.
    ("cli", &["cli"]),
];

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

/// The text without comments and without the contents of string and
/// character literals (so `"crate::x"` or `// crate::x` is no import).
fn code_only(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r'
            && matches!(next, Some('"' | '#'))
            && (i == 0 || !is_ident(b[i - 1]))
            && raw_string_end(&b, i).is_some()
        {
            i = raw_string_end(&b, i).unwrap();
            out.push_str("\"\"");
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                i += if b[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && next == Some('\\') {
            // An escaped character literal: '\n', '\'', '\u{1f}'. The
            // escaped character itself may be a quote: skip it first.
            i += 3;
            while i < b.len() && b[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else if c == '\'' && b.get(i + 2) == Some(&'\'') {
            i += 3;
            out.push_str("' '");
        } else {
            // A lifetime's quote, or code.
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Where the raw string starting at `i` (`r"…"`, `r#"…"#`) ends, just
/// after its last character.
fn raw_string_end(b: &[char], i: usize) -> Option<usize> {
    let mut j = i + 1;
    let mut hashes = 0;
    while b.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    if b.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < b.len() {
        if b[j] == '"' && (1..=hashes).all(|k| b.get(j + k) == Some(&'#')) {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    None
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The first segment of every path that follows `root::` in `code`
/// (`root::a::b` gives `a`; `root::{a, b::c}` gives `a` and `b`).
fn first_segments(code: &str, root: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let needle = format!("{root}::");
    let mut from = 0;
    while let Some(at) = code[from..].find(&needle) {
        let start = from + at;
        from = start + needle.len();
        if code[..start].chars().next_back().is_some_and(is_ident) {
            continue; // `xcrate::`, `my_emptcp::`
        }
        let rest = code[from..].trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            found.extend(group_items(group));
        } else {
            let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// First segments of the items of a `{…}` group (the text after `{`).
fn group_items(group: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    for c in group.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    items.push(current);
    items
        .iter()
        .map(|item| {
            item.trim()
                .chars()
                .take_while(|c| is_ident(*c))
                .collect::<String>()
        })
        .filter(|name| !name.is_empty() && name != "self")
        .collect()
}

/// Module names reached through enough `super::` to climb from a module
/// `depth` levels below the crate root to the root itself.
fn root_through_super(code: &str, depth: usize) -> BTreeSet<String> {
    let climb = "super::".repeat(depth);
    first_segments(code, climb.trim_end_matches("::"))
}

/// The top-level module a source file belongs to, and how deep its own
/// module is (`x.rs`, `x/mod.rs`: 1; `x/y.rs`: 2). None for lib.rs.
fn module_of(relative: &Path) -> Option<(String, usize, bool)> {
    let parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    match parts.as_slice() {
        [lib] if lib == "lib.rs" => None,
        // The binaries use the library as `emptcp::`.
        [main] if main == "main.rs" => Some(("cli".into(), 1, true)),
        // A binary of one file (bin/x.rs) or of several (bin/x/main.rs and
        // its modules).
        [bin, _, ..] if bin == "bin" => Some(("cli".into(), 1, true)),
        [file] => Some((file.trim_end_matches(".rs").into(), 1, false)),
        [dir, rest @ ..] => {
            let last = rest.last().unwrap();
            let depth = rest.len() + usize::from(last != "mod.rs");
            Some((dir.clone(), depth, false))
        }
        [] => None,
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// module -> (module it uses -> a file that does it).
type Graph = BTreeMap<String, BTreeMap<String, String>>;

fn import_graph() -> (Graph, BTreeSet<String>) {
    import_graph_in(&src())
}

fn import_graph_in(root: &Path) -> (Graph, BTreeSet<String>) {
    let root = root.to_path_buf();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut modules = BTreeSet::new();
    let mut graph = Graph::new();
    for file in &files {
        let relative = file.strip_prefix(&root).unwrap();
        let Some((module, depth, binary)) = module_of(relative) else {
            continue;
        };
        modules.insert(module.clone());
        let code = code_only(&std::fs::read_to_string(file).unwrap());
        let mut used = first_segments(&code, if binary { "emptcp" } else { "crate" });
        used.extend(root_through_super(&code, depth));
        for target in used {
            if target != module {
                graph
                    .entry(module.clone())
                    .or_default()
                    .entry(target)
                    .or_insert_with(|| relative.display().to_string());
            }
        }
    }
    (graph, modules)
}

/// Top-level modules declared in lib.rs (what `crate::x` can name).
fn declared_modules() -> BTreeSet<String> {
    let lib = code_only(&std::fs::read_to_string(src().join("lib.rs")).unwrap());
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').trim().to_string())
        .collect()
}

#[test]
fn every_module_has_a_layer() {
    let mut missing: Vec<String> = declared_modules()
        .into_iter()
        .filter(|m| layer_of(m).is_none())
        .collect();
    missing.extend(
        import_graph()
            .1
            .into_iter()
            .filter(|m| layer_of(m).is_none()),
    );
    assert!(
        missing.is_empty(),
        "modules in no layer: {missing:?}; add each to LAYERS in reconciler/tests/layering.rs and to the table in docs/architecture.md"
    );
}

#[test]
fn no_module_uses_a_higher_layer() {
    let (graph, _) = import_graph();
    let declared = declared_modules();
    // The reader must see the pipeline's own imports, or it reads nothing.
    assert!(
        graph["plan"].contains_key("desired") && graph["apply"].contains_key("plan"),
        "the import reader missed known imports: {graph:?}"
    );
    let mut upward = Vec::new();
    for (from, targets) in &graph {
        for (to, file) in targets {
            if !declared.contains(to) {
                continue; // an item of lib.rs itself, or not a module
            }
            let (Some(a), Some(b)) = (layer_of(from), layer_of(to)) else {
                continue; // reported by every_module_has_a_layer
            };
            if b > a {
                upward.push(format!(
                    "{file}: `{from}` ({}) uses `{to}` ({}), a higher layer",
                    LAYERS[a].0, LAYERS[b].0
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that look up (move the shared item down, or pass it in from above):\n  {}",
        upward.join("\n  ")
    );
}

#[test]
fn modules_form_no_import_circle() {
    let (graph, _) = import_graph();
    let circles = circles(&graph, &declared_modules());
    assert!(circles.is_empty(), "import circles: {circles:?}");
}

/// The kernel crate's modules form no circle either: the map definitions
/// and the kernel-side shared types (`shared`) sit below the programs, the
/// capture below the entry that calls it, the "nothing to do" checks
/// (`idle`) below both the chain and the actions.
#[test]
fn the_kernel_crate_forms_no_import_circle() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ebpf/emptcp-ebpf/src");
    let (graph, _) = import_graph_in(&root);
    let main = code_only(&std::fs::read_to_string(root.join("main.rs")).unwrap());
    let declared: BTreeSet<String> = main
        .lines()
        .filter_map(|l| l.trim().strip_prefix("mod "))
        .map(|m| m.trim_end_matches(';').trim().to_string())
        .collect();
    assert!(
        graph["stats"].contains_key("maps") && graph["entry"].contains_key("capture"),
        "the import reader missed known imports: {graph:?}"
    );
    let circles = circles(&graph, &declared);
    assert!(
        circles.is_empty(),
        "import circles in the kernel crate: {circles:?}"
    );
    assert!(
        !graph
            .get("maps")
            .is_some_and(|t| t.keys().any(|m| m != "shared")),
        "maps.rs uses more than the shared types: {:?}",
        graph.get("maps")
    );
}

/// Every import circle of `graph` among `declared` modules, as "a -> b -> a".
fn circles(graph: &Graph, declared: &BTreeSet<String>) -> Vec<String> {
    // Depth-first search; a back edge closes a circle.
    fn visit(
        node: &str,
        graph: &Graph,
        declared: &BTreeSet<String>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        circles: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_string());
            circles.push(circle.join(" -> "));
            return;
        }
        if !done.insert(node.to_string()) {
            return;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flat_map(|t| t.keys()) {
            if declared.contains(next) {
                visit(next, graph, declared, path, done, circles);
            }
        }
        path.pop();
    }
    let mut circles = Vec::new();
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(
            node,
            graph,
            declared,
            &mut Vec::new(),
            &mut done,
            &mut circles,
        );
    }
    circles
}

/// A crate beside the reconciler (`dir`, from the workspace root) that must
/// stand apart from it: no dependency named `emptcp*` or `aya*` but those in
/// `allowed`, and no source that reaches into `emptcp::`, `emptcp_ebpf::` or
/// (`no_aya`) `aya::`.
fn assert_stands_apart(dir: &str, allowed: &[&str], no_aya: bool, why: &str) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(dir);
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let mut section = String::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_string();
        } else if section.contains("dependencies") {
            let name = line.split([' ', '=']).next().unwrap_or("");
            let ours = name.starts_with("emptcp") || (no_aya && name.starts_with("aya"));
            assert!(
                !ours || allowed.contains(&name),
                "{dir}/Cargo.toml {section}: `{line}`: {why}"
            );
        }
    }
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    assert!(!files.is_empty(), "{dir}/src holds no Rust file");
    let roots: &[&str] = if no_aya {
        &["emptcp", "emptcp_ebpf", "aya"]
    } else {
        &["emptcp", "emptcp_ebpf"]
    };
    for file in files {
        let code = code_only(&std::fs::read_to_string(&file).unwrap());
        for root in roots {
            assert!(
                first_segments(&code, root).is_empty(),
                "{}: uses `{root}::`; {why}",
                file.display()
            );
        }
    }
}

#[test]
fn emptcp_common_depends_on_nothing_of_the_reconciler() {
    assert_stands_apart(
        "ebpf/emptcp-common",
        &[],
        false,
        "the shared types crate imports nothing of the reconciler or the kernel crate",
    );
}

/// The policy stage, a crate of its own, stands on the shared types alone:
/// what reads a policy (the fuzz target, CI tooling) never builds the
/// reconciler, aya or the eBPF object.
#[test]
fn emptcp_policy_depends_on_the_shared_types_alone() {
    assert_stands_apart(
        "policy",
        &["emptcp-common"],
        true,
        "the policy crate depends on emptcp-common alone, and on no kernel library",
    );
}

#[test]
fn the_reader_sees_every_import_form() {
    let code = code_only(
        r##"
        use crate::{
            apply::{self, Applier},
            plan::Plan, self,
        };
        use crate::observe;
        fn f() { crate::status::render(); let s = "crate::watch"; } // crate::cli
        /* crate::copy */ let c = '"'; let r = r#"crate::agent"#;
        fn g<'a>(x: &'a str) -> &'a str { let _ = super::super::netns::enter; x }
        let e = '\''; let k = xcrate::flows;
        "##,
    );
    assert_eq!(
        first_segments(&code, "crate"),
        ["apply", "observe", "plan", "status"]
            .map(String::from)
            .into()
    );
    assert_eq!(
        root_through_super(&code, 2),
        ["netns"].map(String::from).into()
    );
    assert_eq!(
        module_of(Path::new("watch/state_file.rs")),
        Some(("watch".into(), 2, false))
    );
    assert_eq!(
        module_of(Path::new("watch/mod.rs")),
        Some(("watch".into(), 1, false))
    );
    assert_eq!(
        module_of(Path::new("bin/emptcp-bench.rs")),
        Some(("cli".into(), 1, true))
    );
    assert_eq!(
        module_of(Path::new("bin/emptcp-bench-datapath/frames.rs")),
        Some(("cli".into(), 1, true))
    );
}
