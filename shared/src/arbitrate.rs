//! Arbitration: from a trigger, the target's state and its capacity to one
//! decision with an absolute desired capacity. Pure: the event time comes
//! from the trigger and the wall clock is passed in ([`decide_at`]), so a
//! replay decides exactly as live.
//!
//! Before the table, [`check_known`] makes sure the policy has the trigger's
//! target and every rule it names (deferred or rejected otherwise: its own
//! table). Decision table, checked in this order:
//!
//! | situation                                             | outcome            |
//! |-------------------------------------------------------|--------------------|
//! | trigger id already decided                            | `duplicate`        |
//! | a rule trigger older than the last rule-caused action | `superseded`       |
//! | an alert resolved: its rule's hold ends               | `no_change`        |
//! | an alert fires whose rule only holds: the hold starts | `no_change`        |
//! | capacity never observed and never commanded           | `unknown_capacity` |
//! | an alert's `emergency up`: resolved to the `set to N` of `novactl emergency up` (`emergency_up`) |  |
//! | any up firing: the one asking for most capacity wins  |                    |
//! |   scale-up paused by an operator                      | `paused`           |
//! |   scale-up paused by another firing alert (`pause`)   | `paused`           |
//! |   up cooldown running                                 | `cooldown`         |
//! |   current >= max (rule max and target max)            | `at_max`           |
//! |   otherwise                                           | `scale` (clamped)  |
//! | only down firings: the one removing least wins        |                    |
//! |   scale-down paused by an operator                    | `paused`           |
//! |   scale-down held by another firing alert (`hold_scale_downs`, `pause`) | `paused` |
//! |   a rule's up firing was seen within the up-signal hold (rule triggers only) | `overridden` |
//! |   down cooldown, or the last scale-up's cooldown, running | `cooldown`     |
//! |   the last scale-up's capacity is still warming up    | `warming_up`       |
//! |   current <= min (rule min and target min)            | `at_min`           |
//! |   otherwise                                           | `scale` (clamped)  |
//! | the chosen capacity equals the current one            | `no_change`        |
//! | a tracking rule's rate limits allow no change now     | `rate_limited`     |
//! | the target is in dry-run mode                         | `dry_run`          |
//!
//! An alert rule's `emergency up` (`by N`, `to N`) asks, once the capacity
//! is known, what the operator's `novactl emergency up` would
//! ([`crate::emergency::ask`]: `to N`, else capacity + N, else double), as
//! a scale-up; unlike the operator's it is not forced: pauses, its rule's
//! cooldown and both bounds apply, and a `to N` not above the capacity asks
//! for no change, never a scale-down. Its reason says how
//! (`rule surge asks emergency up: double, 4 -> 8`).
//!
//! **One clock per input.** Each trigger is decided on the clock of its
//! source ([`Clock`]), and every hold is read on the clock it was stamped on:
//!
//! | trigger from | decided at | its cooldowns and warm-up |
//! |---|---|---|
//! | a rule (`rule`) | its `ts`, the event time of its sample | the rules' own, on event time; and those of operator and fallback actions, on the wall clock (`now_ms`) |
//! | an operator (`operator`), a silent source (`fallback`) or an alert (`alert`) | the arbiter's wall clock `now_ms` | every action's (rule, operator, fallback, alert), on the wall clock |
//!
//! Every action stamps its holds on both: a rule's at its event time (for
//! rules) and at `now_ms` (for operators); an operator's or fallback's at
//! `now_ms` only, for both. So a publisher whose clock lags the wall by ten
//! minutes, or a replay, gets its cooldowns on its own clock, and an
//! operator's request meets a rule's cooldown as many wall-clock seconds
//! after the rule acted as the cooldown says. The up-signal hold, the flap
//! window and the tracking rules' rate-limit history are about samples and
//! rules only: event time, rule actions only.
//!
//! **What operators may bypass.** `status` reads, `pause` and `resume`
//! change the target's state at once: they are not triggers, meet no
//! cooldown and start none. `scale` (and a fallback) enters the trigger
//! stream as a `set to N` firing and is decided by the table above, on the
//! wall clock:
//!
//! | rule of the table             | rule trigger | `scale`, fallback | `scale --force` |
//! |-------------------------------|--------------|-------------------|-----------------|
//! | duplicate, unknown capacity   | applies      | applies           | applies         |
//! | paused                        | applies      | applies           | bypassed        |
//! | up-signal hold (`overridden`) | applies      | not read          | not read        |
//! | cooldowns                     | applies      | applies           | bypassed        |
//! | warm-up (`warming_up`)        | applies      | applies           | bypassed        |
//! | min / max                     | applies      | applies           | applies         |
//! | rate limits                   | its rule's   | none              | none            |
//! | dry run                       | applies      | applies           | applies         |
//! | starts cooldowns and warm-up  | yes          | yes (cooldown 0 s, warm-up) | yes   |
//! | counted for flapping and rate limits | yes   | no                | no              |
//!
//! A forced decision names what it went past (`forced past: scale-up is
//! cooling down for another 1m58s`); a forced request travels as a firing
//! of rule [`OPERATOR_FORCE_RULE`].
//!
//! A target tracking firing asks for an absolute capacity; its rule's
//! behavior policies (Pods and Percent per period, `selectPolicy`) limit
//! the move against the changes of the last period before the bounds apply.
//!
//! Vertical firings (`upgrade to the next tier`) come in triggers of their
//! own and are decided by their own table (rule triggers on event time; an
//! alert rule's vertical step, along the target's one ladder, on the wall
//! clock with the alert rule's cooldown); the first bound rule wins when
//! several fire at once:
//!
//! | situation                                             | outcome            |
//! |-------------------------------------------------------|--------------------|
//! | trigger id already decided                            | `duplicate`        |
//! | the tier is not known yet                             | `unknown_capacity` |
//! | scale-up (which a resize is) paused by an operator    | `paused`           |
//! | scale-up paused by another firing alert (`pause`)     | `paused`           |
//! | the last resize is cooling down                       | `cooldown`         |
//! | the tier is the top of the rule's ladder              | `at_top_tier`      |
//! | the tier is on no step of the ladder                  | `no_change`        |
//! | the target is in dry-run mode                         | `dry_run`          |
//! | otherwise: one step up the ladder, same count         | `scale`            |
//!
//! Up beats down (the safe direction wins), both within one trigger and
//! across triggers through the up-signal hold. Every action sets its
//! direction's cooldown to the acting rule's `cooldown` (0 s for operator
//! and fallback requests, which have no rule), multiplied by the target's
//! `flapping.cooldown_factor` while the rules' actions of the flap window
//! reverse direction more than `flapping.max_reversals` times.

use crate::units::secs_to_ms;
use std::collections::{BTreeMap, VecDeque};

use crate::alert::WhileFiring;

use serde::{Deserialize, Serialize};

use crate::evaluate::human_secs;
use crate::ids;
use crate::policy::{FlapSettings, Target, TierMove};
use crate::tracking::{self, ScaleEvent};
use crate::wire::{
    AlertStatus, CapacityRecord, Command, Decision, Direction, EmergencyOp, Extra, Outcome,
    RuleFiring, ScaleAction, Trigger, TriggerSource, Version,
};

/// How many recent trigger ids a target remembers for de-duplication.
const RECENT_TRIGGERS: usize = 64;
/// How many recent verdicts a target keeps for re-publishing after a crash:
/// far more decisions than one target gets within a redelivery delay.
const RECENT_VERDICTS: usize = 16;

/// The arbiter's memory of one target, kept in JetStream KV and changed only
/// by compare-and-set on its revision.
///
/// Written back after every decision, so it keeps what a newer arbiter
/// stored and this one does not know (`extra`, here and in the verdicts it
/// holds), and this arbiter writes back no state it cannot fully read
/// ([`beyond_this_version`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetState {
    /// Version of the record's shape (1 when absent: written before versions).
    #[serde(default = "Version::unversioned")]
    pub v: Version,
    /// Commands issued so far; the next command gets `seq + 1`.
    #[serde(default)]
    pub seq: u64,
    /// Desired capacity of the last command.
    #[serde(default)]
    pub desired: Option<u32>,
    /// Event time (ms) until which rule scale-ups rest (set by rule actions).
    #[serde(default)]
    pub up_cooldown_until: i64,
    /// Event time (ms) until which rule scale-downs rest (set by rule actions).
    #[serde(default)]
    pub down_cooldown_until: i64,
    /// Event time (ms) of the last up firing of a rule, acted on or not.
    #[serde(default)]
    pub last_up_signal: Option<i64>,
    /// Rule of that up firing.
    #[serde(default)]
    pub last_up_rule: Option<String>,
    /// Ids of recently decided triggers.
    #[serde(default)]
    pub recent_triggers: VecDeque<String>,
    /// Event time (ms) until which the last rule scale-up's instances warm up.
    #[serde(default)]
    pub warming_until: i64,
    /// An operator paused scale-ups.
    #[serde(default)]
    pub paused_up: bool,
    /// An operator paused scale-downs.
    #[serde(default)]
    pub paused_down: bool,
    /// Event time and direction of the actions inside the flap window.
    #[serde(default)]
    pub recent_actions: VecDeque<(i64, Direction)>,
    /// The latest decisions and their commands, newest last. The state is
    /// stored before they are published; if the arbiter dies in between, the
    /// redelivered trigger finds its verdict here (even when later triggers
    /// were decided meanwhile) and publishes it again, de-duplicated.
    #[serde(default)]
    pub recent_verdicts: VecDeque<LastVerdict>,
    /// Tier of the last resize command.
    #[serde(default)]
    pub tier: Option<String>,
    /// Event time (ms) until which resizes rest.
    #[serde(default)]
    pub resize_cooldown_until: i64,
    /// Capacity changes inside the longest rate-limit period of the
    /// target's tracking rules.
    #[serde(default)]
    pub scale_events: VecDeque<ScaleEvent>,
    /// Event time (ms) of the newest rule trigger that caused a command; a
    /// rule trigger older than this is `superseded`.
    #[serde(default)]
    pub last_rule_action_ts: i64,
    /// Verdicts stored so far (each decision stored adds one).
    #[serde(default)]
    pub verdicts_stored: u64,
    /// Verdicts known to have reached the streams (decision record and
    /// command). The arbiter decides a target's next trigger only once the
    /// last verdict is out: see [`TargetState::unsent`].
    #[serde(default)]
    pub verdicts_sent: u64,
    /// The holds every action starts (rule, operator or fallback), on the
    /// arbiter's wall clock: what operator and fallback triggers obey.
    #[serde(default)]
    pub wall_holds: Holds,
    /// The holds operator and fallback actions start, on the arbiter's wall
    /// clock: what rule triggers obey beside their own event-time holds.
    #[serde(default)]
    pub operator_holds: Holds,
    /// Wall-clock ms until which an `emergency up` holds every scale-down
    /// but a forced one (0: none).
    #[serde(default)]
    pub emergency_hold_until: i64,
    /// Replication lag above the replica set's `max_replica_lag`, while it
    /// lasts: removals wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_lag: Option<LagHold>,
    /// The holds as they were before command `seq` started its own: put
    /// back if its action fails (a failed action starts no cooldown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holds_before: Option<HoldsBefore>,
    /// What firing alerts hold (`alert_rules[].while_firing`), by
    /// [`alert_hold_key`] (rule and fingerprint), until the same alert is
    /// resolved.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub alert_holds: BTreeMap<String, AlertHold>,
    /// Fields of a newer version, kept as read and written back unchanged.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A hold a firing alert started: scale-downs, or all scaling, wait until
