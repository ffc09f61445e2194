//! `novactl audit query`, `audit stats` and `explain`: readers of stream
//! `NOVA_AUDIT` straight from JetStream (an ordered consumer from a start
//! time, filtered by subject `nova.audit.<stage>.<target>`), so they work
//! over any range the stream keeps, with or without an audit service.
//!
//! - query: the records matching target, stage (server-side, by subject),
//!   outcome (here) and time range; `--follow` keeps reading until Ctrl-C.
//! - stats: [`nova_shared::audit_stats::compute`] over the range, the same
//!   code the audit service answers `nova.ctl.audit.stats` with.
//! - explain: one decision's chain, trigger -> decision -> command ->
//!   result, joined by the ids the records carry (`trigger_id`,
//!   `decision_id`), as sentences.

use std::collections::VecDeque;
use std::fmt;

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull},
};
use futures_util::StreamExt;
use nova_runtime::nats::AUDIT_STREAM;
use nova_runtime::shutdown;
use nova_shared::audit_stats::{self, AuditStats, Span};
use nova_shared::codec::{self, Encoding};
use nova_shared::subjects;
use nova_shared::wire::{AuditKind, AuditRecord, Outcome, Stage};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::format;
use crate::{Output, print_json};

/// A failure with its own exit code (see `main`'s exit code table).
#[derive(Debug)]
pub enum Failure {
    /// An argument's value cannot be used (exit 2, as clap's usage errors).
    BadInput(String),
    /// What was asked for is not in the audit stream (exit 4).
    NotFound(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::BadInput(why) | Failure::NotFound(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for Failure {}

/// `--since` / `--until`: an RFC 3339 time (`2026-12-01T10:00:00Z`), `now`,
/// or a duration back from `now` (`2h`, `30m`, `1d`, `2h ago`).
pub fn parse_time(flag: &str, text: &str, now: OffsetDateTime) -> Result<OffsetDateTime, Failure> {
    let trimmed = text.trim();
    if trimmed == "now" {
        return Ok(now);
    }
    if let Ok(at) = OffsetDateTime::parse(trimmed, &Rfc3339) {
        return Ok(at);
    }
    let back = trimmed.strip_suffix(" ago").unwrap_or(trimmed).trim();
    match humantime::parse_duration(back) {
        Ok(d) => Ok(now - d),
        Err(_) => Err(Failure::BadInput(format!(
            "{flag} {text:?} is neither an RFC 3339 time (2026-12-01T10:00:00Z) nor a \
             duration back from now (2h, 30m, 1d)"
        ))),
    }
}

/// `--target`: one subject token (no `.`, `*`, `>` or spaces); none, for
/// every target, is fine.
pub fn check_target(target: Option<&str>) -> Result<(), Failure> {
    if let Some(target) = target
        && (target.is_empty() || target.contains(['.', '*', '>', ' ', '\t']))
    {
        return Err(Failure::BadInput(format!(
            "--target {target:?} is not a target name: a name has no '.', '*', '>' or spaces"
        )));
    }
    Ok(())
}

/// The time range `audit query` and `audit stats` read: `--since` and
/// `--until` as given, each read against the same `now`. An open start is
/// the stream's first record; an open end is now (or, following, never).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// From this time on.
    pub since: Option<OffsetDateTime>,
    /// Up to this time.
    pub until: Option<OffsetDateTime>,
}

impl Range {
    /// Reads `--since` and `--until` (see [`parse_time`]), `--since` first;
    /// a start after the end is refused.
    pub fn parse(
        since: Option<&str>,
        until: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Range, Failure> {
        let range = Range {
            since: since.map(|t| parse_time("--since", t, now)).transpose()?,
            until: until.map(|t| parse_time("--until", t, now)).transpose()?,
        };
        if let (Some(since), Some(until)) = (range.since, range.until)
            && since > until
        {
            return Err(after_the_end());
        }
        Ok(range)
    }

    /// Both ends, as `audit stats` counts over them (an open start is the
    /// Unix epoch, an open end `now`); a start after the end is refused.
    pub fn closed(self, now: OffsetDateTime) -> Result<(OffsetDateTime, OffsetDateTime), Failure> {
        let since = self.since.unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let until = self.until.unwrap_or(now);
        if since > until {
            return Err(after_the_end());
        }
        Ok((since, until))
    }
}

fn after_the_end() -> Failure {
    Failure::BadInput("--since is after --until: give a start before the end".into())
}

/// `--stage`: one of the pipeline's stages.
pub fn parse_stage(text: &str) -> Result<Stage, Failure> {
    let stage = Stage::from_wire(text);
    if matches!(stage, Stage::Unknown(_)) {
        return Err(Failure::BadInput(format!(
            "--stage {text:?} is not a stage: ingest, evaluator, arbiter, actuator or audit"
        )));
    }
    Ok(stage)
}

/// Unix ms of a time.
fn ms(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// What to read.
pub struct Filter {
    /// Only this target (by subject).
    pub target: Option<String>,
    /// Only this stage (by subject).
    pub stage: Option<Stage>,
    /// Only records with this outcome (here).
    pub outcome: Option<String>,
    /// Records written from this time on (the stream's time), and whose
    /// `ts` is not before it.
    pub since: Option<OffsetDateTime>,
    /// Records whose `ts` is not after this.
    pub until: Option<OffsetDateTime>,
}

impl Filter {
    fn wants(&self, record: &AuditRecord) -> bool {
        self.outcome.as_ref().is_none_or(|o| *o == record.outcome)
            && self.since.is_none_or(|t| record.ts >= ms(t))
            && self.until.is_none_or(|t| record.ts <= ms(t))
    }
}

/// An ordered reader of the matching part of `NOVA_AUDIT`.
struct Reader {
    messages: pull::Ordered,
    /// Messages matching the subject filter not delivered yet when it started.
    pending: u64,
}

impl Reader {
    async fn open(client: &async_nats::Client, filter: &Filter) -> anyhow::Result<Reader> {
        let js = jetstream::new(client.clone());
        let stream = js.get_stream(AUDIT_STREAM).await.map_err(|e| {
            anyhow::anyhow!("cannot read stream {AUDIT_STREAM}: {e} (run novactl provision first)")
        })?;
        let subject = subjects::audit(
            filter.stage.as_ref().map_or("*", |s| s.as_str()),
            filter.target.as_deref().unwrap_or("*"),
        );
        let deliver_policy = match filter.since {
            Some(start_time) => DeliverPolicy::ByStartTime { start_time },
            None => DeliverPolicy::All,
        };
        let mut consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: subject,
                deliver_policy,
                ..Default::default()
            })
            .await?;
        let pending = consumer.info().await?.num_pending;
        Ok(Reader {
            messages: consumer.messages().await?,
            pending,
        })
    }

    /// The next record and whether the reader has caught up with the
    /// stream; `None` when the stream ends.
    async fn next(&mut self) -> anyhow::Result<Option<(Option<AuditRecord>, bool)>> {
        let Some(message) = self.messages.next().await else {
            return Ok(None);
        };
        let message = message?;
        let caught_up = message.info().map_or(true, |i| i.pending == 0);
        match codec::decode::<AuditRecord>(&message.payload, Encoding::MsgPack) {
            Ok(record) => Ok(Some((Some(record), caught_up))),
            Err(error) => {
                eprintln!(
                    "novactl: unreadable audit record on {}: {error}",
                    message.subject
                );
                Ok(Some((None, caught_up)))
            }
        }
    }
}

/// Every matching record the stream holds now, oldest first (the newest
/// `limit` if given), and the reader to go on with.
async fn history(
    client: &async_nats::Client,
    filter: &Filter,
    limit: Option<usize>,
) -> anyhow::Result<(Vec<AuditRecord>, Reader)> {
    let mut reader = Reader::open(client, filter).await?;
    let mut kept = VecDeque::new();
    if reader.pending > 0 {
        while let Some((record, caught_up)) = reader.next().await? {
            if let Some(record) = record.filter(|r| filter.wants(r)) {
                kept.push_back(record);
                if limit.is_some_and(|l| kept.len() > l) {
                    kept.pop_front();
                }
            }
            if caught_up {
                break;
            }
        }
    }
    Ok((kept.into(), reader))
}

/// `audit query`: the matching records; with `follow`, then new ones until Ctrl-C.
pub async fn query(
    client: &async_nats::Client,
    filter: Filter,
    limit: Option<usize>,
    follow: bool,
    output: Output,
) -> anyhow::Result<()> {
    let (past, mut reader) = history(client, &filter, limit).await?;
    match output {
        // One document; JSON lines when it goes on.
        Output::Json if !follow => print_json(&past)?,
        Output::Json => {
            for record in &past {
                print_json(record)?;
            }
        }
        Output::Table => println!("{}", format::records_table(&past)),
        Output::Text => past.iter().for_each(|r| println!("{}", format::line(r))),
    }
    if !follow {
        return Ok(());
    }
    let stop = shutdown::ctrl_c_or_term();
    tokio::pin!(stop);
    loop {
        let next = tokio::select! {
            _ = &mut stop => break,
            next = reader.next() => next?,
        };
        let Some((record, _)) = next else { break };
        if let Some(record) = record.filter(|r| filter.wants(r)) {
            match output {
                Output::Json => print_json(&record)?,
                Output::Table | Output::Text => println!("{}", format::line(&record)),
            }
        }
        if filter.until.is_some_and(|t| nova_runtime::now_ms() > ms(t)) {
            break;
        }
    }
    Ok(())
}

/// `audit stats`: the section 8 figures over `[since, until]`.
pub async fn stats(
    client: &async_nats::Client,
    target: Option<String>,
    since: OffsetDateTime,
    until: OffsetDateTime,
    flap_window_secs: u64,
    output: Output,
) -> anyhow::Result<()> {
    let filter = Filter {
        target: target.clone(),
        stage: None,
        outcome: None,
        since: Some(since),
        until: Some(until),
    };
    let (records, _) = history(client, &filter, None).await?;
    let span = Span {
        from_ms: ms(since),
        to_ms: ms(until),
    };
    let stats = audit_stats::compute(&records, span, target.as_deref(), flap_window_secs);
    if let Some(target) = &target
        && stats.targets.is_empty()
    {
        return Err(Failure::NotFound(format!(
            "no audit records of target {target} between {} and {}: check the name, or widen --since",
            format::when(span.from_ms),
            format::when(span.to_ms)
        ))
        .into());
    }
    match output {
        Output::Json => print_json(&stats)?,
        Output::Table | Output::Text => print_stats(&stats),
    }
    Ok(())
}

fn print_stats(stats: &AuditStats) {
    println!(
        "{} to {}: {} record(s), flap window {}",
        format::when(stats.from_ms),
        format::when(stats.to_ms),
        stats.records,
        nova_shared::evaluate::human_secs(stats.flap_window_secs)
    );
    println!("{}", format::stats_table(stats));
}

/// One decision's chain, as `explain` prints it.
#[derive(Debug, serde::Serialize)]
pub struct Chain {
    /// The target.
    pub target: String,
    /// The trigger records (one per rule firing; none for an operator's).
    pub triggers: Vec<AuditRecord>,
    /// The decision record.
    pub decision: AuditRecord,
    /// The arbiter's flapping note about it, if any.
    pub flapping: Option<AuditRecord>,
    /// The actuator's command records (executing, retrying, steps).
    pub commands: Vec<AuditRecord>,
    /// The result record, once there is one.
    pub result: Option<AuditRecord>,
    /// The chain as sentences.
    pub sentences: Vec<String>,
}

/// Finds the decision (`decision`: a decision id or a record id; else the
/// newest of the target) in `records` and the records joined to it.
pub fn chain(records: &[AuditRecord], target: &str, decision: Option<&str>) -> Option<Chain> {
    let is_decision = |r: &&AuditRecord| r.kind == AuditKind::Decision && r.outcome != "flapping";
    let found = match decision {
        Some(id) => records
            .iter()
            .filter(is_decision)
            .find(|r| r.decision_id.as_deref() == Some(id) || r.id == id)?,
        None => records.iter().filter(is_decision).max_by_key(|r| r.ts)?,
    };
    let decision_id = found.decision_id.as_deref();
    let trigger_id = found.trigger_id.as_deref();
    let joined =
        |r: &&AuditRecord| decision_id.is_some() && r.decision_id.as_deref() == decision_id;
    let triggers: Vec<AuditRecord> = records
        .iter()
        .filter(|r| {
            r.kind == AuditKind::Trigger
                && trigger_id.is_some()
                && r.trigger_id.as_deref() == trigger_id
        })
        .cloned()
        .collect();
    let flapping = records
        .iter()
        .filter(joined)
        .find(|r| r.kind == AuditKind::Decision && r.outcome == "flapping")
        .cloned();
    let commands: Vec<AuditRecord> = records
        .iter()
        .filter(joined)
        .filter(|r| r.kind == AuditKind::Command)
        .cloned()
        .collect();
    let result = records
        .iter()
        .filter(joined)
        .find(|r| r.kind == AuditKind::Result)
        .cloned();
    let mut chain = Chain {
        target: target.to_string(),
        triggers,
        decision: found.clone(),
        flapping,
        commands,
        result,
        sentences: Vec::new(),
    };
    chain.sentences = sentences(&chain);
    Some(chain)
}

/// Why a decision not taken was not taken, in a few words.
fn not_taken(outcome: &str) -> &'static str {
    match Outcome::from_wire(outcome) {
        Outcome::Cooldown => "the direction is cooling down",
        Outcome::AtMax => "the target is already at its maximum",
        Outcome::AtMin => "the target is already at its minimum",
        Outcome::Overridden => "a recent scale-up signal outranks this scale-down",
        Outcome::NoChange => "the capacity would not change",
        Outcome::UnknownCapacity => "the target's capacity is not known yet",
        Outcome::Duplicate => "this trigger was already decided",
        Outcome::Paused => "an operator paused this direction",
        Outcome::DryRun => "the target is in dry-run mode",
        Outcome::WarmingUp => "capacity added by the last scale-up is still warming up",
        Outcome::RateLimited => "the tracking rule's rate limits allow no change now",
        Outcome::AtTopTier => "the target is at the top of its ladder",
        Outcome::Deferred => "this arbiter does not understand the record; a newer one will decide",
        Outcome::Superseded => "a later trigger already acted",
        Outcome::EmergencyHold => "an emergency up holds scale-downs",
        Outcome::ReplicaLag => "replication lag is above the replica set's limit",
        Outcome::Scale | Outcome::Unknown(_) => "of its outcome",
    }
}

fn clock(ts: i64) -> String {
    let when = format::when(ts);
    // 2026-12-01T12:00:03.123Z -> 12:00:03
    when.get(11..19).map_or(when.clone(), str::to_string)
}

fn sentences(chain: &Chain) -> Vec<String> {
    let d = &chain.decision;
    let mut out = Vec::new();
    for t in &chain.triggers {
        out.push(format!(
            "At {} the evaluator saw {} (rule {}) -> trigger {}.",
            clock(t.ts),
            t.reason,
            t.rule.as_deref().unwrap_or("?"),
            t.trigger_id.as_deref().unwrap_or("?"),
        ));
    }
    if chain.triggers.is_empty()
        && let Some(trigger) = &d.trigger_id
    {
        out.push(format!(
            "Trigger {trigger} has no evaluator record: an operator, a schedule or a fallback sent it."
        ));
    }
    let id = d.decision_id.as_deref().unwrap_or(&d.id);
    let capacities = match (d.from, d.to) {
        (Some(from), Some(to)) => format!(" {from} -> {to}"),
        _ => String::new(),
    };
    if d.outcome == Outcome::Scale.as_str() {
        out.push(format!(
            "At {} the arbiter decided scale{capacities} (decision {id}): {}.",
            clock(d.ts),
            d.reason
        ));
    } else {
        out.push(format!(
            "At {} the arbiter did not act ({}: {}; decision {id}): {}.",
            clock(d.ts),
            d.outcome,
            not_taken(&d.outcome),
            d.reason
        ));
    }
    if let Some(note) = &chain.flapping {
        out.push(format!("The arbiter found it flapping: {}.", note.reason));
    }
    let started = chain.commands.first();
    for c in chain.commands.iter().filter(|c| c.outcome != "executing") {
        out.push(format!(
            "At {} the actuator: {} ({}).",
            clock(c.ts),
            c.reason,
            c.outcome
        ));
    }
    match (&chain.result, d.outcome == Outcome::Scale.as_str()) {
        (Some(r), _) => {
            let took = started
                .map(|c| format!(" in {:.1} s", (r.ts - c.ts).max(0) as f64 / 1000.0))
                .unwrap_or_default();
            out.push(format!(
                "At {} the actuator applied it{took} (result {}): {}.",
                clock(r.ts),
                r.outcome,
                r.backend_response.as_deref().unwrap_or(&r.reason)
            ));
        }
        (None, true) if started.is_some() => out.push(
            "The actuator picked the command up and has written no result yet: it is in flight."
                .into(),
        ),
        (None, true) => out.push(
            "No actuator has picked the command up yet (is one running for this target?).".into(),
        ),
        (None, false) => {}
    }
    out
}

/// `explain TARGET [--decision ID]`.
pub async fn explain(
    client: &async_nats::Client,
    target: &str,
    decision: Option<&str>,
    since: OffsetDateTime,
    output: Output,
) -> anyhow::Result<()> {
    let filter = Filter {
        target: Some(target.to_string()),
        stage: None,
        outcome: None,
        since: Some(since),
        until: None,
    };
    let (records, _) = history(client, &filter, None).await?;
    let Some(chain) = chain(&records, target, decision) else {
        let what = match decision {
            Some(id) => format!("no decision {id} about target {target}"),
            None => format!("no decision about target {target}"),
        };
        return Err(Failure::NotFound(format!(
            "{what} in the audit stream since {}: check the name, or widen --since",
            format::when(ms(since))
        ))
        .into());
    };
    match output {
        Output::Json => print_json(&chain)?,
        Output::Table => println!("{}", format::records_table(&chain_records(&chain))),
        Output::Text => chain.sentences.iter().for_each(|s| println!("{s}")),
    }
    Ok(())
}

fn chain_records(chain: &Chain) -> Vec<AuditRecord> {
    let mut all: Vec<AuditRecord> = chain.triggers.clone();
    all.push(chain.decision.clone());
    all.extend(chain.flapping.clone());
    all.extend(chain.commands.iter().cloned());
    all.extend(chain.result.clone());
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: AuditKind, stage: Stage, outcome: &str, ts: i64) -> AuditRecord {
        AuditRecord::new(
            format!("a-{outcome}-{ts}"),
            ts,
            stage,
            "web",
            kind,
            outcome,
            format!("{outcome} reason"),
        )
    }

