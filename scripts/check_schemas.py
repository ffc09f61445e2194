#!/usr/bin/env python3
"""Checks documents against NovaCron's JSON Schemas (draft 2020-12).

    check_schemas.py SCHEMA_FILE [FILE...]   validate each FILE against SCHEMA_FILE:
                                             a JSON document, or JSON Lines (one
                                             document per line), or YAML (.yaml/.yml,
                                             needs PyYAML); no FILE or "-" reads stdin
    check_schemas.py --self-test             every schema in schemas/ is a valid,
                                             documented draft 2020-12 schema that
                                             accepts its examples (also with unknown
                                             fields), rejects known-bad documents,
                                             and the policies in deploy/policies/
                                             pass policy.schema.json

Prints every error as `file[:line]: $.json.path: message`, then a summary
line. Exits 0 when everything is valid, 1 when anything is not, 2 on a usage
error. Needs the jsonschema package (scripts/requirements-tools.txt; it is in
the project's .venv).
"""

import copy
import json
import pathlib
import re
import sys

try:
    import jsonschema
    from jsonschema.exceptions import best_match
except ImportError:  # pragma: no cover - depends on the interpreter
    sys.exit("check_schemas.py needs the jsonschema package: use .venv/bin/python "
             "or pip install -r scripts/requirements-tools.txt")

try:
    import yaml
except ImportError:  # PyYAML is optional: only YAML input needs it
    yaml = None

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "schemas"
POLICIES = ROOT / "deploy" / "policies"
ID_BASE = "https://novacron.dev/schemas/"
DRAFT = "https://json-schema.org/draft/2020-12/schema"
Validator = jsonschema.Draft202012Validator
MAX_MESSAGE = 300


class ParseError(Exception):
    """A document that could not be read at all."""


# ---------------------------------------------------------------- reading


def _no_constants(name):
    # Python's json reads NaN and Infinity; JSON (and NovaCron's decoders) do not.
    raise ValueError(f"{name} is not valid JSON")


def _loads(text: str):
    return json.loads(text, parse_constant=_no_constants)


def documents(name: str, text: str, yaml_hint: bool = False):
    """(where, document or ParseError) for every document in `text`."""
    if yaml_hint:
        if yaml is None:
            return [(name, ParseError("PyYAML is not installed, cannot read YAML"))]
        try:
            docs = [d for d in yaml.safe_load_all(text)]
        except yaml.YAMLError as e:
            return [(name, ParseError(f"not valid YAML: {e}"))]
        if not docs:
            return [(name, ParseError("empty: no YAML document"))]
        if len(docs) == 1:
            return [(name, docs[0])]
        return [(f"{name} (document {i})", d) for i, d in enumerate(docs, 1)]
    if not text.strip():
        return [(name, ParseError("empty: no JSON document"))]
    try:
        return [(name, _loads(text))]
    except ValueError as whole:
        lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        try:
            _loads(lines[0][1])
        except ValueError:
            # Not JSON Lines either: report the whole-file error (it has line and column).
            return [(name, ParseError(f"not valid JSON: {whole}"))]
        out = []
        for number, line in lines:
            where = f"{name}:{number}"
            try:
                out.append((where, _loads(line)))
            except ValueError as e:
                out.append((where, ParseError(f"not valid JSON: {e}")))
        return out


def read_file(arg: str):
    if arg == "-":
        return documents("<stdin>", sys.stdin.read())
    path = pathlib.Path(arg)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return [(arg, ParseError(f"cannot read: {e}"))]
    return documents(arg, text, yaml_hint=path.suffix.lower() in (".yaml", ".yml"))


# ---------------------------------------------------------------- checking


def _short(message: str) -> str:
    """Long messages (they quote the instance, or a pattern) lose their middle."""
    if len(message) <= MAX_MESSAGE:
        return message
    half = MAX_MESSAGE // 2
    return f"{message[:half]} ... {message[-half:]}"


def _closest(error):
    """Of a failed oneOf/anyOf, the alternative's error most worth showing:
    not a bare type mismatch when another alternative got further."""
    specific = [c for c in error.context if not (c.validator == "type" and not c.relative_path)]
    return best_match(specific or error.context)


def errors(validator, where: str, document) -> list:
    """Every schema error of one document, one line each."""
    if isinstance(document, ParseError):
        return [f"{where}: {document}"]
    out = []
    for e in sorted(validator.iter_errors(document), key=lambda e: (list(map(str, e.absolute_path)), e.message)):
        line = f"{where}: {e.json_path}: {_short(e.message)}"
        if e.context:  # oneOf / anyOf: say which alternative came closest and why it failed
            closest = _closest(e)
            line += f" (closest: {closest.json_path}: {_short(closest.message)})"
        out.append(line)
    return out


def load_schema(path: pathlib.Path, label: str = ""):
    """(validator, None) or (None, problem)."""
    label = label or str(path)
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return None, f"{label}: cannot read schema: {e}"
    try:
        Validator.check_schema(schema)
    except jsonschema.SchemaError as e:
        return None, f"{label}: not a valid draft 2020-12 schema: {e.json_path}: {_short(e.message)}"
    return Validator(schema), None


def check_files(schema_arg: str, files: list) -> int:
    validator, problem = load_schema(pathlib.Path(schema_arg))
    if problem:
        print(problem)
        return 1
    docs = [d for f in (files or ["-"]) for d in read_file(f)]
    problems = [p for where, doc in docs for p in errors(validator, where, doc)]
    for p in problems:
        print(p)
    bad = sum(1 for where, doc in docs if errors(validator, where, doc))
    print(f"check_schemas: {len(docs)} document(s) in {len(files) or 1} file(s) against {schema_arg}: "
          + ("ok" if not problems else f"{bad} invalid, {len(problems)} error(s)"))
    return 1 if problems else 0


# ---------------------------------------------------------------- self-test

EXPECTED = [
    "policy", "metric-sample", "sample-batch", "trigger", "command", "action-result",
    "audit-record", "dead-letter", "capacity-record", "audit-query", "control-request",
    "control-reply", "audit-stats-request", "audit-stats",
]

UNKNOWN = {"x_future_field": {"nested": [1, "two", None]}}
# Values whose objects are closed or typed maps, where an unknown key would be wrong.
CLOSED_KEYS = {"action", "labels", "payload", "not_taken"}


