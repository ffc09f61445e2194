//! Subject names. Every subject the system uses is built here, so a typo
//! cannot split the pipeline in two.

/// Prefix of every NovaCron subject.
pub const ROOT: &str = "nova";

/// Raw metric samples from publishers: `nova.metrics.<target>.<metric>`.
pub fn metrics(target: &str, metric: &str) -> String {
    format!("nova.metrics.{target}.{metric}")
}
/// Wildcard for all raw metric subjects.
pub const METRICS_ALL: &str = "nova.metrics.>";

/// Validated, normalised samples for one target: `nova.samples.<target>`.
pub fn samples(target: &str) -> String {
    format!("nova.samples.{target}")
}
/// Wildcard for all normalised sample subjects.
pub const SAMPLES_ALL: &str = "nova.samples.*";

/// Rule firings and operator intents for one target: `nova.triggers.<target>`.
pub fn triggers(target: &str) -> String {
    format!("nova.triggers.{target}")
}
/// Wildcard for all trigger subjects.
pub const TRIGGERS_ALL: &str = "nova.triggers.*";

/// Absolute capacity commands for one target: `nova.commands.<target>`.
pub fn commands(target: &str) -> String {
    format!("nova.commands.{target}")
}
/// Wildcard for all command subjects.
pub const COMMANDS_ALL: &str = "nova.commands.*";

/// Actuation results for one target: `nova.results.<target>`.
pub fn results(target: &str) -> String {
    format!("nova.results.{target}")
}
/// Wildcard for all result subjects.
pub const RESULTS_ALL: &str = "nova.results.*";

/// Audit records of one stage about one target: `nova.audit.<stage>.<target>`.
pub fn audit(stage: &str, target: &str) -> String {
    format!("nova.audit.{stage}.{target}")
}
/// Wildcard for every audit record.
pub const AUDIT_ALL: &str = "nova.audit.>";

/// Dead letters of one stage: `nova.dead.<stage>`.
pub fn dead(stage: &str) -> String {
    format!("nova.dead.{stage}")
}
/// Wildcard for every dead letter.
pub const DEAD_ALL: &str = "nova.dead.*";

/// Control requests: `nova.ctl.<verb>`.
pub fn control(verb: &str) -> String {
    format!("nova.ctl.{verb}")
}

/// The arbiter's control plane, every verb on one subject: the request
/// names its `verb` (`nova_shared::wire::ControlRequest`).
pub const ARBITER_CONTROL: &str = "nova.ctl.arbiter";

/// Drain requests of `emergency down` to a target's workers:
/// `nova.drain.<target>` (payload `nova_shared::wire::DrainRequest`).
pub fn drain(target: &str) -> String {
    format!("nova.drain.{target}")
}

/// The evaluator's load readings of one target, for `emergency down`:
/// `nova.ctl.load.<target>`, answered by the evaluator replicas that own
/// the target (`nova_shared::wire::LoadReply`).
pub fn load(target: &str) -> String {
    format!("nova.ctl.load.{target}")
}
/// Wildcard of [`load`], what evaluators subscribe to.
pub const LOAD_ALL: &str = "nova.ctl.load.*";

/// What a metrics subject names: the target and, when present, the metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSubject<'a> {
    /// Target the samples belong to.
    pub target: &'a str,
    /// Metric name from the subject, if the subject has one.
    pub metric: Option<&'a str>,
}

/// Parses `nova.metrics.<target>[.<metric>]`.
pub fn parse_metrics(subject: &str) -> Option<MetricsSubject<'_>> {
    let rest = subject.strip_prefix("nova.metrics.")?;
    let mut parts = rest.splitn(2, '.');
    let target = parts.next().filter(|t| !t.is_empty())?;
    let metric = parts.next().filter(|m| !m.is_empty());
    Some(MetricsSubject { target, metric })
}

/// The last token of a subject (the target in `nova.samples.<target>` and friends).
pub fn last_token(subject: &str) -> &str {
    subject.rsplit('.').next().unwrap_or(subject)
}

/// True when `name` can be used as one subject token (target, metric, stage).
pub fn is_valid_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_metrics_subjects() {
        let cases = [
            ("nova.metrics.api.cpu", Some(("api", Some("cpu")))),
            ("nova.metrics.api", Some(("api", None))),
            ("nova.metrics.api.", Some(("api", None))),
            ("nova.metrics.", None),
            ("nova.samples.api", None),
        ];
        for (subject, want) in cases {
            let got = parse_metrics(subject).map(|s| (s.target, s.metric));
            assert_eq!(got, want, "{subject}");
        }
    }

    #[test]
    fn validates_tokens() {
        for (name, ok) in [
            ("api", true),
            ("web-1_a", true),
            ("", false),
            ("a.b", false),
            ("a*", false),
            ("a b", false),
        ] {
            assert_eq!(is_valid_token(name), ok, "{name}");
        }
    }
}
