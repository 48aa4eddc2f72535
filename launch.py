"""Launches an experiment: python launch.py --config=configs/NAME.py --workdir=DIR --mode=train.

Every config field can be overridden, e.g. `--config.train.num_steps=100`. `--mode=eval` and
`--mode=predict` (and `--mode=analyze`, a whole video into a report) read the run's own
`WORKDIR/config.json` and need no --config; overrides given
then (`--config.eval.split=test`) change the saved config, with a note of what changed.

The console shows what runs, progress bars with ETA, a line per phase and where the outputs went;
the full log, library messages included, is `WORKDIR/launch.INFO`. Mistakes in the command (a
config field that does not exist, a missing file, eval before training) print one line that
says what is wrong, and nothing is created before the inputs are checked. Ctrl-C (like SIGTERM)
saves a checkpoint at the end of the current step and exits; the same command resumes. A
second Ctrl-C exits at once.

Multi-host: start the same command on every host (or once per GPU) with --distributed; it calls
jax.distributed.initialize() before anything else. TPU pods, SLURM (srun) and Open MPI (mpirun)
are detected automatically. Elsewhere give process 0's address, the number of processes and each
process's id: `--coordinator_address=HOST:PORT --num_processes=N --process_id=I` (the address
may also come from $JAX_COORDINATOR_ADDRESS). `train.batch_size` stays the global batch; each
process reads its own shard of the data, process 0 alone writes logs, metrics, results and plots,
and all processes write the checkpoints (the workdir must be shared).
"""

import csv
import io
import json
import logging as pylogging
import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from jaxact import console
from jaxact.data import video_io
from jaxact.train import get_experiment, loop

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (--mode=train; eval/predict read the run's own).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "predict", "analyze"],
                          "What to run.")
_VIDEO = flags.DEFINE_string(
    "video", None, "--mode=predict: a clip (video file, .npy/.npz frames), a folder of clips, or "
    "a .csv whose first column lists clip paths (relative to the .csv's folder). "
    "--mode=analyze: one whole video (a file, .npy/.npz frames or a folder of images), or a "
    "folder of videos, each analysed in turn (resumable; unreadable ones skipped).")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "--mode=predict: where answers go (default WORKDIR/predictions); "
    "--mode=analyze: where the report goes (default WORKDIR/analysis/NAME; a folder of videos: "
    "a report folder per video and index.json).")
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
flags.mark_flag_as_required("workdir")

CLIP_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".npy", ".npz")
# Errors a user's command or files cause: one line, not a traceback (which goes to the log).
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, NotADirectoryError, FloatingPointError,
               app.UsageError)


class CommandError(Exception):
    """A mistake in the command line; printed as one line."""


def _message(error: BaseException) -> str:
    """The readable text of an exception: ml_collections wraps a KeyError (whose text is
    repr-quoted, newlines escaped) in an AttributeError."""
    while error.args and isinstance(error.args[0], BaseException):
        error = error.args[0]
    text = error.args[0] if len(error.args) == 1 and isinstance(error.args[0], str) else str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if any(line.startswith("Traceback") for line in lines):  # a config file's own exception
        return f"{lines[0].split(': ')[0]}: {lines[-1]}"
    if len(lines) == 2 and lines[1].startswith("Did you mean"):
        return f"{lines[0]} (d{lines[1][1:]})"
    return " ".join(lines)


