//! The binary's edge: parse arguments, run one command, map errors to exit
//! codes in one place (0 ok / no changes, 1 error, 2 changes present with
//! --detailed-exitcode).
mod args;

use std::{io::Write as _, path::Path, time::Instant};

use anyhow::{Context as _, bail};
pub use args::Cli;
use args::{Command, LogFormat, Output, Overrides, Source, StateCommand};

use crate::{
    apply::{self, Applier},
    desired::Desired,
    layout::Layout,
    netns,
    object::Object,
    observe::{self, Observed},
    plan::{self, Plan, PlanOptions, TextOptions},
    policy::{self, Policy},
    privilege, status,
};

pub const EXIT_OK: i32 = 0;
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_CHANGES: i32 = 2;

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EMPTCP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

/// Loads the policy; its errors show the source line and a caret in text
/// mode, and keep their one-line form for `-o json`.
fn load_policy(file: Option<&Path>, dir: Option<&Path>, output: Output) -> anyhow::Result<Policy> {
    let r = match (file, dir) {
        (Some(f), _) => policy::load_file(f),
        (_, Some(d)) => policy::load_dir(d),
        _ => bail!("give a policy with -f FILE or -d DIR"),
    };
    r.map_err(|e| match output {
        Output::Text => anyhow::anyhow!(
            "{}",
            policy::render_snippets(&e, |path| std::fs::read_to_string(path).ok())
        ),
        Output::Json => anyhow::anyhow!("{e}"),
    })
}

fn desired(p: &Policy, object: &Object) -> anyhow::Result<Desired> {
    Desired::new(p, object).map_err(|errs| {
        let msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!(
            "the policy cannot be applied by this build:\n  {}",
            msgs.join("\n  ")
        )
    })
}

fn make_plan(d: &Desired, o: &Observed, ov: Overrides) -> anyhow::Result<Plan> {
    let opts = PlanOptions {
        force: ov.force,
        allow_state_loss: ov.allow_state_loss,
    };
    plan::plan(d, o, opts).map_err(|errs| {
        let msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!("cannot plan:\n  {}", msgs.join("\n  "))
    })
}

fn print_plan(plan: &Plan, output: Output, text: TextOptions) -> anyhow::Result<()> {
    match output {
        Output::Text => {
            let mut out = anstream::stdout();
            write!(out, "{}", plan::render_text_with(plan, text))?;
        }
        Output::Json => println!("{}", plan::render_json(plan)),
    }
    Ok(())
}

/// Runs the command; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    // Mutating commands check their capabilities before anything else
    // (even entering --netns): an unprivileged run changes nothing.
    if let Some(name) = mutating(&cli.command) {
        privilege::require(name)?;
    }
    match cli.command {
        // The daemon binds its metrics listener first, then enters the
        // namespace itself (before its runtime starts any thread).
        Command::Watch { .. } => return run_watch(cli),
        // Its own namespaces, entered before any thread exists.
        Command::Simulate { .. } => return run_simulate(cli),
        _ => {}
    }
    // setns must happen before any other thread exists.
    if let Some(ns) = &cli.netns {
        netns::enter(ns)?;
    }
    let layout = Layout::new(&cli.bpffs_root);
    if reads_live_state(&cli.command) {
        warn_if_unsafe(&layout);
    }
    let output = cli.output;
    let text = TextOptions {
        verbose: cli.verbose,
    };
    match cli.command {
        Command::Validate { source } => validate(&source, output),
        Command::Schema => {
            print!("{}", policy::schema_json());
            Ok(EXIT_OK)
        }
        Command::Plan {
            source,
            state,
            detailed_exitcode,
            out,
            overrides,
        } => plan_command(
            &layout,
            &source,
            state.as_deref(),
            out.as_deref(),
            overrides,
            (output, text),
        )
        .map(|changes| exit_code(detailed_exitcode && changes)),
        Command::Apply {
            planfile,
            file,
            dir,
            overrides,
        } => {
            let policy = Source { file, dir };
            apply_command(
                &layout,
                planfile.as_deref(),
                &policy,
                overrides,
                (output, text),
            )
        }
        Command::Status { state_dir } => status_command(&layout, &state_dir, output),
        Command::Agent => run_agent(&layout),
        Command::Flows => flows_command(&layout, output),
        Command::State {
            command: StateCommand::Export,
        } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&observe::observe(&layout)?)?
            );
            Ok(EXIT_OK)
        }
        Command::Destroy => destroy(&layout, (output, text)),
        Command::Watch { .. } | Command::Simulate { .. } => unreachable!("handled above"),
    }
}

