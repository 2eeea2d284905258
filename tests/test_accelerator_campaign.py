"""benchmarks/accelerator_campaign.py (issue 24, item 1): the --smoke run writes every section of the schema with
measured, positive, finite figures; the budget guard, reruns into the same file and the go/no-go rule. One smoke
run (tiny models, a 3-step pilot through run_pretrain.py) serves the schema tests: about 40 s on two busy cores."""

import json
import math

import pytest
import torch

from benchmarks import accelerator_campaign as campaign
from benchmarks.timing import summary


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _spread_ok(spread: dict) -> bool:
    return (all(_positive(spread[key]) for key in ("median", "min", "max"))
            and spread["min"] <= spread["median"] <= spread["max"] and spread["n"] >= 1)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    folder = tmp_path_factory.mktemp("campaign")
    output = folder / "smoke.json"
    # a budget no slow machine reaches: the guard is tested on its own below
    code = campaign.main(["--smoke", "--output", str(output), "--work", str(folder / "work"), "--budget_s", "900"])
    return code, output, json.loads(output.read_text())


def test_smoke_writes_every_section_with_the_device_and_the_smoke_label(smoke):
    code, _, record = smoke
    assert code == 0
    assert record["schema_version"] == campaign.SCHEMA_VERSION and record["smoke"] is True
    assert record["device"] == ("cuda" if torch.cuda.is_available() else "cpu") and record["device_name"]
    assert "CPU numbers" in record["numbers"] and "randomly initialised" in record["weights"]
    assert set(record["sections"]) == set(campaign.SECTIONS)
    for name, section in record["sections"].items():
        assert section["status"] == "done", (name, section.get("error"), section.get("reason"))
        assert _positive(section["seconds"])


def test_step_rows_are_paired_ratios_for_both_sizes_eager_and_compiled(smoke):
    rows = smoke[2]["sections"]["step"]["rows"]
    assert {(row["stands_for"], row["compile"]) for row in rows} == {
        (size, mode) for size in ("ViT-B/16", "ViT-L/16") for mode in (None, "aot_eager")}
    for row in rows:
        assert _spread_ok(row["stock_ms"]) and _spread_ok(row["attg_ms"]) and _spread_ok(row["ratio"])
        assert row["ratio"]["n"] == campaign.PLANS["smoke"]["step_repeats"]
        assert row["meets_goal"] == (row["ratio"]["median"] <= campaign.STEP_GOAL_RATIO)
        assert row["goal_ratio"] == 1.005 and row["autocast"] == "bfloat16"
    # the guided model traces as one graph (tests/test_modeling.py); stock's breaks are transformers' business
    assert all(row["graph_breaks"]["attg"] == 0 and row["graph_breaks"]["stock"] >= 0 for row in rows if row["compile"])


def test_maps_rows_compare_the_batched_step_with_the_per_image_reference(smoke):
    section = smoke[2]["sections"]["maps"]
    assert {(row["method"], row["stands_for"]) for row in section["rows"]} == {
        (method, detector) for method in ("dino", "tokencut") for detector in ("ViT-S/16", "ViT-B/16")}
    for row in section["rows"]:
        assert all(_spread_ok(spread) for spread in row["images_per_s"].values())
        assert all(_positive(x) for x in (*row["speedup_vs_reference"].values(), *row["imagenet_hours"].values()))
        rate = row["images_per_s"]["map_step_end_to_end"]["median"]
        assert row["imagenet_hours"]["map_step_end_to_end"] == pytest.approx(
            campaign.IMAGENET_TRAIN_IMAGES / rate / 3600, rel=1e-3, abs=1e-3)
    for cut in section["graph_cut"]:
        assert _positive(cut["speedup"]) and 0.0 <= cut["same_partition_fraction"] <= 1.0