/// the alert is resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertHold {
    /// `hold_scale_downs` or `pause`.
    pub while_firing: WhileFiring,
    /// The rule.
    pub rule: String,
    /// The alert's name.
    pub alertname: String,
    /// Wall-clock ms when the arbiter took it.
    pub since_ms: i64,
}

/// The key of an alert's hold in [`TargetState::alert_holds`].
pub fn alert_hold_key(rule: &str, fingerprint: &str) -> String {
    format!("{rule}/{fingerprint}")
}

/// A target's cooldowns, warm-ups and emergency hold before one command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldsBefore {
    /// The command they were taken before.
    pub seq: u64,
    /// [`TargetState::up_cooldown_until`].
    pub up_cooldown_until: i64,
    /// [`TargetState::down_cooldown_until`].
    pub down_cooldown_until: i64,
    /// [`TargetState::warming_until`].
    pub warming_until: i64,
    /// [`TargetState::resize_cooldown_until`].
    pub resize_cooldown_until: i64,
    /// [`TargetState::wall_holds`].
    pub wall_holds: Holds,
    /// [`TargetState::operator_holds`].
    pub operator_holds: Holds,
    /// [`TargetState::emergency_hold_until`].
    pub emergency_hold_until: i64,
}

impl HoldsBefore {
    /// `state`'s holds, before its next command.
    fn of(state: &TargetState) -> Self {
        HoldsBefore {
            seq: state.seq + 1,
            up_cooldown_until: state.up_cooldown_until,
            down_cooldown_until: state.down_cooldown_until,
            warming_until: state.warming_until,
            resize_cooldown_until: state.resize_cooldown_until,
            wall_holds: state.wall_holds,
            operator_holds: state.operator_holds,
            emergency_hold_until: state.emergency_hold_until,
        }
    }
}

/// `state` with the holds its last command started lifted, when the
/// capacity record says that command's action failed; `None` otherwise.
fn lift_failed_holds(state: &TargetState, record: Option<&CapacityRecord>) -> Option<TargetState> {
    let before = state.holds_before.as_ref()?;
    let failed = record.is_some_and(|r| r.failed_seq >= state.seq);
    if !failed || before.seq != state.seq || state.seq == 0 {
        return None;
    }
    Some(TargetState {
        up_cooldown_until: before.up_cooldown_until,
        down_cooldown_until: before.down_cooldown_until,
        warming_until: before.warming_until,
        resize_cooldown_until: before.resize_cooldown_until,
        wall_holds: before.wall_holds,
        operator_holds: before.operator_holds,
        emergency_hold_until: before.emergency_hold_until,
        holds_before: None,
        ..state.clone()
    })
}

/// Removals held off by replication lag: until the lag rule's last firing
/// plus [`ArbiterSettings::replica_lag_hold_ms`], on both clocks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LagHold {
    /// Event-time ms, for the rules' scale-downs.
    pub until_ts: i64,
    /// Wall-clock ms, for operators' and fallbacks'.
    pub until_wall: i64,
    /// What the last firing read: `max_replica_lag 2.5s > 1s`.
    pub reading: String,
}

impl LagHold {
    /// Whether it holds a trigger on `clock` at `ts` (event) or `now_ms`.
    fn holds(&self, clock: Clock, ts: i64, now_ms: i64) -> bool {
        match clock {
            Clock::Event => ts < self.until_ts,
            Clock::Wall => now_ms < self.until_wall,
        }
    }
}

/// Cooldowns and the warm-up on one clock, unix ms (0: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holds {
    /// Until when scale-ups rest.
    #[serde(default)]
    pub up_cooldown_until: i64,
    /// Until when scale-downs rest.
    #[serde(default)]
    pub down_cooldown_until: i64,
    /// Until when the capacity added by the last scale-up warms up
    /// (scale-downs wait).
    #[serde(default)]
    pub warming_until: i64,
}

impl Holds {
    /// Extends the holds an action in `direction` starts at `at_ms`; a hold
    /// already running longer is kept.
    fn start(&mut self, direction: Direction, at_ms: i64, cooldown_ms: i64, warmup_ms: i64) {
        let until = at_ms.saturating_add(cooldown_ms);
        if direction == Direction::Up {
            self.up_cooldown_until = self.up_cooldown_until.max(until);
            self.warming_until = self.warming_until.max(at_ms.saturating_add(warmup_ms));
        } else {
            self.down_cooldown_until = self.down_cooldown_until.max(until);
        }
    }
}

/// The clock a trigger is decided on, by its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// Rule triggers: the trigger's `ts`, the event time of the sample
    /// that completed the condition. A replayed or delayed stream decides
    /// as a live one.
    Event,
    /// Operator and fallback triggers: the arbiter's wall clock when it
    /// decides (`now_ms` of [`decide_at`]). They have no event time.
    Wall,
}

impl Clock {
    /// The clock of a trigger from `source`.
    pub fn of(source: &TriggerSource) -> Clock {
        match source {
            TriggerSource::Rule => Clock::Event,
            // A source of a newer version: its event time is not known to
            // mean what a rule's does, so the arbiter's own clock decides.
            // An alert's notification time is Alertmanager's, not the
            // samples': alerts are decided on the arbiter's clock.
            TriggerSource::Operator
            | TriggerSource::Fallback
            | TriggerSource::Alert
            | TriggerSource::Unknown(_) => Clock::Wall,
        }
    }
}

/// The rule name of an operator's `scale` firing.
pub const OPERATOR_RULE: &str = "operator";
/// The rule name of an operator's `scale --force` firing: it bypasses the
/// pause, cooldowns and warm-up (never the bounds or dry-run).
pub const OPERATOR_FORCE_RULE: &str = "operator.force";
/// The rule name of an `emergency up` firing: forced, and it holds
/// scale-downs for the target's `emergency.hold_down_secs` (wall clock).
pub const EMERGENCY_UP_RULE: &str = "operator.emergency_up";
/// The rule name of an `emergency down` firing: forced; ends the hold.
pub const EMERGENCY_DOWN_RULE: &str = "operator.emergency_down";
/// The rule name of an `emergency reset` firing: forced; ends the hold.
pub const EMERGENCY_RESET_RULE: &str = "operator.emergency_reset";
/// The rule name of an operator's `promote` firing: forced, like an
/// emergency (a promotion is asked for a reason, not a load).
pub const PROMOTE_RULE: &str = "operator.promote";

/// Whether an operator firing of rule `rule` goes past pauses, cooldowns,
/// warm-ups and the emergency hold (never the bounds or dry-run).
fn is_forced(rule: &str) -> bool {
    [
        OPERATOR_FORCE_RULE,
        EMERGENCY_UP_RULE,
        EMERGENCY_DOWN_RULE,
        EMERGENCY_RESET_RULE,
        PROMOTE_RULE,
    ]
    .contains(&rule)
}

/// A decision of a target and the command it issued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastVerdict {
    /// The decision.
    pub decision: Decision,
    /// Its command, for `scale` outcomes.
    pub command: Option<Command>,
    /// Its flapping note, if any.
    #[serde(default)]
    pub flapping: Option<String>,
    /// What the winning firing observed, for its audit record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<f64>,
    /// The winning firing's threshold, for its audit record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Fields of a newer version, kept as read and written back unchanged.
    #[serde(flatten)]
    pub extra: Extra,
}

impl TargetState {
    /// The stored verdict of `decision_id`, if it is among the recent ones.
    pub fn replay(&self, decision_id: &str) -> Option<&LastVerdict> {
        self.recent_verdicts
            .iter()
            .rev()
            .find(|v| v.decision.id == decision_id)
    }

    /// The latest verdict.
    pub fn last(&self) -> Option<&LastVerdict> {
        self.recent_verdicts.back()
    }

    /// The latest verdict, when it is stored but not known to be published.
    ///
    /// The arbiter stores a verdict, then publishes its decision record and
    /// command. If the publishing fails (a stream without a leader) or the
    /// arbiter dies, the verdict must still go out, and before any later
    /// one, or the actuator would apply the next command without this one
    /// and capacity would jump two steps on a command saying "add 1". So the
    /// next decision for the target first re-publishes this verdict (both
    /// de-duplicated by id) and only then decides, recording it as sent.
    /// Since no verdict is decided while an earlier one is unsent, at most
    /// one is ever unsent, and it is always the latest.
    pub fn unsent(&self) -> Option<&LastVerdict> {
        if self.verdicts_stored > self.verdicts_sent {
            self.last()
        } else {
            None
        }
    }

    /// Marks every stored verdict as published.
    pub fn mark_sent(&mut self) {
        self.verdicts_sent = self.verdicts_stored;
    }

    /// The latest command decided, if it is among the recent verdicts.
    pub fn last_command(&self) -> Option<&Command> {
        self.recent_verdicts
            .iter()
            .rev()
            .find_map(|v| v.command.as_ref())
    }
}

/// Why this arbiter must not decide `trigger` now: a record it would act on
/// (the trigger, the target's state, its capacity record) is of a newer
/// version than this build understands, or holds a value this build does
/// not know where a decision depends on it (a firing's direction or action,
/// the direction of a recent action). `None` when it may decide.
///
/// Deciding anyway could act on a meaning this build does not know, and
/// storing the state would write back a record it could not fully read.
/// The arbiter defers such a trigger instead (a delayed redelivery, audited
/// and counted, never dead-lettered), so that an arbiter of the newer
/// version takes it. Values that change no decision are tolerated and kept:
/// an unknown trigger source, an unknown outcome in a stored verdict,
/// unknown fields anywhere.
pub fn beyond_this_version(
    state: Option<&TargetState>,
    capacity: Option<&CapacityRecord>,
    trigger: &Trigger,
) -> Option<String> {
    let newer = |what: &str, v: Version| {
        (!v.is_understood()).then(|| {
            format!(
                "{what} is of version {v}, newer than this arbiter's {}",
                Version::CURRENT
            )
        })
    };
    if let Some(why) = newer("the trigger", trigger.v) {
        return Some(why);
    }
    for firing in &trigger.firings {
        if !firing.direction.is_known() {
            return Some(format!(
                "firing {} has a direction this arbiter does not know: {:?}",
                firing.rule,
                firing.direction.as_str()
            ));
        }
        if let ScaleAction::Unknown(tag) = &firing.action {
            return Some(format!(
                "firing {} has an action this arbiter does not know: {tag:?}",
                firing.rule
            ));
        }
    }
    if let Some(state) = state {
        if let Some(why) = newer("the stored state", state.v) {
            return Some(why);
        }
        if let Some((_, direction)) = state.recent_actions.iter().find(|(_, d)| !d.is_known()) {
            return Some(format!(
                "the stored state has a recent action in a direction this arbiter does not know: {:?}",
                direction.as_str()
            ));
        }
    }
    if let Some(why) = capacity.and_then(|c| newer("the capacity record", c.v)) {
        return Some(why);
    }
    None
}

/// A decision, the command it issues (if any), and the state to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The decision, for the audit stream.
    pub decision: Decision,
    /// The command to publish, for `scale` outcomes.
    pub command: Option<Command>,
    /// The new state; `None` when nothing changed (duplicates).
    pub state: Option<TargetState>,
    /// Set when this action finds the target flapping: why, and how the
    /// cooldown was raised (audited as its own `flapping` record).
    pub flapping: Option<String>,
}

impl Verdict {
    /// Names the policy revision this verdict was decided with, on its
    /// decision and on the copy of it in the state to store (which is what
    /// is published, and re-published after a crash).
    pub fn with_policy_revision(mut self, revision: &str) -> Self {
        let id = self.decision.id.clone();
        self.decision.policy_revision = Some(revision.to_string());
        if let Some(stored) = self
            .state
            .as_mut()
            .and_then(|s| s.recent_verdicts.back_mut())
            .filter(|l| l.decision.id == id)
        {
            stored.decision.policy_revision = Some(revision.to_string());
        }
        self
    }
}

