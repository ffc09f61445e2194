//! Alerts as scaling inputs: the Alertmanager webhook payload (version 4),
//! the policy's `alert_rules` (an `alertname` plus label matchers written as
//! Alertmanager writes them), and the routing of each alert of a payload to
//! one [`Trigger`] per matching rule. Pure: ingest does the HTTP and NATS.
//!
//! Matchers follow Alertmanager's syntax (`name="value"`, `name!="value"`,
//! `name=~"regex"`, `name!~"regex"`; the value quoted or bare); a regex is
//! anchored at both ends as Alertmanager anchors it (`^(?:regex)$`) and
//! compiled with the `regex` crate, the RE2 dialect Alertmanager's Go
//! regexps use. A label that is absent reads as the empty string, again as
//! in Alertmanager.
//!
//! Ids: a trigger's id (its `Nats-Msg-Id`) is derived from the alert's
//! fingerprint, `startsAt`, status and the rule, so the repeats of one
//! notification, and the copies the members of an Alertmanager HA pair
//! each send, are one trigger in JetStream whichever ingest replica takes
//! them.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ids;
use crate::wire::{
    AlertRef, AlertStatus, Direction, RuleFiring, ScaleAction, Trigger, TriggerSource, Version,
};

/// The label that names an alert.
pub const ALERTNAME: &str = "alertname";

/// A matcher's operator, as Alertmanager writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchOp {
    /// `=`: the label equals the value.
    #[serde(rename = "=")]
    Equal,
    /// `!=`: the label differs from the value.
    #[serde(rename = "!=")]
    NotEqual,
    /// `=~`: the label matches the (anchored) regex.
    #[serde(rename = "=~")]
    Regex,
    /// `!~`: the label does not match the (anchored) regex.
    #[serde(rename = "!~")]
    NotRegex,
}

impl MatchOp {
    /// As written.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

/// One label matcher of an alert rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Operator.
    pub op: MatchOp,
    /// Value, or the regex for `=~` and `!~`.
    pub value: String,
    /// The anchored regex, compiled once (for `=~` and `!~`); rebuilt when
    /// the policy is read back from its serialised form.
    #[serde(skip)]
    regex: Option<Arc<regex::Regex>>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, self.op, &self.value) == (&other.name, other.op, &other.value)
    }
}

impl Matcher {
    /// A matcher; the regex of `=~` and `!~` is compiled (anchored) here.
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Self, String> {
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(Arc::new(anchored(value)?)),
            MatchOp::Equal | MatchOp::NotEqual => None,
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value: value.to_string(),
            regex,
        })
    }

    /// Whether `labels` satisfy this matcher (an absent label is "").
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.name).map_or("", String::as_str);
        let regex_match = |v: &str| match &self.regex {
            Some(re) => re.is_match(v),
            // Read back without its compiled form: compile now (it was
            // valid when the policy was validated).
            None => anchored(&self.value).is_ok_and(|re| re.is_match(v)),
        };
        match self.op {
            MatchOp::Equal => value == self.value,
            MatchOp::NotEqual => value != self.value,
            MatchOp::Regex => regex_match(value),
            MatchOp::NotRegex => !regex_match(value),
        }
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.as_str(), self.value)
    }
}

fn anchored(pattern: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
        format!(
            "not a valid regex {pattern:?}: {}",
            one_line(&e.to_string())
        )
    })
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Parses one matcher as Alertmanager writes it: `severity="critical"`,
/// `env!=dev`, `service=~"api|web"`, `team!~"ops.*"`.
pub fn parse_matcher(text: &str) -> Result<Matcher, String> {
    let text = text.trim();
    let name_end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    let (name, rest) = text.split_at(name_end);
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!(
            "expected a label name first, as in severity=\"critical\", found {text:?}"
        ));
    }
    let rest = rest.trim_start();
    let (op, value) = [
        ("=~", MatchOp::Regex),
        ("!~", MatchOp::NotRegex),
        ("!=", MatchOp::NotEqual),
        ("=", MatchOp::Equal),
    ]
    .into_iter()
    .find_map(|(token, op)| rest.strip_prefix(token).map(|v| (op, v)))
    .filter(|(_, v)| !v.starts_with(['=', '~']))
    .ok_or_else(|| {
        let found: String = rest
            .chars()
            .take_while(|c| !c.is_alphanumeric() && *c != '"')
            .collect();
        format!(
            "unknown matcher operator {:?} in {text:?}; expected one of =, !=, =~, !~",
            found.trim()
        )
    })?;
    let value = unquote(value.trim()).map_err(|why| format!("{why} in {text:?}"))?;
    Matcher::new(name, op, &value)
}

