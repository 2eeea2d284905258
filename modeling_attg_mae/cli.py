"""What the command lines share: arguments from flags or from one JSON file, JSON-valued flags, which arguments the
user set (so that a recipe's defaults fill in only the rest), and the results table the evaluation CLIs print.

A malformed JSON file or flag value is a ValueError naming the file or flag and the line / column, not a bare
`json.JSONDecodeError`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields


def parse_json(text: str, source: str):
    """`json.loads(text)`; a syntax error names `source` (a file path or a flag) and the line and column."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{source} is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}"
                         ) from None


def read_arguments_file(path) -> dict:
    """The argument names and values of a JSON arguments file: a missing file, bad JSON or anything but a JSON
    object is a ValueError naming the file."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"arguments file {path} does not exist")
    with open(path, encoding="utf-8") as f:
        values = parse_json(f.read(), f"arguments file {path}")
    if not isinstance(values, dict):
        raise ValueError(f"arguments file {path} must hold a JSON object of argument names, got {type(values).__name__}")
    return values


def is_arguments_file(argv) -> bool:
    """A JSON file as the only argument (the way `run_mae.py` and every CLI here accept their arguments)."""
    return len(argv) == 1 and argv[0].endswith(".json")


def parse_dict(dataclass_types, values: dict, source: str) -> tuple:
    """`values` into `dataclass_types`; a key no dataclass has, or a value a dataclass refuses, is a ValueError that
    starts with `source` (the file the user has to fix)."""
    from transformers import HfArgumentParser

    known = {f.name for dataclass_type in dataclass_types for f in fields(dataclass_type)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"{source}: unknown argument(s) {sorted(unknown)}")
    try:
        return tuple(HfArgumentParser(dataclass_types).parse_dict(values))
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None


def explicit_flags(dataclass_types, argv) -> set[str]:
    """The fields of `dataclass_types` the command line sets, whatever the spelling: `--flag value`, `--flag=value`,
    a bare boolean `--flag`, `--no_flag`, `--flag-with-hyphens`, or an abbreviation argparse accepts.

    argparse itself decides: a parser whose every default is SUPPRESS leaves out of its namespace exactly the fields
    the command line did not mention (a value equal to the default still counts as given). (Per action:
    HfArgumentParser gives each argument its own default, which `argument_default` would not override, and
    `set_defaults` would type-convert the SUPPRESS marker.)
    """
    from transformers import HfArgumentParser

    parser = HfArgumentParser(dataclass_types)
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    given, _ = parser.parse_known_args(list(argv))
    return set(vars(given))


def parse_cli_with_explicit(dataclass_types, argv=None) -> tuple[tuple, set[str]]:
    """`(parse_cli(dataclass_types, argv), the names the user set)`: the keys of the JSON file, or the flags given
    (`explicit_flags`). CLIs that fill in a recipe's defaults only where the user did not choose need both."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if is_arguments_file(argv):
        path = os.path.abspath(argv[0])
        values = read_arguments_file(path)
        return parse_dict(dataclass_types, values, f"arguments file {path}"), set(values)
    from transformers import HfArgumentParser

    parsed = tuple(HfArgumentParser(dataclass_types).parse_args_into_dataclasses(argv))
    return parsed, explicit_flags(dataclass_types, argv)


def parse_cli(dataclass_types, argv=None) -> tuple:
    """Parse flags into `dataclass_types` (`HfArgumentParser`), or the fields of a JSON file given as the only argument."""
    from transformers import HfArgumentParser

    argv = sys.argv[1:] if argv is None else list(argv)
    if is_arguments_file(argv):
        path = os.path.abspath(argv[0])
        return parse_dict(dataclass_types, read_arguments_file(path), f"arguments file {path}")
    return tuple(HfArgumentParser(dataclass_types).parse_args_into_dataclasses(argv))


def format_results_table(payload: dict) -> str:
    """A plain-text table of the result rows (few-shot: the mean over seeds, with its std; params: the probe head's
    trainable parameters)."""
    lines = [f"{'method':<26}{'split':<26}{'k':>5}{'shots':>7}{'top1':>13}{'top5':>9}{'base_lr':>9}{'params':>10}  flag"]
    for row in payload["results"]:
        if row.get("shots") is not None and row.get("seed") is not None:
            continue
        top1 = f"{row['top1']:.2f}" + (f"±{row['top1_std']:.1f}" if "top1_std" in row else "")
        base_lr = f"{row['base_lr']:g}" if "base_lr" in row else "-"
        params = f"{row['num_parameters']:,}" if "num_parameters" in row else "-"  # the probe head's, trainable
        flag = "DEGENERATE (head did not train)" if row.get("degenerate") else ""
        lines.append(
            f"{row['method']:<26}{row['split']:<26}{row['k'] or '-':>5}{row['shots'] or '-':>7}{top1:>13}{row['top5']:>9.2f}"
            f"{base_lr:>9}{params:>10}  {flag}".rstrip()
        )
    return "\n".join(lines)


def print_summary(payload: dict, format_table=None) -> None:
    """The results table (`format_table(payload)`, default `format_results_table`) and where things went; prints only
    on the main process (which has `results_file`)."""
    if "results_file" not in payload:
        return
    print((format_table or format_results_table)(payload))
    card = f"  model card: {payload['model_card']}" if "model_card" in payload else ""
    print(f"results: {payload['results_file']}{card}")
    print(f"feature cache hits: {json.dumps(payload['cache_hits'])}")


__all__ = ["parse_json", "read_arguments_file", "is_arguments_file", "parse_dict", "explicit_flags", "parse_cli",
           "parse_cli_with_explicit", "format_results_table", "print_summary"]