def with_unknown_fields(doc):
    """`doc` with an unknown field added to every open object in it."""
    if isinstance(doc, list):
        return [with_unknown_fields(d) for d in doc]
    if isinstance(doc, dict):
        out = {k: (v if k in CLOSED_KEYS else with_unknown_fields(v)) for k, v in doc.items()}
        out.update(copy.deepcopy(UNKNOWN))
        return out
    return doc


def walk(schema, path="#"):
    """(path, subschema) for every subschema, skipping data keywords."""
    if isinstance(schema, dict):
        yield path, schema
        for key, value in schema.items():
            if key in ("examples", "enum", "const", "default"):
                continue
            if key in ("properties", "$defs", "patternProperties", "dependentSchemas") and isinstance(value, dict):
                for name, sub in value.items():
                    yield from walk(sub, f"{path}/{key}/{name}")
            else:
                yield from walk(value, f"{path}/{key}")
    elif isinstance(schema, list):
        for i, sub in enumerate(schema):
            yield from walk(sub, f"{path}/{i}")


SAMPLE = {"value": "70%", "ts": 1764370000000, "instance": "web-1"}
TRIGGER = {"id": "t-1", "ts": 1764370000000, "target": "api", "source": "rule",
           "firings": [{"rule": "cpu_based.scale_up", "direction": "up", "action": {"add": 2}}]}
COMMAND = {"decision_id": "d-1", "seq": 1, "ts": 1, "target": "t", "from": 1, "desired": 2, "reason": "r"}
RESULT = {"decision_id": "d-1", "seq": 1, "target": "t", "ts": 1, "status": "succeeded", "backend": "sim",
          "desired": 2, "response": "ok"}
AUDIT = {"id": "a-1", "ts": 1, "stage": "arbiter", "target": "t", "kind": "decision", "outcome": "scale", "reason": "r"}
DEAD = {"stage": "ingest", "subject": "nova.metrics.t.cpu", "reason": "r", "ts": 1, "payload": [1, 2, 255]}
CAPACITY = {"target": "t", "desired": 3, "observed_ms": 1, "backend": "sim"}
VERTICAL = {"rule": "instance_resize.cpu_intensive", "direction": "up", "action": "next_tier"}
FIGURES = {"target": "web", "actions": 3, "successes": 3, "failures": 0, "success_rate": 1.0, "scale_ups": 2,
           "scale_downs": 1, "capacity_moved": 5, "scaling_velocity_per_hour": 5.0, "flapping_episodes": 1,
           "reversals": 2, "flapping_notes": 0, "max": 5, "time_at_max_secs": 12.5, "not_taken": {"at_max": 1}}
STATS = {"from_ms": 1764366400000, "to_ms": 1764370000000, "flap_window_secs": 1800, "records": 14,
         "targets": [FIGURES]}
STATUS = {"target": "t", "min": 1, "max": 9, "paused_up": False, "paused_down": False, "dry_run": False,
          "up_cooldown_until": 0, "down_cooldown_until": 0,
          "capacity": {**CAPACITY, "tier": "c5.large"}}


def policy(up_condition="avg_cpu > 70% for 2 minutes", up_action="add 2 instances",
           down_action="remove 1 instance", cooldown=300, rule_extra=None, target_extra=None,
           backend=None, top_extra=None, target_name="web"):
    up = {"condition": up_condition, "action": up_action, "cooldown": cooldown, "max_instances": 10}
    up.update(rule_extra or {})
    target = {"rules": ["cpu_based"], "backend": {"sim": {"initial": 2}} if backend is None else backend}
    target.update(target_extra or {})
    doc = {"targets": {target_name: target},
           "horizontal_scaling_rules": {"cpu_based": {
               "scale_up": up,
               "scale_down": {"condition": "avg_cpu < 30% for 10 minutes", "action": down_action}}}}
    doc.update(top_extra or {})
    return doc


def tracking_policy(rule_extra=None, drop=(), behavior=None, top_extra=None):
    """A policy with one target tracking rule, cpu_target, bound to web."""
    rule = {"metric": "avg_cpu", "target": "60%"}
    rule.update(rule_extra or {})
    for key in drop:
        rule.pop(key, None)
    if behavior is not None:
        rule["behavior"] = behavior
    doc = {"targets": {"web": {"rules": ["cpu_target"], "max": 20, "backend": {"sim": {"initial": 2}}}},
           "target_tracking_rules": {"cpu_target": rule}}
    doc.update(top_extra or {})
    return doc


def rate(kind="pods", value=2, period=60, **extra):
    return {"type": kind, "value": value, "period": period, **extra}


def vertical_policy(rule_extra=None, drop=(), options=None, sim=None, bind="cpu_intensive", category=None):
    """A policy with one vertical rule, instance_resize.cpu_intensive, bound to compute."""
    rule = {"trigger": "cpu_credits < 20 for 5 minutes", "action": "upgrade to next CPU-optimized tier",
            "options": [{"from": "t3.medium", "to": "c5.large"}, {"from": "c5.large", "to": "c5.xlarge"}]
            if options is None else options}
    rule.update(rule_extra or {})
    for key in drop:
        rule.pop(key, None)
    backend = {"sim": {"initial": 4, "tier": "t3.medium"} if sim is None else sim}
    return {"targets": {"compute": {"rules": [bind], "max": 20, "backend": backend}},
            "vertical_scaling_rules": {"instance_resize": {"cpu_intensive": rule} if category is None else category}}


def with_(base, **changes):
    doc = copy.deepcopy(base)
    doc.update(changes)
    return doc


def without(base, key):
    return {k: v for k, v in base.items() if k != key}