/// Settings the arbiter takes from the policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArbiterSettings {
    /// How long an up firing keeps scale-downs away, ms of event time.
    pub up_signal_hold_ms: i64,
    /// How long a replica-lag firing holds off removals, ms (event time for
    /// the rules, wall clock for operators).
    pub replica_lag_hold_ms: i64,
}

impl ArbiterSettings {
    /// An up firing repeats every `max(D, refire)` while its condition holds
    /// (a tracking rule's every interval); holding for two of those
    /// intervals bridges the gap between repeats. Vertical rules resize,
    /// they do not hold scale-downs back.
    pub fn for_target(target: &Target, refire_secs: u64) -> Self {
        let tracking = target.tracking.iter().map(|r| r.interval_secs);
        let longest = target
            .rules
            .iter()
            .filter(|r| r.direction == Direction::Up && r.action != ScaleAction::NextTier)
            .map(|r| r.condition.for_secs.max(refire_secs))
            .chain(tracking)
            .max()
            .unwrap_or(refire_secs);
        // The lag rule repeats the same way while the lag lasts.
        let lag = target
            .rules
            .iter()
            .filter(|r| r.action == ScaleAction::HoldScaleDowns)
            .map(|r| r.condition.for_secs.max(refire_secs))
            .max()
            .unwrap_or(refire_secs);
        let twice = |secs: u64| i64::try_from(secs.saturating_mul(2000)).unwrap_or(i64::MAX);
        ArbiterSettings {
            up_signal_hold_ms: twice(longest),
            replica_lag_hold_ms: twice(lag),
        }
    }
}

/// The capacity a relative action starts from. The backend's word counts
/// once it has applied our latest command; before that, the command in flight.
pub fn base_capacity(state: &TargetState, observed: Option<&CapacityRecord>) -> Option<u32> {
    match (observed, state.desired) {
        (Some(obs), _) if obs.applied_seq >= state.seq => Some(obs.desired),
        (_, Some(desired)) => Some(desired),
        (Some(obs), None) => Some(obs.desired),
        (None, None) => None,
    }
}

/// The tier a resize starts from, by the same rule as [`base_capacity`].
fn base_tier(state: &TargetState, observed: Option<&CapacityRecord>) -> Option<String> {
    match (observed, &state.tier) {
        (Some(obs), _) if obs.applied_seq >= state.seq && obs.tier.is_some() => obs.tier.clone(),
        (_, Some(tier)) => Some(tier.clone()),
        (obs, None) => obs.and_then(|o| o.tier.clone()),
    }
}

/// What the arbiter knows of a target's capacity beside its own state: the
/// actuator's record, and why the backend cannot be read when it has no
/// record to give.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Observed<'a> {
    /// The record in KV `nova_capacity`.
    pub record: Option<&'a CapacityRecord>,
    /// The backend's error, from an actuator asked for the capacity.
    pub unreadable: Option<&'a str>,
}

impl<'a> From<Option<&'a CapacityRecord>> for Observed<'a> {
    fn from(record: Option<&'a CapacityRecord>) -> Self {
        Observed {
            record,
            unreadable: None,
        }
    }
}

/// Decides one trigger with the trigger's own `ts` as the wall clock too:
/// for replays and tests, where no other clock exists. The arbiter service
/// passes its clock to [`decide_at`].
pub fn decide<'a>(
    target: &Target,
    settings: ArbiterSettings,
    state: &TargetState,
    observed: impl Into<Observed<'a>>,
    trigger: &Trigger,
) -> Verdict {
    decide_at(target, settings, state, observed, trigger, trigger.ts)
}

/// Decides one trigger at the arbiter's wall clock `now_ms`: a rule trigger
/// on its event time (and the wall-clock holds of operator and fallback
/// actions at `now_ms`), an operator or fallback trigger on `now_ms`
/// ([`Clock`]). Every action stamps its holds on the clocks that read them.
pub fn decide_at<'a>(
    target: &Target,
    settings: ArbiterSettings,
    state: &TargetState,
    observed: impl Into<Observed<'a>>,
    trigger: &Trigger,
    now_ms: i64,
) -> Verdict {
    let observed = observed.into();
    // A failed action started no cooldown: decide as if it had not run.
    let lifted = lift_failed_holds(state, observed.record);
    let state = lifted.as_ref().unwrap_or(state);
    let by_rule = trigger.source == TriggerSource::Rule;
    if by_rule
        && trigger.ts < state.last_rule_action_ts
        && !state.recent_triggers.contains(&trigger.id)
    {
        return superseded(target, state, trigger);
    }
    let mut verdict = decide_in_order(target, settings, state, observed, trigger, now_ms);
    if let Some(next) = verdict.state.as_mut() {
        if by_rule && verdict.command.is_some() {
            next.last_rule_action_ts = next.last_rule_action_ts.max(trigger.ts);
        }
        // The winning firing's figures go with the stored verdict, so a
        // re-published decision record reads like the first.
        if let Some(stored) = next.recent_verdicts.back_mut() {
            let firing = trigger
                .firings
                .iter()
                .find(|f| Some(&f.rule) == stored.decision.rule.as_ref());
            stored.observed = firing.and_then(|f| f.observed);
            stored.threshold = firing.and_then(|f| f.threshold);
        }
    }
    verdict
}

/// A rule trigger older than the target's last rule action: decided after a
/// later one (a broker outage reorders retries; two arbiter replicas may
/// take one target's triggers side by side). Acting on it would apply an
/// older view of the load after a newer one, so it is audited and dropped;
/// the rule fires again while its condition holds.
fn superseded(target: &Target, state: &TargetState, trigger: &Trigger) -> Verdict {
    let mut next = state.clone();
    next.recent_triggers.push_back(trigger.id.clone());
    while next.recent_triggers.len() > RECENT_TRIGGERS {
        next.recent_triggers.pop_front();
    }
    let firing = trigger.firings.first();
    let earlier = u64::try_from(state.last_rule_action_ts.saturating_sub(trigger.ts) / 1000)
        .unwrap_or(u64::MAX);
    remember(Verdict {
        decision: Decision {
            v: Version::CURRENT,
            extra: Extra::new(),
            id: ids::derive("d", &[trigger.id.as_bytes()]),
            trigger_id: trigger.id.clone(),
            ts: trigger.ts,
            target: target.name.clone(),
            outcome: Outcome::Superseded,
            direction: firing.map_or(Direction::None, |f| f.direction.clone()),
            rule: firing.map(|f| f.rule.clone()),
            from: None,
            to: None,
            from_tier: None,
            to_tier: None,
            reason: format!(
                "{}; not acted on: it fired {} before the last action on {}, whose later \
                 trigger was decided first",
                lead(firing),
                if earlier == 0 {
                    "less than 1s".to_string()
                } else {
                    human_secs(earlier)
                },
                target.name
            ),
            policy_revision: None,
        },
        command: None,
        state: Some(next),
        flapping: None,
    })
}

