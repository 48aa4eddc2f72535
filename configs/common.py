"""Defaults shared by every experiment; experiment configs import these and change a few fields."""

import ast
import os

import ml_collections


def parse_variant(arg: str, **defaults) -> ml_collections.ConfigDict:
    """The variant string of `get_config(arg)` -> its settings, big_vision style.

    `arg` is comma-separated: `name=value` (a Python literal, else a string) or a bare `name`
    (True), e.g. `--config=configs/jhmdb_memory.py:split=2,tiny`. Every name must be one of
    `defaults`, whose values are used for the names not given.
    """
    variant = ml_collections.ConfigDict(defaults)
    for item in filter(None, (part.strip() for part in arg.split(","))):
        name, _, value = item.partition("=")
        if name not in defaults:
            raise ValueError(f"unknown config variant {name!r} in {arg!r}; expected some of "
                             f"{sorted(defaults)}")
        if not value:
            variant[name] = True
            continue
        try:
            variant[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            variant[name] = value
    return variant


def data_dir() -> str:
    """Where generated TFDS datasets are cached (override: JAXACT_DATA_DIR or --config.data.data_dir)."""
    return os.environ.get("JAXACT_DATA_DIR", os.path.expanduser("~/jaxact_data"))


def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.experiment = ""  # registry key in jaxact.train.EXPERIMENTS
    config.config_name = ""  # "file[:variant]", copied into results.json
    config.seed = 0  # drives init, data order, augmentation and memory sampling

    config.parallel = ml_collections.ConfigDict()
    config.parallel.mode = "jit"  # 'jit' (Mesh + NamedSharding) | 'pmap' (same numbers)

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 32  # global batch, split over all devices and hosts
    config.train.num_steps = 1000  # total optimisation steps
    config.train.learning_rate = 1e-3  # peak of the warmup-cosine schedule
    config.train.warmup_steps = 50  # linear warmup length
    config.train.optimizer = "adamw"  # 'adamw' | 'sgd' (momentum 0.9, Nesterov)
    config.train.weight_decay = 1e-4  # AdamW: decoupled; SGD: added to the gradient
    config.train.grad_clip = 1.0  # global-norm gradient clipping
    config.train.max_nonfinite_steps = 10  # NaN/inf updates are skipped; stop after this many in a row
    config.train.ema_decay = 0.0  # > 0 (e.g. 0.995): evaluate a moving average of the params
    config.train.log_every = 50  # steps between metric logs
    config.train.checkpoint_every = 500  # steps between (async) checkpoints
    config.train.max_to_keep = 2  # checkpoints kept per phase
    # A quick evaluation (top-1 / frame-mAP, one view) of the model being trained, logged to
    # metrics.jsonl and TensorBoard as PHASE/SPLIT every this many steps (0: none).
    config.train.eval_every = 0
    config.train.eval_split = "validation"  # the split it reads (not the one results report)

    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = 64  # global eval batch (the last one is padded and masked)
    config.eval.split = "test"  # split reported in results.json
    return config
