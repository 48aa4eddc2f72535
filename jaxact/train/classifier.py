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

import functools
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from jaxact import viz
from jaxact.data import pipeline, sources, video_io
from jaxact.evaluation import classification
from jaxact.losses import frame_class_distances, memory_loss, softmax_loss
from jaxact.models import memory as memlib
from jaxact.models.recurrent_encoder import VideoClassifierNet
from jaxact.ops import distances, kmeans
from jaxact.train import checkpoint, loop, parallel
from jaxact.train.state import TrainState, count_params, dropout_rng, make_optimizer, nonfinite_metrics

LOSS_ON = ("all", "misclassified")
MEMORY_INIT = ("pretrain", "checkpoint")


# ----------------------------------------------------------------------------- config checks


def validate_config(config: ml_collections.ConfigDict, num_devices: int) -> None:
    """Fails before any compile, naming the offending field."""
    parallel.check_mode(config.parallel.mode)
    distances.check_metric(config.memory.distance, field="memory.distance")
    if config.memory.reference_rule not in kmeans.REFERENCE_RULES:
        raise ValueError(f"memory.reference_rule={config.memory.reference_rule!r}: expected one "
                         f"of {kmeans.REFERENCE_RULES}")
    for field, allowed in (("loss_on", LOSS_ON), ("init", MEMORY_INIT)):
        if config.memory[field] not in allowed:
            raise ValueError(f"memory.{field}={config.memory[field]!r}: expected one of {allowed}")
    for field in ("softmax_loss_weight", "margin"):  # absent in older workdirs' configs
        if config.memory.get(field, 0.0) < 0:
            raise ValueError(f"memory.{field} must be >= 0, got {config.memory[field]}")
    for field in ("capacity", "num_clusters", "sample_size", "refresh_every", "write_stride",
                  "kmeans_iters"):
        if config.memory[field] <= 0:
            raise ValueError(f"memory.{field} must be > 0, got {config.memory[field]}")
    if config.memory.init == "pretrain" and not 0 < config.memory.aux_steps < config.train.num_steps:
        raise ValueError(f"memory.aux_steps={config.memory.aux_steps} must be in "
                         f"(0, train.num_steps={config.train.num_steps})")
    if config.memory.init == "checkpoint" and not config.memory.aux_checkpoint:
        raise ValueError("memory.init='checkpoint' needs memory.aux_checkpoint (a workdir)")
    eval_views(config)  # names eval.temporal_views when it is bad
    for field in ("train.batch_size", "eval.batch_size"):
        section, name = field.split(".")
        value = config[section][name]
        if value <= 0 or value % num_devices:
            raise ValueError(f"{field}={value} must be a positive multiple of the number of "
                             f"devices ({num_devices})")


def eval_views(config) -> tuple[pipeline.View, ...]:
    """The test views of `config.eval` (absent in older workdirs' configs: the centre view)."""
    return pipeline.eval_views(config.eval.get("temporal_views", 1),
                               config.eval.get("flip_view", False))


# ----------------------------------------------------------------------------- model + steps


def build_model(config, num_classes: int) -> VideoClassifierNet:
    encoder = dict(config.model)
    encoder["frame_encoder_kwargs"] = dict(encoder["frame_encoder_kwargs"])
    normalize = encoder.pop("normalize_features", False)  # absent in older workdirs' configs
    return VideoClassifierNet(num_classes=num_classes, encoder=encoder,
                              normalize_features=normalize)


def write_rows(bank, feats, labels, mask, stride: int):
    """Writes every `stride`-th frame feature `[B, T, D]` of rows with `mask` `[B]` into the bank."""
    feats = jax.lax.stop_gradient(feats[:, ::stride])
    b, t, d = feats.shape
    return memlib.write(bank, feats.reshape(b * t, d), jnp.repeat(labels, t),
                        jnp.repeat(mask, t))