# (schema, label, document, should it be valid?)
CASES = [
    # audit stats requests: closed, times in unix ms since 1970
    ("audit-stats-request", "empty: every target, the last hour", {}, True),
    ("audit-stats-request", "every field", {"target": "web", "since_ms": 0, "until_ms": 1764370000000,
                                            "flap_window_secs": 600}, True),
    ("audit-stats-request", "nulls read as absent", {"target": None, "since_ms": None}, True),
    ("audit-stats-request", "negative since_ms", {"since_ms": -1}, False),
    ("audit-stats-request", "negative until_ms", {"until_ms": -3600000}, False),
    ("audit-stats-request", "since_ms as text", {"since_ms": "1h"}, False),
    ("audit-stats-request", "fractional since_ms", {"since_ms": 1.5}, False),
    ("audit-stats-request", "negative flap window", {"flap_window_secs": -1}, False),
    ("audit-stats-request", "flap window as a duration", {"flap_window_secs": "30m"}, False),
    ("audit-stats-request", "unknown field (an audit query's limit)", {"target": "web", "limit": 10}, False),
    ("audit-stats-request", "misspelt field", {"sinse_ms": 0}, False),
    ("audit-stats-request", "target not a subject token", {"target": "web.a"}, False),
    ("audit-stats-request", "an array", [{}], False),
    # audit stats replies: the figures or {error}
    ("audit-stats", "figures", STATS, True),
    ("audit-stats", "no targets in the span", with_(STATS, records=0, targets=[]), True),
    ("audit-stats", "max unknown", with_(STATS, targets=[with_(FIGURES, max=None, time_at_max_secs=0)]), True),
    ("audit-stats", "an error", {"error": "not an audit stats request: unknown field `limit`"}, True),
    ("audit-stats", "missing targets", without(STATS, "targets"), False),
    ("audit-stats", "missing records", without(STATS, "records"), False),
    ("audit-stats", "negative from_ms", with_(STATS, from_ms=-1), False),
    ("audit-stats", "targets not a list", with_(STATS, targets=FIGURES), False),
    ("audit-stats", "target missing actions", with_(STATS, targets=[without(FIGURES, "actions")]), False),
    ("audit-stats", "success rate above 1", with_(STATS, targets=[with_(FIGURES, success_rate=1.5)]), False),
    ("audit-stats", "negative capacity moved", with_(STATS, targets=[with_(FIGURES, capacity_moved=-2)]), False),
    ("audit-stats", "negative time at max", with_(STATS, targets=[with_(FIGURES, time_at_max_secs=-1.0)]), False),
    ("audit-stats", "fractional reversals", with_(STATS, targets=[with_(FIGURES, reversals=1.5)]), False),
    ("audit-stats", "not_taken count as text", with_(STATS, targets=[with_(FIGURES, not_taken={"at_max": "1"})]), False),
    ("audit-stats", "error not a string", {"error": {"reason": "bad"}}, False),
    ("audit-stats", "empty map", {}, False),
    ("audit-stats", "a list of records (the nova.ctl.audit reply)", [AUDIT], False),
    # metric samples: what ingest accepts, and what it dead-letters
    ("metric-sample", "bare number", {"value": 0.7}, True),
    ("metric-sample", "unit after a space", {"value": " 70 % "}, True),
    ("metric-sample", "exponent and unit", {"value": "1e3ms", "metric": "p99_latency"}, True),
    ("metric-sample", "float ts, nulls read as absent", {"value": 5, "ts": 1.7e12 + 0.5, "instance": None, "metric": None}, True),
    ("metric-sample", "empty array", [], True),
    ("metric-sample", "no value", {"metric": "cpu"}, False),
    ("metric-sample", "value not a quantity", {"value": "lots"}, False),
    ("metric-sample", "unit ingest does not know", {"value": "70 percent"}, False),
    ("metric-sample", "boolean value", {"value": True}, False),
    ("metric-sample", "ts as text", with_(SAMPLE, ts="yesterday"), False),
    ("metric-sample", "float ts out of range", with_(SAMPLE, ts=1.0e16), False),
    ("metric-sample", "metric not a subject token", with_(SAMPLE, metric="a.b"), False),
    ("metric-sample", "label value not a string", with_(SAMPLE, labels={"az": 1}), False),
    ("metric-sample", "one bad element in an array", [SAMPLE, {"value": "lots"}], False),
    # sample batches
    ("sample-batch", "canonical value is a number", {"target": "t", "samples": [{"metric": "cpu", "value": "0.7", "ts": 1}]}, False),
    ("sample-batch", "sample without ts", {"target": "t", "samples": [{"metric": "cpu", "value": 0.7}]}, False),
    ("sample-batch", "fractional ts", {"target": "t", "samples": [{"metric": "cpu", "value": 0.7, "ts": 1.5}]}, False),
    # triggers
    ("trigger", "set to 0", with_(TRIGGER, firings=[{"rule": "r", "direction": "down", "action": {"set": 0}}]), True),
    ("trigger", "action with two tags", with_(TRIGGER, firings=[{"rule": "r", "direction": "up", "action": {"add": 2, "set": 3}}]), False),
    ("trigger", "unknown action tag", with_(TRIGGER, firings=[{"rule": "r", "direction": "up", "action": {"grow": 2}}]), False),
    ("trigger", "action as text", with_(TRIGGER, firings=[{"rule": "r", "direction": "up", "action": "add 2"}]), False),
    ("trigger", "negative add", with_(TRIGGER, firings=[{"rule": "r", "direction": "up", "action": {"add": -1}}]), False),
    ("trigger", "no firings", with_(TRIGGER, firings=[]), False),
    ("trigger", "unknown direction", with_(TRIGGER, firings=[{"rule": "r", "direction": "sideways", "action": {"add": 1}}]), False),
    ("trigger", "unknown source", with_(TRIGGER, source="cron"), False),
    ("trigger", "target tracking firing", with_(TRIGGER, firings=[{"rule": "cpu_target", "direction": "up", "action": {"set": 15},
                                                              "condition": "avg_cpu at 60%", "held_secs": 0}]), True),
    ("trigger", "vertical firing", with_(TRIGGER, firings=[VERTICAL]), True),
    ("trigger", "two vertical firings", with_(TRIGGER, firings=[VERTICAL, with_(VERTICAL, rule="instance_resize.network_intensive")]), True),
    ("trigger", "next_tier in another case", with_(TRIGGER, firings=[with_(VERTICAL, action="NextTier")]), False),
    ("trigger", "next_tier as a map", with_(TRIGGER, firings=[with_(VERTICAL, action={"next_tier": 1})]), False),
    ("trigger", "operator promote", with_(TRIGGER, source="operator", firings=[{"rule": "operator.promote", "direction": "down", "action": {"promote": "db-replica-2"}}]), True),
    ("trigger", "promote without a replica", with_(TRIGGER, firings=[{"rule": "operator.promote", "direction": "down", "action": "promote"}]), False),
    ("trigger", "next_tier beside add", with_(TRIGGER, firings=[with_(VERTICAL, action={"next_tier": None, "add": 1})]), False),
    ("trigger", "alert's emergency up", with_(TRIGGER, source="alert", firings=[{"rule": "surge", "direction": "up", "action": {"emergency_up": {}}}]), True),
    ("trigger", "alert's emergency up by 3", with_(TRIGGER, source="alert", firings=[{"rule": "surge", "direction": "up", "action": {"emergency_up": {"by": 3}}}]), True),
    ("trigger", "emergency up by 0", with_(TRIGGER, source="alert", firings=[{"rule": "surge", "direction": "up", "action": {"emergency_up": {"by": 0}}}]), False),
    ("trigger", "emergency up with an unknown key", with_(TRIGGER, source="alert", firings=[{"rule": "surge", "direction": "up", "action": {"emergency_up": {"double": True}}}]), False),
    ("policy", "alert rule emergency up", policy(top_extra={"alert_rules": {"surge": {"target": "web", "alertname": "HighErrors", "action": "emergency up"}}}), True),
    ("policy", "alert rule emergency up to 12", policy(top_extra={"alert_rules": {"surge": {"target": "web", "alertname": "HighErrors", "action": "emergency up to 12"}}}), True),
    ("policy", "alert rule emergency up by 0", policy(top_extra={"alert_rules": {"surge": {"target": "web", "alertname": "HighErrors", "action": "emergency up by 0"}}}), False),
    ("policy", "alert rule vertical step", policy(top_extra={"alert_rules": {"bigger": {"target": "web", "alertname": "SlowQueries", "action": "upgrade to the next tier"}}}), True),
    ("policy", "alert rule upgraded, not a verb", policy(top_extra={"alert_rules": {"bigger": {"target": "web", "alertname": "SlowQueries", "action": "upgraded"}}}), False),
    ("policy", "alert rule emergency down", policy(top_extra={"alert_rules": {"surge": {"target": "web", "alertname": "HighErrors", "action": "emergency down"}}}), False),
    ("trigger", "vertical firing going down", with_(TRIGGER, firings=[with_(VERTICAL, direction="down")]), False),
    ("trigger", "vertical and horizontal firings together", with_(TRIGGER, firings=[VERTICAL, TRIGGER["firings"][0]]), False),
    # commands, results, capacity
    ("command", "negative desired", with_(COMMAND, desired=-2), False),
    ("command", "seq as text", with_(COMMAND, seq="7"), False),
    ("command", "no from", without(COMMAND, "from"), False),
    ("command", "desired beyond u32", with_(COMMAND, desired=2**32), False),
    ("command", "vertical command", with_(COMMAND, desired=1, tier="c5.xlarge"), True),
    ("command", "tier as a number", with_(COMMAND, tier=5), False),
    ("command", "empty tier", with_(COMMAND, tier=""), False),
    ("action-result", "unknown status", with_(RESULT, status="done"), False),
    ("action-result", "no response", without(RESULT, "response"), False),
    ("action-result", "vertical result", with_(RESULT, tier="c5.xlarge", status="failed"), True),
    ("action-result", "rolled_back result", with_(RESULT, status="rolled_back", **{"from": 5}), True),
    ("action-result", "misspelt rolled_back", with_(RESULT, status="rolled back"), False),
    ("action-result", "tier as a list", with_(RESULT, tier=["c5.xlarge"]), False),
    ("capacity-record", "fractional desired", with_(CAPACITY, desired=1.5), False),
    ("capacity-record", "no observed_ms", without(CAPACITY, "observed_ms"), False),
    ("capacity-record", "fleet with a tier", with_(CAPACITY, tier="m5.large"), True),
    ("capacity-record", "tier as a number", with_(CAPACITY, tier=5), False),
    ("capacity-record", "a gradual walk in flight", with_(CAPACITY, plan={"seq": 8, "step": 3, "of": 5, "to": 11, "from": 5, "desired": 15}, wanted_seq=9), True),
    ("capacity-record", "record before plans (no plan, no wanted_seq)", CAPACITY, True),
    ("capacity-record", "plan without its step count", with_(CAPACITY, plan=without({"seq": 8, "step": 3, "of": 5, "to": 11, "from": 5, "desired": 15}, "of")), False),
    ("capacity-record", "plan step as text", with_(CAPACITY, plan=with_({"seq": 8, "step": 3, "of": 5, "to": 11, "from": 5, "desired": 15}, step="3")), False),
    ("capacity-record", "negative wanted_seq", with_(CAPACITY, wanted_seq=-1), False),
    # audit records
    ("audit-record", "unknown stage", with_(AUDIT, stage="nowhere"), False),
    ("audit-record", "decision outcome on a trigger", with_(AUDIT, kind="trigger"), False),
    ("audit-record", "trigger outcome on a decision", with_(AUDIT, outcome="fired"), False),
    ("audit-record", "executing command", with_(AUDIT, stage="actuator", kind="command", outcome="executing"), True),
    ("audit-record", "retrying command", with_(AUDIT, stage="actuator", kind="command", outcome="retrying"), True),
    *[("audit-record", f"gradual walk's {o} record", with_(AUDIT, stage="actuator", kind="command", outcome=o,
        **{"from": 7, "to": 9}), True) for o in ["step", "validated", "paused", "rollback"]],
    ("audit-record", "rolled_back result", with_(AUDIT, stage="actuator", kind="result", outcome="rolled_back",
        observed=0.03, threshold=0.01, **{"from": 5, "to": 15}), True),
    ("audit-record", "step outcome on a result", with_(AUDIT, stage="actuator", kind="result", outcome="step"), False),
    ("audit-record", "rolled_back outcome on a command", with_(AUDIT, stage="actuator", kind="command", outcome="rolled_back"), False),
    ("audit-record", "misspelt rolled_back", with_(AUDIT, stage="actuator", kind="result", outcome="rolledback"), False),
    ("audit-record", "result with a decision outcome", with_(AUDIT, stage="actuator", kind="result"), False),
    ("audit-record", "no reason", without(AUDIT, "reason"), False),
    ("audit-record", "rate_limited decision", with_(AUDIT, outcome="rate_limited"), True),
    ("audit-record", "at_top_tier decision", with_(AUDIT, outcome="at_top_tier", **{"from": 4, "to": 4}), True),
    ("audit-record", "misspelt rate_limited", with_(AUDIT, outcome="rate_limit"), False),
    ("audit-record", "result with at_top_tier", with_(AUDIT, stage="actuator", kind="result", outcome="at_top_tier"), False),
    ("audit-record", "trigger with rate_limited", with_(AUDIT, stage="evaluator", kind="trigger", outcome="rate_limited"), False),
    # control replies: the capacity they embed
    ("control-reply", "capacity with a tier", {"ok": True, "message": "m", "targets": [STATUS]}, True),
    ("control-reply", "capacity tier as a number", {"ok": True, "message": "m", "targets": [
        with_(STATUS, capacity=with_(CAPACITY, tier=5))]}, False),
    # dead letters
    ("dead-letter", "payload as a string", with_(DEAD, payload="eyJ2YWx1ZSI6ICJsb3RzIn0="), True),
    ("dead-letter", "byte above 255", with_(DEAD, payload=[256]), False),
    ("dead-letter", "payload as a number", with_(DEAD, payload=5), False),
    ("dead-letter", "unknown stage", with_(DEAD, stage="elsewhere"), False),
    # audit queries
    ("audit-query", "nulls read as absent", {"target": None, "limit": None}, True),
    ("audit-query", "negative limit", {"limit": -1}, False),
    ("audit-query", "limit as text", {"limit": "ten"}, False),
    # control requests: what the arbiter reads, and what it refuses by name
    ("control-request", "status of one target", {"verb": "status", "target": "web"}, True),
    ("control-request", "resume without a verb (nova.ctl.resume)", {"target": "web"}, True),
    ("control-request", "scale without a verb (nova.ctl.scale)", {"target": "web", "desired": 3}, True),
    ("control-request", "unknown verb", {"verb": "drain", "target": "web"}, False),
    ("control-request", "pause without a target", {"verb": "pause"}, False),
    ("control-request", "direction none", {"verb": "pause", "target": "web", "direction": "none"}, False),
    ("control-request", "a field its verb does not take", {"verb": "status", "desired": 3}, False),
    ("control-request", "negative capacity", {"verb": "scale", "target": "web", "desired": -1}, False),
    ("control-request", "force as text", {"verb": "scale", "target": "web", "desired": 3, "force": "yes"}, False),
    ("control-request", "emergency up of all", {"verb": "emergency", "op": "up", "target": "all"}, True),
    ("control-request", "emergency down to 3", {"verb": "emergency", "op": "down", "target": "api", "to": 3, "reason": "incident 42"}, True),
    ("control-request", "emergency of an unknown op", {"verb": "emergency", "op": "sideways", "target": "web"}, False),
    ("control-request", "emergency without an op", {"verb": "emergency", "target": "web"}, False),
    ("control-request", "emergency up by a negative count", {"verb": "emergency", "op": "up", "target": "web", "by": -2}, False),
    ("control-request", "promote a replica", {"verb": "promote", "target": "db", "replica": "db-replica-2", "reason": "failover drill"}, True),
    ("control-request", "promote without a replica", {"verb": "promote", "target": "db"}, False),
    ("control-request", "promote of an empty replica name", {"verb": "promote", "target": "db", "replica": ""}, False),
    ("audit-query", "target as a number", {"target": 5}, False),
    # policies: the rule grammar of shared/src/policy/rule_text.rs
    *[("policy", f"condition {c!r}", policy(up_condition=c), True) for c in [
        "avg_cpu > 70% for 2 minutes", "avg_memory > 80% for 3 minutes",
        "requests_per_instance > 1000 for 1 minute", "p99_latency > 500ms for 2 minutes",
        "queue_depth > 1000 messages", "sum_queue_depth >= 10 for 30s", "avg_mem <= 0.4",
        "max_cpu>0.7", "queue_depth > 1e3 messages for 1.5 minutes", "avg_cpu > 70% for 0"]],
    *[("policy", f"condition {c!r}", policy(up_condition=c), False) for c in [
        "avg_cpu >> 70%", "avg_cpu 70%", "avg_cpu > seventy", "avg_cpu > 70% fr 2 minutes",
        "avg_cpu > 70% for 2 fortnights", "avg cpu > 70%", "> 70%", "avg_cpu > 70 %", ""]],
    *[("policy", f"action {a!r}", policy(up_action=a), True) for a in [
        "add 2 instances", "add 5 workers", "set to 20 instances", "set to 0", "  add 1   replica  "]],
    *[("policy", f"action {a!r}", policy(up_action=a), False) for a in [
        "add two instances", "add 0 instances", "add 2 potatoes", "double it", "add 2", "remove 1 instance"]],
    ("policy", "scale_down action 'add 1 instance'", policy(down_action="add 1 instance"), False),
    ("policy", "scale_down action 'remove -1 instance'", policy(down_action="remove -1 instance"), False),
    *[("policy", f"cooldown {d!r}", policy(cooldown=d), True) for d in [
        0, 300, "2 minutes", "1 minute", "90 seconds", "1 hour", "30s", "5m", "1.5 minutes", "0"]],
    *[("policy", f"cooldown {d!r}", policy(cooldown=d), False) for d in [
        "2 fortnights", "minutes", "soon", "5", -5, 1.5, True]],
    ("policy", "unknown top-level key", policy(top_extra={"rules": {}}), False),
    ("policy", "no targets", without(policy(), "targets"), False),
    ("policy", "empty targets", with_(policy(), targets={}), False),
    ("policy", "target name with a dot", policy(target_name="t.x"), False),
    ("policy", "misspelt target key", policy(target_extra={"mx": 9}), False),
    ("policy", "target bounds", policy(target_extra={"min": 2, "max": 20}), True),
    ("policy", "negative target max", policy(target_extra={"max": -1}), False),
    ("policy", "misspelt rule key", policy(rule_extra={"max_wrokers": 200}), False),
    ("policy", "two max bounds on a rule", policy(rule_extra={"max_workers": 200}), False),
    ("policy", "empty backend", policy(backend={}), False),
    ("policy", "two backends", policy(backend={"sim": {"initial": 1}, "ecs": {"region": "r", "cluster": "c", "service": "s"}}), False),
    ("policy", "ecs backend", policy(backend={"ecs": {"region": "us-east-1", "cluster": "c", "service": "s", "endpoint_url": "http://127.0.0.1:5000"}}), True),
    ("policy", "ecs without cluster", policy(backend={"ecs": {"region": "r", "service": "s"}}), False),
    ("policy", "ecs with empty region", policy(backend={"ecs": {"region": " ", "cluster": "c", "service": "s"}}), False),
    ("policy", "rds_replicas backend", policy(backend={"rds_replicas": {"region": "us-east-1", "primary": "orders-db", "endpoint_url": "http://127.0.0.1:5000", "instance_class": "db.r6g.large", "drain_secs": "2 minutes"}}), True),
    ("policy", "rds_replicas without primary", policy(backend={"rds_replicas": {"region": "r"}}), False),
    ("policy", "rds_replicas misspelt key", policy(backend={"rds_replicas": {"region": "r", "primary": "db", "drain": 5}}), False),
    *[("policy", f"rds_replicas primary {p!r}", policy(backend={"rds_replicas": {"region": "r", "primary": p}}), False) for p in [
        "9db", "orders_db", "orders--db", "orders-", "a" * 53]],
    ("policy", "rds_replicas drain over 900 s", policy(backend={"rds_replicas": {"region": "r", "primary": "db", "drain_secs": 901}}), False),
    ("policy", "sim with load", policy(backend={"sim": {"initial": 2, "warmup_secs": "10s", "capacity_per_instance": 50.5,
                                                        "load": {"base_rps": 120, "amplitude_rps": 1000, "period_secs": "8 minutes"}}}), True),
    ("policy", "sim load without period", policy(backend={"sim": {"initial": 2, "load": {"base_rps": 1, "amplitude_rps": 1}}}), False),
    ("policy", "sim capacity_per_instance 0", policy(backend={"sim": {"initial": 2, "capacity_per_instance": 0}}), False),
    ("policy", "sim without initial", policy(backend={"sim": {"warmup_secs": 10}}), False),
    ("policy", "metric unit", policy(top_extra={"metrics": {"cpu": {"unit": "ratio"}}}), True),
    ("policy", "unknown metric unit", policy(top_extra={"metrics": {"cpu": {"unit": "furlongs"}}}), False),
    ("policy", "evaluation settings", policy(top_extra={"evaluation": {"staleness_secs": "1 minute", "refire_secs": 10}}), True),
    ("policy", "evaluation staleness 'soon'", policy(top_extra={"evaluation": {"staleness_secs": "soon"}}), False),
    ("policy", "unknown evaluation key", policy(top_extra={"evaluation": {"stale": 5}}), False),
    ("policy", "empty rule group", policy(top_extra={"horizontal_scaling_rules": {"g": {}}}), False),
    # gradual scaling (runbook section 2)
    ("policy", "queue_depth, one consumer", policy(target_extra={"queue_depth": {"stream": "JOBS", "consumer": "workers"}}), True),
    ("policy", "queue_depth, a list", policy(target_extra={"queue_depth": [
        {"stream": "A", "consumer": "a", "poll_every": "5s"},
        {"stream": "B", "consumer": "b", "server_url": "nats://u:p@q:4222", "poll_every": 30}]}), True),
    ("policy", "queue_depth without consumer", policy(target_extra={"queue_depth": {"stream": "JOBS"}}), False),
    ("policy", "queue_depth, a dotted stream", policy(target_extra={"queue_depth": {"stream": "a.b", "consumer": "c"}}), False),
    ("policy", "queue_depth, an unknown key", policy(target_extra={"queue_depth": {"stream": "A", "consumer": "a", "every": 3}}), False),
    ("policy", "queue_depth, an http url", policy(target_extra={"queue_depth": {"stream": "A", "consumer": "a", "server_url": "http://x"}}), False),
    ("policy", "gradual, step only", policy(target_extra={"gradual": {"step": 2}}), True),
    ("policy", "gradual, every field", policy(target_extra={"gradual": {"step": 2, "delay_secs": "30s",
        "health_check": {"url": "https://api.example/health", "expect_status": 204, "timeout_secs": 3},
        "gates": {"error_rate": "1%", "p99_latency": "500ms", "avg_cpu": "85 %", "queue_depth": 1000}}}), True),
    ("policy", "gradual, default gates", policy(target_extra={"gradual": {"step": 1, "gates": "default"}}), True),
    ("policy", "gradual without step", policy(target_extra={"gradual": {"delay_secs": 30}}), False),
    *[("policy", f"gradual step {v!r}", policy(target_extra={"gradual": {"step": v}}), False) for v in [0, -1, 1.5, "2"]],
    ("policy", "gradual misspelt key", policy(target_extra={"gradual": {"step": 2, "dealy_secs": 3}}), False),
    ("policy", "gradual delay 'soon'", policy(target_extra={"gradual": {"step": 2, "delay_secs": "soon"}}), False),
    ("policy", "gradual health check without url", policy(target_extra={"gradual": {"step": 2, "health_check": {}}}), False),
    ("policy", "gradual health check ftp url", policy(target_extra={"gradual": {"step": 2, "health_check": {"url": "ftp://x"}}}), False),
    ("policy", "gradual health check status 42", policy(target_extra={"gradual": {"step": 2, "health_check": {"url": "http://x", "expect_status": 42}}}), False),
    ("policy", "gradual health check timeout 0", policy(target_extra={"gradual": {"step": 2, "health_check": {"url": "http://x", "timeout_secs": 0}}}), False),
    ("policy", "gradual gates 'all'", policy(target_extra={"gradual": {"step": 2, "gates": "all"}}), False),
    ("policy", "gradual gate threshold 'lots'", policy(target_extra={"gradual": {"step": 2, "gates": {"error_rate": "lots"}}}), False),
    ("policy", "gradual gate name with a dash", policy(target_extra={"gradual": {"step": 2, "gates": {"a-b": 1}}}), False),
    # target tracking rules (shared/src/policy/load/kinds.rs)
    ("policy", "tracking rule, defaults", tracking_policy(), True),
    *[("policy", f"tracking target {v!r}", tracking_policy({"target": v}), True) for v in [
        "60%", " 60 % ", "+60%", "500ms", "0.5s", 0.6, 1000, "1e3", ".5"]],
    *[("policy", f"tracking target {v!r}", tracking_policy({"target": v}), False) for v in [
        "0%", "0", 0, -5, "-60%", "sixty", "60 percent", "60%%", True, None]],
    *[("policy", f"tracking metric {m!r}", tracking_policy({"metric": m}), True) for m in [
        "avg_cpu", "cpu", "max_p99_latency", " sum_queue_depth "]],
    *[("policy", f"tracking metric {m!r}", tracking_policy({"metric": m}), False) for m in [
        "avg cpu", "", "cpu.total", 5]],
    ("policy", "tracking without target", tracking_policy(drop=["target"]), False),
    ("policy", "tracking without metric", tracking_policy(drop=["metric"]), False),
    *[("policy", f"tracking tolerance {t!r}", tracking_policy({"tolerance": t}), True) for t in [0, 0.05, 0.99]],
    *[("policy", f"tracking tolerance {t!r}", tracking_policy({"tolerance": t}), False) for t in [1, 1.5, -0.1, "10%"]],
    *[("policy", f"tracking interval {d!r}", tracking_policy({"interval": d}), True) for d in [1, 15, "30s", "1 minute"]],
    *[("policy", f"tracking interval {d!r}", tracking_policy({"interval": d}), False) for d in [0, "0", "0s", "0 minutes", "soon"]],
    ("policy", "tracking cooldown and bounds", tracking_policy({"cooldown": "2 minutes", "min_replicas": 2, "max_replicas": 30}), True),
    ("policy", "tracking with two max bounds", tracking_policy({"max_instances": 9, "max": 10}), False),
    ("policy", "misspelt tracking key", tracking_policy({"tolerence": 0.1}), False),
    ("policy", "tracking rules as a list", with_(tracking_policy(), target_tracking_rules=[{"metric": "avg_cpu"}]), False),
    ("policy", "tracking behavior, HPA spelling", tracking_policy(behavior={
        "scale_up": {"stabilization_window": 0, "select_policy": "Max", "policies": [rate("Percent", 100, 15), rate("Pods", 4, 15)]},
        "scale_down": {"stabilization_window": "5 minutes", "select_policy": "disabled", "policies": []}}), True),
    ("policy", "tracking behavior, one direction, one field", tracking_policy(behavior={"scale_down": {"select_policy": "min"}}), True),
    ("policy", "tracking behavior, period as a duration", tracking_policy(behavior={"scale_up": {"policies": [rate(period="1 minute")]}}), True),
    *[("policy", f"select_policy {v!r}", tracking_policy(behavior={"scale_down": {"select_policy": v}}), False) for v in [
        "most", "", " max", 1]],
    ("policy", "rate policy type 'nodes'", tracking_policy(behavior={"scale_up": {"policies": [rate("nodes")]}}), False),
    ("policy", "rate policy value 0", tracking_policy(behavior={"scale_up": {"policies": [rate(value=0)]}}), False),
    ("policy", "rate policy value 1.5", tracking_policy(behavior={"scale_up": {"policies": [rate(value=1.5)]}}), False),
    *[("policy", f"rate policy period {d!r}", tracking_policy(behavior={"scale_up": {"policies": [rate(period=d)]}}), False) for d in [
        0, "0s", -15, "soon"]],
    ("policy", "rate policy without period", tracking_policy(behavior={"scale_up": {"policies": [without(rate(), "period")]}}), False),
    ("policy", "rate policy with an unknown key", tracking_policy(behavior={"scale_up": {"policies": [rate(every=60)]}}), False),
    ("policy", "policies not a list", tracking_policy(behavior={"scale_up": {"policies": rate()}}), False),
    ("policy", "misspelt stabilization_window", tracking_policy(behavior={"scale_down": {"stabilisation_window": 120}}), False),
    ("policy", "stabilization_window 'soon'", tracking_policy(behavior={"scale_down": {"stabilization_window": "soon"}}), False),
    ("policy", "unknown behavior direction", tracking_policy(behavior={"scale_sideways": {}}), False),
    # vertical rules and the tiers they need
    ("policy", "vertical rule bound by its name", vertical_policy(), True),
    ("policy", "vertical rule bound as category.rule", vertical_policy(bind="instance_resize.cpu_intensive"), True),
    ("policy", "vertical rule without action, with cooldown", vertical_policy({"cooldown": "30 minutes"}, drop=["action"]), True),
    ("policy", "vertical trigger with a noun", vertical_policy({"trigger": "network_throughput > 80% capacity"}), True),
    ("policy", "vertical action 'Upgrade ...'", vertical_policy({"action": "  Upgrade to memory-optimized tier"}), True),
    ("policy", "empty vertical category", with_(policy(), vertical_scaling_rules={"instance_resize": {}}), True),
    ("policy", "vertical action 'downgrade ...'", vertical_policy({"action": "downgrade to next tier"}), False),
    ("policy", "vertical action 'add 1 instance'", vertical_policy({"action": "add 1 instance"}), False),
    ("policy", "vertical trigger 'cpu_credits << 20'", vertical_policy({"trigger": "cpu_credits << 20"}), False),
    ("policy", "vertical trigger with 'fr'", vertical_policy({"trigger": "cpu_credits < 20 fr 5 minutes"}), False),
    ("policy", "vertical without trigger", vertical_policy(drop=["trigger"]), False),
    ("policy", "vertical without options", vertical_policy(drop=["options"]), False),
    ("policy", "vertical with empty options", vertical_policy(options=[]), False),
    ("policy", "vertical option without to", vertical_policy(options=[{"from": "t3.medium"}]), False),
    ("policy", "vertical option with an empty tier", vertical_policy(options=[{"from": "t3.medium", "to": " "}]), False),
    ("policy", "vertical option with an unknown key", vertical_policy(options=[{"from": "t3.medium", "to": "c5.large", "via": "x"}]), False),
    ("policy", "vertical option tier as a fraction", vertical_policy(options=[{"from": "t3.medium", "to": 1.5}]), False),
    ("policy", "vertical option tier as a negative number", vertical_policy(options=[{"from": 100, "to": -5}]), False),
    ("policy", "connection pool ladder of values", {"targets": {"db": {"rules": ["pool"], "max": 5, "backend": {"rds_replicas": {"region": "us-east-1", "primary": "orders-db", "connection_pool": {"parameter_group": "novacron-params"}}}}}, "vertical_scaling_rules": {"database": {"pool": {"trigger": "db_connection_usage > 80% for 2 minutes", "action": "raise max_connections", "options": [{"from": 100, "to": 500}, {"from": 500, "to": 1000}]}}}}, True),
    ("policy", "replica set with a lag limit", {"targets": {"db": {"rules": ["g"], "max": 5, "backend": {"rds_replicas": {"region": "us-east-1", "primary": "orders-db", "max_replica_lag": "1000ms"}}}}, "horizontal_scaling_rules": {"g": {"scale_up": {"condition": "read_queue > 100", "action": "add 1 replica"}}}}, True),
    ("policy", "lag limit without a unit", {"targets": {"db": {"rules": ["g"], "max": 5, "backend": {"rds_replicas": {"region": "us-east-1", "primary": "orders-db", "max_replica_lag": "1000"}}}}, "horizontal_scaling_rules": {"g": {"scale_up": {"condition": "read_queue > 100", "action": "add 1 replica"}}}}, False),
    ("policy", "lag limit as a number", {"targets": {"db": {"rules": ["g"], "max": 5, "backend": {"rds_replicas": {"region": "us-east-1", "primary": "orders-db", "max_replica_lag": 1000}}}}, "horizontal_scaling_rules": {"g": {"scale_up": {"condition": "read_queue > 100", "action": "add 1 replica"}}}}, False),
    ("trigger", "replica lag hold", with_(TRIGGER, firings=[{"rule": "rds.max_replica_lag", "direction": "none", "action": "hold_scale_downs"}]), True),
    ("policy", "connection pool without its group", {"targets": {"db": {"rules": ["pool"], "max": 5, "backend": {"rds_replicas": {"region": "us-east-1", "primary": "orders-db", "connection_pool": {"parameter": "max_connections"}}}}}, "vertical_scaling_rules": {"database": {"pool": {"trigger": "db_connection_usage > 80%", "action": "raise max_connections", "options": [{"from": 100, "to": 500}]}}}}, False),
    ("policy", "connection pool applied later", {"targets": {"db": {"rules": ["pool"], "max": 5, "backend": {"rds_replicas": {"region": "us-east-1", "primary": "orders-db", "connection_pool": {"parameter_group": "g", "apply_method": "later"}}}}}, "vertical_scaling_rules": {"database": {"pool": {"trigger": "db_connection_usage > 80%", "action": "raise max_connections", "options": [{"from": 100, "to": 500}]}}}}, False),
    ("policy", "misspelt vertical key", vertical_policy({"optoins": []}), False),
    ("policy", "vertical cooldown 'soon'", vertical_policy({"cooldown": "soon"}), False),
    ("policy", "vertical category as a list", vertical_policy(category=[{"trigger": "cpu_credits < 20"}]), False),
    ("policy", "vertical rules as a list", with_(policy(), vertical_scaling_rules=["cpu_intensive"]), False),
    ("policy", "sim tier empty", vertical_policy(sim={"initial": 4, "tier": " "}), False),
    ("policy", "sim tier as a number", vertical_policy(sim={"initial": 4, "tier": 5}), False),
    ("policy", "sim tier without vertical rules", policy(backend={"sim": {"initial": 2, "tier": "m5.large"}}), True),
]


