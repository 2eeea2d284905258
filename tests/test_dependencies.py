"""Supported dependency versions: one table, the same as setup.cfg and ci/constraints-min.txt, checked at import."""

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from modeling_attg_mae import _dependencies
from modeling_attg_mae._dependencies import SUPPORTED, check_dependencies

REPO = Path(__file__).resolve().parents[1]


def canonical(name):
    return name.lower().replace("_", "-")


def install_requires():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    lines = [line.split("#")[0].strip() for line in config["options"]["install_requires"].splitlines()]
    return {canonical(req.name): req for req in map(Requirement, filter(None, lines))}


def minimum(spec):
    return next(s.version for s in SpecifierSet(spec) if s.operator == ">=")


def test_setup_cfg_and_the_runtime_table_agree():
    requires = install_requires()
    for name, spec in SUPPORTED.items():
        assert canonical(name) in requires, f"{name} is checked at import but not in setup.cfg"
        assert requires[canonical(name)].specifier == SpecifierSet(spec), name


def test_the_minimum_constraints_pin_exactly_the_lower_bounds():
    pins = {}
    for line in (REPO / "ci" / "constraints-min.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            pins[canonical(req.name)] = str(req.specifier)
    expected = {canonical(name): f"=={minimum(spec)}" for name, spec in SUPPORTED.items() if name != "torch"}
    assert pins == expected  # torch: the CPU build of the Makefile's TORCH_SPEC (README, "Supported versions")


def test_the_installed_versions_are_supported():
    check_dependencies()


@pytest.mark.parametrize(
    "name, version",
    [("transformers", "5.15.0"), ("transformers", "6.0.0"), ("transformers", "6.0.0.dev0"), ("torch", "2.5.1"),
     ("datasets", "3.5.0"), ("accelerate", "1.2.1"), ("huggingface_hub", "1.4.1"), ("numpy", "1.26.4")],
)
def test_an_unsupported_version_is_refused_with_its_name(monkeypatch, name, version):
    real = _dependencies.installed_version
    monkeypatch.setattr(_dependencies, "installed_version", lambda dist: version if dist == name else real(dist))
    with pytest.raises(ImportError, match=rf"needs {name}{SpecifierSet(SUPPORTED[name])} but {name} {version} is"):
        check_dependencies()


def test_source_builds_and_unknown_packages_pass(monkeypatch):
    real = _dependencies.installed_version
    monkeypatch.setattr(_dependencies, "installed_version",
                        lambda dist: "5.99.0.dev0" if dist == "transformers" else real(dist))
    check_dependencies()
    monkeypatch.setattr(_dependencies, "installed_version", lambda dist: None)  # nothing installed: left to import
    check_dependencies()


def run_python(code, cwd=REPO):
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd, timeout=300,
                          check=False)


# the installed version as importlib.metadata reports it, faked before anything of attg-mae is imported
FAKE_OLD_TRANSFORMERS = """
import importlib.metadata as metadata
real = metadata.version
metadata.version = lambda name: "5.0.0" if name == "transformers" else real(name)
"""


def test_importing_the_package_with_an_old_transformers_fails_at_import_naming_it():
    result = run_python(FAKE_OLD_TRANSFORMERS + "import modeling_attg_mae")
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: attg-mae needs transformers") and "transformers 5.0.0 is installed" in last


def test_the_model_file_alone_checks_too(tmp_path):
    # as remote code: the files that travel to the Hub, imported as top-level modules without the package
    for name in ("modeling_attg_mae.py", "configuration_attg_mae.py", "_dependencies.py"):
        shutil.copy(REPO / "modeling_attg_mae" / name, tmp_path / name)
    ok = run_python("import modeling_attg_mae; print(modeling_attg_mae.__file__)", cwd=tmp_path)
    assert ok.returncode == 0 and ok.stdout.strip() == str(tmp_path / "modeling_attg_mae.py"), ok.stderr[-2000:]
    result = run_python(FAKE_OLD_TRANSFORMERS + "import modeling_attg_mae", cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("ImportError: attg-mae needs transformers")


def test_a_torch_that_transformers_switches_off_is_named(monkeypatch):
    import transformers.utils

    monkeypatch.setattr(transformers.utils, "is_torch_available", lambda: False)
    with pytest.raises(ImportError, match="disables torch"):
        check_dependencies("torch", "transformers")