/// [`decide_at`] for a trigger not older than the target's last rule action.
fn decide_in_order<'a>(
    target: &Target,
    settings: ArbiterSettings,
    state: &TargetState,
    observed: impl Into<Observed<'a>>,
    trigger: &Trigger,
    now_ms: i64,
) -> Verdict {
    let Observed {
        record: observed,
        unreadable,
    } = observed.into();
    let ts = trigger.ts;
    let clock = Clock::of(&trigger.source);
    let forced = trigger.source == TriggerSource::Operator
        && trigger.firings.iter().any(|f| is_forced(&f.rule));
    let decision_id = ids::derive("d", &[trigger.id.as_bytes()]);
    let mut next = state.clone();
    let ups: Vec<&RuleFiring> = trigger
        .firings
        .iter()
        .filter(|f| f.direction == Direction::Up)
        .collect();
    let downs: Vec<&RuleFiring> = trigger
        .firings
        .iter()
        .filter(|f| f.direction == Direction::Down)
        .collect();
    let verdict =
        |outcome: Outcome, firing: Option<&RuleFiring>, from, to, reason: String, state| {
            remember(Verdict {
                decision: Decision {
                    v: Version::CURRENT,
                    id: decision_id.clone(),
                    trigger_id: trigger.id.clone(),
                    ts,
                    target: target.name.clone(),
                    outcome,
                    direction: firing.map_or(Direction::None, |f| f.direction.clone()),
                    rule: firing.map(|f| f.rule.clone()),
                    from,
                    to,
                    from_tier: None,
                    to_tier: None,
                    reason,
                    extra: Extra::new(),
                    policy_revision: None,
                },
                command: None,
                state,
                flapping: None,
            })
        };
    if state.recent_triggers.contains(&trigger.id) {
        return verdict(
            Outcome::Duplicate,
            trigger.firings.first(),
            None,
            None,
            format!("trigger {} was already decided", trigger.id),
            None,
        );
    }
    next.recent_triggers.push_back(trigger.id.clone());
    while next.recent_triggers.len() > RECENT_TRIGGERS {
        next.recent_triggers.pop_front();
    }
    if let Some((outcome, reason)) = alert_holds(target, &mut next, trigger, now_ms) {
        return verdict(
            outcome,
            trigger.firings.first(),
            None,
            None,
            reason,
            Some(next),
        );
    }
    if let Some(up) = ups.first().filter(|_| clock == Clock::Event) {
        next.last_up_signal = Some(ts);
        next.last_up_rule = Some(up.rule.clone());
    }
    // Replication lag holds off removals; only a rule says so.
    let lag = trigger
        .firings
        .iter()
        .find(|f| f.action == ScaleAction::HoldScaleDowns)
        .filter(|_| trigger.source == TriggerSource::Rule);
    if let Some(lag) = lag {
        let began = state
            .replica_lag
            .as_ref()
            .is_none_or(|held| !held.holds(clock, ts, now_ms));
        let reading = lag.reason.split(" (rule ").next().unwrap_or(&lag.reason);
        // A firing decided late (after a newer one) does not shorten it.
        let (ts_before, wall_before) = state
            .replica_lag
            .as_ref()
            .map_or((0, 0), |held| (held.until_ts, held.until_wall));
        next.replica_lag = Some(LagHold {
            until_ts: ts_before.max(ts.saturating_add(settings.replica_lag_hold_ms)),
            until_wall: wall_before.max(now_ms.saturating_add(settings.replica_lag_hold_ms)),
            reading: reading.to_string(),
        });
        if trigger
            .firings
            .iter()
            .all(|f| f.action == ScaleAction::HoldScaleDowns)
        {
            let (outcome, reason) = if began {
                (
                    Outcome::ReplicaLag,
                    format!(
                        "{}; replication lag of {} is above its limit: no replica is removed while it lasts",
                        lead(Some(lag)),
                        target.name
                    ),
                )
            } else {
                (
                    Outcome::NoChange,
                    format!(
                        "{}; replication lag of {} is still above its limit: removals stay held",
                        lead(Some(lag)),
                        target.name
                    ),
                )
            };
            return verdict(outcome, Some(lag), None, None, reason, Some(next));
        }
    }
    let Some(current) = base_capacity(state, observed) else {
        let firing = ups.first().or(downs.first()).copied();
        return verdict(
            Outcome::UnknownCapacity,
            firing,
            None,
            None,
            match unreadable {
                Some(error) => format!(
                    "{}; capacity of {} is unknown: its backend cannot be read ({error})",
                    lead(firing),
                    target.name
                ),
                None => format!(
                    "{}; capacity of {} is not known yet (the actuator has not reported it)",
                    lead(firing),
                    target.name
                ),
            },
            Some(next),
        );
    };
    if !trigger.firings.is_empty()
        && trigger
            .firings
            .iter()
            .all(|f| f.action == ScaleAction::NextTier)
    {
        let mut v = resize(target, state, next, observed, trigger, current, verdict);
        // Replacement instances warm up on the wall clock too.
        if let (Some(_), Some(next)) = (&v.command, v.state.as_mut()) {
            let warmup_ms = secs_to_ms(target.warmup_secs);
            next.wall_holds.start(Direction::Up, now_ms, 0, warmup_ms);
        }
        return remember(v);
    }
    // A "set to N" firing (an operator's or a tracking rule's) points up or
    // down only against the current capacity; from here on it competes like
    // any other.
    let resolved: Vec<RuleFiring> = trigger
        .firings
        .iter()
        .filter(|f| f.action != ScaleAction::NextTier && f.action != ScaleAction::HoldScaleDowns)
        // Only an operator promotes a replica; a promote from anywhere
        // else is not acted on.
        .filter(|f| {
            !matches!(f.action, ScaleAction::Promote(_))
                || trigger.source == TriggerSource::Operator
        })
        .map(|f| match f.action {
            ScaleAction::Set(n) => RuleFiring {
                direction: match n.cmp(&current) {
                    std::cmp::Ordering::Greater => Direction::Up,
                    std::cmp::Ordering::Less => Direction::Down,
                    std::cmp::Ordering::Equal => Direction::None,
                },
                ..f.clone()
            },
            ScaleAction::EmergencyUp { by, to } => emergency_up(target, state, f, current, by, to),
            _ => f.clone(),
        })
        .collect();
    let ups: Vec<&RuleFiring> = resolved
        .iter()
        .filter(|f| f.direction == Direction::Up)
        .collect();
    let downs: Vec<&RuleFiring> = resolved
        .iter()
        .filter(|f| f.direction == Direction::Down)
        .collect();
    let name = &target.name;
    // Each firing's proposal: what it asks for, limited by its rule's rate
    // limits (tracking rules), then by its own and the target's bounds.
    let propose = |f: &RuleFiring| -> (u32, Option<String>) {
        let asked = f.action.apply(current);
        match target.limits(&f.rule).behavior {
            Some(behavior) => {
                let limited =
                    tracking::rate_limit(current, asked, ts, &state.scale_events, behavior);
                (limited.desired, limited.limited_by)
            }
            None => (asked, None),
        }
    };
    let holds = Clocks {
        clock,
        event_ms: ts,
        now_ms,
    };
    let limited_by: Option<String>;
    // What would stop the winning firing before its bounds: a pause, the
    // up-signal hold, a cooldown or the warm-up. A forced operator request
    // goes past it, and its reason says so.
    let blocked: Option<(Outcome, String)>;
    let (firing, desired, bound) = if !ups.is_empty() {
        let (firing, desired, ceiling, limit) = ups
            .iter()
            .map(|f| {
                let ceiling = rule_bound(target, f, true);
                let (asked, limit) = propose(f);
                // From below the target's min, a scale-up goes at least to it.
                (*f, asked.min(ceiling).max(target.min), ceiling, limit)
            })
            .max_by_key(|(_, desired, _, _)| *desired)
            .expect("ups is not empty");
        limited_by = limit;
        blocked = if state.paused_up {
            Some((
                Outcome::Paused,
                format!("scale-up of {name} is paused by an operator"),
            ))
        } else if let Some(why) = alert_blocks(state, trigger, Direction::Up) {
            Some((Outcome::Paused, why))
        } else {
            holds.running(state, Direction::Up)
        };
        (firing, desired, ceiling)
    } else if !downs.is_empty() {
        let (firing, desired, floor, limit) = downs
            .iter()
            .map(|f| {
                let floor = rule_bound(target, f, false);
                let (asked, limit) = propose(f);
                // From above the target's max, a scale-down goes at least to it.
                (*f, asked.max(floor).min(target.max), floor, limit)
            })
            .max_by_key(|(_, desired, _, _)| *desired)
            .expect("downs is not empty");
        limited_by = limit;
        // The up-signal hold is about samples of one instant arriving one
        // by one: it holds rule scale-downs only.
        let up_recent = state
            .last_up_signal
            .filter(|_| clock == Clock::Event)
            .filter(|up| ts.saturating_sub(*up) < settings.up_signal_hold_ms);
        blocked = if state.paused_down {
            Some((
                Outcome::Paused,
                format!("scale-down of {name} is paused by an operator"),
            ))
        } else if let Some(why) = alert_blocks(state, trigger, Direction::Down) {
            Some((Outcome::Paused, why))
        } else if let Some(held) = next
            .replica_lag
            .as_ref()
            .filter(|held| held.holds(clock, ts, now_ms))
        {
            Some((
                Outcome::ReplicaLag,
                format!(
                    "replication lag of {name} is above its limit ({}): no replica is removed while it lasts",
                    held.reading
                ),
            ))
        } else if let Some(up_ts) = up_recent {
            let rule = state.last_up_rule.as_deref().unwrap_or("a scale-up rule");
            let ago = remaining(ts, up_ts);
            Some((
                Outcome::Overridden,
                format!("{rule} asked for more capacity {ago} ago and scale-up beats scale-down"),
            ))
        } else {
            holds.running(state, Direction::Down)
        };
        (firing, desired, floor)
    } else {
        return verdict(
            Outcome::NoChange,
            None,
            Some(current),
            Some(current),
            "no rule asked for a change".into(),
            Some(next),
        );
    };
    let up = firing.direction == Direction::Up;
    let bypassed = blocked
        .as_ref()
        .filter(|_| forced)
        .map(|(_, why)| why.clone());
    let (outcome, why) = match blocked.filter(|_| !forced) {
        Some((outcome, mut why)) => {
            if trigger.source == TriggerSource::Operator {
                why.push_str(" (novactl scale --force overrides)");
            }
            (outcome, why)
        }
        None if up && current >= bound => (
            Outcome::AtMax,
            format!("{name} is already at its maximum of {bound}"),
        ),
        None if !up && current <= bound => (
            Outcome::AtMin,
            format!("{name} is already at its minimum of {bound}"),
        ),
        None => match limited_by.as_ref().filter(|_| desired == current) {
            Some(why) => (Outcome::RateLimited, why.clone()),
            None => (Outcome::Scale, String::new()),
        },
    };
    let lead = lead(Some(firing));
    let ask = firing.action.describe();
    if outcome != Outcome::Scale {
        let reason = format!("{lead}; {ask} suppressed: {why}");
        return verdict(
            outcome,
            Some(firing),
            Some(current),
            Some(current),
            reason,
            Some(next),
        );
    }
    if desired == current {
        let reason = format!("{lead}; {ask} leaves {name} at {current}");
        return verdict(
            Outcome::NoChange,
            Some(firing),
            Some(current),
            Some(current),
            reason,
            Some(next),
        );
    }
    let asked = firing.action.apply(current);
    let clamp = if desired == bound && desired != asked {
        let which = if up { "max" } else { "min" };
        format!(", clamped at {which} {bound}")
    } else if up && desired > asked {
        format!(", raised to the target's min {}", target.min)
    } else if !up && desired < asked {
        format!(", lowered to the target's max {}", target.max)
    } else if let Some(why) = &limited_by {
        format!(", {why}")
    } else {
        String::new()
    };
    let change = format!("{name} from {current} to {desired} ({ask}{clamp})");
    if target.dry_run {
        let reason = format!("{lead}; dry run: would scale {change}");
        return verdict(
            Outcome::DryRun,
            Some(firing),
            Some(current),
            Some(desired),
            reason,
            Some(next),
        );
    }
    let rule_cooldown_secs = target.limits(&firing.rule).cooldown_secs;
    // The flap window and the rate-limit history are the rules' own, on
    // event time; operator and fallback actions are not counted in them.
    let flapping = match clock {
        Clock::Event => {
            let flapping = record_action(&mut next, &target.flapping, ts, firing.direction.clone());
            record_scale_event(
                &mut next,
                target,
                ts,
                i64::from(desired) - i64::from(current),
            );
            flapping
        }
        Clock::Wall => None,
    };
    let cooldown_secs = match flapping {
        Some(_) => rule_cooldown_secs.saturating_mul(u64::from(target.flapping.cooldown_factor)),
        None => rule_cooldown_secs,
    };
    let flapping = flapping.map(|reversals| {
        format!(
            "{name} is flapping: {reversals} reversals in the last {}, more than {} allowed; \
             cooldown raised from {} to {}",
            human_secs(target.flapping.window_secs),
            target.flapping.max_reversals,
            human_secs(rule_cooldown_secs),
            human_secs(cooldown_secs),
        )
    });
    let cooldown_ms = secs_to_ms(cooldown_secs);
    let warmup_ms = secs_to_ms(target.warmup_secs);
    if clock == Clock::Event {
        let until = ts.saturating_add(cooldown_ms);
        match firing.direction {
            Direction::Up => {
                next.up_cooldown_until = until;
                next.warming_until = ts.saturating_add(warmup_ms);
            }
            _ => next.down_cooldown_until = until,
        }
    }
    // Every action holds operator and fallback requests on the wall clock;
    // an operator's or fallback's also holds the rules there.
    next.wall_holds
        .start(firing.direction.clone(), now_ms, cooldown_ms, warmup_ms);
    if clock == Clock::Wall {
        next.operator_holds
            .start(firing.direction.clone(), now_ms, cooldown_ms, warmup_ms);
    }
    if trigger.source == TriggerSource::Operator {
        match firing.rule.as_str() {
            EMERGENCY_UP_RULE => {
                next.emergency_hold_until =
                    now_ms.saturating_add(secs_to_ms(target.emergency.hold_down_secs));
            }
            EMERGENCY_DOWN_RULE | EMERGENCY_RESET_RULE => next.emergency_hold_until = 0,
            _ => {}
        }
    }
    next.holds_before = Some(HoldsBefore::of(state));
    next.seq = state.seq + 1;
    next.desired = Some(desired);
    let reason = format!(
        "{lead}; scaling {change}, cooldown {}{}{}",
        human_secs(cooldown_secs),
        if flapping.is_some() {
            " (flapping)"
        } else {
            ""
        },
        bypassed
            .map(|why| format!(", forced past: {why}"))
            .unwrap_or_default(),
    );
    let command = Command {
        v: Version::CURRENT,
        decision_id: decision_id.clone(),
        seq: next.seq,
        ts,
        target: name.clone(),
        from: current,
        desired,
        tier: None,
        // An operator's promote names its replica; the actuator promotes
        // it rather than remove one.
        promote: match &firing.action {
            ScaleAction::Promote(replica) if trigger.source == TriggerSource::Operator => {
                Some(replica.clone())
            }
            _ => None,
        },
        rule: Some(firing.rule.clone()),
        reason: reason.clone(),
        extra: Extra::new(),
    };
    let mut v = verdict(
        Outcome::Scale,
        Some(firing),
        Some(current),
        Some(desired),
        reason,
        Some(next),
    );
    v.command = Some(command);
    v.flapping = flapping;
    remember(v)
}

/// An alert rule's `emergency up`, resolved now: the capacity the
/// operator's `novactl emergency up` would ask from `current`, as a scale-up
/// to it (`set to N`) that the table then decides like any other, with the
/// rule's cooldown and the bounds; the reason says how
/// (`...asks emergency up: double, 4 -> 8`). A pause is the table's to say,
/// so it is not read here; a `to N` not above the capacity asks for no
/// change, never a scale-down.
fn emergency_up(
    target: &Target,
    state: &TargetState,
    f: &RuleFiring,
    current: u32,
    by: Option<u32>,
    to: Option<u32>,
) -> RuleFiring {
    let unpaused = TargetState {
        paused_up: false,
        ..state.clone()
    };
    let asked = crate::emergency::ask(
        EmergencyOp::Up,
        target,
        &unpaused,
        Some(current),
        by,
        to,
        None,
    );
    let (desired, how) = match asked {
        Ok(ask) => (ask.desired, ask.how),
        Err(why) => (current, why),
    };
    RuleFiring {
        direction: Direction::Up,
        action: ScaleAction::Set(desired),
        reason: format!("{}: {how}", f.reason),
        ..f.clone()
    }
}

