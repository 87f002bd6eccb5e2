"""Ray Train overhead: SASRec step throughput through the recipe vs the same loop in plain PyTorch.

    nice -n 19 .venv/bin/python bench/train_overhead.py                    # Amazon Toys, 1 thread
    nice -n 19 .venv/bin/python bench/train_overhead.py --max-users 3000 --epochs 5 --rounds 3
    nice -n 19 .venv/bin/python bench/train_overhead.py --mode sequential --threads 2 --two-workers

Target (README, "Recommender and ranker"): training-step throughput through Ray Train >= 0.95x
the same loop in plain PyTorch on the same machine.

Both sides train the same SASRec (ml/sasrec.py) on the same rows (`training_rows` of the
leave-one-out split of a "user item item ..." file, Amazon Toys by default, read from the shared
folder), with the same batch size, loss, optimizer and torch thread count:

- **plain**: one process, `torch.set_num_threads(threads)`, the rows in memory as a numpy
  array, shuffled per epoch, the recipe's step (`sequence_loss`, AdamW, the loss read back
  every step).
- **ray**: `train.recommender.build_trainer` + `fit()`, i.e. the production recipe: Ray Data
  reads and pads the split, `TorchTrainer` with 1 worker reserving `threads` CPUs (Ray sets
  the worker's OMP/torch threads from that), validation + checkpoint every epoch through
  `ray.train.report`.

Steady-state samples/s = samples / seconds over epochs 2..N (epoch 1 is warm-up on both sides).
On the Ray side, the seconds are the worker's own `epoch_seconds`: the training steps **and**
the waits on the Ray Data iterator (reported separately as data_wait_share), but **not** Ray
start-up, materializing the padded rows (once, before the workers start), worker start-up,
the per-epoch validation and checkpoint (the plain loop does none), or the final evaluation.
CPU ms per sample of the training process (all its threads) is reported too: on a machine
shared with other jobs it shows the extra work Ray puts into the process regardless of how
much CPU the scheduler happened to give each side.
End-to-end wall time (Ray: `build_trainer` + `fit`, Ray already started; plain: model
construction to last step) is reported beside it, so that what is excluded is visible.
Two modes. `sequential`: plain, then ray, per round (fair on an idle machine). `concurrent`
(default): the plain loop runs in a child process *while* the Ray run trains, and only its
steps inside the Ray worker's timed window count, so load from other jobs on a shared machine
hits both sides alike. The ratio is the median over rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import load_config  # noqa: E402
from train.evaluate import LooData  # noqa: E402


def plain_pytorch(loo: LooData, hp, *, epochs: int, threads: int, seed: int, stop=None) -> dict:
    """The recipe's training step in one process, no Ray: per-epoch seconds and samples.

    With `stop` (a multiprocessing Event) it trains until the event is set instead and also
    keeps per-step records (wall-clock start/end, CPU seconds, samples) for the concurrent mode.
    """
    import torch

    from ml.sasrec import SASRec, SASRecConfig, sequence_loss
    from train.recommender import training_rows

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    started = time.perf_counter()
    rows = training_rows({"train_items": loo.train_items}, hp.max_len)
    inputs, targets = torch.from_numpy(rows["inputs"]), torch.from_numpy(rows["targets"])
    core = SASRec(
        SASRecConfig(
            num_items=loo.num_items,
            max_len=hp.max_len,
            hidden=hp.hidden,
            num_blocks=hp.num_blocks,
            num_heads=hp.num_heads,
            dropout=hp.dropout,
        )
    )
    optimizer = torch.optim.AdamW(core.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    rng = np.random.default_rng(seed)
    per_epoch, steps = [], []
    epoch = 0
    while (epoch < epochs) if stop is None else not stop.is_set():
        core.train()
        epoch_started, cpu_started = time.perf_counter(), time.process_time()
        order = torch.from_numpy(rng.permutation(len(inputs)))
        samples, losses = 0, []
        for i in range(0, len(order), hp.batch_size):
            if stop is not None and stop.is_set():
                break
            step_started, step_cpu = time.time(), time.process_time()
            idx = order[i : i + hp.batch_size]
            batch_inputs, batch_targets = inputs[idx], targets[idx]
            with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=False):  # as the recipe on CPU
                states = core(batch_inputs)
                loss = sequence_loss(
                    core.query(states.float()),
                    batch_targets,
                    core.output_table().float(),
                    loss=hp.loss,
                    num_negatives=hp.num_negatives,
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            samples += len(idx)
            if stop is not None:
                steps.append((step_started, time.time(), time.process_time() - step_cpu, len(idx)))
        per_epoch.append(
            {
                "epoch_seconds": time.perf_counter() - epoch_started,
                "cpu_seconds": time.process_time() - cpu_started,
                "train_samples": samples,
                "train_loss": float(np.mean(losses)),
            }
        )
        epoch += 1
    return {
        "epochs": per_epoch,
        "steps": steps,
        "wall_seconds": time.perf_counter() - started,
        "torch_threads": torch.get_num_threads(),
    }


def _plain_in_child(queue, stop, loo, hp, threads, seed) -> None:
    queue.put(plain_pytorch(loo, hp, epochs=0, threads=threads, seed=seed, stop=stop))


def concurrent(cfg, loo: LooData, *, threads: int, run_name: str) -> dict:
    """Plain loop (child process) and Ray run at the same time, compared over the same window:
    the Ray worker's timed epochs (2..N). Load from other jobs then hits both sides alike."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue, stop = ctx.Queue(), ctx.Event()
    child = ctx.Process(target=_plain_in_child, args=(queue, stop, loo, cfg.train.recommender, threads, cfg.train.seed))
    child.start()
    try:
        via_ray = through_ray_train(cfg, loo, run_name=run_name)
    finally:
        stop.set()
    plain = queue.get(timeout=600)
    child.join(timeout=60)
    window = (via_ray["epochs"][0]["epoch_ended_at"], via_ray["epochs"][-1]["epoch_ended_at"])
    inside = [s for s in plain["steps"] if window[0] <= s[0] and s[1] <= window[1]]
    if not inside:
        raise RuntimeError(
            "the plain loop ran no step inside the Ray run's timed epochs; use more --epochs or --max-users"
        )
    # plain steps finished in the window, over the window (the Ray side's time includes its
    # validation between epochs, so both are over wall time minus the Ray validation time)
    ray_timed = steady(via_ray["epochs"])
    plain_seconds = sum(e - s for s, e, _, _ in inside)
    plain_samples = sum(n for *_, n in inside)
    return {
        "plain": {
            "samples_per_s": round(plain_samples / plain_seconds, 1),
            "cpu_ms_per_sample": round(1000 * sum(c for _, _, c, _ in inside) / plain_samples, 3),
            "steps_timed": len(inside),
            "seconds_timed": round(plain_seconds, 2),
            "torch_threads": plain["torch_threads"],
        },
        "ray_1_worker": {**ray_timed, "wall_seconds": round(via_ray["wall_seconds"], 1)},
    }


