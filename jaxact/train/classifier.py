"""Memory-matching video classifier: training, evaluation and prediction.

Phases of one run (`train.num_steps` optimisation steps in total for each method):
  aux       softmax pre-training of the encoder for `memory.aux_steps` steps (memory.init='pretrain');
  fill      the pre-trained encoder's features of `memory.init_batches` train batches fill the bank;
  memory    training against the memory: cross-entropy over negative distances to the class
            references; correctly classified videos are written back; references refresh every
            `memory.refresh_every` steps;
  baseline  the same encoder + softmax head, forked from the aux state and trained to the same total
            budget, so it equals an independent softmax run of `train.num_steps` steps.
Each phase checkpoints into `WORKDIR/checkpoints/PHASE` (memory bank and loader position included)
and resumes from there.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from jaxact import console, settings
from jaxact.data import pipeline
from jaxact.evaluation import classification
from jaxact.losses import frame_class_distances, memory_loss, softmax_loss
from jaxact.models import memory as memlib
from jaxact.models.recurrent_encoder import VideoClassifierNet
from jaxact.train import experiment, loop, parallel
from jaxact.train.state import (
    MemoryTrainState,
    TrainState,
    count_params,
    dropout_rng,
    eval_params,
    make_init,
    make_optimizer,
    nonfinite_metrics,
)

# ----------------------------------------------------------------------------- model + steps


def build_model(model_config, num_classes: int) -> VideoClassifierNet:
    """The classifier of the `model` config section; hashable (nested mappings frozen, lists as
    tuples), so compiled programs can be cached on it."""
    encoder = _hashable(model_config.to_dict() if hasattr(model_config, "to_dict")
                        else dict(model_config))
    normalize = encoder.pop("normalize_features")
    dtypes = {key: settings.float_dtype(encoder.pop(key, "float32"), f"model.{key}")
              for key in ("dtype", "param_dtype")}
    return VideoClassifierNet(num_classes=num_classes, encoder=flax.core.freeze(encoder),
                              normalize_features=normalize, **dtypes)


def _hashable(tree):
    if isinstance(tree, dict):
        return {k: _hashable(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return tuple(_hashable(v) for v in tree)
    return tree


def write_rows(bank, feats, labels, mask, stride: int):
    """Writes every `stride`-th frame feature `[B, T, D]` of rows with `mask` `[B]` into the bank."""
    feats = jax.lax.stop_gradient(feats[:, ::stride])
    b, t, d = feats.shape
    return memlib.write(bank, feats.reshape(b * t, d), jnp.repeat(labels, t),
                        jnp.repeat(mask, t))


def model_inputs(batch: dict):
    """What the model reads of a batch: the clips `[B, T, ...]`, or with the target's track
    (`data.target_track`) `{"video": clips, "track": [B, T, F]}`."""
    if "track" in batch:
        return {"video": batch["video"], "track": batch["track"]}
    return batch["video"]


def sum_and_count(values, mask):
    """A `(sum, count)` metric of `values` `[B]` over the rows where `mask` `[B]` is set."""
    weight = mask.astype(jnp.float32)
    return jnp.sum(values.astype(jnp.float32) * weight), jnp.sum(weight)


def make_softmax_step(model, frame_loss_weight: float):
    """`(state, batch, axis_name=None) -> (state, metrics)`; see `parallel.DataParallel`."""

    def step(state: TrainState, batch, axis_name=None):
        mask = batch["mask"]
        rng = parallel.device_rng(dropout_rng(state), axis_name)

        def loss_fn(params):
            _, logits = model.apply({"params": params}, model_inputs(batch), train=True,
                                    rngs={"dropout": rng})
            per_video, correct = softmax_loss(logits, batch["label"], frame_loss_weight)
            return parallel.masked_share(per_video, mask, axis_name), correct

        (loss, correct), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        grads = parallel.global_sum(grads, axis_name)
        state = state.apply_gradients(grads=grads)
        metrics = parallel.global_metrics(
            {"loss": loss, "accuracy": sum_and_count(correct, mask)}, axis_name)
        metrics.update(grad_norm=optax.tree.norm(grads), **nonfinite_metrics(state.opt_state))
        return state, metrics

    return step


def make_memory_step(model, memory: memlib.MemorySettings, frame_loss_weight: float):
    """`(state, batch, axis_name=None) -> (state, metrics)`; see `parallel.DataParallel`. Under
    pmap every device writes the whole batch's features, so the banks stay identical."""

    def step(state: MemoryTrainState, batch, axis_name=None):
        labels, mask = batch["label"], batch["mask"]
        rng = parallel.device_rng(dropout_rng(state), axis_name)

        def loss_fn(params):
            feats, logits = model.apply({"params": params}, model_inputs(batch), train=True,
                                        rngs={"dropout": rng})
            per_video, weight, pred = memory_loss(feats, labels, mask, state.references, memory)
            loss = parallel.masked_share(per_video, weight, axis_name)
            if memory.softmax_loss_weight:
                head_loss, _ = softmax_loss(logits, labels, frame_loss_weight)
                loss = loss + memory.softmax_loss_weight * parallel.masked_share(
                    head_loss, mask, axis_name)
            return loss, (feats, pred, weight)

        (loss, (feats, pred, weight)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params)
        correct = (pred == labels) & mask
        grads = parallel.global_sum(grads, axis_name)
        metrics = parallel.global_metrics(
            {"loss": loss, "accuracy": sum_and_count(correct, mask),
             "trained_fraction": sum_and_count(weight > 0, mask)}, axis_name)
        new_state = state.apply_gradients(grads=grads)
        # write() drops non-finite rows, so a bad batch never enters the bank.
        rows = parallel.gather_rows((feats, labels, correct), axis_name)
        bank = write_rows(state.memory, *rows, memory.write_stride)
        metrics.update(grad_norm=optax.tree.norm(grads), **nonfinite_metrics(new_state.opt_state),
                       clusters=jnp.mean(jnp.sum(state.references.valid, axis=-1)))
        return new_state.replace(memory=bank), metrics

    return step