/// A bare value as is; a quoted one with `\"`, `\\` and `\n` unescaped.
fn unquote(value: &str) -> Result<String, String> {
    let Some(inner) = value.strip_prefix('"') else {
        if value.contains('"') {
            return Err("a value with a quote must be quoted as a whole".into());
        }
        return Ok(value.to_string());
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                return if chars.as_str().trim().is_empty() {
                    Ok(out)
                } else {
                    Err("text after the closing quote".into())
                };
            }
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some(c @ ('"' | '\\')) => out.push(c),
                // Go's strconv.Unquote would refuse it; a regex escape such
                // as \d is kept for the regex.
                Some(c) => {
                    out.push('\\');
                    out.push(c);
                }
                None => break,
            },
            c => out.push(c),
        }
    }
    Err("the value's closing quote is missing".into())
}

/// What a firing alert holds until the same alert is resolved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhileFiring {
    /// Nothing: the resolved alert ends nothing.
    #[default]
    None,
    /// The target's scale-downs wait (all but a forced operator's).
    HoldScaleDowns,
    /// The target's scaling waits, both directions (all but a forced
    /// operator's and this alert's own action).
    Pause,
}

impl WhileFiring {
    /// As written in the policy.
    pub fn as_str(self) -> &'static str {
        match self {
            WhileFiring::None => "none",
            WhileFiring::HoldScaleDowns => "hold_scale_downs",
            WhileFiring::Pause => "pause",
        }
    }
}

/// One entry of the policy's `alert_rules`: alerts named `alertname` whose
/// labels satisfy every matcher ask for `action` on `target`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRule {
    /// The rule's name in `alert_rules`.
    pub name: String,
    /// The target it scales.
    pub target: String,
    /// The alert's `alertname` label.
    pub alertname: String,
    /// Further label matchers, all of which must hold.
    pub matchers: Vec<Matcher>,
    /// Up for add, down for remove, none for a `set to` (resolved against
    /// the capacity by the arbiter) or a hold alone.
    pub direction: Direction,
    /// What a firing alert asks for; none: only `while_firing`.
    pub action: Option<ScaleAction>,
    /// After this rule acts, its direction rests this long (wall clock).
    pub cooldown_secs: u64,
    /// Floor for its scale-downs.
    pub min: Option<u32>,
    /// Ceiling for its scale-ups.
    pub max: Option<u32>,
    /// What the firing alert holds until it is resolved.
    pub while_firing: WhileFiring,
}

impl AlertRule {
    /// Whether `alert` is one this rule takes.
    pub fn matches(&self, alert: &Alert) -> bool {
        alert.labels.get(ALERTNAME) == Some(&self.alertname)
            && self.matchers.iter().all(|m| m.matches(&alert.labels))
    }

    /// The rule as one line: `HighLatency{service="api"}`.
    pub fn selector(&self) -> String {
        let matchers: Vec<String> = self.matchers.iter().map(Matcher::to_string).collect();
        format!("{}{{{}}}", self.alertname, matchers.join(","))
    }
}

/// The webhook payload Alertmanager POSTs (`version: "4"`); fields this
/// bridge does not use are tolerated and ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// Payload version; this bridge takes "4".
    pub version: String,
    /// The group's key.
    #[serde(default)]
    pub group_key: String,
    /// Alerts left out because of the receiver's `max_alerts`.
    #[serde(default)]
    pub truncated_alerts: u64,
    /// `firing` or `resolved`, for the group.
    #[serde(default)]
    pub status: String,
    /// The receiver's name.
    #[serde(default)]
    pub receiver: String,
    /// The alerts of the notification.
    pub alerts: Vec<Alert>,
}

/// One alert of a notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// `firing` or `resolved`.
    pub status: String,
    /// Its labels (`alertname` among them).
    pub labels: BTreeMap<String, String>,
    /// Its annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339, when it started firing.
    pub starts_at: String,
    /// RFC 3339, when it ended (or will, unless renewed).
    #[serde(default)]
    pub ends_at: String,
    /// Where it came from.
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    /// Alertmanager's hash of its labels.
    pub fingerprint: String,
}

impl Alert {
    /// `firing` or `resolved`, as known to this version.
    pub fn state(&self) -> AlertStatus {
        AlertStatus::from_wire(&self.status)
    }

    /// Its `alertname`, or "" when it has none.
    pub fn name(&self) -> &str {
        self.labels.get(ALERTNAME).map_or("", String::as_str)
    }
}