def through_ray_train(cfg, loo: LooData, *, run_name: str) -> dict:
    """The production recipe (build_trainer + fit); per-epoch figures from the worker's curves."""
    import torch

    from train.recommender import build_trainer

    started = time.perf_counter()
    trainer, _, _, _ = build_trainer(cfg, num_items=loo.num_items, run_name=run_name)
    result = trainer.fit()
    wall = time.perf_counter() - started
    if result.checkpoint is None:
        raise RuntimeError(f"the Ray Train run produced no checkpoint: {result.error}")
    with result.checkpoint.as_directory() as d:  # the latest checkpoint holds every epoch's curve
        curves = torch.load(Path(d) / "state.pt", map_location="cpu", weights_only=False)["curves"]
    return {"epochs": curves, "wall_seconds": wall}


def steady(epochs: list[dict], world_size: int = 1) -> dict:
    """Samples/s over epochs after the first; `world_size` equal shards make the aggregate."""
    later = epochs[1:]
    seconds = sum(e["epoch_seconds"] for e in later)
    samples = sum(e["train_samples"] for e in later)
    out = {
        "samples_per_s": round(world_size * samples / seconds, 1),
        # CPU time of the training process (all its threads) per sample: insensitive to other
        # load on the machine; Ray's own daemons (raylet, GCS, the split coordinator) are not in it
        "cpu_ms_per_sample": round(1000 * sum(e["cpu_seconds"] for e in later) / samples, 3),
        "epochs_timed": len(later),
        "seconds_timed": round(seconds, 2),
    }
    if "data_wait_seconds" in later[0]:
        out["data_wait_share"] = round(sum(e["data_wait_seconds"] for e in later) / seconds, 4)
    return out


