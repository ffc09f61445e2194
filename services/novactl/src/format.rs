//! What novactl prints for people: one audit record as one line, a
//! target's status as two, and the `--output table` tables (comfy-table,
//! without its terminal features: a table is the same on a pipe).

use comfy_table::Table;
use nova_shared::audit_stats::AuditStats;
use nova_shared::evaluate::human_secs;
use nova_shared::wire::{AuditRecord, TargetStatus};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Unix ms as RFC 3339 (`2026-11-29T00:10:00.123Z`).
pub fn when(ts: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ts.to_string())
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_style(comfy_table::presets::ASCII_MARKDOWN);
    table.set_header(header.to_vec());
    table
}

/// Audit records as a table: time, stage, target, kind, outcome, reason.
pub fn records_table(records: &[AuditRecord]) -> String {
    let mut t = table(&["time", "stage", "target", "kind", "outcome", "reason"]);
    for r in records {
        t.add_row(vec![
            when(r.ts),
            r.stage.as_str().to_string(),
            r.target.clone(),
            r.kind.as_str().to_string(),
            r.outcome.clone(),
            r.reason.clone(),
        ]);
    }
    t.to_string()
}

/// The section 8 figures, one row per target.
pub fn stats_table(stats: &AuditStats) -> String {
    let mut t = table(&[
        "target",
        "actions",
        "ok",
        "failed",
        "success",
        "up",
        "down",
        "moved",
        "velocity/h",
        "flapping",
        "max",
        "at max",
        "not taken",
    ]);
    for s in &stats.targets {
        let not_taken: Vec<String> = s
            .not_taken
            .iter()
            .map(|(o, n)| format!("{o} {n}"))
            .collect();
        t.add_row(vec![
            s.target.clone(),
            s.actions.to_string(),
            s.successes.to_string(),
            s.failures.to_string(),
            format!("{:.0}%", s.success_rate * 100.0),
            s.scale_ups.to_string(),
            s.scale_downs.to_string(),
            s.capacity_moved.to_string(),
            format!("{:.1}", s.scaling_velocity_per_hour),
            format!(
                "{} ({} reversals, {} noted)",
                s.flapping_episodes, s.reversals, s.flapping_notes
            ),
            s.max.map_or("?".into(), |m| m.to_string()),
            human_secs(s.time_at_max_secs.round() as u64),
            not_taken.join(", "),
        ]);
    }
    t.to_string()
}

/// Targets' status as a table.
pub fn status_table(statuses: &[TargetStatus], now_ms: i64) -> String {
    let mut t = table(&[
        "target",
        "capacity",
        "min",
        "max",
        "state",
        "cooldown up",
        "cooldown down",
        "last",
    ]);
    let left = |until: i64| {
        let left = until.saturating_sub(now_ms);
        if left > 0 {
            human_secs(u64::try_from(left / 1000).unwrap_or(0))
        } else {
            "-".into()
        }
    };
    for s in statuses {
        let state = match (s.paused_up, s.paused_down) {
            (true, true) => "paused",
            (true, false) => "scale-up paused",
            (false, true) => "scale-down paused",
            (false, false) => "active",
        };
        t.add_row(vec![
            s.target.clone(),
            s.capacity
                .as_ref()
                .map_or("unknown".into(), |c| c.desired.to_string()),
            s.min.to_string(),
            s.max.to_string(),
            format!("{state}{}", if s.dry_run { ", dry run" } else { "" }),
            left(s.wall_up_cooldown_until),
            left(s.wall_down_cooldown_until),
            s.last_decision.clone().unwrap_or_default(),
        ]);
    }
    t.to_string()
}

/// One target of a valid policy, as `policy validate --output table` lists it.
pub struct TargetRow<'a> {
    /// The target.
    pub name: &'a str,
    /// Its backend's kind.
    pub backend: &'a str,
    /// Its bounds.
    pub min: u32,
    /// Its bounds.
    pub max: u32,
    /// Its rules' names.
    pub rules: Vec<&'a str>,
}

