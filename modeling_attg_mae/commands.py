"""The command-line programs, one function each (argv -> the run's payload). The `run_*.py` scripts at the
repository root call them, and an installed wheel has them as console commands (setup.cfg's entry points):

    attg-mae-pretrain     run_pretrain.py          attg-mae-knn        run_knn.py
    attg-mae-linear-probe run_linear_probe.py      attg-mae-retrieval  run_retrieval.py
    attg-mae-fine-tune    run_fine_tune.py         attg-mae-maps       python -m modeling_attg_mae.object_discovery
    attg-mae-export       python -m modeling_attg_mae.export

Each holds parsing and printing only; the work is in the package function it calls.
"""

import json
import logging
import sys
from pathlib import Path
from types import SimpleNamespace

import transformers

from .cli import format_results_table, parse_cli, print_summary
from .evaluation.arguments import (
    EvalDataArguments,
    EvalModelArguments,
    EvalRunArguments,
    KNNArguments,
    LinearProbeArguments,
    RetrievalArguments,
)
from .evaluation.pipelines import run_knn, run_linear_probe
from .evaluation.retrieval import print_retrieval_summary, run_retrieval
from .export import main as export_main
from .fine_tuning.arguments import parse_fine_tune_arguments
from .fine_tuning.run import format_fine_tune_table, run_fine_tune
from .object_discovery.__main__ import main as maps_main
from .pretraining import parse_arguments, run

# the argument groups of the evaluation commands, in parsing order (the data flags: `data.arguments`' shared ones)
KNN_ARGUMENTS = (EvalModelArguments, EvalDataArguments, EvalRunArguments, KNNArguments)
LINEAR_PROBE_ARGUMENTS = (EvalModelArguments, EvalDataArguments, EvalRunArguments, LinearProbeArguments)
RETRIEVAL_ARGUMENTS = (EvalModelArguments, EvalDataArguments, EvalRunArguments, RetrievalArguments)


def pretrain(argv=None):
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO,
                        handlers=[logging.StreamHandler(sys.stdout)])
    model_args, data_args, attg_args, training_args = parse_arguments(argv)
    transformers.utils.logging.set_verbosity_warning()
    paths = run(model_args, data_args, attg_args, training_args)
    if training_args.process_index == 0:
        print("\nDone.")
        for name, path in paths.items():
            print(f"  {name:12s} {path}")
        print(f"  TensorBoard: tensorboard --logdir {paths['logs']}")
        if paths.get("knn_results"):  # the table after the paths: a table is not a path
            print(f"\nk-NN of the exported checkpoint:\n{format_results_table(json.loads(Path(paths['knn_results']).read_text()))}")
    return paths


def knn(argv=None):
    model_args, data_args, run_args, knn_args = parse_cli(KNN_ARGUMENTS, argv)
    payload = run_knn(model_args, data_args, run_args, knn_args)
    print_summary(payload)
    return payload


def linear_probe(argv=None):
    model_args, data_args, run_args, probe_args = parse_cli(LINEAR_PROBE_ARGUMENTS, argv)
    payload = run_linear_probe(model_args, data_args, run_args, probe_args)
    print_summary(payload)
    return payload


def retrieval(argv=None):
    model_args, data_args, run_args, retrieval_args = parse_cli(RETRIEVAL_ARGUMENTS, argv)
    payload = run_retrieval(model_args, data_args, run_args, retrieval_args)
    print_retrieval_summary(payload)
    return payload


def fine_tune(argv=None):
    model_args, data_args, fine_tune_args, training_args = parse_fine_tune_arguments(argv)
    payload = run_fine_tune(model_args, data_args, fine_tune_args, training_args)
    if "results_file" in payload:
        print(format_fine_tune_table(payload))
        print(f"results: {payload['results_file']}")
    return payload


def maps(argv=None):
    return maps_main(sys.argv[1:] if argv is None else argv)


def export(argv=None):
    return export_main(argv)


def _console(program):
    """`program` as a console command: pip's wrapper hands the return value to `sys.exit`, which would print a payload
    and exit 1, so the command returns nothing (an error still exits 1 with its traceback)."""
    def command():
        program()
    return command


# setup.cfg's console_scripts point here, e.g. `attg-mae-pretrain = modeling_attg_mae.commands:console.pretrain`
console = SimpleNamespace(**{program.__name__: _console(program) for program in
                             (pretrain, knn, linear_probe, retrieval, fine_tune, maps, export)})


__all__ = ["KNN_ARGUMENTS", "LINEAR_PROBE_ARGUMENTS", "RETRIEVAL_ARGUMENTS", "pretrain", "knn", "linear_probe", "retrieval", "fine_tune", "maps", "export", "console"]
