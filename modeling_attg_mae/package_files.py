"""Where the repository-level data folders are: `model_cards/` and `metrics/` live at the repository root (the
layout) and ship inside the package as `modeling_attg_mae/model_cards` and `modeling_attg_mae/metrics` in a wheel
(setup.cfg's `package_dir` / `package_data`). One lookup for both, so the two cannot drift apart.
"""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def packaged_path(*parts: str) -> Path:
    """`<repository>/<parts>` in a checkout (or an editable install), else the copy shipped as
    `modeling_attg_mae/<parts>` in an installed wheel.

    When neither exists the checkout path is returned, not an error: the caller refuses it with a message that names
    what it needed (a metric module, the card template) and where it looked.
    """
    candidates = (_PACKAGE.parent.joinpath(*parts), _PACKAGE.joinpath(*parts))
    return next((path for path in candidates if path.exists()), candidates[0])


__all__ = ["packaged_path"]
