"""The temperature schedule of the guided loss (paper Sec. 3.2, Table 11).

tau follows a half-cycle cosine that *rises* from `start` to `end` over training: early on the loss leans hard
on the objects (small tau, weight ratio e^(1/tau) large), later it relaxes towards the plain MAE loss.
`temperature_at` is the one formula; `AttGTemperatureCallback` applies it inside the HF Trainer, and a
hand-written Accelerate loop calls `model.set_attg_temperature(temperature_at(step, ...))` itself.
"""

import math

from transformers import TrainerCallback

from .configuration_attg_mae import TEMPERATURE_SCHEDULES, check_temperature


def temperature_at(step: int, total_steps: int, start: float, end: float, schedule: str = "cosine") -> float:
    """tau at optimizer step `step` of `total_steps`: `start + (end - start) * (1 - cos(pi * step / total)) / 2`.

    Steps past `total_steps` stay at `end`. "constant" returns `start`.
    """
    if schedule not in TEMPERATURE_SCHEDULES:
        raise ValueError(f"schedule must be one of {TEMPERATURE_SCHEDULES}, got {schedule!r}")
    # a public function: its arguments are checked here, where they enter (the callback passes the config's, already
    # valid; a hand-written loop passes its own)
    check_temperature(start, "start (tau)")
    check_temperature(end, "end (tau)")
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if schedule == "constant":
        return float(start)
    progress = min(step, total_steps) / total_steps
    return float(start + (end - start) * 0.5 * (1.0 - math.cos(math.pi * progress)))


def _unwrap(model):
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


class AttGTemperatureCallback(TrainerCallback):
    """Sets the model's tau before every optimizer step from `state.global_step / state.max_steps`.

    Resuming from a checkpoint restores `global_step`, hence the same tau as an uninterrupted run.
    (The pre-training Trainer logs the current value as `attg_temperature`.)
    """

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        model = _unwrap(model)
        config = model.config
        tau = temperature_at(
            state.global_step,
            max(state.max_steps, 1),
            config.attg_temperature,
            config.attg_temperature_end,
            config.attg_temperature_schedule,
        )
        model.set_attg_temperature(tau)


__all__ = ["temperature_at", "AttGTemperatureCallback"]
