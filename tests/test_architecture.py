"""The architecture as the code has it: docs/ARCHITECTURE.md's import graph is current, and the boundaries hold.

The graph is read by tests/import_graph.py with `ast` (nothing imported). Lazy imports (inside a function) count for
the boundaries: a boundary is about what a part of the package may know, not about when it learns it.
"""

import sys

import pytest
from PIL import Image

from tests import import_graph
from tests.import_graph import LAZY, MODULE, PACKAGE, build_graph, module_level_cycles, node_of, render_mermaid

REGENERATE = "python -m tests.import_graph"
MAP_FUNCTIONS = {"resample_attention_map", "normalize_attention_map", "patch_grid"}  # the model file's map helpers
STDLIB = set(sys.stdlib_module_names)


@pytest.fixture(scope="module")
def graph():
    return build_graph()


def imports_from(graph, source_node, target_nodes, repo=import_graph.REPO):
    """Every import, lazy ones included, by a file of `source_node` of something in `target_nodes`."""
    return [f"{item.source_file} imports {item.target} ({item.kind})" for item in graph.imports
            if node_of(repo / item.source_file, repo) == source_node and node_of(item.target, repo) in target_nodes]


# --- the document -----------------------------------------------------------------------------------------------------

def test_the_committed_mermaid_block_is_what_the_code_gives(graph):
    committed = import_graph.committed_block(import_graph.DOC.read_text())
    assert committed == render_mermaid(graph), (
        f"docs/ARCHITECTURE.md's import graph differs from the imports in the code: regenerate it with `{REGENERATE}`")


def test_the_committed_picture_was_drawn_from_the_current_graph(graph):
    assert "(architecture.png)" in import_graph.DOC.read_text()
    with Image.open(import_graph.PNG) as picture:
        drawn_from = picture.text.get(import_graph.DIGEST_KEY)
    assert drawn_from == import_graph.digest(render_mermaid(graph)), (
        f"docs/architecture.png was drawn from another import graph: regenerate it with `{REGENERATE}`")


def test_every_package_file_and_cli_is_in_the_graph(graph):
    expected = {"run_pretrain.py", "run_knn.py", "run_linear_probe.py", "run_retrieval.py", "run_fine_tune.py",
                "modeling_attg_mae.py", "configuration_attg_mae.py", "cli.py", "export.py", "data/", "evaluation/",
                "object_discovery/", "pretraining/", "fine_tuning/"}
    assert expected <= set(graph.nodes)
    assert {kind for node, kind in graph.nodes.items() if node.startswith("run_")} == {"cli"}
    assert graph.nodes["data/"] == "package" and graph.nodes["cli.py"] == "module"


# --- the boundaries ---------------------------------------------------------------------------------------------------

def test_the_model_file_imports_only_what_travels_with_it_to_the_hub(graph):
    # register_for_auto_class copies the model file and its relative imports; _dependencies.py is the documented
    # exception to "torch, transformers and the config" (docs/ARCHITECTURE.md, Boundaries)
    bundle = {"modeling_attg_mae.py": {"configuration_attg_mae.py", "_dependencies.py"},
              "configuration_attg_mae.py": set(), "_dependencies.py": set()}
    third_party = {"modeling_attg_mae.py": {"torch", "transformers"}, "configuration_attg_mae.py": {"transformers"},
                   "_dependencies.py": {"transformers", "packaging"}}
    top_level_fallback = {"configuration_attg_mae", "_dependencies"}  # the file's `except ImportError:` branch
    for name, allowed in bundle.items():
        inside = {node_of(item.target) for item in graph.imports if item.source_file == f"{PACKAGE}/{name}"}
        assert inside <= allowed, f"{name} imports {sorted(inside - allowed)} from the package"
        outside = graph.external[f"{PACKAGE}/{name}"] - STDLIB - top_level_fallback
        assert outside <= third_party[name], f"{name} imports {sorted(outside - third_party[name])}"


@pytest.mark.parametrize("source, forbidden", [
    ("evaluation/", {"object_discovery/", "pretraining/"}),
    ("object_discovery/", {"pretraining/", "evaluation/", "fine_tuning/"}),
    ("data/", {"pretraining/", "evaluation/", "fine_tuning/"}),
])
def test_a_part_imports_nothing_from_the_parts_it_must_not_know(graph, source, forbidden):
    assert imports_from(graph, source, forbidden) == []