def make_softmax_step(model, config):
    """`(state, batch, axis_name=None) -> (state, metrics)`; see `parallel.DataParallel`."""

    def step(state: TrainState, batch, axis_name=None):
        mask = batch["mask"]
        rng = parallel.device_rng(dropout_rng(state), axis_name)

        def loss_fn(params):
            _, logits = model.apply({"params": params}, batch["video"], train=True,
                                    rngs={"dropout": rng})
            return softmax_loss(logits, batch["label"], mask, config.train.frame_loss_weight,
                                axis_name)

        (loss, correct), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        loss, grads, accuracy = parallel.global_sum(
            (loss, grads, parallel.masked_share(correct, mask, axis_name)), axis_name)
        state = state.apply_gradients(grads)
        metrics = {"loss": loss, "accuracy": accuracy, "grad_norm": optax.tree.norm(grads),
                   **nonfinite_metrics(state.opt_state)}
        return state, metrics

    return step


def make_memory_step(model, config):
    """`(state, batch, axis_name=None) -> (state, metrics)`; see `parallel.DataParallel`. Under
    pmap every device writes the whole batch's features, so the banks stay identical."""

    def step(state: TrainState, batch, axis_name=None):
        labels, mask = batch["label"], batch["mask"]
        rng = parallel.device_rng(dropout_rng(state), axis_name)

        def loss_fn(params):
            feats, logits = model.apply({"params": params}, batch["video"], train=True,
                                        rngs={"dropout": rng})
            loss, (pred, weight) = memory_loss(feats, labels, mask, state.references, config,
                                               axis_name)
            head_weight = config.memory.get("softmax_loss_weight", 0.0)  # absent in older configs
            if head_weight:
                head_loss, _ = softmax_loss(logits, labels, mask, config.train.frame_loss_weight,
                                            axis_name)
                loss = loss + head_weight * head_loss
            return loss, (feats, pred, weight)

        (loss, (feats, pred, weight)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params)
        correct = (pred == labels) & mask
        loss, grads, accuracy, trained = parallel.global_sum(
            (loss, grads, parallel.masked_share(correct, mask, axis_name),
             parallel.masked_share(weight > 0, mask, axis_name)), axis_name)
        new_state = state.apply_gradients(grads)
        # write() drops non-finite rows, so a bad batch never enters the bank.
        rows = parallel.gather_rows((feats, labels, correct), axis_name)
        bank = write_rows(state.memory, *rows, config.memory.write_stride)
        metrics = {"loss": loss, "accuracy": accuracy, "trained_fraction": trained,
                   "grad_norm": optax.tree.norm(grads), **nonfinite_metrics(new_state.opt_state)}
        return new_state.replace(memory=bank), metrics

    return step


# ----------------------------------------------------------------------------- setup


