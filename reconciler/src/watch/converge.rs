//! One converge of the kernel to a desired state, with the engine's own
//! stages (lock -> observe -> plan -> apply), then a verification pass (a
//! second observe + plan must be empty). Blocking: the daemon runs it on
//! tokio's blocking pool, one at a time.
use std::{sync::Arc, time::Instant};

use crate::{
    apply::{self, Applier, LockError},
    desired::Desired,
    layout::Layout,
    object::Object,
    observe::{self, Observed},
    plan::{self, PlanOptions},
};

/// What the daemon needs to converge: where, with which object, how.
pub struct Engine {
    pub layout: Layout,
    pub object: Arc<Object>,
    pub plan: PlanOptions,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The plan had steps and they were applied.
    Applied,
    /// The plan was empty.
    Noop,
    /// The plan could not be made (a foreign program, state loss, ...):
    /// nothing was changed.
    PlanError(Vec<String>),
    ObserveError(String),
    /// A step failed; the steps before it stay (each is idempotent and the
    /// next converge continues from there).
    ApplyError(String),
    /// Another emptcp holds the apply lock.
    LockBusy(String),
    /// The lock could not be taken for another reason (bpffs missing, ...).
    LockError(String),
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Noop => "noop",
            Outcome::PlanError(_) => "plan_error",
            Outcome::ObserveError(_) => "observe_error",
            Outcome::ApplyError(_) => "apply_error",
            Outcome::LockBusy(_) => "lock_busy",
            Outcome::LockError(_) => "lock_error",
        }
    }
}

#[derive(Debug)]
pub struct Report {
    pub outcome: Outcome,
    /// Steps applied (described), in order.
    pub steps: Vec<String>,
    /// The verification plan was empty.
    pub converged: bool,
    /// Steps the verification plan still wanted (should be none).
    pub remaining: usize,
    pub notes: Vec<String>,
    /// Policy interfaces absent from the namespace.
    pub missing_interfaces: Vec<String>,
    pub duration: std::time::Duration,
}

fn missing(d: &Desired, o: &Observed) -> Vec<String> {
    d.interfaces
        .keys()
        .filter(|n| !o.netdevs.contains_key(*n))
        .cloned()
        .collect()
}

/// Converges the kernel to `desired` (see the module documentation).
pub fn converge(engine: &Engine, desired: &Desired) -> Report {
    let started = Instant::now();
    let mut r = Report {
        outcome: Outcome::Noop,
        steps: Vec::new(),
        converged: false,
        remaining: 0,
        notes: Vec::new(),
        missing_interfaces: Vec::new(),
        duration: Default::default(),
    };
    let finish = |mut r: Report| {
        r.duration = started.elapsed();
        r
    };
    let _lock = match apply::lock(&engine.layout.root) {
        Ok(l) => l,
        Err(e @ LockError::Busy(_)) => {
            r.outcome = Outcome::LockBusy(e.to_string());
            return finish(r);
        }
        Err(e) => {
            r.outcome = Outcome::LockError(format!("{:#}", anyhow::Error::from(e)));
            return finish(r);
        }
    };
    let observed = match observe::observe(&engine.layout) {
        Ok(o) => o,
        Err(e) => {
            r.outcome = Outcome::ObserveError(format!("{:#}", anyhow::Error::from(e)));
            return finish(r);
        }
    };
    r.missing_interfaces = missing(desired, &observed);
    let plan = match plan::plan(desired, &observed, engine.plan) {
        Ok(p) => p,
        Err(errs) => {
            r.outcome = Outcome::PlanError(errs.iter().map(|e| e.to_string()).collect());
            return finish(r);
        }
    };
    r.notes = plan.notes.clone();
    if plan.is_empty() {
        r.outcome = Outcome::Noop;
        r.converged = true;
        return finish(r);
    }
    r.steps = plan.steps.iter().map(plan::describe).collect();
    let result = Applier::new(&engine.layout, &engine.object).apply(&plan);
    if let Err(e) = result {
        r.outcome = Outcome::ApplyError(format!("{:#}", anyhow::Error::from(e)));
        return finish(r);
    }
    r.outcome = Outcome::Applied;
    // Verify: what the engine promises (a second plan is empty).
    match observe::observe(&engine.layout)
        .map_err(|e| e.to_string())
        .and_then(|o| {
            r.missing_interfaces = missing(desired, &o);
            plan::plan(desired, &o, engine.plan).map_err(|errs| {
                errs.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        }) {
        Ok(p) => {
            r.remaining = p.steps.len();
            r.converged = p.is_empty();
            r.notes = p.notes;
        }
        Err(e) => tracing::warn!(error = %e, "verifying the apply failed"),
    }
    finish(r)
}