/// 2 when the caller asked for it and there is something to report
/// (changes, a different behaviour), else 0.
fn exit_code(changes_reported: bool) -> i32 {
    if changes_reported {
        EXIT_CHANGES
    } else {
        EXIT_OK
    }
}

/// `validate`: the policy parses, validates, and this build has a program
/// for every action it names.
fn validate(source: &Source, output: Output) -> anyhow::Result<i32> {
    let p = load_policy(source.file.as_deref(), source.dir.as_deref(), output)?;
    desired(&p, &Object::load()?)?;
    match output {
        Output::Text => println!(
            "policy is valid: {} interface(s), {} chain(s)",
            p.interfaces.len(),
            p.chains.len()
        ),
        Output::Json => println!(
            "{}",
            serde_json::json!({"valid": true, "interfaces": p.interfaces.len(), "chains": p.chains.len()})
        ),
    }
    Ok(EXIT_OK)
}

/// `plan`: the plan against the live kernel or a snapshot, printed and
/// optionally saved. Returns whether it has changes.
fn plan_command(
    layout: &Layout,
    source: &Source,
    snapshot: Option<&Path>,
    save_to: Option<&Path>,
    overrides: Overrides,
    (output, text): (Output, TextOptions),
) -> anyhow::Result<bool> {
    let p = load_policy(source.file.as_deref(), source.dir.as_deref(), output)?;
    let d = desired(&p, &Object::load()?)?;
    let o = match snapshot {
        Some(path) => read_snapshot(path)?,
        None => observe::observe(layout)?,
    };
    let plan = make_plan(&d, &o, overrides)?;
    print_plan(&plan, output, text)?;
    if let Some(out) = save_to {
        std::fs::write(out, plan::render_json(&plan))
            .with_context(|| format!("writing plan to {}", out.display()))?;
    }
    Ok(!plan.is_empty())
}

/// `apply`: under the lock, observe, plan (or take the saved plan), then
/// execute it.
fn apply_command(
    layout: &Layout,
    planfile: Option<&Path>,
    source: &Source,
    overrides: Overrides,
    (output, text): (Output, TextOptions),
) -> anyhow::Result<i32> {
    let object = Object::load()?;
    let started = Instant::now();
    let _lock = apply::lock(&layout.root)?;
    let o = observe::observe(layout)?;
    let plan = match planfile {
        Some(pf) => read_saved_plan(pf, &o)?,
        None => {
            let p = load_policy(source.file.as_deref(), source.dir.as_deref(), output)?;
            make_plan(&desired(&p, &object)?, &o, overrides)?
        }
    };
    if output == Output::Text {
        print_plan(&plan, output, text)?;
    }
    let n = Applier::new(layout, &object).apply(&plan)?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    match output {
        Output::Text => println!("Apply complete: {n} step(s) in {ms:.1} ms."),
        Output::Json => println!(
            "{}",
            serde_json::json!({"applied_steps": n, "elapsed_ms": ms, "plan": plan})
        ),
    }
    Ok(EXIT_OK)
}

/// A plan saved by `plan --out`, refused ("stale") when the live state is
/// no longer the one it was made from.
fn read_saved_plan(path: &Path, live: &Observed) -> anyhow::Result<Plan> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading plan {}", path.display()))?;
    let plan: Plan = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a plan saved by `emptcp plan --out`",
            path.display()
        )
    })?;
    let hash = plan::observed_hash(live, &plan.interfaces);
    if hash != plan.observed_hash {
        return Err(apply::ApplyError::Stale {
            planned: plan.observed_hash,
            live: hash,
        }
        .into());
    }
    Ok(plan)
}