class Experiment:
    """Everything a run needs, built once from the config: data, model, mesh, jitted functions."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        self.config, self.workdir = config, workdir
        os.makedirs(workdir, exist_ok=True)
        self.mesh = parallel.make_mesh()
        validate_config(config, self.mesh.size)
        self.data_parallel = parallel.DataParallel(self.mesh, config.parallel.mode)
        self.data = sources.make(config.data)
        if hasattr(self.data, "problems"):  # screened clips: written even when none, never stale
            problems, checked = self.data.problems, self.data.num_checked
            if jax.process_index() == 0:
                report = video_io.write_report(workdir, problems, checked)
                (logging.warning if problems else logging.info)(
                    "%s; see %s", video_io.summarize(problems, checked), report)
        self.views = eval_views(config)
        for view in self.views:  # a source without such views fails now, not after training
            self.data.transform(False, view=view)
        self.class_names = list(self.data.class_names)
        self.num_classes = len(self.class_names)
        self.model = build_model(config, self.num_classes)
        self.tx = make_optimizer(config.train)
        self.replicated = parallel.replicated(self.mesh)

    # -- data
    def source(self, split: str):
        return self.data.source(split)

    def train_loader(self, seed_offset: int = 0):
        c = self.config.data
        return pipeline.make_loader(self.source("train"), self.data.transform(train=True),
                                    global_batch_size=self.config.train.batch_size,
                                    seed=self.config.seed + seed_offset, train=True,
                                    num_threads=c.num_threads, prefetch=c.prefetch)

    def eval_loader(self, split: str, fraction: float = 1.0, view=pipeline.CENTRE_VIEW):
        c = self.config.data
        return pipeline.make_loader(self.source(split), self.data.transform(False, fraction, view),
                                    global_batch_size=self.config.eval.batch_size,
                                    seed=self.config.seed, train=False,
                                    num_threads=c.num_threads, prefetch=c.prefetch)

    # -- state
    def init_state(self, with_memory: bool) -> TrainState:
        c = self.config
        example = self.data.transform(train=False)(self.source("train")[0], None)["video"]
        shape = (1, *example.shape)

        def init(rng):
            params_rng, state_rng = jax.random.split(rng)
            params = self.model.init(params_rng, jnp.zeros(shape, jnp.float32))["params"]
            extra = {}
            if with_memory:
                extra["memory"] = memlib.create(self.num_classes, c.memory.capacity,
                                                c.model.feature_dim)
                extra["references"] = self.empty_references()
            return TrainState.create(params, self.tx, state_rng, **extra)

        return jax.jit(init, out_shardings=self.replicated)(jax.random.key(c.seed))

    def empty_references(self):
        c = self.config
        d, k = c.model.feature_dim, c.memory.num_clusters
        return memlib.References(refs=jnp.zeros((self.num_classes, k, d)),
                                 valid=jnp.zeros((self.num_classes, k), bool),
                                 variance=jnp.ones((d,)), inv_cov=jnp.eye(d))

    def with_memory(self, state: TrainState) -> TrainState:
        c = self.config
        memory = memlib.create(self.num_classes, c.memory.capacity, c.model.feature_dim)
        return state.replace(**jax.device_put(
            {"memory": memory, "references": self.empty_references()}, self.replicated))

    def compile_step(self, step_fn):
        """A `make_*_step` function compiled for `parallel.mode`; donates the state."""
        return self.data_parallel.train_step(step_fn)

    @functools.cached_property
    def refresh(self):
        m = self.config.memory

        def refresh(state: TrainState) -> TrainState:
            rng = jax.random.fold_in(state.rng, state.step)
            refs = memlib.refresh_references(
                state.memory, rng, num_clusters=m.num_clusters, num_iters=m.kmeans_iters,
                rule=m.reference_rule, sample_size=m.sample_size)
            return state.replace(references=refs)

        return jax.jit(refresh, out_shardings=self.replicated)

    @functools.cached_property
    def predict_fn(self):
        """Compiled `(params, references|None, video) -> dict` of per-video numpy outputs of this
        process's rows; `video` is `data_parallel.batch(...)` of `[B_local, T, ...]`."""
        config = self.config

        def predict(params, references, video):
            feats, logits = self.model.apply({"params": params}, video)
            out = {"softmax_logp": jax.nn.log_softmax(logits[:, -1])}
            if references is not None:
                out["memory_dist"] = frame_class_distances(feats, references, config)
            return out

        return self.data_parallel.map_rows(predict, num_broadcast=2)

    @functools.cached_property
    def fill_fn(self):
        stride = self.config.memory.write_stride

        def fill(params, bank, batch):
            feats, _ = self.model.apply({"params": params}, batch["video"])
            return write_rows(bank, feats, batch["label"], batch["mask"], stride)

        return jax.jit(fill, donate_argnums=(1,), out_shardings=self.replicated)


# ----------------------------------------------------------------------------- loop


def run_phase(exp: Experiment, phase: str, state: TrainState, step_fn, loader, end_step: int,
              on_step=None) -> TrainState:
    return loop.run_phase(workdir=exp.workdir, data_parallel=exp.data_parallel,
                          train_config=exp.config.train,
                          phase=phase, state=state, step_fn=step_fn, loader=loader,
                          end_step=end_step, on_step=on_step)


def fill_memory(exp: Experiment, state: TrainState, params=None, fill_fn=None) -> TrainState:
    """Writes features of `memory.init_batches` train batches into the bank, then computes the
    first references. Features come from `fill_fn(params, bank, batch)` (default: this
    experiment's model with the state's own params; an auxiliary model passes its own)."""
    params = state.params if params is None else params
    fill_fn = exp.fill_fn if fill_fn is None else fill_fn
    loader = exp.eval_loader("train")
    bank = state.memory
    for _, batch in zip(range(exp.config.memory.init_batches), loader, strict=False):
        bank = fill_fn(params, bank, parallel.shard_batch(batch, exp.mesh))
    written = np.asarray(jax.device_get(bank.valid)).sum(axis=1)
    logging.info("memory filled: vectors per class %s", written.tolist())
    return exp.refresh(state.replace(memory=bank))