/// Parses and checks a webhook body: JSON, version "4", every alert with a
/// known status, an `alertname`, a fingerprint and a `startsAt`. The error
/// is one line naming what is wrong.
pub fn parse_webhook(body: &[u8]) -> Result<Webhook, String> {
    let webhook: Webhook = serde_json::from_slice(body)
        .map_err(|e| format!("not an Alertmanager webhook payload: {e}"))?;
    if webhook.version != "4" {
        return Err(format!(
            "webhook payload version {:?}; this bridge takes version \"4\" (Alertmanager 0.x)",
            webhook.version
        ));
    }
    for (i, alert) in webhook.alerts.iter().enumerate() {
        let missing = if !alert.state().is_known() {
            Some(format!(
                "status {:?}, expected \"firing\" or \"resolved\"",
                alert.status
            ))
        } else if alert.name().is_empty() {
            Some("no alertname label".to_string())
        } else if alert.fingerprint.is_empty() {
            Some("no fingerprint".to_string())
        } else if alert.starts_at.is_empty() {
            Some("no startsAt".to_string())
        } else {
            None
        };
        if let Some(why) = missing {
            return Err(format!("alerts[{i}]: {why}"));
        }
    }
    Ok(webhook)
}

/// The id of the trigger an alert makes through `rule`: the same for every
/// copy of one notification (repeats, the members of an HA pair).
pub fn trigger_id(alert: &Alert, rule: &str) -> String {
    ids::derive(
        "al",
        &[
            alert.fingerprint.as_bytes(),
            alert.starts_at.as_bytes(),
            alert.status.as_bytes(),
            rule.as_bytes(),
        ],
    )
}

/// A payload's alerts, routed: one trigger per matching (alert, rule), and
/// the alerts no rule takes.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed<'a> {
    /// The triggers to publish, in payload order.
    pub triggers: Vec<Trigger>,
    /// Alerts that matched no rule.
    pub unmatched: Vec<&'a Alert>,
}

/// Routes `webhook`'s alerts through `rules` (received at `now_ms`; the
/// policy's `revision` goes on each trigger).
pub fn route<'a>(
    rules: &[AlertRule],
    webhook: &'a Webhook,
    revision: &str,
    now_ms: i64,
) -> Routed<'a> {
    let mut routed = Routed {
        triggers: Vec::new(),
        unmatched: Vec::new(),
    };
    for alert in &webhook.alerts {
        let mut matched = false;
        for rule in rules.iter().filter(|r| r.matches(alert)) {
            matched = true;
            routed.triggers.push(trigger(rule, alert, revision, now_ms));
        }
        if !matched {
            routed.unmatched.push(alert);
        }
    }
    routed
}

