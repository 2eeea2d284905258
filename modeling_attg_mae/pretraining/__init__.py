"""Pre-training wiring behind `run_pretrain.py` (being split by concern; see wiring.py)."""

from .wiring import (  # noqa: F401
    _WRITE_PROBE,
    DEMO_ARGUMENTS,
    MODEL_PRESETS,
    AttGArguments,
    AttGTrainer,
    DataArguments,
    ModelArguments,
    build_model,
    load_source_dataset,
    parse_arguments,
    run,
)