def main() -> None:
    repo = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data", default=str(repo.parent / "shared" / "data" / "amazon-toys-s3rec" / "Toys_and_Games.txt")
    )
    parser.add_argument("--max-users", type=int, default=None, help="first N users only (quicker runs)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is warm-up")
    parser.add_argument("--rounds", type=int, default=2, help="alternating plain / ray rounds")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (plain) = CPUs reserved by the Ray Train worker"
    )
    parser.add_argument(
        "--mode",
        choices=["sequential", "concurrent"],
        default="concurrent",
        help="sequential: plain, then ray (fair on an idle machine); concurrent: both at once over the same window (fair on a shared, loaded one)",
    )
    parser.add_argument(
        "--two-workers", action="store_true", help="also run 2 Ray Train workers x threads/2 CPUs (aggregate samples/s)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="config override, e.g. train.recommender.batch_size=256",
    )
    args = parser.parse_args()

    lines = [line for line in Path(args.data).read_text().split("\n") if line.strip()][: args.max_users]
    loo = LooData.from_sequences([[int(x) for x in line.split()[1:]] for line in lines])

    import ray

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "data" / "splits").mkdir(parents=True)
        loo.write_parquet(root / "data" / "splits" / "loo.parquet")

        def config(workers: int, cpus: float):
            return load_config(
                overrides=[
                    f"artifacts.root={root}",
                    f"train.recommender.epochs={args.epochs}",
                    "train.recommender.eval_users=200",  # validation is outside the timed steps; keep it short
                    "train.recommender.patience=1000",
                    "train.evaluation.num_negatives=99",
                    f"train.scaling.num_workers={workers}",
                    f"train.scaling.cpus_per_worker={cpus}",
                    *args.overrides,
                ]
            )

        cfg = config(1, args.threads)
        hp = cfg.train.recommender
        ray_start = time.perf_counter()
        # logical CPUs: the worker's reservation plus one for Ray Data's read/pad tasks (they
        # share the physical cores with the worker, as they would in production)
        ray.init(address="local", num_cpus=args.threads + 1, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - ray_start

        rounds = []
        for r in range(args.rounds):
            if args.mode == "concurrent":
                rounds.append(concurrent(cfg, loo, threads=args.threads, run_name=f"overhead-{r}"))
            else:
                plain = plain_pytorch(loo, hp, epochs=args.epochs, threads=args.threads, seed=cfg.train.seed)
                via_ray = through_ray_train(cfg, loo, run_name=f"overhead-{r}")
                rounds.append(
                    {
                        "plain": {
                            **steady(plain["epochs"]),
                            "wall_seconds": round(plain["wall_seconds"], 1),
                            "torch_threads": plain["torch_threads"],
                        },
                        "ray_1_worker": {
                            **steady(via_ray["epochs"]),
                            "wall_seconds": round(via_ray["wall_seconds"], 1),
                        },
                    }
                )
            rounds[-1]["ratio"] = round(
                rounds[-1]["ray_1_worker"]["samples_per_s"] / rounds[-1]["plain"]["samples_per_s"], 3
            )
            rounds[-1]["cpu_ratio"] = round(
                rounds[-1]["plain"]["cpu_ms_per_sample"] / rounds[-1]["ray_1_worker"]["cpu_ms_per_sample"], 3
            )
            print(json.dumps({"round": r, **rounds[-1]}), file=sys.stderr, flush=True)

        two = None
        if args.two_workers:
            via_ray = through_ray_train(config(2, args.threads / 2), loo, run_name="overhead-2w")
            two = {
                **steady(via_ray["epochs"], world_size=2),
                "wall_seconds": round(via_ray["wall_seconds"], 1),
                "cpus_per_worker": args.threads / 2,
            }
        ray.shutdown()

    print(
        json.dumps(
            {
                "data": Path(args.data).name,
                "users": len(lines),
                "items": loo.num_items,
                "batch_size": hp.batch_size,
                "loss": hp.loss,
                "model": {"hidden": hp.hidden, "num_blocks": hp.num_blocks, "max_len": hp.max_len},
                "threads": args.threads,
                "mode": args.mode,
                "epochs_per_run": args.epochs,
                "ratio_median": round(statistics.median(r["ratio"] for r in rounds), 3),
                "cpu_ratio_median": round(statistics.median(r["cpu_ratio"] for r in rounds), 3),
                "target": 0.95,
                "rounds": rounds,
                "ray_2_workers": two,
                "ray_init_seconds": round(ray_start, 1),
                "measured": "steady-state training-step throughput (samples/s) over epochs 2..N: "
                "steps + data iterator waits, from the Ray Train worker's own per-epoch timing",
                "cpu_ratio": "plain CPU ms/sample over Ray worker CPU ms/sample (1.0 = no extra work in the training process)",
                "excluded": [
                    "ray.init (ray_init_seconds)",
                    "materializing the padded training rows (once, before the workers start; in wall_seconds)",
                    "epoch 1 on both sides (warm-up)",
                    "Ray Train worker + process-group start-up (in wall_seconds)",
                    "per-epoch validation (200 users) and checkpoint via ray.train.report (Ray only, in wall_seconds)",
                ],
                "machine_note": "shared 2-core box under load from other jobs: compare ratios within a round",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
