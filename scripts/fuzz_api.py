"""A longer schemathesis campaign against the HTTP API than the suite's (tests/serve/test_fuzz.py),
with the same app, checks and expectations. Prints one JSON object.

    PYTHONPATH=. .venv/bin/python scripts/fuzz_api.py [--minutes 5] [--batch 50]

Every operation gets an equal share of the time, half of it valid requests (positive mode) and
half invalid ones (negative mode; valid ones name a catalog product two times in three), drawn in batches of `--batch` examples, each batch with its
own seed. Figures: cases per operation and mode, response statuses, and every failed check (its
name, the operation and the first line of its message; a failure is not shrunk, so the example
is the one drawn). Exit status 1 when a check failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from types import SimpleNamespace


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=5.0, help="total time, shared by the operations")
    p.add_argument("--batch", type=int, default=50, help="examples per hypothesis run")
    args = p.parse_args()
    if not 0 < args.minutes <= 120 or args.batch < 1:
        p.error("--minutes must be in (0, 120] and --batch positive")

    from hypothesis import HealthCheck, given, seed, settings
    from hypothesis.errors import Unsatisfiable
    from ray import serve as ray_serve
    from schemathesis import GenerationMode

    from tests.serve.test_fuzz import CHECKS, INGRESS, api_schema, known_product

    ray_serve.get_replica_context = lambda: SimpleNamespace(servable_object=INGRESS)
    schema = api_schema(INGRESS)
    operations = [op.ok() for op in schema.get_all_operations()]
    share = args.minutes * 60 / (2 * len(operations))
    figures: dict[str, dict] = {}
    failures: list[dict] = []
    started = time.monotonic()
    for op in operations:
        name = f"{op.method.upper()} {op.path}"
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            statuses: Counter = Counter()
            cases = 0
            until = time.monotonic() + share
            round_ = 0
            while time.monotonic() < until:
                round_ += 1

                @seed(round_)
                @settings(max_examples=args.batch, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck))  # fmt: skip
                @given(op.as_strategy(generation_mode=mode))
                def run(case):
                    nonlocal cases
                    if time.monotonic() >= until:
                        return
                    cases += 1
                    known_product(case)
                    response = case.call()
                    statuses[response.status_code] += 1
                    try:
                        case.validate_response(response, checks=CHECKS)
                    except Exception as e:  # a failed check: recorded, not shrunk
                        for f in getattr(e, "exceptions", [e]):
                            failures.append({"operation": name, "mode": mode.value, "check": type(f).__name__,
                                             "message": str(f).strip().splitlines()[0][:200],
                                             "status": response.status_code})  # fmt: skip

                try:
                    run()
                except Unsatisfiable:  # no invalid request exists (a route without parameters)
                    break
            figures.setdefault(name, {})[mode.value] = {
                "cases": cases,
                "statuses": dict(sorted((str(k), v) for k, v in statuses.items())),
            }
    total = sum(m["cases"] for op in figures.values() for m in op.values())
    by_check = Counter(f["check"] for f in failures)
    out = {
        "seconds": round(time.monotonic() - started, 1),
        "cases": total,
        "server_errors": sum(
            v for op in figures.values() for m in op.values() for k, v in m["statuses"].items() if k.startswith("5")
        ),
        "failures": len(failures),
        "failures_by_check": dict(by_check),
        "first_failures": failures[:20],
        "operations": figures,
    }
    print(json.dumps(out, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
