"""The experiment scaffold shared by every method: what launch.py calls, and the plumbing around
it (validation before anything is created, data, loaders, phases, checkpoints, evaluators,
results).

A method subclasses `ExperimentBase` and fills in its own parts: `validate`, `build`, `train`,
`restore_final`, `evaluators`, `predictor` (see each method's docstring). Evaluators live in
`jaxact.evaluation`; each is built from a predict function and data settings and returns
`(results, artefacts)`, so the experiment only lists which ones run.
"""

from __future__ import annotations

import abc
import os
from typing import Any, Protocol

import jax
import matplotlib.image
import ml_collections
from absl import logging

from jaxact import console
from jaxact.data import pipeline, sources, video_io
from jaxact.train import checkpoint, loop, parallel
from jaxact.train import state as train_state


class Experiment(Protocol):
    """What launch.py calls. `jaxact.train.get_experiment(name)(config, workdir)` builds one."""

    def train_and_evaluate(self) -> dict:
        """Trains (resuming from the latest checkpoints), evaluates, writes results.json."""

    def evaluate_from_checkpoint(self) -> dict:
        """--mode=eval: restores the final states and recomputes results.json."""

    def predict(self, paths: list[str], output_dir: str) -> list[dict]:
        """--mode=predict: the trained model's answer for each clip file, written as
        `OUTPUT_DIR/NAME.json` (plus pictures, where the method draws them)."""


