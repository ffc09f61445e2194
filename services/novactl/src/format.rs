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
        .map(|c| format!(", applying command {}", c.claimed_seq))
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