/// The alert rows of the table, for a trigger of source `alert`: a firing
/// alert whose rule holds something while it fires starts its hold in
/// `next`; a resolved one ends it. `Some` when that is all the trigger
/// does (a resolved alert; a firing one whose rule has no action).
fn alert_holds(
    target: &Target,
    next: &mut TargetState,
    trigger: &Trigger,
    now_ms: i64,
) -> Option<(Outcome, String)> {
    let alert = trigger.alert.as_ref()?;
    if trigger.source != TriggerSource::Alert {
        return None;
    }
    let firing = trigger.firings.first()?;
    let rule = target.alert_rule(&firing.rule)?;
    let key = alert_hold_key(&rule.name, &alert.fingerprint);
    let name = &target.name;
    let what = match rule.while_firing {
        WhileFiring::None => None,
        WhileFiring::HoldScaleDowns => Some("scale-downs"),
        WhileFiring::Pause => Some("scaling"),
    };
    let lead = &firing.reason;
    match alert.status {
        AlertStatus::Firing => {
            if let Some(what) = what {
                next.alert_holds.entry(key).or_insert(AlertHold {
                    while_firing: rule.while_firing,
                    rule: rule.name.clone(),
                    alertname: alert.alertname.clone(),
                    since_ms: now_ms,
                });
                if rule.action.is_none() {
                    return Some((
                        Outcome::NoChange,
                        format!("{lead}; {name} holds {what} until the alert is resolved"),
                    ));
                }
            }
            None
        }
        _ => {
            let ended = next.alert_holds.remove(&key);
            let reason = match (ended, what) {
                (Some(_), Some(what)) => {
                    format!("{lead}; {name} no longer holds {what} for this alert")
                }
                (None, Some(what)) => format!(
                    "{lead}; {name} held no {what} for this alert (its firing was not seen)"
                ),
                (_, None) => format!("{lead}; the rule holds nothing, so nothing ends"),
            };
            Some((Outcome::NoChange, reason))
        }
    }
}

/// Why a firing alert's hold stops a firing in `direction`: `pause` holds
/// both, `hold_scale_downs` the downs. An alert's own trigger is not held
/// by its own hold.
fn alert_blocks(state: &TargetState, trigger: &Trigger, direction: Direction) -> Option<String> {
    let own = trigger
        .alert
        .as_ref()
        .filter(|_| trigger.source == TriggerSource::Alert)
        .and_then(|a| {
            trigger
                .firings
                .first()
                .map(|f| alert_hold_key(&f.rule, &a.fingerprint))
        });
    state
        .alert_holds
        .iter()
        .filter(|(key, _)| Some(*key) != own.as_ref())
        .map(|(_, hold)| hold)
        .find(|hold| hold.while_firing == WhileFiring::Pause || direction == Direction::Down)
        .map(|hold| {
            let what = if direction == Direction::Up {
                "scale-up"
            } else {
                "scale-down"
            };
            format!(
                "{what} of {} waits while alert {} fires (rule {}, {})",
                trigger.target,
                hold.alertname,
                hold.rule,
                hold.while_firing.as_str()
            )
        })
}

/// The moments a trigger is decided at: its event time, and the arbiter's
/// wall clock.
struct Clocks {
    clock: Clock,
    event_ms: i64,
    now_ms: i64,
}

impl Clocks {
    /// The first cooldown or warm-up still running for a firing in
    /// `direction`, each hold read at the moment of its own clock: a rule
    /// trigger meets the rules' holds at its event time and the operator's
    /// and fallback's at the wall clock; an operator or fallback trigger
    /// meets every action's at the wall clock.
    fn running(&self, state: &TargetState, direction: Direction) -> Option<(Outcome, String)> {
        const OPERATOR: &str = " after an operator or fallback action (wall clock)";
        let (event, now) = (self.event_ms, self.now_ms);
        let down = direction != Direction::Up;
        let wall = &state.wall_holds;
        let op = &state.operator_holds;
        // (until, at, outcome, what, note)
        let checks: Vec<(i64, i64, Outcome, &str, &str)> = match (self.clock, direction) {
            (Clock::Event, Direction::Up) => vec![
                (
                    state.up_cooldown_until,
                    event,
                    Outcome::Cooldown,
                    "scale-up is cooling down",
                    "",
                ),
                (
                    op.up_cooldown_until,
                    now,
                    Outcome::Cooldown,
                    "scale-up is cooling down",
                    OPERATOR,
                ),
            ],
            (Clock::Wall, Direction::Up) => vec![(
                wall.up_cooldown_until,
                now,
                Outcome::Cooldown,
                "scale-up is cooling down",
                "",
            )],
            (Clock::Event, _) => vec![
                (
                    state.down_cooldown_until,
                    event,
                    Outcome::Cooldown,
                    "scale-down is cooling down",
                    "",
                ),
                (
                    op.down_cooldown_until,
                    now,
                    Outcome::Cooldown,
                    "scale-down is cooling down",
                    OPERATOR,
                ),
                (
                    state.up_cooldown_until,
                    event,
                    Outcome::Cooldown,
                    "the last scale-up is still cooling down",
                    "",
                ),
                (
                    op.up_cooldown_until,
                    now,
                    Outcome::Cooldown,
                    "the last scale-up is still cooling down",
                    OPERATOR,
                ),
                (state.warming_until, event, Outcome::WarmingUp, WARMING, ""),
                (op.warming_until, now, Outcome::WarmingUp, WARMING, OPERATOR),
            ],
            (Clock::Wall, _) => vec![
                (
                    wall.down_cooldown_until,
                    now,
                    Outcome::Cooldown,
                    "scale-down is cooling down",
                    "",
                ),
                (
                    wall.up_cooldown_until,
                    now,
                    Outcome::Cooldown,
                    "the last scale-up is still cooling down",
                    "",
                ),
                (wall.warming_until, now, Outcome::WarmingUp, WARMING, ""),
            ],
        };
        let mut checks = checks;
        if down {
            checks.insert(
                0,
                (
                    state.emergency_hold_until,
                    now,
                    Outcome::EmergencyHold,
                    "an emergency scale-up holds scale-downs",
                    "",
                ),
            );
        }
        checks.into_iter().find(|(until, at, ..)| at < until).map(
            |(until, at, outcome, what, note)| {
                let left = remaining(until, at);
                (outcome, format!("{what} for another {left}{note}"))
            },
        )
    }
}

const WARMING: &str = "capacity added by the last scale-up is still warming up";

/// Keeps the capacity changes the target's tracking rules rate-limit by.
fn record_scale_event(state: &mut TargetState, target: &Target, ts: i64, change: i64) {
    let longest_secs = target
        .tracking
        .iter()
        .map(|r| r.behavior.longest_period_secs())
        .max()
        .unwrap_or(0);
    tracking::prune_events(&mut state.scale_events, ts, longest_secs);
    if longest_secs > 0 {
        state.scale_events.push_back(ScaleEvent { ts, change });
    }
}

/// Decides a trigger of vertical firings: one step up the first firing
/// rule's ladder, the number of instances unchanged.
fn resize(
    target: &Target,
    state: &TargetState,
    mut next: TargetState,
    observed: Option<&CapacityRecord>,
    trigger: &Trigger,
    current: u32,
    verdict: impl Fn(
        Outcome,
        Option<&RuleFiring>,
        Option<u32>,
        Option<u32>,
        String,
        Option<TargetState>,
    ) -> Verdict,
) -> Verdict {
    let ts = trigger.ts;
    let name = &target.name;
    // The first firing in the order the target binds its rules.
    let firing = target
        .rules
        .iter()
        .find_map(|r| trigger.firings.iter().find(|f| f.rule == r.name))
        .or(trigger.firings.first())
        .expect("a resize trigger has firings");
    let lead = lead(Some(firing));
    let Some(tier) = base_tier(state, observed) else {
        let reason = format!(
            "{lead}; the tier of {name} is not known yet (the actuator has not reported it)"
        );
        return verdict(
            Outcome::UnknownCapacity,
            Some(firing),
            Some(current),
            Some(current),
            reason,
            Some(next),
        );
    };
    let with_tiers = |mut v: Verdict, to: Option<String>| {
        v.decision.from_tier = Some(tier.clone());
        v.decision.to_tier = to;
        v
    };
    let blocked = |outcome, why: String, next| {
        let reason = format!("{lead}; upgrade of {name} from {tier} suppressed: {why}");
        with_tiers(
            verdict(
                outcome,
                Some(firing),
                Some(current),
                Some(current),
                reason,
                Some(next),
            ),
            None,
        )
    };
    if state.paused_up {
        return blocked(
            Outcome::Paused,
            format!("scale-up of {name} is paused by an operator"),
            next,
        );
    }
    if let Some(why) = alert_blocks(state, trigger, Direction::Up) {
        return blocked(Outcome::Paused, why, next);
    }
    if ts < state.resize_cooldown_until {
        let left = remaining(state.resize_cooldown_until, ts);
        return blocked(
            Outcome::Cooldown,
            format!("the last resize is cooling down for another {left}"),
            next,
        );
    }
    let to = match target.next_tier(&firing.rule, &tier) {
        TierMove::Next(to) => to,
        TierMove::AtTop => {
            return blocked(
                Outcome::AtTopTier,
                format!("{tier} is the top tier of the ladder of {}", firing.rule),
                next,
            );
        }
        TierMove::OffLadder => {
            return blocked(
                Outcome::NoChange,
                format!("{tier} is on no step of the ladder of {}", firing.rule),
                next,
            );
        }
    };
    let change = format!("{name} from {tier} to {to} ({current} instances)");
    if target.dry_run {
        let reason = format!("{lead}; dry run: would resize {change}");
        return with_tiers(
            verdict(
                Outcome::DryRun,
                Some(firing),
                Some(current),
                Some(current),
                reason,
                Some(next),
            ),
            Some(to),
        );
    }
    let cooldown_secs = target.limits(&firing.rule).cooldown_secs;
    next.resize_cooldown_until = ts.saturating_add(secs_to_ms(cooldown_secs));
    // Replacement instances warm up like added ones; scale-downs wait for them.
    let warmup_ms = secs_to_ms(target.warmup_secs);
    next.warming_until = next.warming_until.max(ts.saturating_add(warmup_ms));
    next.holds_before = Some(HoldsBefore::of(state));
    next.seq = state.seq + 1;
    next.desired = Some(current);
    next.tier = Some(to.clone());
    let reason = format!(
        "{lead}; resizing {change}, resize cooldown {}",
        human_secs(cooldown_secs)
    );
    let mut v = with_tiers(
        verdict(
            Outcome::Scale,
            Some(firing),
            Some(current),
            Some(current),
            reason.clone(),
            Some(next.clone()),
        ),
        Some(to.clone()),
    );
    v.command = Some(Command {
        v: Version::CURRENT,
        decision_id: v.decision.id.clone(),
        seq: next.seq,
        ts,
        target: name.clone(),
        from: current,
        desired: current,
        tier: Some(to),
        promote: None,
        rule: Some(firing.rule.clone()),
        reason,
        extra: Extra::new(),
    });
    v
}

