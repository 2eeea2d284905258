"""Where the repository-level data folders are: `model_cards/` and `metrics/` live at the repository root (the
layout) and ship inside the package as `modeling_attg_mae/model_cards` and `modeling_attg_mae/metrics` in a wheel
(setup.cfg's `package_dir` / `package_data`). One lookup for both, so the two cannot drift apart.
"""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def packaged_path(*parts: str) -> Path:
    """The copy shipped as `modeling_attg_mae/<parts>` in an installed wheel, else `<repository>/<parts>` in a
    checkout (or an editable install).

    When neither exists the checkout path is returned, not an error: the caller refuses it with a message that names
    what it needed (a metric module, the card template) and where it looked.
    """
    # the package's own copy first: in an install, the folder above the package is site-packages, where an
    # unrelated top-level `metrics/` or `model_cards/` may stand
    candidates = (_PACKAGE.joinpath(*parts), _PACKAGE.parent.joinpath(*parts))
    return next((path for path in candidates if path.exists()), candidates[1])


__all__ = ["packaged_path"]
