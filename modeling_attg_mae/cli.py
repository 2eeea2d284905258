"""What the command lines share: arguments from flags or from one JSON file, and JSON-valued flags.

A malformed JSON file or flag value is a ValueError naming the file or flag and the line / column, not a bare
`json.JSONDecodeError`.
"""

from __future__ import annotations

import json
import os
import sys


def parse_json(text: str, source: str):
    """`json.loads(text)`; a syntax error names `source` (a file path or a flag) and the line and column."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{source} is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}"
                         ) from None


def parse_cli(dataclass_types, argv=None) -> tuple:
    """Parse flags into `dataclass_types` (`HfArgumentParser`), or the fields of a JSON file given as the only argument."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(dataclass_types)
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        path = os.path.abspath(argv[0])
        if not os.path.isfile(path):
            raise ValueError(f"arguments file {path} does not exist")
        with open(path, encoding="utf-8") as f:
            values = parse_json(f.read(), f"arguments file {path}")
        if not isinstance(values, dict):
            raise ValueError(f"arguments file {path} must hold a JSON object of argument names, got "
                             f"{type(values).__name__}")
        try:
            return tuple(parser.parse_dict(values))
        except ValueError as error:  # unknown keys: say which file they are in
            raise ValueError(f"arguments file {path}: {error}") from None
    return parser.parse_args_into_dataclasses(argv)


__all__ = ["parse_json", "parse_cli"]