fn trigger(rule: &AlertRule, alert: &Alert, revision: &str, now_ms: i64) -> Trigger {
    let status = alert.state();
    let labels: Vec<String> = alert
        .labels
        .iter()
        .filter(|(k, _)| k.as_str() != ALERTNAME)
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    let seen = format!(
        "alert {} {} ({}; fingerprint {}, since {})",
        alert.name(),
        status.as_str(),
        labels.join(", "),
        alert.fingerprint,
        alert.starts_at
    );
    let reason = match (&status, &rule.action) {
        (AlertStatus::Resolved, _) => format!(
            "{seen}: ends what rule {} held while it fired ({})",
            rule.name,
            rule.while_firing.as_str()
        ),
        (_, Some(action @ ScaleAction::EmergencyUp { .. })) => {
            format!("{seen}: rule {} asks {}", rule.name, action.describe())
        }
        (_, Some(action)) => format!("{seen}: rule {} asks to {}", rule.name, action.describe()),
        (_, None) => format!(
            "{seen}: rule {} holds {} while it fires",
            rule.name,
            rule.while_firing.as_str()
        ),
    };
    let (direction, action) = match (&status, &rule.action) {
        (AlertStatus::Firing, Some(action)) => (rule.direction.clone(), action.clone()),
        // A resolved alert, or a hold alone, asks for no capacity.
        _ => (Direction::None, ScaleAction::HoldScaleDowns),
    };
    Trigger {
        v: Version::CURRENT,
        id: trigger_id(alert, &rule.name),
        ts: now_ms,
        target: rule.target.clone(),
        source: TriggerSource::Alert,
        firings: vec![RuleFiring {
            rule: rule.name.clone(),
            direction,
            action,
            observed: None,
            threshold: None,
            condition: rule.selector(),
            held_secs: 0,
            reason,
        }],
        policy_revision: Some(revision.to_string()),
        alert: Some(AlertRef {
            status,
            alertname: alert.name().to_string(),
            fingerprint: alert.fingerprint.clone(),
            starts_at: alert.starts_at.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn table_of_matchers() {
        let l = labels(&[("severity", "critical"), ("service", "api-7")]);
        let cases: &[(&str, Result<bool, &str>)] = &[
            (r#"severity="critical""#, Ok(true)),
            ("severity=critical", Ok(true)),
            (r#"severity = "critical""#, Ok(true)),
            (r#"severity!="critical""#, Ok(false)),
            (r#"severity!="warning""#, Ok(true)),
            (r#"service=~"api-\d+""#, Ok(true)),
            // Anchored: a partial match is no match.
            (r#"service=~"api""#, Ok(false)),
            (r#"service!~"web.*""#, Ok(true)),
            (r#"service!~"api.*""#, Ok(false)),
            // An absent label reads as "".
            (r#"team="""#, Ok(true)),
            (r#"team=~".+""#, Ok(false)),
            (r#"team!="ops""#, Ok(true)),
            (
                r#"severity=="critical""#,
                Err("unknown matcher operator \"==\""),
            ),
            (
                r#"severity<"critical""#,
                Err("unknown matcher operator \"<\""),
            ),
            (r#"severity=~~"x""#, Err("unknown matcher operator")),
            (r#"="critical""#, Err("expected a label name first")),
            (r#"service=~"api(""#, Err("not a valid regex")),
            (r#"severity="critical"#, Err("closing quote is missing")),
        ];
        for (text, expected) in cases {
            match (parse_matcher(text), expected) {
                (Ok(m), Ok(hit)) => assert_eq!(m.matches(&l), *hit, "{text}"),
                (Err(e), Err(part)) => assert!(e.contains(part), "{text}: {e}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    fn rule(matchers: &[&str]) -> AlertRule {
        AlertRule {
            name: "latency".into(),
            target: "api".into(),
            alertname: "HighLatency".into(),
            matchers: matchers.iter().map(|m| parse_matcher(m).unwrap()).collect(),
            direction: Direction::Up,
            action: Some(ScaleAction::Add(2)),
            cooldown_secs: 60,
            min: None,
            max: None,
            while_firing: WhileFiring::HoldScaleDowns,
        }
    }

    fn payload(alerts: &str) -> Vec<u8> {
        format!(r#"{{"version":"4","status":"firing","receiver":"nova","groupKey":"g","alerts":[{alerts}],"extra":1}}"#)
            .into_bytes()
    }

    const FIRING: &str = r#"{"status":"firing","labels":{"alertname":"HighLatency","service":"api"},"annotations":{},"startsAt":"2026-12-01T10:00:00Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://p","fingerprint":"abc"}"#;

    #[test]
    fn routes_each_matching_alert_to_one_trigger_per_rule() {
        let rules = [rule(&[r#"service=~"api|web""#]), {
            let mut other = rule(&[r#"service="web""#]);
            other.name = "web".into();
            other
        }];
        let other = FIRING
            .replace("HighLatency", "DiskFull")
            .replace("abc", "def");
        let body = payload(&format!("{FIRING},{other}"));
        let webhook = parse_webhook(&body).unwrap();
        let routed = route(&rules, &webhook, "rev1", 1_000);
        assert_eq!(routed.triggers.len(), 1);
        assert_eq!(routed.unmatched.len(), 1);
        let t = &routed.triggers[0];
        assert_eq!(
            (t.target.as_str(), t.source.clone()),
            ("api", TriggerSource::Alert)
        );
        assert_eq!(t.firings[0].action, ScaleAction::Add(2));
        assert_eq!(t.policy_revision.as_deref(), Some("rev1"));
        // The same notification later (a repeat, the other member of an HA
        // pair) has the same id; its resolution another.
        let again = route(&rules, &webhook, "rev1", 9_000);
        assert_eq!(again.triggers[0].id, t.id);
        let resolved = parse_webhook(&payload(
            &FIRING.replace(r#""status":"firing""#, r#""status":"resolved""#),
        ))
        .unwrap();
        let r = route(&rules, &resolved, "rev1", 9_000);
        assert_ne!(r.triggers[0].id, t.id);
        assert_eq!(r.triggers[0].firings[0].direction, Direction::None);
        assert_eq!(
            r.triggers[0].alert.as_ref().map(|a| a.status.clone()),
            Some(AlertStatus::Resolved)
        );
    }

    #[test]
    fn table_of_bad_payloads() {
        let cases: &[(Vec<u8>, &str)] = &[
            (b"not json".to_vec(), "not an Alertmanager webhook payload"),
            (br#"{"version":"3","alerts":[]}"#.to_vec(), "version \"3\""),
            (br#"{"version":"4"}"#.to_vec(), "missing field `alerts`"),
            (
                payload(&FIRING.replace("firing", "pending")),
                "alerts[0]: status \"pending\"",
            ),
            (
                payload(&FIRING.replace(r#""fingerprint":"abc""#, r#""fingerprint":"""#)),
                "alerts[0]: no fingerprint",
            ),
            (
                payload(&FIRING.replace("alertname", "name")),
                "alerts[0]: no alertname",
            ),
        ];
        for (body, part) in cases {
            let error = parse_webhook(body).unwrap_err();
            assert!(error.contains(part), "{error}");
        }
        assert!(parse_webhook(&payload(FIRING)).is_ok());
    }
}