@pytest.mark.parametrize("source", ["object_discovery/", "data/"])
def test_maps_and_data_take_only_the_map_functions_from_the_model_file(graph, source):
    taken = {name for item in graph.imports if node_of(import_graph.REPO / item.source_file) == source
             and node_of(item.target) == "modeling_attg_mae.py" for name in item.names}
    assert taken and taken <= MAP_FUNCTIONS, f"{source} takes {sorted(taken - MAP_FUNCTIONS)} from the model file"


def test_no_import_cycle_at_module_level(graph):
    assert module_level_cycles(graph) == []


# --- the generator, on a package written here -------------------------------------------------------------------------

@pytest.fixture
def toy_repo(tmp_path):
    files = {
        "run_tool.py": "from modeling_attg_mae.sub.inner import y\n",
        f"{PACKAGE}/__init__.py": "from .a import x\n",
        f"{PACKAGE}/a.py": ("import torch\nimport modeling_attg_mae.c\nfrom .sub import y\nx = 1\n\n"
                            "def f():\n    from .b import z\n"),
        f"{PACKAGE}/b.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import x\n\n"
                            "class C:\n    from .c import w\n"),
        f"{PACKAGE}/c.py": "from . import a\nw = 2\n",
        f"{PACKAGE}/sub/__init__.py": "from .inner import y\n",
        f"{PACKAGE}/sub/inner.py": "from ..b import C\ny = 3\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_the_graph_resolves_relative_imports_and_tells_lazy_from_module_level(toy_repo):
    graph = build_graph(toy_repo)
    assert graph.nodes == {"run_tool.py": "cli", "__init__.py": "module", "a.py": "module", "b.py": "module",
                           "c.py": "module", "sub/": "package"}
    assert graph.edges == {
        ("run_tool.py", "sub/"): MODULE,
        ("__init__.py", "a.py"): MODULE,
        ("a.py", "c.py"): MODULE,  # `import modeling_attg_mae.c`
        ("a.py", "sub/"): MODULE,
        ("a.py", "b.py"): LAZY,  # inside a function
        ("b.py", "a.py"): LAZY,  # under `if TYPE_CHECKING:`
        ("b.py", "c.py"): MODULE,  # a class body runs at import time
        ("c.py", "a.py"): MODULE,  # `from . import a`: the sub-module, not the package
        ("sub/", "b.py"): MODULE,  # `from ..b` in sub/inner.py; sub/__init__ -> sub/inner stays inside the node
    }
    assert graph.external[f"{PACKAGE}/a.py"] == {"torch"}
    assert graph.external[f"{PACKAGE}/b.py"] == {"typing"}
    assert imports_from(graph, "sub/", {"b.py"}, toy_repo) == [
        f"{PACKAGE}/sub/inner.py imports {PACKAGE}.b (module)"]
    mermaid = render_mermaid(graph)
    assert "  n_a --> n_c\n" in mermaid and "  n_a -.-> n_b\n" in mermaid and '  n_sub_pkg[["sub/"]]' in mermaid


def test_cycles_are_found_through_module_level_edges_only(toy_repo):
    graph = build_graph(toy_repo)
    cycles = module_level_cycles(graph)
    # two cycles share the edge c -> a (a -> c -> a, a -> sub/ -> b -> c -> a); the search reports the back edge once
    assert cycles == [["a.py", "c.py", "a.py"]]
    (toy_repo / PACKAGE / "c.py").write_text("w = 2\n\ndef g():\n    from . import a\n")  # the back edge made lazy
    assert module_level_cycles(build_graph(toy_repo)) == []


def test_layers_put_entry_points_on_top_and_imports_below_their_importers(graph):
    layer = import_graph.layers(graph)
    top = max(layer.values())
    assert all(layer[node] == top for node, kind in graph.nodes.items() if kind == "cli")
    assert layer["configuration_attg_mae.py"] == 0
    assert layer["modeling_attg_mae.py"] < min(layer[s] for (s, t) in graph.edges if t == "modeling_attg_mae.py")
    for (source, target), kind in graph.edges.items():
        if kind == MODULE:
            assert layer[source] > layer[target], (source, target)
