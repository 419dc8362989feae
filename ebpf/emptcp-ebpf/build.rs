//! Linker flags for the BPF build (ignored for the host build, which only
//! sees the empty library).
fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("bpf") {
        // bpf-linker passes --bpf-expand-memcpy-in-order by default, which
        // sets LLVM's inline-store budget for memset to zero: every zeroed
        // stack buffer became a call to a byte-loop memset subprogram (slow
        // per packet, and the verifier walks each loop byte by byte).
        println!("cargo:rustc-link-arg-bins=--disable-expand-memcpy-in-order");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
