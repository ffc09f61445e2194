"""An outside program's view of NovaCron: publish samples, read the audit
stream, and see an ECS service (on moto) change, using nothing but the wire
contract in the README (nats-py, msgpack, boto3, jsonschema).

    ecs_roundtrip.py setup --moto URL
    ecs_roundtrip.py check --nats URL --moto URL

`setup` creates the runbook's ECS services at 5 tasks; `check` waits for the
five stages to answer their pings, publishes queue-depth samples for target
`worker` (and one malformed payload), follows the audit stream until the
command's result, checks that ECS now wants 10 tasks, asks the audit service
for worker's figures on nova.ctl.audit.stats (and sends it one request it must
refuse), and checks every real message it can see (samples, triggers,
commands, results, audit records, dead letters, capacity records, the stats
requests and replies) against its schema in schemas/. It ends with a line
"N passed, N failed".
"""

import argparse
import asyncio
import json
import pathlib
import sys
import time

import boto3
import jsonschema
import msgpack
import nats
from nats.errors import NoRespondersError, TimeoutError as NatsTimeout

ROOT = pathlib.Path(__file__).resolve().parents[2]
CLUSTER = "novacron-cluster"
STAGES = ["ingest", "evaluator", "arbiter", "actuator", "audit"]


def ecs(moto: str):
    return boto3.client("ecs", region_name="us-east-1", endpoint_url=moto,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def desired(client, service: str) -> int:
    return client.describe_services(cluster=CLUSTER, services=[service])["services"][0]["desiredCount"]


async def stream_contents(js, subject: str) -> list:
    """Every message on `subject` in its stream, decoded."""
    sub = await js.subscribe(subject, ordered_consumer=True)
    out = []
    while True:
        try:
            msg = await sub.next_msg(timeout=1)
        except NatsTimeout:
            break
        out.append(msgpack.unpackb(msg.data))
        if msg.metadata.num_pending == 0:
            break
    await sub.unsubscribe()
    return out


def as_json(value):
    """What a JSON tool sees: MessagePack binary becomes a list of byte values."""
    if isinstance(value, (bytes, bytearray)):
        return list(value)
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_json(v) for v in value]
    return value


def setup(moto: str) -> None:
    client = ecs(moto)
    client.create_cluster(clusterName=CLUSTER)
    for service in ["novacron-worker", "novacron-api"]:
        client.register_task_definition(
            family=service, containerDefinitions=[{"name": "app", "image": "busybox", "memory": 128}])
        client.create_service(cluster=CLUSTER, serviceName=service, taskDefinition=service, desiredCount=5)
    print("ECS services created at 5 tasks")


async def wait_for_stages(nc, deadline: float) -> None:
    for stage in STAGES:
        while True:
            try:
                await nc.request(f"nova.ctl.ping.{stage}", b"", timeout=1)
                break
            except (NoRespondersError, NatsTimeout):
                if time.monotonic() > deadline:
                    raise SystemExit(f"stage {stage} never answered nova.ctl.ping.{stage}")
                await asyncio.sleep(0.2)