/// Adds an action to the flap window and returns the number of reversals in
/// it when that is more than the target tolerates.
fn record_action(
    state: &mut TargetState,
    flap: &FlapSettings,
    ts: i64,
    direction: Direction,
) -> Option<u32> {
    let window_ms = secs_to_ms(flap.window_secs);
    while state
        .recent_actions
        .front()
        .is_some_and(|(at, _)| ts.saturating_sub(*at) > window_ms)
    {
        state.recent_actions.pop_front();
    }
    state.recent_actions.push_back((ts, direction));
    let reversals = state
        .recent_actions
        .iter()
        .zip(state.recent_actions.iter().skip(1))
        .filter(|((_, a), (_, b))| a != b)
        .count();
    let reversals = u32::try_from(reversals).unwrap_or(u32::MAX);
    (reversals > flap.max_reversals).then_some(reversals)
}

/// Stores the verdict in its own new state, for [`TargetState::replay`].
fn remember(mut verdict: Verdict) -> Verdict {
    if let Some(state) = verdict.state.as_mut() {
        let kept = LastVerdict {
            decision: verdict.decision.clone(),
            command: verdict.command.clone(),
            flapping: verdict.flapping.clone(),
            observed: None,
            threshold: None,
            extra: Extra::new(),
        };
        // A verdict completed after it was first remembered (a scale gets
        // its command last) replaces its earlier self.
        match state.recent_verdicts.back_mut() {
            Some(last) if last.decision.id == kept.decision.id => *last = kept,
            _ => {
                state.verdicts_stored += 1;
                state.recent_verdicts.push_back(kept);
            }
        }
        while state.recent_verdicts.len() > RECENT_VERDICTS {
            state.recent_verdicts.pop_front();
        }
    }
    verdict
}

fn lead(firing: Option<&RuleFiring>) -> String {
    match firing {
        Some(f) if !f.reason.is_empty() => f.reason.clone(),
        Some(f) => format!("rule {}", f.rule),
        None => "no rule".into(),
    }
}

/// The ceiling (up) or floor (down) for a firing: the rule's own bound within the target's.
fn rule_bound(target: &Target, firing: &RuleFiring, up: bool) -> u32 {
    let limits = target.limits(&firing.rule);
    if up {
        limits.max.map_or(target.max, |m| m.min(target.max))
    } else {
        limits.min.map_or(target.min, |m| m.max(target.min))
    }
}

fn remaining(later_ms: i64, earlier_ms: i64) -> String {
    let ms = later_ms.saturating_sub(earlier_ms).max(0);
    human_secs(u64::try_from(ms.saturating_add(999) / 1000).unwrap_or(0))
}

mod known;
pub use known::{Unknown, check_known};

#[cfg(test)]
mod clock_tests;

#[cfg(test)]
mod kinds_tests;

#[cfg(test)]
mod alert_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::from_yaml;
    use crate::wire::{ScaleAction, TriggerSource};

    const POLICY: &str = r#"
targets:
  w: {rules: [q, cpu], min: 2, max: 12, backend: {sim: {initial: 5}}}
horizontal_scaling_rules:
  q:
    scale_up: {condition: "queue_depth > 1000", action: "add 5 workers", cooldown: 120, max_workers: 10}
    scale_down: {condition: "queue_depth < 100 for 15 minutes", action: "remove 2 workers", cooldown: 600, min_workers: 4}
  cpu:
    scale_up: {condition: "avg_cpu > 70% for 2 minutes", action: "add 2 instances", cooldown: 300}
    scale_down: {condition: "avg_cpu < 30% for 10 minutes", action: "remove 1 instance", cooldown: 600}
