//! Command-line contract (scripts and CI rely on it; see docs/cli.md).
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{layout::DEFAULT_ROOT, watch::state_file::DEFAULT_STATE_DIR};

#[derive(Debug, Parser)]
#[command(
    name = "emptcp",
    version,
    about = "Declarative reconciler for eBPF programs that steer Multipath TCP"
)]
pub struct Cli {
    /// bpffs directory that holds everything emptcp pins.
    #[arg(long, global = true, env = "EMPTCP_BPFFS_ROOT", default_value = DEFAULT_ROOT)]
    pub bpffs_root: PathBuf,
    /// Network namespace (/run/netns/NAME) the interfaces live in; the
    /// host's bpffs stays in use.
    #[arg(long, global = true, env = "EMPTCP_NETNS")]
    pub netns: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Plan text (plan, apply, destroy): every step on its own line and
    /// the maps a load creates by name, instead of one line per run of
    /// tail-call slots and a count of the maps.
    #[arg(short = 'v', long, global = true)]
    pub verbose: bool,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Where the policy comes from: one file or a drop-in directory.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct Source {
    /// Policy file.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Drop-in directory: every *.yaml in lexical order.
    #[arg(short = 'd', long = "dir")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Args)]
pub struct Overrides {
    /// Replace foreign XDP programs on the policy's interfaces.
    #[arg(long)]
    pub force: bool,
    /// Allow replacing a state map that cannot be migrated (its contents are lost).
    #[arg(long)]
    pub allow_state_loss: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a policy (syntax, types, units, references); no kernel access.
    Validate {
        #[command(flatten)]
        source: Source,
    },
    /// Print the JSON Schema of the policy file.
    Schema,
    /// Show what apply would change.
    Plan {
        #[command(flatten)]
        source: Source,
        /// Plan against an exported snapshot instead of the live kernel
        /// (no root needed).
        #[arg(long)]
        state: Option<PathBuf>,
        /// Exit 2 when there are changes, 0 when none, 1 on error.
        #[arg(long)]
        detailed_exitcode: bool,
        /// Save the plan for a later `emptcp apply PLANFILE`.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Converge the kernel to the policy (or execute a saved plan).
    Apply {
        /// A plan saved by `plan --out`; refused if the live state changed since.
        planfile: Option<PathBuf>,
        #[arg(short = 'f', long = "file", conflicts_with = "planfile")]
        file: Option<PathBuf>,
        #[arg(short = 'd', long = "dir", conflicts_with_all = ["planfile", "file"])]
        dir: Option<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Show what is live: interfaces, links, programs, chains, counters,
    /// and the state of the `emptcp watch` daemon of this bpffs root.
    Status {
        /// Where `emptcp watch` writes its status file.
        #[arg(long, env = "EMPTCP_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// List the MPTCP connections the datapath tracks: addresses, size,
    /// chain, stored ADD_ADDR options.
    Flows,
    /// Run only the recovery agent: deliver stored ADD_ADDRs that no
    /// received packet had room for (pure downloads) as forged duplicate
    /// ACKs. `emptcp watch` runs it already.
    Agent,
    /// Snapshot operations.
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
    /// Detach everything emptcp attached and remove every pin under the root.
    Destroy,
    /// Replay a packet capture through the real datapath under the policy
    /// (in private namespaces; nothing on the host is touched) and report
    /// per connection what it would have done; with --against, the
    /// difference from another policy.
    Simulate {
        #[command(flatten)]
        source: Source,
        /// The capture: pcap or pcapng (Ethernet, raw IP, Linux cooked
        /// SLL/SLL2), optionally gzip-compressed.
        #[arg(long, value_name = "TRACE")]
        pcap: PathBuf,
        /// The policy to compare with (a file, or a drop-in directory).
        #[arg(long, value_name = "OLD")]
        against: Option<PathBuf>,
        /// The simulated host's addresses: PREFIX or PREFIX=INTERFACE
        /// (repeatable). Default: cooked captures' direction, else the
        /// hosts that open connections.
        #[arg(long, value_name = "PREFIX[=IFACE]")]
        local: Vec<String>,
        /// Write the traffic as the stack would have received it.
        #[arg(long, value_name = "OUT.pcap")]
        write: Option<PathBuf>,
        /// Exit 2 when the behaviour differs (with --against) or when the
        /// policy changes any packet (without).
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Run as the node agent: converge now, then on every change of the
    /// policy, on a drift timer, when a policy interface appears or changes,
    /// when a threshold decider flips, and on SIGHUP. SIGTERM stops it and
    /// leaves the datapath running.
    Watch {
        #[command(flatten)]
        source: Source,
        /// How often the kernel is re-observed and drift corrected.
        #[arg(long, default_value = "30s", value_parser = parse_drift_interval)]
        drift_interval: Duration,
        /// Quiet time after the last file event before the policy is re-read.
        #[arg(long, default_value = "100ms", value_parser = parse_debounce)]
        debounce: Duration,
        /// Serve Prometheus metrics on ADDR (e.g. 127.0.0.1:9464); bound in
        /// the namespace emptcp starts in, before --netns is entered.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<SocketAddr>,
        /// Where the status file (read by `emptcp status`) is written.
        #[arg(long, env = "EMPTCP_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        #[command(flatten)]
        overrides: Overrides,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    text.parse::<crate::policy::Duration>()
        .map(|d| d.get())
        .map_err(|e| e.to_string())
}

fn parse_drift_interval(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d < Duration::from_millis(100) {
        return Err("the drift interval is at least 100ms".into());
    }
    Ok(d)
}

fn parse_debounce(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d > Duration::from_secs(60) {
        return Err("the debounce is at most 60s".into());
    }
    Ok(d)
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Print the observed state as a JSON snapshot (for `plan --state`).
    Export,
}