    #[test]
    fn times_are_rfc3339_now_or_a_duration_back() {
        let now = OffsetDateTime::parse("2026-12-01T12:00:00Z", &Rfc3339).unwrap();
        let cases = [
            ("now", Some("2026-12-01T12:00:00Z")),
            ("2h", Some("2026-12-01T10:00:00Z")),
            ("30m ago", Some("2026-12-01T11:30:00Z")),
            ("1d", Some("2026-11-30T12:00:00Z")),
            ("2026-12-01T09:15:00+01:00", Some("2026-12-01T08:15:00Z")),
            ("yesterday", None),
            ("2026-13-01T00:00:00Z", None),
        ];
        for (text, want) in cases {
            let got = parse_time("--since", text, now);
            match want {
                Some(want) => {
                    let want = OffsetDateTime::parse(want, &Rfc3339).unwrap();
                    assert_eq!(got.unwrap(), want, "{text}");
                }
                None => {
                    let error = got.unwrap_err().to_string();
                    assert!(
                        error.contains("--since") && error.contains("RFC 3339"),
                        "{error}"
                    );
                }
            }
        }
        assert!(check_target(Some("web")).is_ok());
        assert!(check_target(None).is_ok(), "every target");
        for bad in ["a.b", "*", "", "a b"] {
            assert!(check_target(Some(bad)).is_err(), "{bad:?}");
        }
        assert!(parse_stage("arbiter").is_ok());
        assert!(
            parse_stage("judge")
                .unwrap_err()
                .to_string()
                .contains("ingest")
        );
    }

