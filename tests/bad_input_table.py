"""Render docs/TROUBLESHOOTING.md from the bad-input tables the tests check: `python -m tests.bad_input_table`.

Each test module listed in `SOURCES` has a `CASES` list of dicts with `id`, `input` (what the user did) and
`message` (a regular expression the error must match); the document is generated, never edited by hand, so that
it cannot drift from what the code says.
"""

import importlib
import re
from pathlib import Path

SOURCES = {
    "tests.test_bad_inputs_pretrain": "Pre-training (`run_pretrain.py`)",
    "tests.test_bad_inputs_data": "Data, maps and evaluation (`run_knn.py`, `run_linear_probe.py`, `run_retrieval.py`, "
                                   "the maps CLI)",
    "tests.test_export": "Encoder export (`python -m modeling_attg_mae.export`)",
    "tests.test_fine_tuning": "Fine-tuning (`run_fine_tune.py`)",
}
DOC = Path(__file__).resolve().parents[1] / "docs" / "TROUBLESHOOTING.md"


def _readable(pattern: str) -> str:
    """The regex as the words a user sees: `.*` becomes an ellipsis, escapes are dropped."""
    text = pattern.replace(".*", " … ").replace("\\", "")
    return re.sub(r"\s+", " ", text).strip()


def render() -> str:
    lines = ["# Troubleshooting: bad input and what you are told", "",
             "Generated from the tests' tables by `python -m tests.bad_input_table`; every row is a test that feeds",
             "that input and checks the message (and, where the stage says so, that no data or model work ran",
             "before it). *arguments*: refused before any data is opened or weight built; *data*: refused once the",
             "dataset is opened, before maps and training; *weights*: refused while the weights load, before anything is",
             "written.", ""]
    for module_name, title in SOURCES.items():
        try:
            cases = importlib.import_module(module_name).CASES
        except ModuleNotFoundError:
            continue
        lines += [f"## {title}", "", "| what you did | what you are told | stage |", "| --- | --- | --- |"]
        for case in cases:
            message = _readable(case["message"]).replace("|", "\\|")
            lines.append(f"| {case['input']} | {message} | {case.get('stage', '')} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    DOC.write_text(render())
    print(f"wrote {DOC}")