def _same_examples(a: str, b: str) -> bool:
    """Whether split specs `a` and `b` may share examples: the same split, unless both are
    slices of it (slices are the user's to keep disjoint, e.g. 'validation[:50%]' and
    'validation[50%:]')."""
    base = lambda s: s.split("[", 1)[0]
    return base(a) == base(b) and not ("[" in a and "[" in b and a != b)


# ----------------------------------------------------------------------------- programs

# A clip is out of domain when its frames' median distance to the nearest reference exceeds this
# quantile of the bank's own distances (see `Programs.domain_threshold`).
DOMAIN_QUANTILE = 0.99


@dataclasses.dataclass(frozen=True)
class Programs:
    """The compiled functions of one setting (model, memory settings, optimizer, parallel mode,
    input shape), built once per process by `programs` and shared by every Experiment with equal
    settings: evaluation after training, or an auxiliary run's model, reuses the compiled code,
    and a state made by one Experiment fits another's steps (the optimizer, a static field of the
    state, is the same object)."""

    init: Callable  # rng -> TrainState (no memory), replicated
    empty_memory: Callable  # () -> (MemoryBank, References), replicated
    softmax_step: Callable  # (state, batch) -> (state, metrics); donates the state
    memory_step: Callable  # (state, batch) -> (state, metrics); donates the state
    refresh: Callable  # state -> state with references of its bank
    fill: Callable  # (params, bank, batch) -> bank with the batch's features; donates the bank
    predict: Callable  # (params, references|None, data_parallel.batch(model_inputs(batch)))
    #                    -> this process's rows
    domain_threshold: Callable  # (bank, references) -> the bank's in-domain distance limit


