//! One audit record as one line an operator can read.

use nova_shared::evaluate::human_secs;
use nova_shared::wire::{AuditRecord, TargetStatus};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `2026-11-29T00:10:00.123Z arbiter    web  scale       <reason>`.
pub fn line(record: &AuditRecord) -> String {
    let when = OffsetDateTime::from_unix_timestamp_nanos(i128::from(record.ts) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| record.ts.to_string());
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
