"""What pseudonymizing user ids costs the ingest: one parse task over a CSV events chunk, with and
without `core.privacy` (and with a tombstone set), plus the cost of one id at the API edge.

    .venv/bin/python bench/pseudonymize.py --events 200000 --users 20000 [--tombstones 1000] [--repeats 3]

The chunk is parsed by `data.readers.parse_chunk`, exactly as a `data prepare` task does (no Ray:
the task body only). Prints JSON: seconds per run (best of `--repeats`), rows/s, the overhead,
and microseconds per `Pseudonymizer.user_key` call (what the ingress pays once per request).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config.ingest import SourceConfig  # noqa: E402
from core.privacy import IngestPrivacy, Key, Pseudonymizer  # noqa: E402
from data.readers import parse_chunk  # noqa: E402


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--tombstones", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.csv"
        with path.open("w", encoding="utf-8") as f:
            f.write("user_id,product_id,event,ts\n")
            for i in range(args.events):
                f.write(f"user-{i % args.users}@example.com,P{i % 5000},view,{1_700_000_000_000 + i}\n")
        header = ["user_id", "product_id", "event", "ts"]
        src = SourceConfig(name="bench", format="csv", path=str(path), table="events", timestamp_unit="ms")
        first = len("user_id,product_id,event,ts\n")
        chunk = {"src": 0, "path": str(path), "display": "events.csv", "compressed": False, "header": header}
        chunk |= {"start": first, "end": -1, "first_line": 2, "is_file_end": True}
        pz = Pseudonymizer([Key("k2", b"bench-key-" + b"0" * 54), Key("k1", b"bench-old-" + b"1" * 54)])
        stones = frozenset(pz.user_key(f"gone-{i}") for i in range(args.tombstones))
        plain = _best(lambda: parse_chunk(chunk, src), args.repeats)
        private = _best(lambda: parse_chunk(chunk, src, IngestPrivacy(pz, stones)), args.repeats)
        n = 100_000
        per_id = _best(lambda: [pz.user_key(f"user-{i}@example.com") for i in range(n)], args.repeats) / n
    print(
        json.dumps(
            {
                "events": args.events,
                "distinct_users": args.users,
                "keys": len(pz.keys),
                "tombstones": args.tombstones,
                "parse_s": round(plain, 3),
                "parse_pseudonymized_s": round(private, 3),
                "rows_per_s": round(args.events / plain),
                "rows_per_s_pseudonymized": round(args.events / private),
                "overhead_pct": round(100 * (private / plain - 1), 1),
                "user_key_us": round(per_id * 1e6, 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
