"""The half-cycle cosine schedule of tau (paper Sec. 3.2) and its Trainer callback."""

import math

import pytest
import torch
from transformers import TrainerControl, TrainerState, TrainingArguments

from modeling_attg_mae import AttGTemperatureCallback, temperature_at
from tests.conftest import tiny_model


def test_cosine_schedule_rises_from_start_to_end():
    assert temperature_at(0, 100, 0.75, 1.0) == 0.75
    assert temperature_at(50, 100, 0.75, 1.0) == pytest.approx(0.875)  # half-way: the mean
    assert temperature_at(100, 100, 0.75, 1.0) == pytest.approx(1.0)
    # a quarter of the way: start + (end - start) * (1 - cos(pi / 4)) / 2
    assert temperature_at(25, 100, 0.75, 1.0) == pytest.approx(0.75 + 0.25 * (1 - math.cos(math.pi / 4)) / 2)
    assert temperature_at(250, 100, 0.75, 1.0) == pytest.approx(1.0)  # past the end it stays at the end
    values = [temperature_at(s, 100, 0.75, 1.0) for s in range(101)]
    assert all(a <= b for a, b in zip(values, values[1:]))


def test_constant_schedule_and_bad_arguments():
    assert temperature_at(70, 100, 0.8, 1.0, "constant") == 0.8
    for args, message in [((0, 100, 0.75, 1.0, "linear"), "schedule"), ((0, 100, 0.0, 1.0), "> 0"),
                          ((0, 0, 0.75, 1.0), "total_steps"), ((-1, 10, 0.75, 1.0), "step")]:
        with pytest.raises(ValueError, match=message):
            temperature_at(*args)


def test_callback_sets_tau_in_place_every_step(tmp_path):
    model = tiny_model(attg_temperature=0.7, attg_temperature_end=0.9)
    buffer_address = model.attg_temperature.data_ptr()
    callback = AttGTemperatureCallback()
    state = TrainerState(max_steps=10)
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[])
    for step, expected in [(0, 0.7), (5, 0.8), (10, 0.9)]:
        state.global_step = step
        callback.on_step_begin(args, state, TrainerControl(), model=model)
        assert model.attg_temperature.item() == pytest.approx(expected)
    # the same storage, filled in place: a compiled graph that reads it sees the new value without recompiling
    assert model.attg_temperature.data_ptr() == buffer_address


def test_callback_finds_the_model_inside_wrappers(tmp_path):
    model = tiny_model()
    wrapped = torch.nn.Module()
    wrapped.module = model  # as DistributedDataParallel holds it
    state = TrainerState(max_steps=4, global_step=4)
    AttGTemperatureCallback().on_step_begin(
        TrainingArguments(output_dir=str(tmp_path), report_to=[]), state, TrainerControl(), model=wrapped
    )
    assert model.attg_temperature.item() == pytest.approx(1.0)