    #[test]
    fn a_range_reads_both_flags_against_one_now_and_stats_wants_it_in_order() {
        let now = OffsetDateTime::parse("2026-12-01T12:00:00Z", &Rfc3339).unwrap();
        let at = |t: &str| OffsetDateTime::parse(t, &Rfc3339).unwrap();
        const EPOCH: &str = "1970-01-01T00:00:00Z";
        const NOW: &str = "2026-12-01T12:00:00Z";
        // --since, --until; then the range's ends and its closed form as
        // stats reads it (or the error closing it), or the parse error.
        type Ends<'a> = (Option<&'a str>, Option<&'a str>);
        type Closed<'a> = Result<(&'a str, &'a str), &'a str>;
        let cases: [(Option<&str>, Option<&str>, Result<(Ends, Closed), &str>); 8] = [
            (None, None, Ok(((None, None), Ok((EPOCH, NOW))))),
            (
                Some("1h"),
                Some("now"),
                Ok((
                    (Some("2026-12-01T11:00:00Z"), Some(NOW)),
                    Ok(("2026-12-01T11:00:00Z", NOW)),
                )),
            ),
            (
                Some("2h"),
                None,
                Ok((
                    (Some("2026-12-01T10:00:00Z"), None),
                    Ok(("2026-12-01T10:00:00Z", NOW)),
                )),
            ),
            (
                None,
                Some("2026-12-01T09:00:00Z"),
                Ok((
                    (None, Some("2026-12-01T09:00:00Z")),
                    Ok((EPOCH, "2026-12-01T09:00:00Z")),
                )),
            ),
            (Some("1h"), Some("2h"), Err("--since is after --until")),
            // An open end is now: a start in the future is after it.
            (
                Some("2027-01-01T00:00:00Z"),
                None,
                Ok((
                    (Some("2027-01-01T00:00:00Z"), None),
                    Err("--since is after --until"),
                )),
            ),
            // Both bad: --since is named, it is read first.
            (
                Some("yesterday"),
                Some("2026-13-01T00:00:00Z"),
                Err("--since \"yesterday\""),
            ),
            (Some("1h"), Some("later"), Err("--until \"later\"")),
        ];
        let bad_input = |error: Failure, why: &str| {
            assert!(matches!(error, Failure::BadInput(_)), "{error:?}");
            assert!(error.to_string().contains(why), "{error}");
        };
        for (since, until, want) in cases {
            let got = Range::parse(since, until, now);
            match want {
                Ok(((want_since, want_until), closed)) => {
                    let range = got.unwrap_or_else(|e| panic!("{since:?} {until:?}: {e}"));
                    assert_eq!(range.since, want_since.map(at), "{since:?}");
                    assert_eq!(range.until, want_until.map(at), "{until:?}");
                    match closed {
                        Ok((from, to)) => assert_eq!(
                            range.closed(now).unwrap_or_else(|e| panic!("{e}")),
                            (at(from), at(to)),
                            "{since:?} {until:?}"
                        ),
                        Err(why) => bad_input(range.closed(now).unwrap_err(), why),
                    }
                }
                Err(why) => bad_input(got.unwrap_err(), why),
            }
        }
    }

