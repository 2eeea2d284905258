"""The dependency versions attg-mae supports, checked when the package (or the model file alone) is imported.

`SUPPORTED` is the runtime copy of the bounds in setup.cfg's `install_requires`; tests/test_dependencies.py checks
that the two, and the pins of ci/constraints-min.txt, agree. The lower bounds are the oldest releases with which the
test suite passes (README, "Supported versions"); below them the failures are an ImportError deep inside
transformers' ViTMAE internals, a silently re-initialised decoder, a pyarrow or Trainer error at the first step or
a refused `torch.load` on resume, so they are refused here, at import, with the package's name instead.

This file travels to the Hub with `modeling_attg_mae.py` (remote code): it imports only the standard library and
`packaging`, which transformers itself requires.
"""

from importlib import metadata

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

# distribution name -> supported versions (PEP 440), as in setup.cfg
SUPPORTED = {
    "torch": ">=2.6",
    "transformers": ">=5.16.0,<6",
    "datasets": ">=3.5.1",
    "accelerate": ">=1.3.0",
    "evaluate": ">=0.4.0",
    "huggingface_hub": ">=1.5.0",
    "safetensors": ">=0.8.0",
    "pillow": ">=10.0.0",
    "numpy": ">=2.0.0",
}

# what the model file needs on its own (remote code loads it without the rest of the package)
MODEL_DEPENDENCIES = ("torch", "transformers")


def installed_version(name: str) -> str | None:
    """The installed version of distribution `name`, or None when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def unsupported(name: str, installed: str) -> str | None:
    """Why `installed` of `name` is not supported, or None when it is."""
    spec = SpecifierSet(SUPPORTED[name])
    try:
        ok = spec.contains(Version(installed), prereleases=True)  # a source build (5.25.0.dev0) is fine
    except InvalidVersion:
        return None  # a version we cannot parse (a vendor build): let it through rather than guess
    if ok:
        return None
    return (
        f"attg-mae needs {name}{spec} but {name} {installed} is installed; "
        f"install a supported version: pip install '{name}{spec}' (supported and tested versions: README.md, "
        f"'Supported versions')"
    )


def check_dependencies(*names: str) -> None:
    """Raise ImportError naming the first installed dependency (all of `SUPPORTED` by default) whose version is
    outside the supported range. A dependency that is not installed is left to fail at its own import."""
    names = names or tuple(SUPPORTED)
    for name in names:
        installed = installed_version(name)
        if installed is not None and (problem := unsupported(name, installed)):
            raise ImportError(problem)
    if "torch" in names and "transformers" in names and installed_version("torch") is not None:
        # transformers switches PyTorch off below its own floor (torch>=2.5 for 5.16-5.19, >=2.6 from 5.20) and then
        # fails later with a confusing "requires the PyTorch library" error: name the pair here instead
        from transformers.utils import is_torch_available

        if not is_torch_available():
            transformers_version = installed_version("transformers")
            raise ImportError(
                f"transformers {transformers_version} disables torch {installed_version('torch')}: it needs a "
                f"newer torch (pip install 'transformers[torch]=={transformers_version}' shows which), and attg-mae "
                f"needs both"
            )


__all__ = ["MODEL_DEPENDENCIES", "SUPPORTED", "check_dependencies", "installed_version", "unsupported"]
