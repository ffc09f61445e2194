//! One audit record as one line an operator can read.

use nova_shared::wire::AuditRecord;
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
