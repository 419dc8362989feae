//! Builds the eBPF object (ebpf/emptcp-ebpf) with the nightly toolchain via
//! aya-build and leaves it in OUT_DIR, where `src/object.rs` embeds it.
//! `AYA_BUILD_SKIP=1` skips it (aya-build then writes nothing: set it only for
//! pure user-space work such as policy unit tests).
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    // The manifest directory as cargo gives it to this run, not `env!`'s
    // (fixed when the script was compiled): a build script compiled in
    // another checkout that shares the target directory is reused as is,
    // and would build and embed that checkout's eBPF object.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let root = std::path::Path::new(&manifest)
        .parent()
        .ok_or_else(|| anyhow!("no workspace root"))?
        .to_path_buf();
    let ebpf = root.join("ebpf/emptcp-ebpf");
    let common = root.join("ebpf/emptcp-common");
    for p in [&ebpf, &common] {
        // Only paths that exist: cargo re-runs a build script on every
        // build when a rerun-if-changed path is missing (emptcp-common has
        // no build.rs), which recompiled the whole crate each time.
        for f in ["src", "Cargo.toml", "build.rs"] {
            let f = p.join(f);
            if f.exists() {
                println!("cargo:rerun-if-changed={}", f.display());
            }
        }
    }
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let _ = &common;
    if std::env::var_os("AYA_BUILD_SKIP").is_some() {
        // Leave an empty object so include_bytes! compiles; the loader
        // refuses it with a clear message at run time.
        let obj = out.join("emptcp");
        if !obj.exists() {
            std::fs::write(&obj, b"")?;
        }
        return Ok(());
    }
    let package = aya_build::Package {
        name: "emptcp-ebpf",
        root_dir: ebpf.to_str().context("non-UTF-8 path")?,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
}