def test_loader_rows_say_which_side_bounds_the_run(smoke):
    section = smoke[2]["sections"]["loader"]
    workers = campaign.PLANS["smoke"]["loader_workers"]
    assert [row["num_workers"] for row in section["rows"]] == workers
    assert all(_spread_ok(row["images_per_s"]) for row in section["rows"])
    consumption = section["gpu_consumption"]
    assert set(consumption) == {"ViT-B/16", "ViT-L/16"}
    assert all(_positive(c["images_per_s"]) for c in consumption.values())
    assert len(section["bounds"]) == len(workers) * 2
    for bound in section["bounds"]:
        assert _positive(bound["loader_over_step"])
        assert bound["bound"] == ("loader" if bound["loader_over_step"] < 1 else "step")


def test_online_rows_and_the_pilot_decision(smoke):
    record = smoke[2]
    online = record["sections"]["online"]
    assert [row["method"] for row in online["rows"]] == ["dino", "tokencut"]
    assert all(_spread_ok(row["ratio"]) and _spread_ok(row["maps_only_ms"]) for row in online["rows"])
    pilot = record["sections"]["pilot"]
    assert set(pilot["arms"]) == {"none", "attg"} and all(arm["steps"] == 3 for arm in pilot["arms"].values())
    rule = pilot["go_no_go"]
    assert rule["rule"] == campaign.GO_NO_GO["rule"] and rule["margin_points"] == campaign.GO_NO_GO["margin_points"]
    assert rule["decision"] in ("go", "no-go") and set(rule["per_split"]) == set(campaign.GO_NO_GO["splits"])
    for split, entry in rule["per_split"].items():
        assert entry["mae"] == pilot["arms"]["none"]["knn_cls"][split]
        assert entry["best_training_free"] == max(values[split] for values in pilot["training_free"].values())
    assert set(pilot["attg_minus_mae"]) == set(pilot["arms"]["none"]["knn_cls"])
    assert "means nothing" in pilot["note"]


def test_the_table_renders_from_the_json(smoke, capsys):
    _, output, record = smoke
    assert campaign.main(["--render", str(output)]) == 0
    table = capsys.readouterr().out
    assert "| section | setting | result (median) | spread (min-max over n repeats) |" in table
    assert "CPU numbers of tiny stand-in models" in table
    lines = {name: [line for line in table.splitlines() if line.startswith(f"| {name} |")]
             for name in campaign.SECTIONS}
    sections = record["sections"]
    assert len(lines["step"]) == len(sections["step"]["rows"]) == 4
    assert len(lines["maps"]) == len(sections["maps"]["rows"]) + len(sections["maps"]["graph_cut"])
    assert len(lines["loader"]) == len(sections["loader"]["rows"]) + 1  # + what the step consumes
    assert [line.split("|")[2].split()[0] for line in lines["online"]] == ["dino", "tokencut"]
    assert len(lines["pilot"]) == 3 and ("**go**" in lines["pilot"][-1] or "**no-go**" in lines["pilot"][-1])


def test_a_rerun_replaces_only_its_sections(smoke, tmp_path):
    _, output, first = smoke
    copy = tmp_path / "rerun.json"
    copy.write_text(output.read_text())
    assert campaign.main(["--smoke", "--sections", "online", "--output", str(copy), "--budget_s", "900"]) == 0
    again = json.loads(copy.read_text())
    assert len(again["runs"]) == len(first["runs"]) + 1
    for name in ("step", "maps", "loader", "pilot"):
        assert again["sections"][name] == first["sections"][name]
    assert again["sections"]["online"]["started_at"] >= first["sections"]["online"]["started_at"]
    assert again["sections"]["online"]["status"] == "done"


def test_the_budget_skips_with_the_reason_and_the_rerun_command(tmp_path):
    output = tmp_path / "skipped.json"
    assert campaign.main(["--smoke", "--sections", "step", "pilot", "--output", str(output), "--budget_s", "0"]) == 0
    sections = json.loads(output.read_text())["sections"]
    for name in ("step", "pilot"):
        assert sections[name]["status"] == "skipped"
        assert "--budget_s 0" in sections[name]["reason"] and f"--sections {name}" in sections[name]["reason"]
    assert sections["maps"]["status"] == "not_run"