/// `status`: what is live, the daemon's last report, the kernel's features.
fn status_command(layout: &Layout, state_dir: &Path, output: Output) -> anyhow::Result<i32> {
    let o = observe::observe(layout)?;
    let mut s = status::status(layout, &o);
    status::attach_daemon(&mut s, state_dir, &layout.root);
    s.kernel = Some(crate::kernel::probe());
    match output {
        Output::Text => print!("{}", status::render_text(&s)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&s)?),
    }
    Ok(EXIT_OK)
}

/// `flows`: the connections the datapath tracks.
fn flows_command(layout: &Layout, output: Output) -> anyhow::Result<i32> {
    let o = observe::observe(layout)?;
    let flows = crate::flows::list(layout, &o);
    match output {
        Output::Text => print!("{}", crate::flows::render_text(&flows)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&flows)?),
    }
    Ok(EXIT_OK)
}

/// `agent`: the recovery agent alone, until SIGTERM/SIGINT.
fn run_agent(layout: &Layout) -> anyhow::Result<i32> {
    let stop = stop_on_signals()?;
    // The agent trusts the pinned maps it reads: only from a root no one
    // else can write to.
    privilege::check_tree(layout)?;
    let mut agent = crate::agent::Agent::open(layout)?;
    tracing::info!(root = %layout.root.display(), "recovery agent running");
    agent.run(&stop)?;
    let s = &agent.stats;
    use std::sync::atomic::Ordering::Relaxed;
    tracing::info!(
        events = s.events.load(Relaxed),
        injected = s.injected.load(Relaxed),
        failed = s.failed.load(Relaxed),
        stale = s.stale.load(Relaxed),
        "recovery agent stopped"
    );
    Ok(EXIT_OK)
}

/// `destroy`: the destroy plan (everything under the root), executed.
fn destroy(layout: &Layout, (output, text): (Output, TextOptions)) -> anyhow::Result<i32> {
    let object = Object::load()?;
    if !layout.root.exists() {
        println!(
            "Nothing to destroy: {} does not exist.",
            layout.root.display()
        );
        return Ok(EXIT_OK);
    }
    let lock = apply::lock(&layout.root)?;
    let o = observe::observe(layout)?;
    let plan = plan::destroy(&o);
    if output == Output::Text {
        print_plan(&plan, output, text)?;
    }
    // The root directory is removed by the last step; the lock is on its
    // (still open) fd, which is fine.
    let n = Applier::new(layout, &object).apply(&plan)?;
    drop(lock);
    println!("Destroy complete: {n} step(s).");
    Ok(EXIT_OK)
}

/// The name of a command that changes the kernel (needs capabilities).
fn mutating(c: &Command) -> Option<&'static str> {
    match c {
        Command::Apply { .. } => Some("apply"),
        Command::Destroy => Some("destroy"),
        Command::Watch { .. } => Some("watch"),
        Command::Agent => Some("agent"),
        _ => None,
    }
}

/// Commands that only read the live state (no capability check: they fail
/// on their own without access, and `plan --state` needs none).
fn reads_live_state(c: &Command) -> bool {
    match c {
        Command::Plan { state, .. } => state.is_none(),
        Command::Status { .. } | Command::Flows | Command::State { .. } => true,
        _ => false,
    }
}

/// Read-only commands still read a root that another user could write to,
/// but say so: what they report may have been planted there.
fn warn_if_unsafe(layout: &Layout) {
    if let Err(e) = privilege::check_tree(layout) {
        tracing::warn!(
            "{e}; apply would refuse this root, what is read from it may not be emptcp's"
        );
    }
}

/// A flag set when SIGTERM or SIGINT arrives (the agent polls it every
/// 200 ms, the simulation between packets).
fn stop_on_signals() -> anyhow::Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone())
            .with_context(|| format!("registering a handler for signal {sig}"))?;
    }
    Ok(stop)
}

fn run_watch(cli: Cli) -> anyhow::Result<i32> {
    let Command::Watch {
        source,
        drift_interval,
        debounce,
        metrics,
        state_dir,
        overrides,
    } = cli.command
    else {
        bail!("not a watch command");
    };
    let source = match (source.file, source.dir) {
        (Some(f), _) => crate::watch::source::Source::File(f),
        (_, Some(d)) => crate::watch::source::Source::Dir(d),
        _ => bail!("give a policy with -f FILE or -d DIR"),
    };
    crate::watch::run(crate::watch::WatchOptions {
        source,
        bpffs_root: cli.bpffs_root,
        netns: cli.netns,
        drift_interval,
        debounce,
        metrics,
        state_dir,
        plan: PlanOptions {
            force: overrides.force,
            allow_state_loss: overrides.allow_state_loss,
        },
    })?;
    Ok(EXIT_OK)
}