def load_aux_params(exp: Experiment):
    """Params of the auxiliary model in `memory.aux_checkpoint` (a workdir of this experiment)."""
    aux_dir = exp.config.memory.aux_checkpoint
    aux_config = loop.read_config(aux_dir, "memory.aux_checkpoint")
    aux = Experiment(aux_config, aux_dir)
    if aux_config.model.feature_dim != exp.config.model.feature_dim:
        raise ValueError(f"memory.aux_checkpoint: feature_dim {aux_config.model.feature_dim} "
                         f"differs from model.feature_dim {exp.config.model.feature_dim}")
    target = aux.init_state(with_memory=False)
    for phase in ("baseline", "aux"):
        mgr = checkpoint.manager(os.path.join(aux_dir, "checkpoints", phase))
        if mgr.latest_step() is not None:
            state, _ = checkpoint.restore(mgr, target)
            return aux, state.params
    raise FileNotFoundError(f"memory.aux_checkpoint={aux_dir!r}: no baseline/aux checkpoint")


def train(exp: Experiment) -> dict:
    """Runs all phases; returns the final {'memory': state, 'baseline': state|None}."""
    c = exp.config
    softmax_step = exp.compile_step(make_softmax_step(exp.model, c))
    memory_step = exp.compile_step(make_memory_step(exp.model, c))
    start = time.time()

    if c.memory.init == "pretrain":
        aux_state = run_phase(exp, "aux", exp.init_state(with_memory=False), softmax_step,
                              exp.train_loader(), c.memory.aux_steps)
        fill = lambda s: fill_memory(exp, s)
    else:
        aux_state = exp.init_state(with_memory=False)
        aux, aux_params = load_aux_params(exp)
        fill = lambda s: fill_memory(exp, s, aux_params, aux.fill_fn)

    # The memory phase starts from a copy: step functions donate their input state.
    mem_state = jax.tree.map(jnp.copy, exp.with_memory(aux_state))
    if checkpoint.manager(os.path.join(exp.workdir, "checkpoints", "memory")).latest_step() is None:
        mem_state = fill(mem_state)

    refresh_every = c.memory.refresh_every

    def maybe_refresh(s):
        return exp.refresh(s) if int(s.step) % refresh_every == 0 else s

    mem_state = run_phase(exp, "memory", mem_state, memory_step, exp.train_loader(1),
                          c.train.num_steps, on_step=maybe_refresh)
    mem_state = final_references(exp, mem_state)
    memory_seconds = time.time() - start
    baseline_state = None
    if c.baseline.enabled:
        baseline_state = run_phase(exp, "baseline", aux_state, softmax_step, exp.train_loader(2),
                                   c.train.num_steps)
    return {"memory": mem_state, "baseline": baseline_state, "train_seconds": memory_seconds,
            "total_train_seconds": time.time() - start}


# ----------------------------------------------------------------------------- evaluation


def predict_split(exp: Experiment, models: dict, split: str, fraction: float = 1.0,
                  views=(pipeline.CENTRE_VIEW,)) -> dict:
    """Per-video outputs over a split of every model in `models` (name -> `(params, references)`,
    references `None` for a softmax-only model). Each view's loader runs once and every batch is fed
    to all models, so adding the baseline costs its forward passes, not another decoding pass.

    Returns name -> dict of numpy arrays (padding removed) of `combine_views`, plus `label`.
    """
    per_view = {name: [] for name in models}
    for view in views:
        outputs = {name: [] for name in models}
        for batch in exp.eval_loader(split, fraction, view):
            video = exp.data_parallel.batch(batch["video"])
            preds = {name: exp.predict_fn(params, references, video)
                     for name, (params, references) in models.items()}
            # One gather per batch for all models; `keep` drops the padding rows.
            rows = parallel.all_hosts({"label": batch["label"], "mask": batch["mask"],
                                       "models": preds})
            keep = rows["mask"]
            for name in models:
                outputs[name].append({"label": rows["label"][keep],
                                      **{k: v[keep] for k, v in rows["models"][name].items()}})
        for name, outs in outputs.items():
            per_view[name].append({k: np.concatenate([o[k] for o in outs]) for k in outs[0]})
    return {name: combine_views(pv, views, exp.data.flip_permutation,
                                exp.config.memory.temperature)
            for name, pv in per_view.items()}