def test_a_file_of_another_kind_of_run_is_not_mixed_into(tmp_path):
    output = tmp_path / "gpu.json"
    output.write_text(json.dumps({"schema_version": campaign.SCHEMA_VERSION, "smoke": False, "device": "cuda"}))
    with pytest.raises(SystemExit, match="holds another kind of run"):
        campaign.main(["--smoke", "--output", str(output), "--budget_s", "0"])


def test_go_no_go_needs_the_margin_on_every_split():
    free = {"raw_pixels": {"validation": 50.0, "validation_mixed_rand": 36.0},
            "hue_histogram": {"validation": 54.9, "validation_mixed_rand": 20.0}}
    # validation: 60 - 54.9 = 5.1 >= 5 clears; mixed_rand: 40 - 36 = 4 < 5 does not
    verdict = campaign.go_no_go({"validation": 60.0, "validation_mixed_rand": 40.0}, free)
    assert verdict["decision"] == "no-go"
    assert verdict["per_split"]["validation"] == {"mae": 60.0, "best_training_free": 54.9,
                                                  "best_training_free_name": "hue_histogram",
                                                  "mae_minus_best": 5.1, "clears": True}
    assert verdict["per_split"]["validation_mixed_rand"]["clears"] is False
    assert campaign.go_no_go({"validation": 60.0, "validation_mixed_rand": 41.0}, free)["decision"] == "go"


def test_summary_is_the_median_and_range_of_the_scaled_values():
    assert summary([0.003, 0.001, 0.002], scale=1e3) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}


def test_over_budget_adds_the_estimate_to_the_time_spent(monkeypatch):
    run = campaign.Campaign.__new__(campaign.Campaign)  # only the budget's state: no section runs
    run.budget_s = 20.0
    monkeypatch.setattr(campaign.Campaign, "elapsed", lambda self: 12.0)
    assert run.over_budget(8.0, "--sections pilot") is None
    reason = run.over_budget(8.5, "--sections pilot")
    assert reason.startswith("--budget_s 20: 12 s elapsed + about 8 s estimated would pass it")
    assert "--sections pilot" in reason


def test_out_of_budget_the_pilot_still_decides_before_it_skips_attg(tmp_path, capsys, monkeypatch):
    # the budget holds the pilot's first piece (MAE + the baselines, which the decision needs) and nothing more; the
    # clock is the test's (a wall clock on a busy machine would make the outcome depend on the load)
    pieces = campaign.PLANS["smoke"]["estimates_s"]["pilot"]
    first = pieces["none"] + pieces["baselines"]
    asked = []

    def over_budget(self, estimate, rerun):  # the first piece fits, whatever comes after it does not
        asked.append(estimate)
        return None if len(asked) == 1 else f"--budget_s {first:.0f}: the test's clock; run it with {rerun}"

    monkeypatch.setattr(campaign.Campaign, "over_budget", over_budget)
    output = tmp_path / "pilot.json"
    assert campaign.main(["--smoke", "--sections", "pilot", "--output", str(output), "--work", str(tmp_path / "work"),
                          "--budget_s", str(first)]) == 0
    pilot = json.loads(output.read_text())["sections"]["pilot"]
    assert pilot["status"] == "done" and pilot["go_no_go"]["decision"] in ("go", "no-go")
    assert "--sections pilot" in pilot["arms"]["attg"]["skipped"] and "attg_minus_mae" not in pilot
    assert "| pilot | AttG | skipped: --budget_s" in capsys.readouterr().out
    assert asked == [first, pieces["attg"]]  # asked for the first piece (MAE + baselines), then for AttG
