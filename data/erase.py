"""Erase a user: record a tombstone (pseudonyms only) that every later data stage applies.

    shopgraph data erase-user --user-id jane.doe@example.com
    python -m data.erase --user-id jane.doe@example.com --config configs/local.yaml

The raw id is hashed under every configured key (`core.privacy`) and only the pseudonyms are
written, to `privacy/tombstones.jsonl` under `artifacts.root`; the raw id is neither stored nor
printed. From then on `data prepare` drops the user's rows (counted as `erased` in the events
manifest) and splits, corpora and the other stages that read events skip them even in shards
prepared before. A running ingress picks the tombstone up within `privacy.tombstone_refresh_s`;
`DELETE /v1/users/{id}` does the same through the API and also purges the ingress's caches.
"""

from __future__ import annotations

import argparse
import sys

from core.privacy import PrivacyError, erase_user


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user-id", required=True, help="The raw user id to erase (as the shop knows it).")


def main(argv: list[str] | None = None) -> int:
    from core.cli import stage_main

    return stage_main(
        argv,
        lambda cfg, user_id: erase_user(cfg, user_id),
        prog="python -m data.erase",
        description=__doc__,
        options=_options,
        usage_errors=(PrivacyError,),
    )


if __name__ == "__main__":
    sys.exit(main())