    #[test]
    fn a_chain_joins_trigger_decision_command_and_result_by_id() {
        let mut trigger = record(AuditKind::Trigger, Stage::Evaluator, "fired", 1_000);
        trigger.trigger_id = Some("t-1".into());
        trigger.rule = Some("web.scale_up".into());
        let mut decision = record(AuditKind::Decision, Stage::Arbiter, "scale", 1_100);
        decision.trigger_id = Some("t-1".into());
        decision.decision_id = Some("d-1".into());
        decision.from = Some(4);
        decision.to = Some(6);
        let mut executing = record(AuditKind::Command, Stage::Actuator, "executing", 2_000);
        executing.decision_id = Some("d-1".into());
        let mut result = record(AuditKind::Result, Stage::Actuator, "succeeded", 3_200);
        result.decision_id = Some("d-1".into());
        result.backend_response = Some("ECS desiredCount 6".into());
        let mut later = record(AuditKind::Decision, Stage::Arbiter, "cooldown", 5_000);
        later.trigger_id = Some("t-2".into());
        later.decision_id = Some("d-2".into());
        let records = vec![trigger, decision, executing, result, later];

        let newest = chain(&records, "web", None).unwrap();
        assert_eq!(newest.decision.outcome, "cooldown");
        assert!(newest.result.is_none());
        let text = newest.sentences.join(" ");
        assert!(
            text.contains("did not act (cooldown: the direction is cooling down"),
            "{text}"
        );
        assert!(
            text.contains("Trigger t-2 has no evaluator record"),
            "{text}"
        );

        let acted = chain(&records, "web", Some("d-1")).unwrap();
        assert_eq!(acted.triggers.len(), 1);
        assert_eq!(acted.commands.len(), 1);
        let text = acted.sentences.join(" ");
        for want in [
            "the evaluator saw fired reason (rule web.scale_up) -> trigger t-1",
            "the arbiter decided scale 4 -> 6 (decision d-1)",
            "applied it in 1.2 s (result succeeded): ECS desiredCount 6",
        ] {
            assert!(text.contains(want), "{want}: {text}");
        }
        assert!(chain(&records, "web", Some("d-9")).is_none());
        assert!(chain(&[], "web", None).is_none());
    }
}