"#;

    fn firing(rule: &str) -> RuleFiring {
        let (direction, action) = match rule {
            "q.scale_up" => (Direction::Up, ScaleAction::Add(5)),
            "q.scale_down" => (Direction::Down, ScaleAction::Remove(2)),
            "cpu.scale_up" => (Direction::Up, ScaleAction::Add(2)),
            _ => (Direction::Down, ScaleAction::Remove(1)),
        };
        RuleFiring::plain(rule, direction, action, "")
    }

    fn trigger(secs: i64, rules: &[&str]) -> Trigger {
        Trigger {
            v: Version::CURRENT,
            id: format!("t{secs}{}", rules.join("")),
            ts: secs * 1000,
            target: "w".into(),
            source: TriggerSource::Rule,
            firings: rules.iter().map(|r| firing(r)).collect(),
            policy_revision: None,
            alert: None,
        }
    }

    fn capacity(desired: u32, applied_seq: u64) -> CapacityRecord {
        CapacityRecord {
            target: "w".into(),
            desired,
            running: None,
            applied_seq,
            tier: None,
            observed_ms: 0,
            backend: "sim".into(),
            ..Default::default()
        }
    }

    struct Case {
        name: &'static str,
        state: TargetState,
        observed: Option<CapacityRecord>,
        trigger: Trigger,
        want: (Outcome, Option<u32>),
        reason_has: &'static str,
    }

    fn state(f: impl FnOnce(&mut TargetState)) -> TargetState {
        let mut s = TargetState::default();
        f(&mut s);
        s
    }

    #[test]
    fn decision_table() {
        let policy = from_yaml(POLICY, "p.yaml").unwrap();
        let target = &policy.targets["w"];
        let settings = ArbiterSettings::for_target(target, 30);
        let at = |n| Some(capacity(n, 0));
        let cases = vec![
            Case {
                name: "scale up from observed",
                state: TargetState::default(),
                observed: at(5),
                trigger: trigger(1000, &["q.scale_up"]),
                want: (Outcome::Scale, Some(10)),
                reason_has: "from 5 to 10 (add 5), cooldown 2m",
            },
            Case {
                name: "clamped at the rule max",
                state: TargetState::default(),
                observed: at(7),
                trigger: trigger(1000, &["q.scale_up"]),
                want: (Outcome::Scale, Some(10)),
                reason_has: "clamped at max 10",
            },
            Case {
                name: "at max",
                state: TargetState::default(),
                observed: at(10),
                trigger: trigger(1000, &["q.scale_up"]),
                want: (Outcome::AtMax, Some(10)),
                reason_has: "already at its maximum of 10",
            },
            Case {
                name: "cpu up may go to the target max",
                state: TargetState::default(),
                observed: at(11),
                trigger: trigger(1000, &["cpu.scale_up"]),
                want: (Outcome::Scale, Some(12)),
                reason_has: "clamped at max 12",
            },
            Case {
                name: "up cooldown",
                state: state(|s| s.up_cooldown_until = 1_060_000),
                observed: at(5),
                trigger: trigger(1000, &["q.scale_up"]),
                want: (Outcome::Cooldown, Some(5)),
                reason_has: "cooling down for another 1m",
            },
            Case {
                name: "largest up wins",
                state: TargetState::default(),
                observed: at(3),
                trigger: trigger(1000, &["cpu.scale_up", "q.scale_up"]),
                want: (Outcome::Scale, Some(8)),
                reason_has: "add 5",
            },
            Case {
                name: "up beats down in one trigger",
                state: TargetState::default(),
                observed: at(6),
                trigger: trigger(1000, &["q.scale_down", "cpu.scale_up"]),
                want: (Outcome::Scale, Some(8)),
                reason_has: "add 2",
            },
            Case {
                name: "smallest down wins",
                state: TargetState::default(),
                observed: at(8),
                trigger: trigger(1000, &["q.scale_down", "cpu.scale_down"]),
                want: (Outcome::Scale, Some(7)),
                reason_has: "remove 1",
            },
            Case {
                name: "down clamped at the rule min",
                state: TargetState::default(),
                observed: at(5),
                trigger: trigger(1000, &["q.scale_down"]),
                want: (Outcome::Scale, Some(4)),
                reason_has: "clamped at min 4",
            },
            Case {
                name: "at min",
                state: TargetState::default(),
                observed: at(4),
                trigger: trigger(1000, &["q.scale_down"]),
                want: (Outcome::AtMin, Some(4)),
                reason_has: "already at its minimum of 4",
            },
            Case {
                name: "recent up signal overrides down",
                state: state(|s| {
                    s.last_up_signal = Some(990_000);
                    s.last_up_rule = Some("cpu.scale_up".into())
                }),
                observed: at(8),
                trigger: trigger(1000, &["q.scale_down"]),
                want: (Outcome::Overridden, Some(8)),
                reason_has: "cpu.scale_up asked for more capacity 10s ago",
            },
            Case {
                name: "old up signal does not",
                state: state(|s| s.last_up_signal = Some(1000)),
                observed: at(8),
                trigger: trigger(1000, &["q.scale_down"]),
                want: (Outcome::Scale, Some(6)),
                reason_has: "remove 2",
            },
            Case {
                name: "down cooldown",
                state: state(|s| s.down_cooldown_until = 1_000_500),
                observed: at(8),
                trigger: trigger(1000, &["q.scale_down"]),
                want: (Outcome::Cooldown, Some(8)),
                reason_has: "scale-down is cooling down for another 1s",
            },
            Case {
                name: "no down during the last up's cooldown",
                state: state(|s| s.up_cooldown_until = 1_100_000),
                observed: at(8),
                trigger: trigger(1000, &["q.scale_down"]),
                want: (Outcome::Cooldown, Some(8)),
                reason_has: "last scale-up is still cooling down",
            },
            Case {
                name: "unknown capacity",
                state: TargetState::default(),
                observed: None,
                trigger: trigger(1000, &["q.scale_up"]),
                want: (Outcome::UnknownCapacity, None),
                reason_has: "not known yet",
            },
            Case {
                name: "command in flight is the base",
                state: state(|s| {
                    s.seq = 3;
                    s.desired = Some(9)
                }),
                observed: Some(capacity(5, 2)),
                trigger: trigger(1000, &["cpu.scale_up"]),
                want: (Outcome::Scale, Some(11)),
                reason_has: "from 9 to 11",
            },
            Case {
                name: "applied: the backend's word is the base",
                state: state(|s| {
                    s.seq = 3;
                    s.desired = Some(9)
                }),
                observed: Some(capacity(6, 3)),
                trigger: trigger(1000, &["cpu.scale_up"]),
                want: (Outcome::Scale, Some(8)),
                reason_has: "from 6 to 8",
            },
            Case {
                name: "duplicate",
                state: state(|s| s.recent_triggers.push_back("t1000q.scale_up".into())),
                observed: at(5),
                trigger: trigger(1000, &["q.scale_up"]),
                want: (Outcome::Duplicate, None),
                reason_has: "already decided",
            },
            Case {
                name: "a rule trigger older than the last rule action",
                state: state(|s| s.last_rule_action_ts = 1_090_000),
                observed: at(5),
                trigger: trigger(1000, &["q.scale_up"]),
                want: (Outcome::Superseded, None),
                reason_has: "fired 1m30s before the last action on w",
            },
            Case {
                name: "a rule trigger of the last rule action's instant",
                state: state(|s| s.last_rule_action_ts = 1_000_000),
                observed: at(5),
                trigger: trigger(1000, &["cpu.scale_up"]),
                want: (Outcome::Scale, Some(7)),
                reason_has: "from 5 to 7",
            },
            Case {
                name: "an operator's trigger is not compared with rule actions",
                state: state(|s| s.last_rule_action_ts = 1_090_000),
                observed: at(5),
                trigger: Trigger {
                    source: TriggerSource::Operator,
                    ..trigger(1000, &["cpu.scale_up"])
                },
                want: (Outcome::Scale, Some(7)),
                reason_has: "from 5 to 7",
            },
            Case {
                name: "a redelivered older trigger is a duplicate, not superseded",
                state: state(|s| {
                    s.last_rule_action_ts = 1_090_000;
                    s.recent_triggers.push_back("t1000q.scale_up".into());
                }),
                observed: at(5),
                trigger: trigger(1000, &["q.scale_up"]),
                want: (Outcome::Duplicate, None),
                reason_has: "already decided",
            },
        ];
        for case in cases {
            let v = decide(
                target,
                settings,
                &case.state,
                case.observed.as_ref(),
                &case.trigger,
            );
            assert_eq!(
                (v.decision.outcome, v.decision.to),
                case.want,
                "{}: {}",
                case.name,
                v.decision.reason
            );
            assert!(
                v.decision.reason.contains(case.reason_has),
                "{}: {:?}",
                case.name,
                v.decision.reason
            );
            assert_eq!(
                v.command.is_some(),
                case.want.0 == Outcome::Scale,
                "{}",
                case.name
            );
            if let Some(cmd) = v.command {
                assert_eq!(
                    (cmd.desired, cmd.seq, &cmd.decision_id),
                    (case.want.1.unwrap(), case.state.seq + 1, &v.decision.id)
                );
            }
        }
    }

    #[test]
    fn a_stored_verdict_is_unsent_until_marked_and_carries_its_figures() {
        let policy = from_yaml(POLICY, "p.yaml").unwrap();
        let target = &policy.targets["w"];
        let settings = ArbiterSettings::for_target(target, 30);
        let mut up = trigger(1000, &["cpu.scale_up"]);
        up.firings[0].observed = Some(0.84);
        up.firings[0].threshold = Some(0.7);
        let first = decide(
            target,
            settings,
            &TargetState::default(),
            Some(&capacity(5, 0)),
            &up,
        );
        let mut state = first.state.expect("stored");
        let unsent = state.unsent().expect("the new verdict is not out yet");
        assert_eq!(unsent.decision.id, first.decision.id);
        assert_eq!((unsent.observed, unsent.threshold), (Some(0.84), Some(0.7)));
        assert_eq!(unsent.command, first.command);
        state.mark_sent();
        assert!(state.unsent().is_none());
        // A verdict without a command (cooldown) is unsent too: its
        // decision record must go out before the next decision.
        let cooling = decide(
            target,
            settings,
            &state,
            Some(&capacity(7, 1)),
            &trigger(1010, &["cpu.scale_up"]),
        );
        let state = cooling.state.expect("stored");
        assert_eq!(
            state.unsent().map(|v| v.decision.outcome.clone()),
            Some(Outcome::Cooldown)
        );
        assert_eq!((state.verdicts_stored, state.verdicts_sent), (2, 1));
    }

    #[test]
    fn rule_actions_move_the_superseding_mark_forward_only() {
        let policy = from_yaml(POLICY, "p.yaml").unwrap();
        let target = &policy.targets["w"];
        let settings = ArbiterSettings::for_target(target, 30);
        let first = decide(
            target,
            settings,
            &TargetState::default(),
            Some(&capacity(5, 0)),
            &trigger(1000, &["cpu.scale_up"]),
        );
        let state = first.state.expect("scaled");
        assert_eq!(state.last_rule_action_ts, 1_000_000);
        let older = decide(
            target,
            settings,
            &state,
            Some(&capacity(7, 1)),
            &trigger(990, &["cpu.scale_up"]),
        );
        assert_eq!(older.decision.outcome, Outcome::Superseded);
        let kept = older.state.expect("remembers the trigger");
        assert_eq!(kept.last_rule_action_ts, 1_000_000);
        assert!(
            kept.recent_triggers
                .contains(&"t990cpu.scale_up".to_string())
        );
        // A decision without a command (cooldown) leaves the mark alone.
        let cooling = decide(
            target,
            settings,
            &kept,
            Some(&capacity(7, 1)),
            &trigger(1010, &["cpu.scale_up"]),
        );
        assert_eq!(cooling.decision.outcome, Outcome::Cooldown);
        assert_eq!(cooling.state.expect("state").last_rule_action_ts, 1_000_000);
    }

    #[test]
    fn an_unreadable_backend_is_named_in_the_reason() {
        let policy = from_yaml(POLICY, "p.yaml").unwrap();
        let target = &policy.targets["w"];
        let settings = ArbiterSettings::for_target(target, 30);
        let error = "target w: no AWS credentials (tried environment variables)";
        let observed = Observed {
            record: None,
            unreadable: Some(error),
        };
        let v = decide(
            target,
            settings,
            &TargetState::default(),
            observed,
            &trigger(1000, &["q.scale_up"]),
        );
        assert_eq!(v.decision.outcome, Outcome::UnknownCapacity);
        assert!(
            v.decision.reason.contains("its backend cannot be read")
                && v.decision.reason.contains(error)
                && !v.decision.reason.contains("has not reported"),
            "{}",
            v.decision.reason
        );
    }

    #[test]
    fn an_operator_set_points_against_the_current_capacity() {
        let policy = from_yaml(POLICY, "p.yaml").unwrap();
        let target = &policy.targets["w"];
        let settings = ArbiterSettings::for_target(target, 30);
        let set = |n| Trigger {
            v: Version::CURRENT,
            id: format!("op-{n}"),
            ts: 1_000_000,
            target: "w".into(),
            source: TriggerSource::Operator,
            firings: vec![RuleFiring::plain(
                "operator",
                Direction::None,
                ScaleAction::Set(n),
                format!("operator: set to {n}"),
            )],
            policy_revision: None,
            alert: None,
        };
        let cases = [
            (9, Outcome::Scale, Some(9), Direction::Up),
            (3, Outcome::Scale, Some(3), Direction::Down),
            (99, Outcome::Scale, Some(12), Direction::Up),
            (0, Outcome::Scale, Some(2), Direction::Down),
            (5, Outcome::NoChange, Some(5), Direction::None),
        ];
        for (n, outcome, to, direction) in cases {
            let v = decide(
                target,
                settings,
                &TargetState::default(),
                Some(&capacity(5, 0)),
                &set(n),
            );
            assert_eq!(
                (v.decision.outcome, v.decision.to, v.decision.direction),
                (outcome, to, direction),
                "set to {n}: {}",
                v.decision.reason
            );
        }
        // Operators meet the cooldowns on the wall clock, where every
        // action stamps them.
        let cooling = TargetState {
            wall_holds: Holds {
                up_cooldown_until: 2_000_000,
                ..Holds::default()
            },
            ..TargetState::default()
        };
        let v = decide(target, settings, &cooling, Some(&capacity(5, 0)), &set(9));
        assert_eq!(
            v.decision.outcome,
            Outcome::Cooldown,
            "operators get the same cooldowns"
        );
    }

    #[test]
    fn only_an_operator_promotes_and_a_promote_takes_one_from_the_set() {
        let policy = from_yaml(POLICY, "p.yaml").unwrap();
        let target = &policy.targets["w"];
        let settings = ArbiterSettings::for_target(target, 30);
        let promote = |source: TriggerSource, rule: &str| Trigger {
            v: Version::CURRENT,
            id: format!("op-{rule}"),
            ts: 1_000_000,
            target: "w".into(),
            source,
            firings: vec![RuleFiring::plain(
                rule,
                Direction::Down,
                ScaleAction::Promote("w-replica-3".into()),
                "operator asked to promote w-replica-3",
            )],
            policy_revision: None,
            alert: None,
        };
        // A scale-down's cooldown and a pause do not stop a promote (it is
        // forced); the target's min does.
        let cooling = TargetState {
            paused_down: true,
            wall_holds: Holds {
                down_cooldown_until: 2_000_000,
                ..Holds::default()
            },
            ..TargetState::default()
        };
        let cases = [
            (
                TriggerSource::Operator,
                5,
                Outcome::Scale,
                Some("w-replica-3"),
            ),
            (TriggerSource::Operator, 2, Outcome::AtMin, None),
            (TriggerSource::Rule, 5, Outcome::NoChange, None),
        ];
        for (source, current, outcome, promoted) in cases {
            let v = decide(
                target,
                settings,
                &cooling,
                Some(&capacity(current, 0)),
                &promote(source.clone(), PROMOTE_RULE),
            );
            assert_eq!(
                v.decision.outcome, outcome,
                "{source:?} at {current}: {}",
                v.decision.reason
            );
            let command = v.command.as_ref();
            assert_eq!(
                command.and_then(|c| c.promote.as_deref()),
                promoted,
                "{source:?} at {current}"
            );
            if let Some(command) = command {
                assert_eq!((command.from, command.desired), (current, current - 1));
            }
        }
    }

    #[test]
    fn a_failed_action_starts_no_cooldown() {
        let policy = from_yaml(POLICY, "p.yaml").unwrap();
        let target = &policy.targets["w"];
        let settings = ArbiterSettings::for_target(target, 30);
        let first = decide(
            target,
            settings,
            &TargetState::default(),
            Some(&capacity(5, 0)),
            &trigger(1000, &["cpu.scale_up"]),
        );
        assert_eq!(first.decision.outcome, Outcome::Scale);
        let state = first.state.expect("a state");
        // The actuator settled command 1: applied (the backend has 7) or
        // failed (the backend still has 5).
        let applied = capacity(7, 1);
        let failed = CapacityRecord {
            failed_seq: 1,
            ..capacity(5, 1)
        };
        let cases = [
            ("applied", &applied, Outcome::Cooldown, None),
            ("failed", &failed, Outcome::Scale, Some(7)),
        ];
        for (name, record, outcome, to) in cases {
            let v = decide(
                target,
                settings,
                &state,
                Some(record),
                &trigger(1010, &["cpu.scale_up"]),
            );
            assert_eq!(v.decision.outcome, outcome, "{name}: {}", v.decision.reason);
            assert_eq!(
                v.command.map(|c| (c.from, c.desired)),
                to.map(|to| (5, to)),
                "{name}"
            );
        }
        // A failure of an older command lifts nothing.
        let second = decide(
            target,
            settings,
            &state,
            Some(&failed),
            &trigger(1010, &["cpu.scale_up"]),
        )
        .state
        .expect("a state");
        let older = CapacityRecord {
            failed_seq: 1,
            ..capacity(7, 2)
        };
        let v = decide(
            target,
            settings,
            &second,
            Some(&older),
            &trigger(1020, &["cpu.scale_up"]),
        );
        assert_eq!(
            v.decision.outcome,
            Outcome::Cooldown,
            "{}",
            v.decision.reason
        );
    }

    #[test]
    fn replication_lag_holds_removals_while_it_lasts() {
        let policy = from_yaml(POLICY, "p.yaml").unwrap();
        let target = &policy.targets["w"];
        let settings = ArbiterSettings::for_target(target, 30);
        assert_eq!(settings.replica_lag_hold_ms, 60_000);
        let lag = |ts: i64| {
            Trigger {
            v: Version::CURRENT,
            id: format!("lag-{ts}"),
            ts,
            target: "w".into(),
            source: TriggerSource::Rule,
            firings: vec![RuleFiring {
                rule: "rds.max_replica_lag".into(),
                direction: Direction::None,
                action: ScaleAction::HoldScaleDowns,
                observed: Some(2.5),
                threshold: Some(1.0),
                condition: "max_replica_lag > 1000ms".into(),
                held_secs: 0,
                reason: "max_replica_lag 2.5s > 1s (rule rds.max_replica_lag: \"max_replica_lag > 1000ms\")".into(),
            }],
            policy_revision: None, alert: None, }
        };
        let operator_down = Trigger {
            source: TriggerSource::Operator,
            firings: vec![RuleFiring {
                rule: OPERATOR_RULE.into(),
                direction: Direction::None,
                action: ScaleAction::Set(3),
                ..firing("cpu.scale_down")
            }],
            ..trigger(1_020, &[])
        };
        let forced_down = Trigger {
            id: "op-forced".into(),
            firings: vec![RuleFiring {
                rule: OPERATOR_FORCE_RULE.into(),
                ..operator_down.firings[0].clone()
            }],
            ..operator_down.clone()
        };
        // Each step starts from the state the previous one left; the
        // operator's are decided on the wall clock at 1_030_000.
        let steps: [(&str, Trigger, Outcome, &str); 8] = [
            (
                "the lag begins",
                lag(1_000_000),
                Outcome::ReplicaLag,
                "no replica is removed while it lasts",
            ),
            (
                "it lasts",
                lag(1_030_000),
                Outcome::NoChange,
                "removals stay held",
            ),
            (
                "a rule's removal",
                trigger(1_031, &["cpu.scale_down"]),
                Outcome::ReplicaLag,
                "max_replica_lag 2.5s > 1s",
            ),
            (
                "an operator's removal",
                operator_down,
                Outcome::ReplicaLag,
                "(novactl scale --force overrides)",
            ),
            (
                "a forced one",
                forced_down,
                Outcome::Scale,
                "forced past: replication lag",
            ),
            (
                "a removal within the hold",
                trigger(1_089, &["q.scale_down"]),
                Outcome::ReplicaLag,
                "no replica is removed",
            ),
            (
                "past it",
                trigger(1_091, &["q.scale_down"]),
                Outcome::Scale,
                "remove 2",
            ),
            (
                "an addition",
                trigger(1_100, &["cpu.scale_up"]),
                Outcome::Scale,
                "add 2",
            ),
        ];
        let mut state = TargetState::default();
        for (name, trigger, outcome, reason_has) in steps {
            let v = decide_at(
                target,
                settings,
                &state,
                Some(&capacity(5, state.seq)),
                &trigger,
                1_030_000,
            );
            assert_eq!(v.decision.outcome, outcome, "{name}: {}", v.decision.reason);
            assert!(
                v.decision.reason.contains(reason_has),
                "{name}: {}",
                v.decision.reason
            );
            assert_eq!(v.command.is_some(), outcome == Outcome::Scale, "{name}");
            if let Some(next) = v.state {
                state = next;
            }
        }
    }

    #[test]
    fn scale_downs_wait_for_added_capacity_to_warm_up() {
        let policy = from_yaml(POLICY, "p.yaml").unwrap();
        let mut target = policy.targets["w"].clone();
        target.warmup_secs = 900;
        let settings = ArbiterSettings {
            up_signal_hold_ms: 0,
            replica_lag_hold_ms: 0,
        };
        let up = decide(
            &target,
            settings,
            &TargetState::default(),
            Some(&capacity(5, 0)),
            &trigger(0, &["cpu.scale_up"]),
        );
        let state = up.state.unwrap();
        assert_eq!(state.warming_until, 900_000);
        let observed = capacity(7, 1);
        // After the up cooldown (300 s) but inside the warm-up (900 s).
        let down = decide(
            &target,
            settings,
            &state,
            Some(&observed),
            &trigger(400, &["cpu.scale_down"]),
        );
        assert_eq!(down.decision.outcome, Outcome::WarmingUp);
        assert!(
            down.decision
                .reason
                .ends_with("still warming up for another 8m20s"),
            "{}",
            down.decision.reason
        );
        let later = decide(
            &target,
            settings,
            &down.state.unwrap(),
            Some(&observed),
            &trigger(900, &["cpu.scale_down"]),
        );
        assert_eq!(
            (later.decision.outcome, later.decision.to),
            (Outcome::Scale, Some(6))
        );
    }

    #[test]
    fn paused_directions_and_dry_run() {
        let policy = from_yaml(POLICY, "p.yaml").unwrap();
        let target = &policy.targets["w"];
        let settings = ArbiterSettings::for_target(target, 30);
        let paused = TargetState {
            paused_up: true,
            ..TargetState::default()
        };
        let v = decide(
            target,
            settings,
            &paused,
            Some(&capacity(5, 0)),
            &trigger(1000, &["q.scale_up"]),
        );
        assert_eq!(v.decision.outcome, Outcome::Paused);
        assert!(
            v.decision
                .reason
                .ends_with("add 5 suppressed: scale-up of w is paused by an operator"),
            "{}",
            v.decision.reason
        );
        let v = decide(
            target,
            settings,
            &paused,
            Some(&capacity(8, 0)),
            &trigger(1000, &["q.scale_down"]),
        );
        assert_eq!(
            v.decision.outcome,
            Outcome::Scale,
            "pausing up leaves down alone"
        );
        let paused_down = TargetState {
            paused_down: true,
            ..TargetState::default()
        };
        let v = decide(
            target,
            settings,
            &paused_down,
            Some(&capacity(8, 0)),
            &trigger(1000, &["q.scale_down"]),
        );
        assert_eq!(v.decision.outcome, Outcome::Paused);

        let mut dry = target.clone();
        dry.dry_run = true;
        let v = decide(
            &dry,
            settings,
            &TargetState::default(),
            Some(&capacity(5, 0)),
            &trigger(1000, &["q.scale_up"]),
        );
        assert_eq!(
            (v.decision.outcome, v.decision.to, v.command.is_none()),
            (Outcome::DryRun, Some(10), true)
        );
        assert!(
            v.decision
                .reason
                .ends_with("dry run: would scale w from 5 to 10 (add 5)"),
            "{}",
            v.decision.reason
        );
        let state = v.state.unwrap();
        assert_eq!(
            (state.seq, state.up_cooldown_until),
            (0, 0),
            "a dry run starts no cooldown"
        );
    }

    #[test]
    fn reversals_beyond_the_limit_raise_the_cooldown() {
        let policy = from_yaml(POLICY, "p.yaml").unwrap();
        let target = &policy.targets["w"];
        let settings = ArbiterSettings {
            up_signal_hold_ms: 0,
            replica_lag_hold_ms: 0,
        };
        // Up and down alternate, each once its cooldowns allow: the 5th
        // action is the 4th reversal, more than the default 3 in 30 minutes.
        let mut state = TargetState::default();
        let mut observed = capacity(6, 0);
        let steps = [
            (0, "q.scale_up"),
            (130, "q.scale_down"),
            (200, "q.scale_up"),
            (740, "q.scale_down"),
        ];
        for (secs, rule) in steps {
            let v = decide(
                target,
                settings,
                &state,
                Some(&observed),
                &trigger(secs, &[rule]),
            );
            assert_eq!(
                v.decision.outcome,
                Outcome::Scale,
                "{secs}: {}",
                v.decision.reason
            );
            assert!(v.flapping.is_none(), "{secs}: not yet flapping");
            observed = capacity(
                v.command.as_ref().unwrap().desired,
                v.command.as_ref().unwrap().seq,
            );
            state = v.state.unwrap();
        }
        let v = decide(
            target,
            settings,
            &state,
            Some(&observed),
            &trigger(800, &["q.scale_up"]),
        );
        assert_eq!(v.decision.outcome, Outcome::Scale);
        let why = v.flapping.as_deref().expect("flapping");
        assert_eq!(
            why,
            "w is flapping: 4 reversals in the last 30m, more than 3 allowed; cooldown raised from 2m to 6m"
        );
        assert!(
            v.decision.reason.ends_with("cooldown 6m (flapping)"),
            "{}",
            v.decision.reason
        );
        assert_eq!(v.state.unwrap().up_cooldown_until, (800 + 360) * 1000);
    }

    #[test]
    fn a_second_trigger_inside_the_cooldown_is_suppressed_then_allowed_after() {
        let policy = from_yaml(POLICY, "p.yaml").unwrap();
        let target = &policy.targets["w"];
        let settings = ArbiterSettings::for_target(target, 30);
        let first = decide(
            target,
            settings,
            &TargetState::default(),
            Some(&capacity(2, 0)),
            &trigger(0, &["q.scale_up"]),
        );
        assert_eq!(first.decision.to, Some(7));
        let state = first.state.unwrap();
        let observed = capacity(7, 1);
        let second = decide(
            target,
            settings,
            &state,
            Some(&observed),
            &trigger(119, &["q.scale_up"]),
        );
        assert_eq!(second.decision.outcome, Outcome::Cooldown);
        assert!(
            second.decision.reason.contains("another 1s"),
            "{}",
            second.decision.reason
        );
        let third = decide(
            target,
            settings,
            &second.state.unwrap(),
            Some(&observed),
            &trigger(120, &["q.scale_up"]),
        );
        assert_eq!(
            (third.decision.outcome, third.decision.to),
            (Outcome::Scale, Some(10))
        );
    }
}