def with_run_config(argv: list[str]) -> list[str]:
    """`argv`, plus `--config=` the run's own config file when it overrides fields
    (`--config.X=Y`) without naming one: eval, predict and analyze apply only the overrides to
    the run's config.json, but absl knows `--config.X` flags only from a config file. The
    file comes from config.json's `config_name` (e.g. `classroom_detector:lessons`)."""
    names = [a.split("=", 1)[0] for a in argv[1:]]
    workdirs = [a.split("=", 1)[1] for a in argv[1:] if a.startswith("--workdir=")]
    if "--config" in names or not workdirs or not any(n.startswith("--config.") for n in names):
        return argv
    try:
        with open(os.path.join(workdirs[-1], "config.json")) as f:
            name, *variant = json.load(f)["config_name"].split(":", 1)
    except (OSError, ValueError, KeyError, AttributeError):
        return argv  # no run there: run_config says so
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", f"{name}.py")
    if not os.path.isfile(path):
        return argv
    return [argv[0], f"--config={':'.join([path, *variant])}", *argv[1:]]


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with the config's mistakes (a file that does not exist, a field that
    does not exist, a bad value or variant) reported in one line."""
    argv = with_run_config(argv)
    for arg in argv[1:]:
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1].split(":", 1)[0]
            if not os.path.isfile(path):
                _exit_with(f"--config={path}: no such file", 2)
    try:
        rest = flags.FLAGS(argv)
        _CONFIG.value  # noqa: B018 (a config file that failed to load raises only when read)
    except (flags.Error, AttributeError, KeyError, ValueError, TypeError, OSError) as e:
        text = _message(e)
        if isinstance(e, AttributeError | KeyError):  # an override of a field that is not there
            name = text.split(";")[0].split()[0].strip("'\"")
            bad = [a.split("=")[0] for a in argv if a.startswith("--config.") and
                   name in a.split("=")[0].split(".")]
            text = f"{bad[0] if bad else '--config'}: the config has no field {text}"
        _exit_with(text, 2)
    return rest


def _exit_with(message: str, code: int):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def run_config(mode: str, workdir: str):
    """(config, notes): the --config for training; for eval/predict the run's saved config,
    changed by the --config.X overrides given now (`notes` says what changed)."""
    if mode == "train":
        if _CONFIG.value is None:
            raise CommandError("--mode=train needs --config=configs/NAME.py")
        return _CONFIG.value, []
    if not os.path.isfile(os.path.join(workdir, "config.json")):
        raise CommandError(f"--workdir={workdir}: no config.json there, so no run to "
                           f"{mode}; train first (--mode=train)")
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise CommandError(f"--workdir={workdir}: no checkpoints there; train first")
    config = loop.read_config(workdir)
    notes = []
    if _CONFIG.value is not None:
        overrides = config_flags.get_override_values(flags.FLAGS["config"])
        for path, value in overrides.items():
            *parents, name = path.split(".")
            node = config
            for part in parents:
                node = node[part]
            old = node.get(name)
            if isinstance(old, list) and isinstance(value, tuple):
                value = list(value)
            if old != value:
                node[name] = value
                notes.append(f"{path}: {old!r} -> {value!r}")
        if not overrides and _CONFIG.value.get("config_name") != config.get("config_name"):
            notes.append(f"--config={flags.FLAGS['config'].config_filename} ignored: the run's "
                         "config.json is used (give --config.X=Y to change a field)")
    return config, notes


def clip_paths(arg: str) -> list[str]:
    """--video: one clip, the clips of a folder (by suffix, sorted), or a .csv list."""
    if os.path.isdir(arg):
        paths = sorted(os.path.join(arg, name) for name in os.listdir(arg)
                       if name.lower().endswith(CLIP_SUFFIXES))
        if not paths:
            raise CommandError(f"--video={arg}: no clips ({', '.join(CLIP_SUFFIXES)}) there")
        return paths
    if arg.lower().endswith(".csv"):
        if not os.path.isfile(arg):
            raise video_io.MissingInputError(arg)
        base = os.path.dirname(os.path.abspath(arg))
        with open(arg, newline="") as f:
            rows = [row for row in csv.reader(f) if row and row[0].strip()
                    and not row[0].lstrip().startswith("#")]
        if rows and not rows[0][0].strip().lower().endswith(CLIP_SUFFIXES):
            rows = rows[1:]  # a header row
        if not rows:
            raise video_io.BadInputError(arg, "lists no clips; expected a first column of paths")
        return [os.path.join(base, row[0].strip()) for row in rows]
    return [arg]


def _log_to_buffer() -> io.StringIO:
    """Holds the log in memory until the inputs are checked: a run that fails on them leaves
    no workdir and no log file behind."""
    buffer = io.StringIO()
    logging.get_absl_handler().python_handler.stream = buffer
    pylogging.captureWarnings(True)  # library warnings go to the log, not the console
    return buffer


def _log_to_workdir(workdir: str, buffer: io.StringIO) -> str:
    logging.get_absl_handler().use_absl_log_file("launch", workdir)
    logging.get_absl_handler().python_handler.stream.write(buffer.getvalue())
    return os.path.join(workdir, "launch.INFO")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cluster = {"coordinator_address": _COORDINATOR.value, "num_processes": _NUM_PROCESSES.value,
               "process_id": _PROCESS_ID.value}
    if _DISTRIBUTED.value:
        jax.distributed.initialize(**cluster)
    elif any(v is not None for v in cluster.values()):
        raise app.UsageError(f"--{'/--'.join(cluster)} need --distributed")
    mode, workdir = _MODE.value, _WORKDIR.value
    buffer = _log_to_buffer()
    chief = jax.process_index() == 0
    if not chief:  # the other processes log to stderr (their job's output)
        logging.get_absl_handler().python_handler.stream = sys.stderr
        sys.stderr.write(buffer.getvalue())
    log_path = None
    try:
        if mode == "predict" and not _VIDEO.value:
            raise CommandError("--mode=predict needs --video=CLIP (a file, folder or .csv)")
        if mode == "analyze" and not _VIDEO.value:
            raise CommandError("--mode=analyze needs --video=VIDEO (a file, a frame folder or a folder "
                               "of videos)")
        if mode == "analyze" and not os.path.exists(_VIDEO.value):
            raise CommandError(f"--video={_VIDEO.value}: no such file or folder")
        config, notes = run_config(mode, workdir)
        clips = clip_paths(_VIDEO.value) if mode == "predict" else []
        logging.info("JAX devices: %s (process %d of %d)", jax.devices(), jax.process_index(),
                     jax.process_count())
        devices = jax.devices()
        console.say(f"jaxact {mode}: {config.experiment} ({config.get('config_name', '?')}) on "
                    f"{config.data.name} | {len(devices)} {devices[0].platform} device(s) | "
                    f"{jax.process_count()} process(es)")
        for note in notes:
            console.say(f"override: {note}")
        experiment = get_experiment(config.experiment)(config, workdir)  # checks, then creates
        if mode != "train":
            experiment.check_trained()
        if chief:
            log_path = _log_to_workdir(workdir, buffer)
            console.say(f"data {experiment.data.description} | full log: {log_path}")
        if chief and mode == "train":  # eval/predict keep the run's config
            loop.write_json(os.path.join(workdir, "config.json"),
                            json.loads(config.to_json_best_effort()))
        if mode == "analyze":
            stem = os.path.splitext(os.path.basename(_VIDEO.value.rstrip("/")))[0]
            output_dir = _OUTPUT_DIR.value or os.path.join(workdir, "analysis", stem)
            out = experiment.analyze(_VIDEO.value, output_dir)
            if "videos" in out:  # a folder of videos
                status = [v["status"] for v in out["videos"]]
                failed = status.count("failed")
                console.say(f"{len(status) - failed} of {len(status)} videos analysed "
                            f"({status.count('done before')} done before) in {output_dir}"
                            + (f"; {failed} unreadable, see index.json" if failed else ""))
                return 1 if failed == len(status) else 0
            console.say(f"report: {', '.join(sorted(out['written']))} in {output_dir}")
            return 0
        if mode == "predict":
            output_dir = _OUTPUT_DIR.value or os.path.join(workdir, "predictions")
            answers = experiment.predict(clips, output_dir)
            failed = sum("error" in a for a in answers)
            console.say(f"answers for {len(answers) - failed} of {len(answers)} clips in "
                        f"{output_dir}" + (f" ({failed} unreadable)" if failed else ""))
            return 1 if failed == len(answers) else 0
        try:
            results = (experiment.train_and_evaluate() if mode == "train"
                       else experiment.evaluate_from_checkpoint())
        except loop.Preempted as e:  # checkpoint saved; the same command resumes
            console.say(str(e))
            return 0
        console.say(experiment.summary(results))
        console.say(f"results: {os.path.join(workdir, 'results.json')} (plots beside it); "
                    f"TensorBoard: tensorboard --logdir {os.path.join(workdir, 'tensorboard')}")
        return 0
    except (CommandError, *USER_ERRORS) as e:
        logging.exception("stopped by an input error")
        where = f" (details: {log_path})" if log_path else ""
        print(f"error: {_message(e)}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C outside training, where no checkpoint is due
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
