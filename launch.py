"""Launches an experiment: python launch.py --config=configs/NAME.py --workdir=DIR --mode=train.

Every config field can be overridden, e.g. `--config.train.num_steps=100`. On multi-host systems
(TPU pods, SLURM) pass --distributed so jax.distributed.initialize() joins the hosts first.
"""

import json
import os

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from jaxact.train import get_experiment, loop

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "predict"], "What to run.")
_VIDEO = flags.DEFINE_string("video", None, "--mode=predict: the clip to classify (.npy/.npz).")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() (multi-host runs).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _DISTRIBUTED.value:
        jax.distributed.initialize()
    config, workdir = _CONFIG.value, _WORKDIR.value
    os.makedirs(workdir, exist_ok=True)
    logging.get_absl_handler().use_absl_log_file("launch", workdir)
    logging.info("JAX devices: %s (process %d of %d)", jax.devices(), jax.process_index(),
                 jax.process_count())
    if jax.process_index() == 0 and _MODE.value == "train":  # eval/predict keep the run's config
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))
    experiment = get_experiment(config.experiment)
    if _MODE.value == "train":
        try:
            results = experiment.train_and_evaluate(config, workdir)
        except loop.Preempted as e:  # checkpoint saved; the same command resumes
            logging.warning("%s", e)
            return 0
    elif _MODE.value == "eval":
        results = experiment.evaluate_from_checkpoint(config, workdir)
    else:
        if not _VIDEO.value:
            raise app.UsageError("--mode=predict needs --video=FILE")
        results = experiment.predict_video(config, workdir, _VIDEO.value)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    app.run(main)
