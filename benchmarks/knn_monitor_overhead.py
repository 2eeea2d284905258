"""Cost of the online k-NN monitor: the demo's training with and without `--knn_monitor`, side by side.

Runs `run_pretrain.py`'s code (the demo's arguments, without the k-NN after training) with the monitor at the
demo's frequency and with it off, alternating (off, on, off, on, ...) so that drifts in machine load hit both;
prints each run's `train_runtime` (the Trainer's own clock: training only, data and maps excluded), the median
of each, and the median of the per-pair ratios on / off.

    python benchmarks/knn_monitor_overhead.py                       # the demo: 10 epochs, twice each
    python benchmarks/knn_monitor_overhead.py --repeats 3 --set num_train_epochs=5
"""

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from modeling_attg_mae.pretraining import DEMO_ARGUMENTS, parse_arguments, run


def train_runtime(arguments: dict) -> float:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "args.json"
        path.write_text(json.dumps({**arguments, "output_dir": str(Path(folder) / "out")}))
        run(*parse_arguments([str(path)]))
        state = json.loads((Path(folder) / "out" / "trainer_state.json").read_text())
    return next(entry["train_runtime"] for entry in state["log_history"] if "train_runtime" in entry)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each setting")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=JSON",
                        help="override a demo argument, e.g. num_train_epochs=5")
    args = parser.parse_args(argv)
    base = {**DEMO_ARGUMENTS, "run_knn": False, "report_to": []}
    for item in args.set:
        name, _, value = item.partition("=")
        base[name] = json.loads(value)
    times = {"off": [], "on": []}
    for repeat in range(args.repeats):
        for setting in ("off", "on"):
            seconds = train_runtime({**base, "knn_monitor": setting == "on"})
            times[setting].append(seconds)
            print(f"repeat {repeat}: monitor {setting:<3} {seconds:7.1f} s", flush=True)
    ratios = [on / off for on, off in zip(times["on"], times["off"])]
    print(f"\nmonitor off: median {statistics.median(times['off']):.1f} s   on: median "
          f"{statistics.median(times['on']):.1f} s   ratio on/off: median {statistics.median(ratios):.3f} "
          f"(range {min(ratios):.3f}-{max(ratios):.3f}, {len(ratios)} pairs)")
    print(f"monitor settings: every {base['knn_monitor_steps']} steps, bank {base['knn_monitor_bank_size']}, "
          f"{base['knn_monitor_queries']} images per split")


if __name__ == "__main__":
    main()
