"""An outside program's view of NovaCron: publish samples, read the audit
stream, and see an ECS service (on moto) change, using nothing but the wire
contract in the README (nats-py, msgpack, boto3, jsonschema).

    ecs_roundtrip.py setup --moto URL
    ecs_roundtrip.py check --nats URL --moto URL

`setup` creates the runbook's ECS services at 5 tasks; `check` waits for the
five stages to answer their pings, publishes queue-depth samples for target
`worker`, follows the audit stream until the command's result, checks the
records against schemas/audit-record.schema.json, and checks that ECS now
wants 10 tasks. It ends with a line "N passed, N failed".
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
    schema = json.loads((ROOT / "schemas/audit-record.schema.json").read_text())
    nc = await nats.connect(nats_url)
    deadline = time.monotonic() + 60
    await wait_for_stages(nc, deadline)
    expect("ECS service starts at 5", desired(client, "novacron-worker") == 5)

    js = nc.jetstream()
    sub = await js.subscribe("nova.audit.*.worker", ordered_consumer=True)
    sample = {"value": 1500, "ts": int(time.time() * 1000), "instance": "queue-1"}
    await nc.publish("nova.metrics.worker.queue_depth", msgpack.packb(sample))
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
