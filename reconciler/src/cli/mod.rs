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
    plan::{self, Plan, PlanOptions},
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

fn print_plan(plan: &Plan, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Text => {
            let mut out = anstream::stdout();
            write!(out, "{}", plan::render_text(plan))?;
        }
        Output::Json => println!("{}", plan::render_json(plan)),
    }
    Ok(())
}

/// Runs the command; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    // The daemon binds its metrics listener first, then enters the
    // namespace itself (before its runtime starts any thread).
    // Mutating commands check their capabilities before anything else
    // (even entering --netns): an unprivileged run changes nothing.
    if let Some(name) = mutating(&cli.command) {
        privilege::require(name)?;
    }
    if matches!(cli.command, Command::Watch { .. }) {
        return run_watch(cli);
    }
    // Its own namespaces, entered before any thread exists.
    if matches!(cli.command, Command::Simulate { .. }) {
        return run_simulate(cli);
    }
    // setns must happen before any other thread exists.
    if let Some(ns) = &cli.netns {
        netns::enter(ns)?;
    }
    let layout = Layout::new(&cli.bpffs_root);
    if reads_live_state(&cli.command) {
        warn_if_unsafe(&layout);
    }
    match cli.command {
        Command::Validate { source } => {
            let p = load_policy(source.file.as_deref(), source.dir.as_deref(), cli.output)?;
            let object = Object::load()?;
            desired(&p, &object)?;
            match cli.output {
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
        } => {
            let Source { file, dir } = source;
            let p = load_policy(file.as_deref(), dir.as_deref(), cli.output)?;
            let object = Object::load()?;
            let d = desired(&p, &object)?;
            let o = match &state {
                Some(path) => read_snapshot(path)?,
                None => observe::observe(&layout)?,
            };
            let plan = make_plan(&d, &o, overrides)?;
            print_plan(&plan, cli.output)?;
            if let Some(out) = out {
                std::fs::write(&out, plan::render_json(&plan))
                    .with_context(|| format!("writing plan to {}", out.display()))?;
            }
            Ok(if detailed_exitcode && !plan.is_empty() {
                EXIT_CHANGES
            } else {
                EXIT_OK
            })
        }
        Command::Apply {
            planfile,
            file,
            dir,
            overrides,
        } => {
            let object = Object::load()?;
            let started = Instant::now();
            let _lock = apply::lock(&layout.root)?;
            let o = observe::observe(&layout)?;
            let plan = match &planfile {
                Some(pf) => {
                    let text = std::fs::read_to_string(pf)
                        .with_context(|| format!("reading plan {}", pf.display()))?;
                    let plan: Plan = serde_json::from_str(&text).with_context(|| {
                        format!(
                            "{} is not a plan saved by `emptcp plan --out`",
                            pf.display()
                        )
                    })?;
                    let live = plan::observed_hash(&o, &plan.interfaces);
                    if live != plan.observed_hash {
                        return Err(apply::ApplyError::Stale {
                            planned: plan.observed_hash,
                            live,
                        }
                        .into());
                    }
                    plan
                }
                None => {
                    let p = load_policy(file.as_deref(), dir.as_deref(), cli.output)?;
                    make_plan(&desired(&p, &object)?, &o, overrides)?
                }
            };
            if cli.output == Output::Text {
                print_plan(&plan, cli.output)?;
            }
            let n = Applier::new(&layout, &object).apply(&plan)?;
            let ms = started.elapsed().as_secs_f64() * 1e3;
            match cli.output {
                Output::Text => println!("Apply complete: {n} step(s) in {ms:.1} ms."),
                Output::Json => println!(
                    "{}",
                    serde_json::json!({"applied_steps": n, "elapsed_ms": ms, "plan": plan})
                ),
            }
            Ok(EXIT_OK)
        }
        Command::Status { state_dir } => {
            let o = observe::observe(&layout)?;
            let mut s = status::status(&layout, &o);
            status::attach_daemon(&mut s, &state_dir, &cli.bpffs_root);
            s.kernel = Some(crate::kernel::probe());
            match cli.output {
                Output::Text => print!("{}", status::render_text(&s)),
                Output::Json => println!("{}", serde_json::to_string_pretty(&s)?),
            }
            Ok(EXIT_OK)
        }
        Command::Agent => {
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            for sig in [libc::SIGTERM, libc::SIGINT] {
                // SAFETY: registering an async-signal-safe flag setter.
                signal_hook_flag(sig, &stop);
            }
            // The agent trusts the pinned maps it reads: only from a root
            // no one else can write to.
            privilege::check_tree(&layout)?;
            let mut agent = crate::agent::Agent::open(&layout)?;
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
        Command::Flows => {
            let o = observe::observe(&layout)?;
            let flows = crate::flows::list(&layout, &o);
            match cli.output {
                Output::Text => print!("{}", crate::flows::render_text(&flows)),
                Output::Json => println!("{}", serde_json::to_string_pretty(&flows)?),
            }
            Ok(EXIT_OK)
        }
        Command::State {
            command: StateCommand::Export,
        } => {
            let o = observe::observe(&layout)?;
            println!("{}", serde_json::to_string_pretty(&o)?);
            Ok(EXIT_OK)
        }
        Command::Destroy => {
            let object = Object::load()?;
            if !layout.root.exists() {
                println!(
                    "Nothing to destroy: {} does not exist.",
                    layout.root.display()
                );
                return Ok(EXIT_OK);
            }
            let lock = apply::lock(&layout.root)?;
            let o = observe::observe(&layout)?;
            let plan = plan::destroy(&o);
            if cli.output == Output::Text {
                print_plan(&plan, cli.output)?;
            }
            // The root directory is removed by the last step; the lock is
            // on its (still open) fd, which is fine.
            let n = Applier::new(&layout, &object).apply(&plan)?;
            drop(lock);
            println!("Destroy complete: {n} step(s).");
            Ok(EXIT_OK)
        }
        Command::Watch { .. } | Command::Simulate { .. } => unreachable!("handled above"),
    }
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

/// Sets `flag` when `sig` arrives (the agent polls it every 200 ms).
fn signal_hook_flag(sig: libc::c_int, flag: &std::sync::Arc<std::sync::atomic::AtomicBool>) {
    static FLAG: std::sync::OnceLock<std::sync::Arc<std::sync::atomic::AtomicBool>> =
        std::sync::OnceLock::new();
    let _ = FLAG.set(flag.clone());
    extern "C" fn on_signal(_: libc::c_int) {
        if let Some(f) = FLAG.get() {
            f.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    // SAFETY: the handler only does an atomic store.
    unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
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
    let new_desired = desired(&new_policy, &object)?;
    let new_name = source
        .file
        .as_deref()
        .or(source.dir.as_deref())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let old = match &against {
        Some(path) => {
            let p = if path.is_dir() {
                load_policy(None, Some(path), cli.output)?
            } else {
                load_policy(Some(path), None, cli.output)?
            };
            Some((path.display().to_string(), desired(&p, &object)?))
        }
        None => None,
    };
    let locals = local
        .iter()
        .map(|s| simulate::parse_local(s))
        .collect::<Result<Vec<_>, _>>()?;
    simulate::sandbox::private_bpffs()?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [libc::SIGTERM, libc::SIGINT] {
        signal_hook_flag(sig, &stop);
    }
    let opts = |name: String, d, root, write| simulate::Options {
        policy_name: name,
        desired: d,
        object: &object,
        trace: &pcap,
        locals: locals.clone(),
        write,
        stop: &stop,
        root_name: root,
    };
    // The old policy first, in its own namespaces; --write is the new one's.
    let old_report = match &old {
        Some((name, d)) => Some(simulate::simulate(&opts(name.clone(), d, "old", None))?),
        None => None,
    };
    let new_report = simulate::simulate(&opts(new_name, &new_desired, "new", write.clone()))?;
    let differs = match old_report {
        Some(old) => {
            let c = simulate::compare::compare(old, new_report);
            match cli.output {
                Output::Text => print!("{}", simulate::compare::render_text(&c)),
                Output::Json => println!("{}", serde_json::to_string_pretty(&c)?),
            }
            c.differs()
        }
        None => {
            match cli.output {
                Output::Text => print!("{}", simulate::report::render_text(&new_report)),
                Output::Json => println!("{}", serde_json::to_string_pretty(&new_report)?),
            }
            let p = &new_report.packets;
            p.dropped + p.rewritten + p.forged > 0
        }
    };
    Ok(if detailed_exitcode && differs {
        EXIT_CHANGES
    } else {
        EXIT_OK
    })
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
