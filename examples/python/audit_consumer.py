"""Read NovaCron's audit stream from a point in time (nats-py + msgpack).

    python audit_consumer.py --nats nats://127.0.0.1:4222 \
        --since 2026-12-01T10:00:00Z [--target worker] [--follow]

An ordered JetStream consumer on stream NOVA_AUDIT, delivering from
`--since` (DeliverPolicy BY_START_TIME), filtered by subject
`nova.audit.<stage>.<target>`. Records are MessagePack maps with field
names. Prints one line per record and stops when it has caught up with
the stream, or with --follow goes on until Ctrl-C. scripts/outside-check.sh
runs it against a running pipeline and checks what it printed.
"""

import argparse
import asyncio
from datetime import datetime, timedelta, timezone

import msgpack
import nats
from nats.js.api import ConsumerConfig, DeliverPolicy


def line(record: dict) -> str:
    when = datetime.fromtimestamp(record["ts"] / 1000, tz=timezone.utc)
    return (f"{when:%Y-%m-%dT%H:%M:%S.%f}"[:-3] + "Z "
            f"{record['stage']:<9} {record['target']:<10} {record['kind']:<8} "
            f"{record['outcome']:<12} {record['reason']}")


async def main(url: str, since: str, target: str, follow: bool) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since)
    sub = await js.subscribe(f"nova.audit.*.{target}", stream="NOVA_AUDIT",
                             ordered_consumer=True, config=config)
    pending = (await sub.consumer_info()).num_pending
    # The first delivery can race the consumer's info: give it a moment
    # before taking "nothing pending" for an empty range.
    timeout = None if follow or pending > 0 else 2
    while True:
        try:
            msg = await sub.next_msg(timeout=timeout)
        except nats.errors.TimeoutError:
            break
        print(line(msgpack.unpackb(msg.data)), flush=True)
        if not follow and msg.metadata.num_pending == 0:
            break
        timeout = None
    await nc.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    hour_ago = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    parser.add_argument("--since", default=hour_ago, help="RFC 3339, UTC (default: an hour ago)")
    parser.add_argument("--target", default="*")
    parser.add_argument("--follow", action="store_true")
    args = parser.parse_args()
    try:
        asyncio.run(main(args.nats, args.since, args.target, args.follow))
    except KeyboardInterrupt:
        pass