@functools.cache
def programs(model: VideoClassifierNet, memory: memlib.MemorySettings,
             train_config: ml_collections.FrozenConfigDict,
             data_parallel: parallel.DataParallel,
             input_shape: tuple[int, ...] | Mapping[str, tuple[int, ...]],
             num_classes: int, feature_dim: int) -> Programs:
    """`Programs` for `model` on clips of `input_shape` `[1, T, ...]`, or a mapping of shapes
    shaped like `model_inputs` (cached)."""
    tx = make_optimizer(train_config)
    replicated = parallel.replicated(data_parallel.mesh)

    init = make_init(model, tx, input_shape, train_config.ema_decay)
    def empty_memory():
        d, k = feature_dim, memory.num_clusters
        references = memlib.References(refs=jnp.zeros((num_classes, k, d)),
                                       valid=jnp.zeros((num_classes, k), bool),
                                       variance=jnp.ones((d,)), inv_cov=jnp.eye(d))
        return memlib.create(num_classes, memory.capacity, feature_dim), references

    def refresh(state: MemoryTrainState) -> MemoryTrainState:
        rng = jax.random.fold_in(state.rng, state.step)
        refs = memlib.refresh_references(
            state.memory, rng, num_clusters=memory.num_clusters, num_iters=memory.kmeans_iters,
            rule=memory.reference_rule, sample_size=memory.sample_size,
            clustering=memory.clustering, threshold=memory.cluster_threshold)
        return state.replace(references=refs)

    def fill(params, bank, batch):
        feats, _ = model.apply({"params": params}, model_inputs(batch))
        return write_rows(bank, feats, batch["label"], batch["mask"], memory.write_stride)

    def domain_threshold(bank, references):
        """The `DOMAIN_QUANTILE` of the stored vectors' distances to their nearest reference:
        the bank is the training data as the model sees it, so frames farther than this are
        unlike anything it was trained on."""
        dist = frame_class_distances(bank.feats, references, memory).min(axis=-1)  # [C, K]
        return jnp.nanquantile(jnp.where(bank.valid, dist, jnp.nan), DOMAIN_QUANTILE)

    def predict(params, references, inputs):
        feats, logits = model.apply({"params": params}, inputs)
        out = {"softmax_logp": jax.nn.log_softmax(logits[:, -1])}
        if references is not None:
            out["memory_dist"] = frame_class_distances(feats, references, memory)
        return out

    frame_weight = train_config.frame_loss_weight
    return Programs(
        init=jax.jit(init, out_shardings=replicated),
        empty_memory=jax.jit(empty_memory, out_shardings=replicated),
        softmax_step=data_parallel.train_step(make_softmax_step(model, frame_weight)),
        memory_step=data_parallel.train_step(make_memory_step(model, memory, frame_weight)),
        refresh=jax.jit(refresh, out_shardings=replicated),
        fill=jax.jit(fill, donate_argnums=(1,), out_shardings=replicated),
        predict=data_parallel.map_rows(predict, num_broadcast=2),
        domain_threshold=jax.jit(domain_threshold))


# ----------------------------------------------------------------------------- the experiment


