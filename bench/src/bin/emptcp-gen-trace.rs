//! Writes a synthetic capture for `emptcp simulate` benchmarks:
//!
//!   emptcp-gen-trace OUT.pcap [PACKETS] [SEGMENTS_PER_CONNECTION]
//!
//! Defaults: 1000000 packets, 64 data segments per connection (about 100
//! packets per connection). See emptcp::simulate::synth for the traffic.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(out) = args.get(1) else {
        eprintln!("usage: emptcp-gen-trace OUT.pcap [PACKETS] [SEGMENTS_PER_CONNECTION]");
        std::process::exit(1);
    };
    let num = |i: usize, d: u64| -> u64 {
        args.get(i).map_or(d, |v| {
            v.parse().unwrap_or_else(|_| {
                eprintln!("error: {v} is not a number");
                std::process::exit(1)
            })
        })
    };
    let packets = num(2, 1_000_000);
    let segments = num(3, 64) as u32;
    match emptcp::simulate::synth::generate(std::path::Path::new(out), packets, segments) {
        Ok(n) => println!("{out}: {n} packets"),
        Err(e) => {
            eprintln!("error: writing {out}: {e}");
            std::process::exit(1);
        }
    }
}