def combine_views(per_view: list[dict], views, flip_permutation, temperature: float) -> dict:
    """Merges per-view outputs of the same clips into one prediction per clip.

    Each view has `softmax_logp` `[N, C]`, `label` `[N]` and, for the memory classifier,
    `memory_dist` `[N, T, C]`. A mirrored view's classes are mapped back through
    `flip_permutation` (`[C]`, the class of each class's mirror image). The memory classifier's
    frames of all views vote together (`memlib.vote`), so `memory_votes` counts `V * T` frames;
    the baseline averages its log-probabilities over the views.

    Returns `label`, `softmax_logp`, `softmax_pred` and, with distances, `memory_pred`,
    `memory_votes`, `memory_logp` (`[N]`, `[N, C]`, `[N]`; `[N]`, `[N, C]`, `[N, C]`).
    """
    def unflip(x, view):  # class axis last
        return x[..., flip_permutation] if view.flip else x

    first, pairs = per_view[0], list(zip(per_view, views, strict=True))
    label = first["label"]
    if views[0].flip:
        label = np.argsort(flip_permutation)[label]
    logp = np.mean([unflip(o["softmax_logp"], v) for o, v in pairs], axis=0)
    logp = np.asarray(jax.nn.log_softmax(logp, axis=-1))
    out = {"label": label, "softmax_logp": logp, "softmax_pred": np.argmax(logp, -1)}
    if "memory_dist" in first:
        dist = np.concatenate([unflip(o["memory_dist"], v) for o, v in pairs], axis=1)
        pred, votes = memlib.vote(dist)
        out.update(memory_pred=np.asarray(pred), memory_votes=np.asarray(votes),
                   memory_logp=np.asarray(memlib.scores(dist, temperature=temperature)))
    return out


def evaluate(exp: Experiment, mem_state: TrainState, baseline_state: TrainState | None) -> dict:
    """Test metrics for both methods and the early-prediction curves."""
    c = exp.config
    split = c.eval.split
    # The early-prediction sweep takes the centre view only: views multiply its cost.
    results = {"dataset": exp.data.description, "split": split, "eval_views": len(exp.views),
               "class_names": exp.class_names, "early_prediction": {"memory": {}, "baseline": {}}}
    models = {"memory": (mem_state.params, mem_state.references)}
    if baseline_state is not None:
        models["baseline"] = (baseline_state.params, None)
    for ratio in c.eval.observation_ratios:
        out = predict_split(exp, models, split, ratio)
        for name, pred in (("memory", "memory_pred"), ("baseline", "softmax_pred")):
            if name in out:
                results["early_prediction"][name][f"{ratio:.1f}"] = classification.top1(
                    out[name][pred], out[name]["label"])
    out = predict_split(exp, models, split, views=exp.views)
    full = out["memory"]
    results.update(classification.summary(full["memory_pred"], full["label"], full["memory_logp"],
                                          exp.num_classes))
    if baseline_state is not None:
        base = out["baseline"]
        results["baseline_top1"] = classification.top1(base["softmax_pred"], base["label"])
        results["baseline_mean_class_accuracy"] = classification.mean_class_accuracy(
            base["softmax_pred"], base["label"], exp.num_classes)
        # Same clips in the same order (one loader pass), so the per-clip pairing is exact.
        paired = classification.paired_comparison(full["memory_pred"] == full["label"],
                                                  base["softmax_pred"] == base["label"])
        results["memory_vs_baseline"] = {"only_memory_right": paired["only_a_right"],
                                         "only_baseline_right": paired["only_b_right"],
                                         "mcnemar_p": paired["mcnemar_p"]}
        logging.info("memory vs baseline on %s: %s", split, results["memory_vs_baseline"])
    results["_full"] = full
    return results