class ExperimentBase(abc.ABC):
    """Data, mesh, loaders, phases, checkpoints and results of one run, built from its config.

    Subclasses set `TASK` (the dataset registry of `jaxact.data.sources` they read) and
    `KEPT_FROM_TRAINING` (results.json fields that --mode=eval copies from the training run), and
    implement:
      validate()            config checks beyond the shared ones; runs before anything is created
      build()               model, typed settings, compiled programs
      train() -> (models, extras)          runs every phase; `models` is what evaluators take
      restore_final() -> models            the same from the final checkpoints
      evaluators() -> list                 objects with `run(models) -> (results, artefacts)`
      final_phases() -> tuple              phases whose checkpoints eval and predict restore
      planned_steps() -> int               steps of all phases (the progress bar's total)
      results_header() -> dict             leading results.json fields
      summary(results) -> str              results in one line for the console
      cost(models) -> dict                 results.json fields such as the parameter count
      predictor() -> predict(path) -> (answer, artefacts)    --mode=predict, models restored
                                           once; artefacts: file suffix -> writer(path)
      describe_prediction(answer) -> str   an answer in one line for the console
    """

    TASK = ""
    KEPT_FROM_TRAINING: tuple[str, ...] = ("train_seconds",)

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        self.config, self.workdir = config, workdir
        self.mesh = parallel.make_mesh()
        parallel.check_mode(config.parallel.mode)
        for section in ("train", "eval"):
            parallel.check_batch_size(config[section].batch_size, self.mesh,
                                      f"{section}.batch_size")
        train_state.check_ema_decay(config.train.get("ema_decay", 0.0))
        self.validate()
        self.data_parallel = parallel.DataParallel(self.mesh, config.parallel.mode)
        self.data = sources.make(config.data, self.TASK)
        if config.train.eval_every:
            try:
                self.data.source(config.train.eval_split)
            except Exception as e:  # each source names a missing split its own way
                raise ValueError(f"train.eval_split={config.train.eval_split!r}: not a split of "
                                 f"{config.data.name} ({e}); or set train.eval_every=0") from e
        self.progress = None  # the training progress bar, while `train_and_evaluate` runs
        os.makedirs(workdir, exist_ok=True)  # the inputs are valid: now the run leaves files
        self._report_bad_inputs()
        self.class_names = list(self.data.class_names)
        self.build()

    # -- what subclasses fill in
    @abc.abstractmethod
    def validate(self) -> None:
        """See the class docstring."""

    @abc.abstractmethod
    def build(self) -> None:
        """See the class docstring."""

    @abc.abstractmethod
    def train(self) -> tuple[Any, dict]:
        """See the class docstring."""

    @abc.abstractmethod
    def restore_final(self) -> Any:
        """See the class docstring."""

    @abc.abstractmethod
    def evaluators(self) -> list:
        """See the class docstring."""

    def validation_metrics(self, state, split: str) -> dict:
        """Scalars of a quick evaluation of a phase's `state` on `split`, logged every
        `train.eval_every` steps."""
        raise NotImplementedError(f"{type(self).__name__} has no validation during training; "
                                  "set train.eval_every=0")

    def final_phases(self) -> tuple[str, ...]:
        """The phases whose checkpoints eval and predict restore."""
        return ()

    def planned_steps(self) -> int | None:
        """Optimisation steps of the whole run, every phase together (the progress bar's total)."""
        return None

    def results_header(self) -> dict:
        return {}

    def summary(self, results: dict) -> str:
        """results.json in one line for the console."""
        return ""

    def cost(self, models) -> dict:
        return {}

    # -- data
    def _report_bad_inputs(self) -> None:
        """Datasets that screen their files up front report what they skipped: written even when
        nothing was, so a stale report never survives a rerun."""
        if not hasattr(self.data, "problems"):
            return
        problems, checked = self.data.problems, self.data.num_checked
        if jax.process_index() == 0:
            report = video_io.write_report(self.workdir, problems, checked)
            logging.info("%s; see %s", video_io.summarize(problems, checked), report)
            if problems:
                console.warn(f"skipped {len(problems)} of {checked} clips; why: {report}")

    def make_loader(self, split: str, transform, *, train: bool, seed_offset: int = 0
                    ) -> pipeline.Loader:
        c = self.config
        return pipeline.make_loader(
            self.data.source(split), transform,
            global_batch_size=c.train.batch_size if train else c.eval.batch_size,
            seed=c.seed + seed_offset, train=train, num_threads=c.data.num_threads,
            prefetch=c.data.prefetch)

    # -- phases and checkpoints
    def checkpoint_manager(self, phase: str):
        return checkpoint.manager(os.path.join(self.workdir, "checkpoints", phase),
                                  self.config.train.max_to_keep)

    def run_phase(self, phase: str, state, step_fn, loader, end_step: int, on_step=None):
        """Trains `state` to `end_step` in `WORKDIR/checkpoints/PHASE`, resuming from there."""
        c = self.config.train
        validate = None
        if c.eval_every:
            validate = lambda state: (c.eval_split, self.validation_metrics(state, c.eval_split))
        return loop.run_phase(workdir=self.workdir, data_parallel=self.data_parallel,
                              train_config=c, phase=phase, state=state, step_fn=step_fn,
                              loader=loader, end_step=end_step, on_step=on_step,
                              progress=self.progress, validate=validate)

    def check_trained(self) -> None:
        """Fails, naming what is missing and creating nothing, unless every final phase has a
        checkpoint (eval and predict run this before anything else)."""
        missing = [phase for phase in self.final_phases() if not checkpoint.has_checkpoint(
            os.path.join(self.workdir, "checkpoints", phase))]
        if missing:
            raise FileNotFoundError(f"{self.workdir}: no {'/'.join(missing)} checkpoint; train "
                                    "first (--mode=train)")

    def restore(self, phase: str, target):
        """The latest checkpoint of `phase` in the structure of `target`; fails naming the phase
        when there is none."""
        restored = checkpoint.restore(self.checkpoint_manager(phase), target)
        if restored is None:
            raise FileNotFoundError(f"no '{phase}' checkpoint in {self.workdir}; train first")
        return restored[0]

    # -- evaluation and results
    def evaluate(self, models) -> tuple[dict, dict]:
        """Runs every evaluator; returns the merged results and artefacts."""
        results, artefacts = self.results_header(), {}
        for evaluator in self.evaluators():
            r, a = evaluator.run(models)
            results.update(r)
            artefacts.update(a)
        return results, artefacts

    def write_results(self, results: dict, artefacts: dict) -> dict:
        """results.json and the evaluators' files (plots), from process 0."""
        if jax.process_index() == 0:
            loop.write_json(os.path.join(self.workdir, "results.json"), results)
            writer = loop.MetricWriter(self.workdir)
            for name, write in artefacts.items():
                path = os.path.join(self.workdir, name)
                write(path)
                if name.endswith(".png"):  # plots in TensorBoard too, at the final step
                    writer.write_image(f"eval/{os.path.splitext(name)[0]}",
                                       self.config.train.num_steps, matplotlib.image.imread(path))
            writer.close()
        return results

    # -- what launch.py calls
    def train_and_evaluate(self) -> dict:
        loop.check_class_names(self.workdir, self.class_names)
        with console.bar(self.planned_steps(), "train") as self.progress:
            models, extras = self.train()
        self.progress = None
        results, artefacts = self.evaluate(models)
        results.update(self.cost(models), **extras, config_name=self.config.config_name)
        return self.write_results(results, artefacts)

    def evaluate_from_checkpoint(self) -> dict:
        self.check_trained()
        loop.check_class_names(self.workdir, self.class_names)
        models = self.restore_final()
        previous = loop.previous_results(self.workdir)
        results, artefacts = self.evaluate(models)
        results.update(self.cost(models), **{k: previous.get(k) for k in self.KEPT_FROM_TRAINING},
                       config_name=self.config.config_name)
        return self.write_results(results, artefacts)

    # -- predict
    @abc.abstractmethod
    def predictor(self):
        """See the class docstring."""

    def describe_prediction(self, answer: dict) -> str:
        return ""

    def predict_video(self, path: str) -> dict:
        """The answer for one clip file (restores the models: for many files use `predict`)."""
        self.check_trained()
        return self.predictor()(path)[0]

    def analyze(self, path: str, output_dir: str) -> dict:
        """--mode=analyze: a whole video (a lesson) analysed into a report in `output_dir`.
        Only experiments that detect people over time implement it."""
        raise ValueError(f"--mode=analyze needs a detector run; this run is a "
                         f"{self.config.experiment}")

    def predict(self, paths: list[str], output_dir: str) -> list[dict]:
        """Answers for every clip in `paths`: `OUTPUT_DIR/NAME.json` each (NAME the file's stem,
        numbered when stems repeat) and the method's pictures beside it. A clip that cannot be
        read gets `{"video", "error"}` and a warning; the others go on."""
        self.check_trained()
        predict = self.predictor()
        answers, used = [], set()
        if jax.process_index() == 0:
            os.makedirs(output_dir, exist_ok=True)
        for path in console.track(paths, "predict", unit="clip"):
            stem = os.path.splitext(os.path.basename(path.rstrip("/")))[0]
            name, n = stem, 1
            while name in used:
                n += 1
                name = f"{stem}_{n}"
            used.add(name)
            try:
                answer, artefacts = predict(path)
            except video_io.BadInputError as e:
                console.warn(str(e))
                answer, artefacts = {"video": path, "error": str(e)}, {}
            else:
                console.say(f"{path}: {self.describe_prediction(answer)}")
            answer["outputs"] = [f"{name}.json", *(name + suffix for suffix in artefacts)]
            if jax.process_index() == 0:
                loop.write_json(os.path.join(output_dir, f"{name}.json"), answer)
                for suffix, write in artefacts.items():
                    write(os.path.join(output_dir, name + suffix))
            answers.append(answer)
        return answers