#[cfg(test)]
mod replay_tests {
    use super::tests_support::*;
    use super::*;

    #[test]
    fn the_stored_state_remembers_the_latest_verdict_for_replay() {
        let (policy, trigger) = fixture();
        let target = &policy.targets["w"];
        let settings = ArbiterSettings::for_target(target, 30);
        let v = decide(
            target,
            settings,
            &TargetState::default(),
            Some(&capacity(5, 0)),
            &trigger,
        );
        let state = v.state.clone().unwrap();
        let last = state
            .replay(&v.decision.id)
            .expect("latest verdict is stored");
        assert_eq!((&last.decision, &last.command), (&v.decision, &v.command));
        let again = decide(target, settings, &state, Some(&capacity(5, 0)), &trigger);
        assert_eq!(again.decision.outcome, Outcome::Duplicate);
        assert!(again.state.is_none());
        assert!(state.replay("d-other").is_none());
    }

    #[test]
    fn an_older_verdict_is_still_replayable_after_later_decisions() {
        let (policy, trigger) = fixture();
        let target = &policy.targets["w"];
        let settings = ArbiterSettings::for_target(target, 30);
        let first = decide(
            target,
            settings,
            &TargetState::default(),
            Some(&capacity(5, 0)),
            &trigger,
        );
        let later = Trigger {
            v: Version::CURRENT,
            id: "t-2".into(),
            ts: 500_000,
            ..trigger.clone()
        };
        let second = decide(
            target,
            settings,
            &first.state.clone().unwrap(),
            Some(&capacity(10, 1)),
            &later,
        );
        let state = second.state.unwrap();
        // The first trigger is redelivered after the second was decided: its
        // verdict (command and all) is still there to publish again.
        let replayed = state
            .replay(&first.decision.id)
            .expect("older verdict kept");
        assert_eq!(replayed.command, first.command);
        assert_eq!(state.last().map(|l| &l.decision), Some(&second.decision));
    }
}

#[cfg(test)]
mod tests_support {
    use super::*;
    use crate::policy::{Policy, from_yaml};
    use crate::wire::{ScaleAction, TriggerSource};

    pub fn fixture() -> (Policy, Trigger) {
        let policy = from_yaml(
            "targets:\n  w: {rules: [q], max: 10, backend: {sim: {initial: 5}}}\nhorizontal_scaling_rules:\n  q:\n    scale_up: {condition: \"queue_depth > 1000\", action: \"add 5 workers\"}\n",
            "p.yaml",
        )
        .unwrap();
        let trigger = Trigger {
            v: Version::CURRENT,
            id: "t-1".into(),
            ts: 1000,
            target: "w".into(),
            source: TriggerSource::Rule,
            firings: vec![RuleFiring {
                rule: "q.scale_up".into(),
                direction: Direction::Up,
                action: ScaleAction::Add(5),
                observed: Some(1500.0),
                threshold: Some(1000.0),
                condition: "queue_depth > 1000".into(),
                held_secs: 0,
                reason: "max_queue_depth 1500 > 1000".into(),
            }],
            policy_revision: None,
            alert: None,
        };
        (policy, trigger)
    }

    pub fn capacity(desired: u32, applied_seq: u64) -> CapacityRecord {
        CapacityRecord {
            target: "w".into(),
            desired,
            running: None,
            applied_seq,
            tier: None,
            observed_ms: 0,
            backend: "sim".into(),
            ..Default::default()
        }
    }
}
