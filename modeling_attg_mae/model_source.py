"""Where a model comes from: one check of a `--model_name_or_path` value, used by every model loader.

A value that is plainly a file-system path (`./x`, `../x`, `/x`, `~/x`, `a/b/c`) but does not exist is
reported as a missing path; transformers would otherwise try it as a Hub id and answer "Repo id must be in the
form 'repo_name' or 'namespace/repo_name'".
"""

from __future__ import annotations

import os


def _plainly_a_path(text: str) -> bool:
    # Hub ids are "name" or "namespace/name"; anything else with a separator is meant as a local path
    return (text.startswith((".", "/", "~")) or os.path.isabs(text) or "\\" in text or text.count("/") > 1
            or text.endswith("/"))


def check_model_path(model_name_or_path, flag: str = "--model_name_or_path") -> str:
    """Return `model_name_or_path` as a string after checking it can be a checkpoint.

    Raises ValueError naming `flag` when it is a path that does not exist, a file, or a folder without
    config.json. A Hub-id-like value that is not a local folder is returned as is (the Hub decides).
    """
    text = os.fspath(model_name_or_path)
    if not text:
        raise ValueError(f"{flag} is empty: pass a checkpoint folder or a Hub id")
    expanded = os.path.expanduser(text)
    if os.path.isdir(expanded):
        if not os.path.isfile(os.path.join(expanded, "config.json")):
            raise ValueError(f"{flag} {text!r} is a folder without config.json, not a saved model (a checkpoint "
                             "folder is written by save_pretrained)")
        return expanded
    if os.path.exists(expanded):
        raise ValueError(f"{flag} {text!r} is a file; pass the checkpoint folder that holds config.json, or a Hub id")
    if _plainly_a_path(text):
        raise ValueError(f"{flag} {text!r} does not exist (no such local folder; "
                         f"the current directory is {os.getcwd()})")
    return text


def load_config(model_name_or_path, flag: str = "--model_name_or_path", **kwargs):
    """`AutoConfig.from_pretrained` after `check_model_path`; a failure names the flag and the value (for a
    Hub id that cannot be reached offline, too)."""
    from transformers import AutoConfig

    path = check_model_path(model_name_or_path, flag)
    try:
        return AutoConfig.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as error:
        where = "the local folder" if os.path.isdir(path) else "no local folder of that name, and the Hub id"
        raise ValueError(f"{flag} {os.fspath(model_name_or_path)!r}: cannot load a model config ({where}): "
                         f"{error}") from error


__all__ = ["check_model_path", "load_config"]
