//! NovaCron shared crate: everything the services agree on, and all pure
//! decision logic. No tokio, no NATS, no AWS in here, so every decision can be
//! unit-tested and benchmarked with an explicit clock.
//!
//! Modules:
//! - [`subjects`]: NATS subject names and parsers (`nova.metrics.<target>.<metric>`, ...).
//! - [`ids`]: deterministic ids, so a replayed or duplicated input yields the same id.
//! - [`units`]: quantities as operators write them (`70%`, `500ms`, `2 minutes`).
//! - [`wire`]: the messages on the wire (samples, triggers, commands, results, audit).
//! - [`codec`]: MessagePack (named maps) and JSON encoding of those messages.
//! - [`normalise`]: validating a published sample into canonical units.
//! - [`policy`]: the policy file model, the runbook rule grammar, and whole-file validation.
//! - [`evaluate`]: event-time rule evaluation ("condition for duration").
//! - [`fallback`]: falling back to a set capacity when a metric source goes silent.
//! - [`tracking`]: target tracking, the HPA algorithm (tolerance, stabilization, rate limits).
//! - [`alert`]: Alertmanager webhook payloads, `alert_rules` matchers, alerts routed to triggers.
//! - [`arbitrate`]: cooldowns, bounds and conflict resolution into an absolute desired capacity.
//! - [`emergency`]: what `novactl emergency up|down|reset` asks of a target, or why not.
//! - [`gradual`]: gradual scaling: steps, gate verdicts, the pause-then-rollback walk.
//! - [`audit_stats`]: the runbook's section 8 figures (actions, success rate, flapping, time at max, velocity) from audit records.
//! - [`lease`]: the per-target lease that keeps actuator replicas in decision order.
//! - `schema` (feature `schema`): the JSON Schemas in `schemas/`, generated from the wire types.

pub mod alert;
pub mod arbitrate;
pub mod audit_stats;
pub mod codec;
pub mod emergency;
pub mod evaluate;
pub mod fallback;
pub mod gradual;
pub mod ids;
pub mod lease;
pub mod normalise;
pub mod policy;
#[cfg(feature = "schema")]
pub mod schema;
pub mod subjects;
pub mod tracking;
pub mod units;
pub mod wire;
