"""Checks documents against the project's JSON Schemas.

    check_schemas.py SCHEMA_FILE FILE...   validate JSON or JSON Lines files
    check_schemas.py --self-test           every schema is a valid draft 2020-12
                                           schema, the policies in deploy/policies
                                           pass policy.schema.json, and known-bad
                                           documents fail

Prints every error with its JSON path; exits 1 if there is any.
"""

import json
import pathlib
import sys

import jsonschema
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "schemas"


def validator(schema_path: pathlib.Path) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(schema_path.read_text()))


def documents(path: pathlib.Path):
    text = path.read_text()
    try:
        yield path.name, json.loads(text)
    except json.JSONDecodeError:
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                yield f"{path.name}:{number}", json.loads(line)


def errors(check, where: str, document) -> list:
    return [f"{where}: {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in check.iter_errors(document)]


def self_test() -> list:
    problems = []
    for schema in sorted(SCHEMAS.glob("*.schema.json")):
        try:
            jsonschema.Draft202012Validator.check_schema(json.loads(schema.read_text()))
        except jsonschema.SchemaError as e:
            problems.append(f"{schema.name}: not a valid schema: {e.message}")
    policy = validator(SCHEMAS / "policy.schema.json")
    for path in sorted((ROOT / "deploy/policies").glob("*.yaml")):
        problems += errors(policy, path.name, yaml.safe_load(path.read_text()))
    bad = {
        "policy.schema.json": {"targets": {"t": {"rules": [], "backend": {}, "extra": 1}}},
        "metric-sample.schema.json": {"metric": "cpu"},
        "audit-record.schema.json": {"id": "a", "ts": 1, "stage": "nowhere", "target": "t", "kind": "decision", "outcome": "scale", "reason": "r"},
        "command.schema.json": {"decision_id": "d", "seq": 1, "ts": 1, "target": "t", "from": 1, "desired": -2, "reason": "r"},
    }
    for name, document in bad.items():
        if not errors(validator(SCHEMAS / name), "bad", document):
            problems.append(f"{name}: accepted a document it should reject: {document}")
    good_with_extra = {"value": "70%", "future_field": True}
    problems += errors(validator(SCHEMAS / "metric-sample.schema.json"), "unknown fields are fine", good_with_extra)
    return problems


def main(argv: list) -> int:
    if argv == ["--self-test"]:
        problems = self_test()
        checked = "schemas, example policies and known-bad documents"
    elif len(argv) >= 2:
        check = validator(pathlib.Path(argv[0]))
        problems = [p for f in argv[1:] for where, doc in documents(pathlib.Path(f)) for p in errors(check, where, doc)]
        checked = f"{len(argv) - 1} file(s) against {argv[0]}"
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"check_schemas: {checked}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