/// A valid policy's targets as a table.
pub fn targets_table(rows: &[TargetRow<'_>]) -> String {
    let mut t = table(&["target", "backend", "min", "max", "rules"]);
    for row in rows {
        t.add_row(vec![
            row.name.to_string(),
            row.backend.to_string(),
            row.min.to_string(),
            row.max.to_string(),
            row.rules.join(", "),
        ]);
    }
    t.to_string()
}

/// `2026-11-29T00:10:00.123Z arbiter    web  scale       <reason>`.
pub fn line(record: &AuditRecord) -> String {
    let when = when(record.ts);
    format!(
        "{when} {stage:<9} {target:<10} {outcome:<16} {reason}",
        stage = record.stage.as_str(),
        target = record.target,
        outcome = record.outcome,
        reason = record.reason,
    )
}

/// One target's status as two lines.
pub fn status(status: &TargetStatus, now_ms: i64) -> String {
    let capacity = match &status.capacity {
        Some(c) => format!(
            "{}{} ({} backend{})",
            c.desired,
            c.tier
                .as_ref()
                .map(|tier| format!(" x {tier}"))
                .unwrap_or_default(),
            c.backend,
            c.running
                .map(|r| format!(", {r} running"))
                .unwrap_or_default()
        ),
        None => "unknown".into(),
    };
    let paused = match (status.paused_up, status.paused_down) {
        (true, true) => "paused",
        (true, false) => "scale-up paused",
        (false, true) => "scale-down paused",
        (false, false) => "active",
    };
    // The wall-clock cooldowns: what a `scale` meets now, and each rule
    // action's cooldown from when it was decided (the rules' own run on
    // their samples' event time, which may lag).
    let cooldown = |until: i64| {
        let left = until.saturating_sub(now_ms);
        if left > 0 {
            human_secs(u64::try_from(left / 1000).unwrap_or(0))
        } else {
            "-".into()
        }
    };
    let in_flight = status
        .capacity
        .as_ref()
        .filter(|c| c.lease.as_ref().is_some_and(|l| l.expires_ms > now_ms))
        .map(
            |c| match c.plan.as_ref().filter(|p| p.seq == c.claimed_seq) {
                // A gradual walk: how far it is.
                Some(plan) => format!(
                    ", applying command {} step {} of {} ({} -> {}, at {})",
                    c.claimed_seq, plan.step, plan.of, plan.from, plan.desired, plan.to
                ),
                None => format!(", applying command {}", c.claimed_seq),
            },
        )
        .unwrap_or_default();
    let backend = status
        .backend_error
        .as_ref()
        .map(|e| format!("\n  backend: {e}"))
        .unwrap_or_default();
    format!(
        "{name}: capacity {capacity}{in_flight}, bounds {min}..{max}, {paused}{dry}, cooldown up {up} down {down}\n  last: {last}{backend}",
        name = status.target,
        min = status.min,
        max = status.max,
        dry = if status.dry_run { ", dry run" } else { "" },
        up = cooldown(status.wall_up_cooldown_until),
        down = cooldown(status.wall_down_cooldown_until),
        last = status.last_decision.as_deref().unwrap_or("no decision yet"),
    )
}

#[cfg(test)]
mod tests {
    use nova_shared::wire::{CapacityRecord, Lease, PlanProgress, TargetStatus};

    fn status(capacity: CapacityRecord) -> TargetStatus {
        TargetStatus {
            target: "web".into(),
            min: 1,
            max: 20,
            capacity: Some(capacity),
            desired: Some(15),
            paused_up: false,
            paused_down: false,
            dry_run: false,
            up_cooldown_until: 0,
            down_cooldown_until: 0,
            wall_up_cooldown_until: 0,
            wall_down_cooldown_until: 0,
            last_decision: None,
            backend_error: None,
        }
    }

    #[test]
    fn a_walk_in_flight_shows_its_step() {
        let lease = Lease {
            decision_id: "d".into(),
            owner: "a".into(),
            expires_ms: 2_000,
            extra: Default::default(),
        };
        let plan = PlanProgress {
            seq: 8,
            step: 3,
            of: 5,
            to: 11,
            from: 5,
            desired: 15,
            extra: Default::default(),
        };
        let walking = CapacityRecord {
            target: "web".into(),
            desired: 11,
            backend: "sim".into(),
            claimed_seq: 8,
            lease: Some(lease.clone()),
            plan: Some(plan.clone()),
            ..Default::default()
        };
        let cases = [
            (
                "walking",
                walking.clone(),
                "capacity 11 (sim backend), applying command 8 step 3 of 5 (5 -> 15, at 11),",
            ),
            (
                "one call",
                CapacityRecord {
                    plan: None,
                    ..walking.clone()
                },
                "capacity 11 (sim backend), applying command 8,",
            ),
            (
                "a stale plan of another command is not shown",
                CapacityRecord {
                    claimed_seq: 9,
                    ..walking.clone()
                },
                "capacity 11 (sim backend), applying command 9,",
            ),
            (
                "lease expired: nothing in flight",
                CapacityRecord {
                    lease: Some(Lease {
                        expires_ms: 500,
                        ..lease
                    }),
                    ..walking
                },
                "capacity 11 (sim backend), bounds",
            ),
        ];
        for (name, capacity, want) in cases {
            let line = super::status(&status(capacity), 1_000);
            assert!(line.contains(want), "{name}: {line}");
        }
    }
}