async def check(nats_url: str, moto: str) -> int:
    results = []

    def expect(name: str, ok: bool, detail: str = "") -> None:
        results.append(ok)
        print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail and not ok else ''}")

    client = ecs(moto)
    started_ms = int(time.time() * 1000)
    schema = json.loads((ROOT / "schemas/audit-record.schema.json").read_text())
    nc = await nats.connect(nats_url)
    deadline = time.monotonic() + 60
    await wait_for_stages(nc, deadline)
    expect("ECS service starts at 5", desired(client, "novacron-worker") == 5)

    js = nc.jetstream()
    sub = await js.subscribe("nova.audit.*.worker", ordered_consumer=True)
    batches = await nc.subscribe("nova.samples.worker")
    sample = {"value": 1500, "ts": int(time.time() * 1000), "instance": "queue-1"}
    published = [sample, [sample | {"instance": "queue-2"}, {"value": "1.2e3", "instance": "queue-3"}]]
    await nc.publish("nova.metrics.worker.queue_depth", msgpack.packb(published[0]))
    await nc.publish("nova.metrics.worker.queue_depth", b'{"value": "lots"}', headers={"Content-Type": "application/json"})
    await nc.publish("nova.metrics.worker.queue_depth", msgpack.packb(published[1]))
    await nc.flush()

    records = []
    while not records or records[-1]["kind"] != "result":
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            msg = await sub.next_msg(timeout=remaining)
        except NatsTimeout:
            break
        records.append(msgpack.unpackb(msg.data))
    kinds = [(r["kind"], r["outcome"]) for r in records]
    want = [("trigger", "fired"), ("decision", "scale"), ("command", "executing"), ("result", "succeeded")]
    expect("audit trail is trigger, decision, command, result", kinds == want, f"got {kinds}")
    errors = [f"{e.json_path}: {e.message}" for r in records
              for e in jsonschema.Draft202012Validator(schema).iter_errors(r)]
    expect("audit records match schemas/audit-record.schema.json", not errors, "; ".join(errors))
    if records:
        print("  decision:", next((r["reason"] for r in records if r["kind"] == "decision"), "none"))
    expect("ECS service now wants 10", desired(client, "novacron-worker") == 10,
           f"desiredCount is {desired(client, 'novacron-worker')}")

    # nova.ctl.audit.stats, as an operator's tool asks it: worker's figures
    # once the audit service has read the result (it reads the stream on its
    # own consumer), and a request it must refuse.
    stats_request = {"target": "worker", "since_ms": started_ms}
    stats, reply = None, None
    stats_deadline = time.monotonic() + 30
    while time.monotonic() < stats_deadline:
        reply = msgpack.unpackb((await nc.request(
            "nova.ctl.audit.stats", msgpack.packb(stats_request), timeout=5)).data)
        if any(t.get("successes", 0) >= 1 for t in reply.get("targets", [])):
            stats = reply
            break
        await asyncio.sleep(0.2)
    worker = (stats or {}).get("targets", [{}])[0]
    expect("nova.ctl.audit.stats counts worker's scale-up 5 -> 10",
           worker.get("target") == "worker" and worker.get("scale_ups", 0) >= 1
           and worker.get("capacity_moved", 0) >= 5, str(reply))
    refused_request = {"target": "worker", "limit": 5}
    refused = msgpack.unpackb((await nc.request(
        "nova.ctl.audit.stats", msgpack.packb(refused_request), timeout=5)).data)
    expect("a stats request with an unknown field gets {error} naming it",
           "limit" in str(refused.get("error", "")), str(refused))
    request_schema = jsonschema.Draft202012Validator(
        json.loads((ROOT / "schemas/audit-stats-request.schema.json").read_text()))
    expect("schemas/audit-stats-request.schema.json refuses the request the service refused",
           not request_schema.is_valid(refused_request))

    # Every kind of message, as any reader would see it, against its schema.
    seen = {
        "audit-stats-request": [stats_request],
        "audit-stats": [m for m in (stats, refused) if m is not None],
        "metric-sample": published,
        "sample-batch": [msgpack.unpackb((await batches.next_msg(timeout=5)).data)],
        "trigger": await stream_contents(js, "nova.triggers.worker"),
        "command": await stream_contents(js, "nova.commands.worker"),
        "action-result": await stream_contents(js, "nova.results.worker"),
        "audit-record": await stream_contents(js, "nova.audit.>"),
        "dead-letter": await stream_contents(js, "nova.dead.>"),
        "capacity-record": [msgpack.unpackb((await (await js.key_value("nova_capacity")).get("worker")).value)],
    }
    for name, messages in seen.items():
        schema = json.loads((ROOT / f"schemas/{name}.schema.json").read_text())
        validator = jsonschema.Draft202012Validator(schema)
        errors = [f"{list(e.absolute_path)}: {e.message}" for m in messages for e in validator.iter_errors(as_json(m))]
        expect(f"{len(messages)} real {name} message(s) match schemas/{name}.schema.json",
               bool(messages) and not errors, "; ".join(errors[:5]) or "none seen")
    dead = seen["dead-letter"]
    expect("the malformed sample was dead-lettered with its reason",
           any("lots" in d["reason"] or "expected a number" in d["reason"] for d in dead), str(dead))
    await nc.close()
    passed = sum(results)
    print(f"outside: {passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("step", choices=["setup", "check"])
    parser.add_argument("--nats")
    parser.add_argument("--moto", required=True)
    args = parser.parse_args()
    if args.step == "setup":
        setup(args.moto)
        return 0
    return asyncio.run(check(args.nats, args.moto))


if __name__ == "__main__":
    sys.exit(main())