class Experiment(experiment.ExperimentBase):
    """The memory classifier and its softmax baseline on a classification dataset."""

    TASK = "classification"
    KEPT_FROM_TRAINING = ("train_seconds", "total_train_seconds")
    domain_threshold = float("nan")  # set with the final memory state (`models`)

    def validate(self) -> None:
        c = self.config
        self.memory = settings.from_section(memlib.MemorySettings, c.memory, "memory")
        if self.memory.init == "pretrain" and not 0 < self.memory.aux_steps < c.train.num_steps:
            raise ValueError(f"memory.aux_steps={self.memory.aux_steps} must be in "
                             f"(0, train.num_steps={c.train.num_steps})")
        self.views = pipeline.eval_views(c.eval.temporal_views, c.eval.flip_view)

    def build(self) -> None:
        for view in self.views:  # a source without such views fails now, not after training
            self.data.transform(False, view=view)
        c = self.config
        # The splits evaluation reads (the validation curve's only when there is one): they
        # must exist before training starts, and the auxiliary videos must not be among them.
        held_out = {"eval.split": c.eval.split}
        if c.train.eval_every:
            held_out["train.eval_split"] = c.train.eval_split
        for field, split in held_out.items():
            try:
                self.data.source(split)
            except (ValueError, KeyError) as e:
                raise ValueError(f"{field}={split!r}: {e}") from e
        aux = self.memory.aux_data
        if aux:
            for field, split in held_out.items():
                if _same_examples(aux, split):
                    raise ValueError(f"memory.aux_data={aux!r} would train on {field}="
                                     f"{split!r}; take another split or a disjoint slice")
            try:
                self.data.source(aux)
            except (ValueError, KeyError) as e:
                raise ValueError(f"memory.aux_data={aux!r}: no such split ({e})") from e
        example = self.data.transform(train=False)(self.data.source("train")[0], None)
        input_shape = jax.tree.map(lambda x: (1, *x.shape), model_inputs(example))
        if isinstance(input_shape, dict):  # hashable: programs are cached on it
            input_shape = flax.core.freeze(input_shape)
        self.model = build_model(c.model, len(self.class_names))
        self.programs = programs(self.model, self.memory, ml_collections.FrozenConfigDict(c.train),
                                 self.data_parallel, input_shape, len(self.class_names),
                                 c.model.feature_dim)

    # -- data
    def train_loader(self, seed_offset: int = 0, split: str = "train"):
        return self.make_loader(split, self.data.transform(train=True), train=True,
                                seed_offset=seed_offset)

    def eval_loader(self, split: str, fraction: float = 1.0, view=pipeline.CENTRE_VIEW):
        return self.make_loader(split, self.data.transform(False, fraction, view), train=False)

    # -- state
    def init_state(self) -> TrainState:
        return self.programs.init(jax.random.key(self.config.seed))

    def with_memory(self, state: TrainState) -> MemoryTrainState:
        """`state` plus an empty bank and references."""
        memory, references = self.programs.empty_memory()
        fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
        return MemoryTrainState(**fields, memory=memory, references=references)

    def fill_memory(self, state: MemoryTrainState, params=None, fill_fn=None) -> MemoryTrainState:
        """Writes features of `memory.init_batches` batches of `memory.aux_data` (default: the
        training split) into the bank, then computes
        the first references. Features come from `fill_fn(params, bank, batch)` (default: this
        experiment's model with the state's own params; an auxiliary model passes its own)."""
        params = state.params if params is None else params
        fill_fn = self.programs.fill if fill_fn is None else fill_fn
        bank = state.memory
        for _, batch in zip(range(self.memory.init_batches),
                            self.eval_loader(self.memory.aux_split), strict=False):
            bank = fill_fn(params, bank, parallel.shard_batch(batch, self.mesh))
        written = np.asarray(jax.device_get(bank.valid)).sum(axis=1)
        logging.info("memory filled: vectors per class %s", written.tolist())
        empty = [name for name, n in zip(self.class_names, written, strict=True) if n == 0]
        if empty:  # their distances are MISSING_DISTANCE: the loss is huge until they are written
            console.warn(f"memory fill: no vectors for {len(empty)} of {len(written)} classes "
                         f"({', '.join(empty[:5])}); raise memory.init_batches")
        else:
            console.say(f"memory bank filled: {written.min()}-{written.max()} vectors per class")
        return self.programs.refresh(state.replace(memory=bank))

    def load_aux_params(self):
        """(Experiment, params) of the auxiliary model in `memory.aux_checkpoint` (a workdir of
        this experiment)."""
        aux_dir = self.memory.aux_checkpoint
        aux_config = loop.read_config(aux_dir, "memory.aux_checkpoint")
        aux = Experiment(aux_config, aux_dir)
        if aux_config.model.feature_dim != self.config.model.feature_dim:
            raise ValueError(f"memory.aux_checkpoint: feature_dim {aux_config.model.feature_dim} "
                             f"differs from model.feature_dim {self.config.model.feature_dim}")
        for phase in ("baseline", "aux"):
            if aux.checkpoint_manager(phase).latest_step() is not None:
                return aux, eval_params(aux.restore(phase, aux.init_state()))
        raise FileNotFoundError(f"memory.aux_checkpoint={aux_dir!r}: no baseline/aux checkpoint")

    # -- train
    def train(self) -> tuple[dict, dict]:
        c, p = self.config, self.programs
        start = time.time()
        if self.memory.init == "pretrain":
            aux_state = self.run_phase("aux", self.init_state(), p.softmax_step,
                                       self.train_loader(split=self.memory.aux_split),
                                       self.memory.aux_steps)
            fill = self.fill_memory
        else:
            aux_state = self.init_state()
            aux, aux_params = self.load_aux_params()
            fill = lambda s: self.fill_memory(s, aux_params, aux.programs.fill)

        # The memory phase starts from a copy: step functions donate their input state. Each
        # phase averages its own params (a restored phase keeps its checkpointed average).
        mem_state = jax.tree.map(jnp.copy, self.with_memory(aux_state)).restart_ema()
        if self.checkpoint_manager("memory").latest_step() is None:
            mem_state = fill(mem_state)
        refresh_every = self.memory.refresh_every

        def maybe_refresh(state, step: int):  # the loop's step: no wait on the device
            return p.refresh(state) if step % refresh_every == 0 else state

        mem_state = self.run_phase("memory", mem_state, p.memory_step, self.train_loader(1),
                                   c.train.num_steps, on_step=maybe_refresh)
        mem_state = p.refresh(mem_state)  # final references
        memory_seconds = time.time() - start
        baseline_state = None
        if c.baseline.enabled:
            baseline_state = self.run_phase("baseline", aux_state.restart_ema(), p.softmax_step,
                                            self.train_loader(2), c.train.num_steps)
        extras = {"train_seconds": round(memory_seconds, 1),
                  "total_train_seconds": round(time.time() - start, 1)}
        return self.models(mem_state, baseline_state), extras

    def models(self, mem_state: MemoryTrainState, baseline_state: TrainState | None) -> dict:
        """What the evaluators take: name -> (params, references or None). Also sets
        `domain_threshold` from the final bank."""
        self.domain_threshold = float(self.programs.domain_threshold(mem_state.memory,
                                                                     mem_state.references))
        models = {"memory": (eval_params(mem_state), mem_state.references)}
        if baseline_state is not None:
            models["baseline"] = (eval_params(baseline_state), None)
        return models

    def final_phases(self) -> tuple[str, ...]:
        return ("memory", "baseline") if self.config.baseline.enabled else ("memory",)

    def planned_steps(self) -> int:
        c = self.config
        aux = self.memory.aux_steps if self.memory.init == "pretrain" else 0
        return aux + (c.train.num_steps - aux) * (2 if c.baseline.enabled else 1)

    def restore_final(self) -> dict:
        """The final states, with references recomputed from the final bank (deterministic in
        the state: a restored checkpoint gives the same predictions)."""
        mem_state = self.programs.refresh(self.restore("memory", self.with_memory(
            self.init_state())))
        baseline_state = self.restore("baseline", self.init_state()) \
            if self.config.baseline.enabled else None
        return self.models(mem_state, baseline_state)

    # -- evaluation
    def predict_batch(self, models: dict, batch: dict) -> dict:
        """Every model's outputs on one loader batch, with its labels and mask, gathered from
        every process in one go."""
        inputs = self.data_parallel.batch(model_inputs(batch))
        preds = {name: self.programs.predict(params, references, inputs)
                 for name, (params, references) in models.items()}
        return parallel.all_hosts({"label": batch["label"], "mask": batch["mask"],
                                   "models": preds})

    def classification_evaluator(self) -> classification.ClassificationEvaluator:
        return classification.ClassificationEvaluator(
            predict_batch=self.predict_batch, loader=self.eval_loader,
            split=self.config.eval.split, views=self.views,
            flip_permutation=self.data.flip_permutation, temperature=self.memory.temperature,
            class_names=tuple(self.class_names), domain_threshold=self.domain_threshold)

    def validation_metrics(self, state, split: str) -> dict:
        """Centre-view top-1 and mean class accuracy of `state` on `split`: the memory's vote for
        a state with references, else the softmax head's."""
        references = getattr(state, "references", None)
        evaluator = dataclasses.replace(self.classification_evaluator(), split=split)
        out = evaluator.outputs({"model": (eval_params(state), references)},
                                views=(pipeline.CENTRE_VIEW,))["model"]
        pred = out["memory_pred" if references is not None else "softmax_pred"]
        return {"top1": classification.top1(pred, out["label"]),
                "mean_class_accuracy": classification.mean_class_accuracy(
                    pred, out["label"], len(self.class_names))}

    def evaluators(self) -> list:
        headline = self.classification_evaluator()
        ratios = tuple(self.config.eval.observation_ratios)
        limit = getattr(self.data, "bayes_limit", lambda _: None)(ratios)
        return [classification.EarlyPredictionEvaluator(headline, ratios, limit), headline]

    def results_header(self) -> dict:
        return {"dataset": self.data.description, "split": self.config.eval.split,
                "eval_views": len(self.views), "class_names": self.class_names}

    def cost(self, models: dict) -> dict:
        return {"num_params": count_params(models["memory"][0])}

    def summary(self, results: dict) -> str:
        line = f"{results['split']} top-1: memory {results['top1']:.3f}"
        if "baseline_top1" in results:
            line += f", baseline {results['baseline_top1']:.3f} (McNemar p " \
                    f"{results['memory_vs_baseline']['mcnemar_p']:.2g})"
        return line

    # -- predict
    def predictor(self):
        """Restores the final models once; returns `predict(path) -> (answer, artefacts)`: the
        memory classifier's answer for one clip file (frames `[T, ...]` shaped like the
        dataset's, e.g. uint8 `[T, H, W, 3]` or joints `[T, 15, 2]`, or a video file) under the
        run's test views, the baseline's beside it, and how far the clip lies from the bank."""
        models = self.restore_final()
        views = self.views
        names = self.class_names

        def prob(x) -> float:  # 6 significant digits: readable JSON, small ones kept
            return float(f"{float(np.exp(x)):.6g}")

        def answer(logp, pred: int, top_k: int = 5) -> dict:
            order = np.argsort(-logp)[:top_k]
            return {"class": names[pred], "score": prob(logp[pred]),
                    "top_k": [[names[i], prob(logp[i])] for i in order]}

        def predict(path: str) -> tuple[dict, dict]:
            clip = self.data.read_clip(path)
            examples = [self.data.transform(False, view=v)(clip, None) for v in views]
            rows = -(-len(views) // jax.local_device_count()) * jax.local_device_count()
            examples += examples[-1:] * (rows - len(views))  # a whole row per device
            batch = self.data_parallel.batch(model_inputs(
                {key: np.stack([e[key] for e in examples]) for key in examples[0]}))
            outs = {}
            for name, (params, references) in models.items():
                out = self.programs.predict(params, references, batch)
                per_view = [{"label": np.zeros(1, np.int32),
                             **{k: v[i:i + 1] for k, v in out.items()}} for i in range(len(views))]
                outs[name] = classification.combine_views(
                    per_view, views, self.data.flip_permutation, self.memory.temperature)
            mem = outs["memory"]
            # The memory's class is its frame vote; its score is that class's soft score.
            result = {"video": path, **answer(mem["memory_logp"][0], int(mem["memory_pred"][0]))}
            result["votes"] = {names[i]: int(v) for i, v in enumerate(mem["memory_votes"][0])
                               if v}
            nearest = float(mem["memory_nearest"][0])
            result["domain"] = {
                "nearest_reference_distance": round(nearest, 6),
                "bank_threshold": round(self.domain_threshold, 6),
                "ood_score": round(nearest / self.domain_threshold, 4),
                "out_of_domain": bool(nearest > self.domain_threshold)}
            if "baseline" in outs:
                base = outs["baseline"]
                result["baseline"] = answer(base["softmax_logp"][0], int(base["softmax_pred"][0]))
            return result, {}

        return predict

    def describe_prediction(self, result: dict) -> str:
        line = f"{result['class']} {result['score']:.3f}"
        if "baseline" in result:
            line += f" (baseline: {result['baseline']['class']} {result['baseline']['score']:.3f})"
        domain = result["domain"]
        if domain["out_of_domain"]:
            line += (f"; OUT OF DOMAIN: {domain['ood_score']:.2f}x the bank's "
                     f"{DOMAIN_QUANTILE:.0%} distance")
        return line
