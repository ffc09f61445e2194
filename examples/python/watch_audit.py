"""Follow NovaCron's audit stream from Python (nats-py + msgpack).

    python watch_audit.py nats://127.0.0.1:4222 [TARGET]

Every stage writes records to `nova.audit.<stage>.<target>`, kept in the
JetStream stream NOVA_AUDIT. An ordered consumer reads them all in order,
from the beginning of the stream, then follows new ones.
"""

import asyncio
import sys

import msgpack
import nats


async def main(url: str, target: str = "*") -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.subscribe(f"nova.audit.*.{target}", ordered_consumer=True)
    async for msg in sub.messages:
        record = msgpack.unpackb(msg.data)
        print(f"{record['stage']:<9} {record['target']:<10} {record['kind']:<8} "
              f"{record['outcome']:<12} {record['reason']}")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:3]))
