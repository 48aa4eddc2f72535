"""Launches an experiment: python launch.py --config=configs/NAME.py --workdir=DIR --mode=train.

Every config field can be overridden, e.g. `--config.train.num_steps=100`.

Multi-host: start the same command on every host (or once per GPU) with --distributed; it calls
jax.distributed.initialize() before anything else. TPU pods, SLURM (srun) and Open MPI (mpirun)
are detected automatically. Elsewhere give process 0's address, the number of processes and each
process's id: `--coordinator_address=HOST:PORT --num_processes=N --process_id=I` (the address
may also come from $JAX_COORDINATOR_ADDRESS). `train.batch_size` stays the global batch; each
process reads its own shard of the data, process 0 alone writes logs, metrics, results and plots,
and all processes write the checkpoints (the workdir must be shared).
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
_VIDEO = flags.DEFINE_string("video", None,
                             "--mode=predict: the clip (a video file, or .npy/.npz frames).")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() (multi-host runs).")
# None = auto-detect (TPU pods, SLURM, Open MPI); needed on a hand-made cluster.
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None,
    "--distributed: HOST:PORT of process 0 (default: $JAX_COORDINATOR_ADDRESS or auto-detect).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "--distributed: number of processes (default: auto-detect).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "--distributed: this process's id in [0, num_processes) "
                                   "(default: auto-detect).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cluster = {"coordinator_address": _COORDINATOR.value, "num_processes": _NUM_PROCESSES.value,
               "process_id": _PROCESS_ID.value}
    if _DISTRIBUTED.value:
        jax.distributed.initialize(**cluster)
    elif any(v is not None for v in cluster.values()):
        raise app.UsageError(f"--{'/--'.join(cluster)} need --distributed")
    config, workdir = _CONFIG.value, _WORKDIR.value
    if _MODE.value == "predict" and not _VIDEO.value:
        raise app.UsageError("--mode=predict needs --video=FILE")
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:  # the other processes log to stderr (their job's output)
        logging.get_absl_handler().use_absl_log_file("launch", workdir)
    logging.info("JAX devices: %s (process %d of %d)", jax.devices(), jax.process_index(),
                 jax.process_count())
    if jax.process_index() == 0 and _MODE.value == "train":  # eval/predict keep the run's config
        loop.write_json(os.path.join(workdir, "config.json"),
                        json.loads(config.to_json_best_effort()))
    experiment = get_experiment(config.experiment)(config, workdir)
    if _MODE.value == "train":
        try:
            results = experiment.train_and_evaluate()
        except loop.Preempted as e:  # checkpoint saved; the same command resumes
            logging.warning("%s", e)
            return 0
    elif _MODE.value == "eval":
        results = experiment.evaluate_from_checkpoint()
    else:
        results = experiment.predict_video(_VIDEO.value)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    app.run(main)