fn run_simulate(cli: Cli) -> anyhow::Result<i32> {
    use crate::simulate;
    let Command::Simulate {
        source,
        pcap,
        against,
        local,
        write,
        detailed_exitcode,
    } = cli.command
    else {
        bail!("not a simulate command");
    };
    simulate::sandbox::check_privileges()?;
    let object = Object::load()?;
    let new_policy = load_policy(source.file.as_deref(), source.dir.as_deref(), cli.output)?;
    let new_desired = desired(&simulate::replayed(&new_policy), &object)?;
    let new_name = source
        .file
        .as_deref()
        .or(source.dir.as_deref())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let old = match &against {
        Some(path) => Some(against_policy(path, &object, cli.output)?),
        None => None,
    };
    let locals = local
        .iter()
        .map(|s| simulate::parse_local(s))
        .collect::<Result<Vec<_>, _>>()?;
    simulate::sandbox::private_bpffs()?;
    let stop = stop_on_signals()?;
    let opts = |name: String, d, rules, root, write| simulate::Options {
        policy_name: name,
        desired: d,
        packet_copy: rules,
        object: &object,
        trace: &pcap,
        locals: locals.clone(),
        write,
        stop: &stop,
        root_name: root,
    };
    // The old policy first, in its own namespaces; --write is the new one's.
    let old_report = match &old {
        Some((name, d, rules)) => Some(simulate::simulate(&opts(
            name.clone(),
            d,
            rules,
            "old",
            None,
        ))?),
        None => None,
    };
    let new_report = simulate::simulate(&opts(
        new_name,
        &new_desired,
        &new_policy.packet_copy,
        "new",
        write.clone(),
    ))?;
    let differs = print_simulation(old_report, new_report, cli.output)?;
    Ok(exit_code(detailed_exitcode && differs))
}

/// The policy `simulate --against` compares with (a file or a drop-in
/// directory), named as given.
fn against_policy(
    path: &Path,
    object: &Object,
    output: Output,
) -> anyhow::Result<(String, Desired, Vec<crate::policy::PacketCopy>)> {
    let p = if path.is_dir() {
        load_policy(None, Some(path), output)?
    } else {
        load_policy(Some(path), None, output)?
    };
    Ok((
        path.display().to_string(),
        desired(&crate::simulate::replayed(&p), object)?,
        p.packet_copy.clone(),
    ))
}

/// Prints the simulation's report, or the comparison with the old
/// policy's; returns whether the new policy changes anything (the
/// behaviour differs, or, alone, it drops, rewrites or forges a packet).
fn print_simulation(
    old: Option<crate::simulate::report::Report>,
    new: crate::simulate::report::Report,
    output: Output,
) -> anyhow::Result<bool> {
    use crate::simulate::{compare, report};
    let Some(old) = old else {
        match output {
            Output::Text => print!("{}", report::render_text(&new)),
            Output::Json => println!("{}", serde_json::to_string_pretty(&new)?),
        }
        let p = &new.packets;
        return Ok(p.dropped + p.rewritten + p.forged + p.copied > 0);
    };
    let c = compare::compare(old, new);
    match output {
        Output::Text => print!("{}", compare::render_text(&c)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&c)?),
    }
    Ok(c.differs())
}

fn read_snapshot(path: &Path) -> anyhow::Result<Observed> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading snapshot {}", path.display()))?;
    let o: Observed = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a snapshot from `emptcp state export`",
            path.display()
        )
    })?;
    if o.snapshot_version != observe::SNAPSHOT_VERSION {
        bail!(
            "snapshot {} has version {}, this emptcp reads version {}; export it again with this version",
            path.display(),
            o.snapshot_version,
            observe::SNAPSHOT_VERSION
        );
    }
    Ok(o)
}
