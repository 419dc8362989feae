//! `--against`: the behavioural difference between two replays of the same
//! capture, per connection and in totals. Connections are matched by their
//! order of appearance (the same trace gives the same order).
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use super::report::{Connection, Report};

#[derive(Debug, Clone, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub old: Value,
    pub new: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectionChange {
    pub id: u32,
    pub local: String,
    pub remote: String,
    /// Size as the new policy's datapath counted it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datapath_bytes: Option<u64>,
    pub changes: Vec<FieldChange>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub old_policy: String,
    pub new_policy: String,
    pub capture: String,
    pub connections: u64,
    pub changed_connections: u64,
    pub changed: Vec<ConnectionChange>,
    pub totals: Vec<FieldChange>,
    pub old: Report,
    pub new: Report,
}

impl Comparison {
    pub fn differs(&self) -> bool {
        self.changed_connections > 0 || !self.totals.is_empty()
    }
}

/// Fields of two JSON objects that differ (identity fields excluded).
fn changes(old: &Value, new: &Value, skip: &[&str]) -> Vec<FieldChange> {
    let (Some(o), Some(n)) = (old.as_object(), new.as_object()) else {
        return Vec::new();
    };
    let mut v = Vec::new();
    let keys: std::collections::BTreeSet<&String> = o.keys().chain(n.keys()).collect();
    for k in keys {
        if skip.contains(&k.as_str()) {
            continue;
        }
        let (a, b) = (
            o.get(k).cloned().unwrap_or(Value::Null),
            n.get(k).cloned().unwrap_or(Value::Null),
        );
        if a != b {
            v.push(FieldChange {
                field: k.clone(),
                old: a,
                new: b,
            });
        }
    }
    v
}

/// What the policy decided for a connection: everything but the traffic
/// itself (which is the same capture on both sides) and the flow table's
/// view (which depends on what the chain tracks).
const NOT_BEHAVIOUR: &[&str] = &[
    "id",
    "local",
    "remote",
    "interface",
    "mptcp",
    "local_token",
    "remote_token",
    "chain",
    "first_packet",
    "start_s",
    "duration_s",
    "subflows",
    "packets_received",
    "packets_sent",
    "bytes_received",
    "bytes_sent",
    "datapath_bytes",
    // When and how often a stored ADD_ADDR came back is timing, not
    // outcome: `second_path` says whether it came back at all.
    "recovered_at_bytes",
    "add_addr_forged",
    "add_addr_recovered",
];

fn conn(c: &Connection) -> Value {
    serde_json::to_value(c).unwrap_or(Value::Null)
}

pub fn compare(old: Report, new: Report) -> Comparison {
    let mut changed = Vec::new();
    for (o, n) in old.connections.iter().zip(&new.connections) {
        let ch = changes(&conn(o), &conn(n), NOT_BEHAVIOUR);
        if !ch.is_empty() {
            changed.push(ConnectionChange {
                id: n.id,
                local: n.local.clone(),
                remote: n.remote.clone(),
                datapath_bytes: n.datapath_bytes.or(o.datapath_bytes),
                changes: ch,
            });
        }
    }
    let to = |r: &Report| serde_json::to_value(&r.totals).unwrap_or(Value::Null);
    let pk = |r: &Report| serde_json::to_value(&r.packets).unwrap_or(Value::Null);
    let mut totals = changes(&to(&old), &to(&new), NOT_BEHAVIOUR);
    totals.extend(
        changes(
            &pk(&old),
            &pk(&new),
            &["total", "received", "sent", "forged", "rewritten"],
        )
        .into_iter()
        .map(|mut c| {
            c.field = format!("packets_{}", c.field);
            c
        }),
    );
    Comparison {
        old_policy: old.policy.clone(),
        new_policy: new.policy.clone(),
        capture: new.capture.clone(),
        connections: new.connections.len() as u64,
        changed_connections: changed.len() as u64,
        changed,
        totals,
        old,
        new,
    }
}

pub fn render_text(c: &Comparison) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Compared {} (new) against {} (old) over {}",
        c.new_policy, c.old_policy, c.capture
    );
    let _ = writeln!(
        s,
        "{} of {} connection(s) would behave differently.",
        c.changed_connections, c.connections
    );
    for ch in &c.changed {
        let size = ch
            .datapath_bytes
            .map(|b| format!(", size {b} B"))
            .unwrap_or_default();
        let _ = writeln!(s, "  ~ #{} {} -> {}{size}", ch.id, ch.local, ch.remote);
        for f in &ch.changes {
            let _ = writeln!(s, "      {}: {} -> {}", f.field, f.old, f.new);
        }
    }
    if c.totals.is_empty() {
        let _ = writeln!(s, "Totals: no difference.");
    } else {
        let _ = writeln!(s, "Totals:");
        for f in &c.totals {
            let _ = writeln!(s, "  {}: {} -> {}", f.field, f.old, f.new);
        }
    }
    s
}
