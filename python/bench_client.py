"""Python reference for `autosafe bench client --vs-python`.

Sends the same workload as the Rust bench through the `openai` package's AsyncOpenAI client (its
default HTTP client and settings), with an asyncio.Semaphore bounding requests in flight, and prints
one JSON object: requests, errors, seconds, requests_per_s, cpu_s.
"""

import argparse
import asyncio
import json
import sys
import time

from openai import AsyncOpenAI


async def run(base_url: str, model: str, requests: int, concurrency: int) -> dict:
    client = AsyncOpenAI(base_url=base_url, api_key="bench-not-a-key")
    sem = asyncio.Semaphore(concurrency)
    errors = 0

    async def one(i: int) -> None:
        nonlocal errors
        async with sem:
            try:
                reply = await client.chat.completions.create(
                    model=model,
                    messages=[
                        {"role": "system", "content": "You are a benchmark."},
                        {"role": "user", "content": f"request {i}"},
                    ],
                    max_tokens=16,
                )
                if not reply.choices or reply.choices[0].message.content is None:
                    errors += 1
            except Exception as e:  # noqa: BLE001 - a benchmark counts every failure
                errors += 1
                print(f"request {i} failed: {e}", file=sys.stderr)

    # warm-up: open connections the same way the Rust side does
    await asyncio.gather(*(one(-1 - i) for i in range(min(concurrency, requests))))
    errors = 0
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(requests)))
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    await client.close()
    return {
        "requests": requests,
        "errors": errors,
        "seconds": seconds,
        "requests_per_s": requests / seconds,
        "cpu_s": cpu,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--base-url", required=True)
    p.add_argument("--model", default="bench")
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--concurrency", type=int, default=256)
    a = p.parse_args()
    print(json.dumps(asyncio.run(run(a.base_url, a.model, a.requests, a.concurrency))))


if __name__ == "__main__":
    main()