def self_test() -> tuple:
    problems, checks = [], 0
    validators = {}
    files = sorted(SCHEMAS.glob("*.schema.json"))
    missing = sorted(set(EXPECTED) - {f.name.removesuffix(".schema.json") for f in files})
    problems += [f"schemas/{m}.schema.json: missing" for m in missing]
    readme = (SCHEMAS / "README.md").read_text() if (SCHEMAS / "README.md").exists() else ""
    for path in files:
        name = path.name
        checks += 1
        validator, problem = load_schema(path, name)
        if problem:
            problems.append(problem)
            continue
        schema = validator.schema
        validators[name.removesuffix(".schema.json")] = validator
        if schema.get("$schema") != DRAFT:
            problems.append(f"{name}: $schema is not {DRAFT}")
        if schema.get("$id") != ID_BASE + name:
            problems.append(f"{name}: $id is not {ID_BASE + name}")
        for key in ("title", "description"):
            if not str(schema.get(key, "")).strip():
                problems.append(f"{name}: no {key}")
        if name not in readme:
            problems.append(f"{name}: not listed in schemas/README.md")
        for where, sub in walk(schema):
            for prop, subschema in (sub.get("properties") or {}).items():
                if not str(subschema.get("description", "")).strip():
                    problems.append(f"{name}: {where}/properties/{prop} has no description")
            if "pattern" in sub:
                try:
                    re.compile(sub["pattern"])
                except re.error as e:
                    problems.append(f"{name}: {where}: bad pattern: {e}")
        examples = schema.get("examples") or []
        if not examples:
            problems.append(f"{name}: no examples")
        # The policy file and the control plane refuse unknown keys.
        closed = name in ("policy.schema.json", "control-request.schema.json",
                          "audit-stats-request.schema.json")
        for i, example in enumerate(examples):
            checks += 1
            problems += errors(validator, f"{name} example {i}", example)
            checks += 1
            extra = with_unknown_fields(example) if not closed else {**example, **UNKNOWN}
            found = errors(validator, f"{name} example {i} with unknown fields", extra)
            if closed and not found:
                problems.append(f"{name} example {i}: accepted an unknown top-level key, but the schema is closed")
            elif not closed:
                problems += found
    for schema_name, label, document, valid in CASES:
        validator = validators.get(schema_name)
        if validator is None:
            continue
        checks += 1
        found = errors(validator, f"{schema_name}: {label}", document)
        if valid:
            problems += found
        elif not found:
            problems.append(f"{schema_name}.schema.json accepted a document it should reject ({label}): "
                            f"{_short(json.dumps(document))}")
    policy_validator = validators.get("policy")
    yamls = sorted(POLICIES.glob("*.yaml")) + sorted(POLICIES.glob("*.yml"))
    if yaml is None:
        print(f"check_schemas: PyYAML not importable, {len(yamls)} policy file(s) in deploy/policies not checked")
    elif policy_validator is not None:
        if not yamls:
            problems.append("deploy/policies: no policy files found")
        for path in yamls:
            for where, doc in documents(str(path.relative_to(ROOT)), path.read_text(), yaml_hint=True):
                checks += 1
                problems += errors(policy_validator, where, doc)
    return problems, checks


# ---------------------------------------------------------------- main


def main(argv: list) -> int:
    if argv in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    if argv == ["--self-test"]:
        problems, checks = self_test()
        for p in problems:
            print(p)
        print(f"check_schemas --self-test: {checks} check(s): "
              + ("ok" if not problems else f"{len(problems)} problem(s)"))
        return 1 if problems else 0
    if not argv or argv[0].startswith("--"):
        print(__doc__, file=sys.stderr)
        return 2
    return check_files(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
