"""Packages are found, not listed (a hand-written list once left out `modeling_attg_mae.pretraining`, so a wheel
install could not pre-train). Everything else is in setup.cfg. The two repository-level data folders, `model_cards/`
and `metrics/`, ship inside the package (setup.cfg's `package_dir`; `modeling_attg_mae/package_files.py` finds them).
"""

from setuptools import find_packages, setup

DATA_PACKAGES = ["modeling_attg_mae.model_cards", "modeling_attg_mae.metrics"]

setup(packages=find_packages(include=["modeling_attg_mae", "modeling_attg_mae.*"]) + DATA_PACKAGES)