def write_results(exp: Experiment, results: dict, extra: dict) -> dict:
    full = results.pop("_full")
    results.update(extra)
    if jax.process_index() == 0:
        loop.write_json(os.path.join(exp.workdir, "results.json"), results)
        viz.plot_confusion_matrix(
            classification.confusion_matrix(full["memory_pred"], full["label"], exp.num_classes),
            exp.class_names, os.path.join(exp.workdir, "confusion_matrix.png"))
        viz.plot_early_prediction(results["early_prediction"],
                                  os.path.join(exp.workdir, "early_prediction.png"))
    return results


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    exp = Experiment(config, workdir)
    loop.check_class_names(exp.workdir, exp.class_names)
    out = train(exp)
    results = evaluate(exp, out["memory"], out["baseline"])
    return write_results(exp, results, {
        "num_params": count_params(out["memory"].params),
        "train_seconds": round(out["train_seconds"], 1),
        "total_train_seconds": round(out["total_train_seconds"], 1),
        "config_name": config.config_name,
    })


def final_references(exp: Experiment, state: TrainState) -> TrainState:
    """References from the final bank. Deterministic in the state (rng folded with the step), so
    a restored checkpoint gives the same references, hence the same predictions."""
    return exp.refresh(state)


def restore_final(exp: Experiment, phase: str, with_memory: bool) -> TrainState:
    loop.check_class_names(exp.workdir, exp.class_names)
    mgr = checkpoint.manager(os.path.join(exp.workdir, "checkpoints", phase))
    restored = checkpoint.restore(mgr, exp.init_state(with_memory))
    if restored is None:
        raise FileNotFoundError(f"no '{phase}' checkpoint in {exp.workdir}; train first")
    state = restored[0]
    return final_references(exp, state) if with_memory else state


def evaluate_from_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """--mode=eval: restores the final states and recomputes results.json."""
    exp = Experiment(config, workdir)
    mem_state = restore_final(exp, "memory", with_memory=True)
    baseline_state = restore_final(exp, "baseline", False) if config.baseline.enabled else None
    previous = loop.previous_results(workdir)
    results = evaluate(exp, mem_state, baseline_state)
    return write_results(exp, results, {
        "num_params": count_params(mem_state.params),
        "train_seconds": previous.get("train_seconds"),
        "config_name": config.config_name,
    })


def predict_video(config: ml_collections.ConfigDict, workdir: str, video_path: str,
                  top_k: int = 5) -> dict:
    """--mode=predict: classifies one clip stored as .npy / .npz (frames `[T, ...]` shaped like
    the dataset's, e.g. uint8 `[T, H, W, 3]` or joints `[T, 15, 2]`)."""
    exp = Experiment(config, workdir)
    state = restore_final(exp, "memory", with_memory=True)
    clip = exp.data.read_clip(video_path)
    views = exp.views
    video = np.stack([exp.data.transform(False, view=v)(clip, None)["video"] for v in views])
    rows = -(-len(views) // jax.local_device_count()) * jax.local_device_count()
    video = np.concatenate([video, np.repeat(video[-1:], rows - len(views), axis=0)])
    out = exp.predict_fn(state.params, state.references, exp.data_parallel.batch(video))
    per_view = [{"label": np.zeros(1, np.int32), "softmax_logp": out["softmax_logp"][i:i + 1],
                 "memory_dist": out["memory_dist"][i:i + 1]} for i in range(len(views))]
    out = combine_views(per_view, views, exp.data.flip_permutation, config.memory.temperature)
    logp = out["memory_logp"][0]
    order = np.argsort(-logp)[:top_k]
    pred = int(out["memory_pred"][0])
    return {"video": video_path, "class": exp.class_names[pred],
            "score": float(np.exp(logp[pred])),
            "votes": out["memory_votes"][0].tolist(),
            "top_k": [(exp.class_names[i], float(np.exp(logp[i]))) for i in order]}

