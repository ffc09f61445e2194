"""Publish metric samples to NovaCron from Python (nats-py + msgpack).

    python publish_samples.py nats://127.0.0.1:4222 worker queue_depth 1500

A sample is a MessagePack map with field names: `value` (number, or a string
with its unit such as "70%" or "500ms"), optional `ts` (unix milliseconds;
receive time if absent), optional `instance` and `labels`. A message may hold
one sample or a list of them. JSON works too with `Content-Type: application/json`.
"""

import asyncio
import sys
import time

import msgpack
import nats


async def main(url: str, target: str, metric: str, value: str) -> None:
    nc = await nats.connect(url)
    sample = {"value": float(value) if value.replace(".", "", 1).isdigit() else value,
              "ts": int(time.time() * 1000)}
    await nc.publish(f"nova.metrics.{target}.{metric}", msgpack.packb(sample))
    await nc.flush()
    await nc.close()
    print(f"published {sample} to nova.metrics.{target}.{metric}")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
