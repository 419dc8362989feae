//! Empty on the host: lets reconciler/build.rs depend on this crate so
//! aya-build can build its `emptcp` binary (the eBPF object) for the BPF target.
#![no_std]
