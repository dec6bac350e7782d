"""Per-run noise of one sweep member: the same (N, D) trained again with other data orders
(`data.seed`) and other initialisations (`train.seed`); prints each final eval loss.

A scaling fit needs the noise of one run to be small against the depth of an IsoFLOP profile.
This measures it for one member of a sweep spec, and which of the two seeds it comes from:

    python benchmarks/demo_noise.py --member transformer-L2-d32-C5e11
    python benchmarks/demo_noise.py --member transformer-L2-d32-C5e11 --set data.shuffle_window=1024

`--set KEY=VALUE` overrides the member's config (after the spec), e.g. to compare shuffle windows.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import jaxlm
from jaxlm import config as config_lib
from jaxlm.scaling import sweep
from jaxlm.scaling.spec import dotlist

SEEDS = [(0, 0), (1, 0), (2, 0), (0, 1), (0, 2)]  # (data.seed, train.seed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", default="configs/sweeps/cpu_demo.yaml")
    ap.add_argument("--member", required=True, help="a member name (jaxlm sweep --dry-run)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config overrides on top of the member's")
    ap.add_argument("--out", default=None, help="write the results here as JSON")
    args = ap.parse_args()
    spec = sweep.load_spec(args.spec)
    members = {m.name: m for m in sweep.expand(spec)}
    if args.member not in members:
        raise SystemExit(f"--member {args.member}: not a member of {args.spec}")
    m = members[args.member]
    # the member's config (sweep.member_config) with --set on top: a bad key is one line
    base = config_lib.load_config(spec.base_config,
                                  [*dotlist(spec.base_overrides), *m.overrides, *args.set])
    runs = []
    for data_seed, train_seed in SEEDS:
        cfg = config_lib.replace(base, **{"data.seed": data_seed, "train.seed": train_seed})
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as d:
            result = jaxlm.train(cfg, f"{d}/run", quiet=True)
        runs.append({"data_seed": data_seed, "train_seed": train_seed,
                     "loss": result.eval["eval_loss"], "wall_s": time.perf_counter() - t0})
        print(f"data.seed={data_seed} train.seed={train_seed}: eval loss "
              f"{runs[-1]['loss']:.4f} ({runs[-1]['wall_s']:.0f} s)", flush=True)
    by_data = [r["loss"] for r in runs if r["train_seed"] == 0]
    by_init = [r["loss"] for r in runs if r["data_seed"] == 0]
    print(f"{m.name} (batch {m.batch}, {m.steps} steps, data.shuffle_window "
          f"{base.data.shuffle_window}): range over data.seed {max(by_data) - min(by_data):.3f}, "
          f"over train.seed {max(by_init) - min(by_init):.3f} nats")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"member": m.name, "overrides": args.set, "runs": runs}, fh, indent=1)


if __name__ == "__main__":
    main()
