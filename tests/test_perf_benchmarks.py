"""Smoke tests of benchmarks/compare_pytorch.py and benchmarks/memory_search.py: their pure
functions, the PyTorch twin's numerics against the flax model, and tiny end-to-end runs. Tests
that need PyTorch or FAISS (optional: `pip install -e .[bench]`) skip without them."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from benchmarks import compare_pytorch as cp
from benchmarks import memory_search as ms
from jaxact.losses import memory_loss, softmax_loss
from jaxact.models import memory as memlib
from jaxact.train import classifier, parallel

needs_torch = pytest.mark.skipif(cp.torch is None, reason="PyTorch not installed (.[bench])")
needs_faiss = pytest.mark.skipif(ms.faiss is None, reason="faiss-cpu not installed (.[bench])")
RES = 32  # clip resolution of the smoke tests


# ----------------------------------------------------------------------------- compare_pytorch


@pytest.mark.parametrize("size", [16, 15, 8, 7, 1])
def test_same_padding_matches_xla(size):
    assert cp.same_padding(size, 3, 2) == tuple(lax.padtype_to_pads((size,), (3,), (2,), "SAME")[0])


def test_model_flops_counts_every_layer():
    config = cp.get_config("smoke")
    t, h, w, c = cp.clip_shape(config, RES)
    flops = cp.model_flops(config.model, (t, h, w, c))
    # stem 8x8x8 out, 4x4x3 window; conv 4x4x16 out, 3x3x8; embed 256 -> 32; biLSTM 32+32 -> 128
    macs = 8 * 8 * 8 * 48 + 4 * 4 * 16 * 72 + 256 * 32 + 2 * 64 * 128 + 2 * 32 * 16 + 16 * 6
    assert flops == 2 * macs * t
    # the train step: forward + two backward matmuls per layer, less the stem's input gradient
    assert cp.train_flops(config.model, (t, h, w, c)) == 3 * flops - 2 * 8 * 8 * 8 * 48 * t


def test_check_supported_rejects_other_models():
    config = cp.get_config("smoke")
    config.model.cell = "gru"
    with pytest.raises(ValueError, match="cell='gru'"):
        cp.check_supported(config.model)


def _smoke_model():
    config = cp.get_config("smoke")
    shape = cp.clip_shape(config, RES)
    model = classifier.build_model(config.model, cp.NUM_CLASSES)
    params = model.init(jax.random.key(0), jnp.zeros((1, *shape)))["params"]
    # non-zero biases, so a misplaced bias shows
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    params = jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape)
                                       for x, k in zip(leaves, keys, strict=True)])
    return config, shape, model, params


def _close(a, b, tol=1e-4):
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, float(np.abs(b).max())))


@needs_torch
def test_torch_twin_matches_flax_forward_losses_and_gradients():
    torch = cp.torch
    config, shape, model, params = _smoke_model()
    net = cp.TorchClassifierNet(config.model, shape)
    cp.copy_flax_params(net, params)
    trainable, frozen = cp.torch_param_counts(net)
    assert trainable == cp.count_params(params)
    assert frozen == 2 * 4 * config.model.hidden_size  # bias_hh of both directions

    batch = cp.random_batch(4, shape)
    video, labels, mask = cp.torch_batch(batch)
    feats, logits = model.apply({"params": params}, jnp.asarray(batch["video"]))
    t_feats, t_logits = net(video)
    assert tuple(t_feats.shape) == feats.shape and tuple(t_logits.shape) == logits.shape
    _close(t_feats.detach(), feats)
    _close(t_logits.detach(), logits)

    # softmax loss and its gradient with respect to every parameter
    fw = config.train.frame_loss_weight

    def loss_fn(p):
        _, lg = model.apply({"params": p}, jnp.asarray(batch["video"]))
        return jnp.mean(softmax_loss(lg, jnp.asarray(batch["label"]), fw)[0])

    loss, grads = jax.value_and_grad(loss_fn)(params)
    t_loss = cp.torch_softmax_loss(t_logits, labels, fw)[0].mean()
    t_loss.backward()
    _close(float(t_loss.detach()), float(loss))
    expected = cp.TorchClassifierNet(config.model, shape)
    cp.copy_flax_params(expected, grads)  # the flax gradients in the torch layout
    for (_, p), (_, g) in zip(net.named_parameters(), expected.named_parameters(),
                                 strict=True):
        if p.requires_grad:
            _close(p.grad, g.detach(), tol=1e-3)

    # memory loss against references, some missing
    memory = cp.memory_settings(config)
    refs = np.random.default_rng(2).standard_normal(
        (cp.NUM_CLASSES, memory.num_clusters, config.model.feature_dim)).astype(np.float32)
    refs /= np.linalg.norm(refs, axis=-1, keepdims=True)
    valid = np.ones(refs.shape[:2], bool)
    valid[1, 0] = valid[4] = False
    references = memlib.References(refs=jnp.asarray(refs), valid=jnp.asarray(valid),
                                   variance=jnp.ones(refs.shape[-1]),
                                   inv_cov=jnp.eye(refs.shape[-1]))
    per_video, weight, pred = memory_loss(feats, jnp.asarray(batch["label"]),
                                          jnp.asarray(batch["mask"]), references, memory)
    t_per_video, t_weight, t_pred = cp.torch_memory_loss(
        t_feats, labels, mask, torch.from_numpy(refs), torch.from_numpy(valid), memory)
    _close(t_per_video.detach(), per_video)
    np.testing.assert_array_equal(t_weight.numpy(), np.asarray(weight))
    np.testing.assert_array_equal(t_pred.numpy(), np.asarray(pred))


@needs_torch
def test_torch_write_matches_memory_write():
    torch = cp.torch
    rng = np.random.default_rng(0)
    bank = memlib.create(3, 4, 2)
    t_bank = {k: torch.from_numpy(np.array(getattr(bank, k))) for k in
              ("feats", "valid", "ptr", "count")}
    for _ in range(3):  # wraps the ring buffers, more rows of a class than its capacity
        feats = rng.standard_normal((7, 2)).astype(np.float32)
        feats[2, 0] = np.nan  # dropped
        labels = rng.integers(0, 3, 7).astype(np.int64)
        mask = rng.random(7) < 0.8
        bank = memlib.write(bank, jnp.asarray(feats), jnp.asarray(labels), jnp.asarray(mask))
        cp.torch_write(t_bank, torch.from_numpy(feats), torch.from_numpy(labels),
                       torch.from_numpy(mask))
    for k in ("feats", "valid", "ptr", "count"):
        np.testing.assert_array_equal(t_bank[k].numpy(), np.asarray(getattr(bank, k)))


@needs_torch
def test_torch_memory_step_matches_jaxact_step():
    torch = cp.torch
    config = cp.get_config("smoke")
    shape = cp.clip_shape(config, RES)
    dp = parallel.DataParallel(parallel.make_mesh(jax.devices()[:1]))
    progs = cp.jaxact_programs(config, shape, dp)
    batch = cp.random_batch(config.train.batch_size, shape)
    state = cp.jaxact_state(config, progs, "memory", batch)
    host = jax.device_get(state)  # the step donates `state`
    trainer = cp.TorchTrainer(config, shape, "memory", host.params, host.memory,
                              host.references)
    state, metrics = progs.memory_step(state, dp.batch(batch))
    loss, accuracy = trainer.step(*cp.torch_batch(batch))
    _close(loss, float(metrics["loss"]))
    assert accuracy == pytest.approx(float(metrics["accuracy"]))
    for k in ("feats", "valid", "ptr", "count"):
        np.testing.assert_allclose(trainer.bank[k].numpy(), np.asarray(getattr(state.memory, k)),
                                   atol=1e-5)
    assert torch.equal(trainer.ref_valid, torch.from_numpy(np.array(state.references.valid)))


def test_warmup_cosine_matches_optax():
    from jaxact.train.state import learning_rate_schedule

    tc = cp.get_config("").train
    factor, schedule = cp.warmup_cosine(tc), learning_rate_schedule(tc)
    for step in (0, 1, 25, 50, 51, 400, 799, 800, 900):
        assert factor(step) * tc.learning_rate == pytest.approx(float(schedule(step)), abs=1e-7)


@needs_torch
def test_compare_pytorch_tiny_run(tmp_path):
    output = str(tmp_path / "compare_pytorch.json")
    out = cp.run("smoke", steps=("memory", "softmax"), rounds=1, timed=1, matmul_n=64,
                 output=output, resolution=RES, devices=jax.devices()[:1])
    saved = json.loads(open(output).read())
    assert saved["ratios"]["jaxact_over_torch_clips_per_s"] == out["steps"]["memory"]["ratio"]
    assert saved["params"]["jaxact"] == saved["params"]["torch_trainable"]
    for kind in ("memory", "softmax"):
        step = saved["steps"][kind]
        assert step["jaxact_clips_per_s"] > 0 and step["torch_clips_per_s"] > 0
        assert step["model_gflop_per_step"] > 0
    assert {b["step"] for b in saved["bars"]} == {"memory", "softmax"}
    assert "detector" in saved and saved["machine"]


# ----------------------------------------------------------------------------- memory_search


@pytest.mark.parametrize("metric", ms.METRICS)
@pytest.mark.parametrize("block_argmin", [True, False])
def test_jaxact_nearest_is_exact_with_padding(metric, block_argmin):
    stored, queries = ms.search_data(2_345, 16, 50, seed=3)
    chunks, n = ms._chunked(jnp.asarray(stored), 500)  # 5 chunks, the last padded
    assert chunks.shape == (5, 500, 16) and n == 2_345
    got = np.asarray(ms.jaxact_nearest(jnp.asarray(queries), chunks, metric=metric, n=n,
                                       block_argmin=block_argmin))
    q, s = queries.astype(np.float64), stored.astype(np.float64)
    if metric == "cosine":
        d = 1 - ms.unit_rows(q) @ ms.unit_rows(s).T
    else:
        d = ((q[:, None] - s[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(got, d.argmin(1))
    np.testing.assert_array_equal(ms.numpy_nearest(queries, s.astype(np.float32) if metric !=
                                                   "cosine" else ms.unit_rows(stored),
                                                   metric, 500), d.argmin(1))


def test_agreement_tells_ties_from_errors():
    stored = np.array([[0, 0], [1, 0], [-1, 0], [5, 5]], np.float32)
    queries = np.zeros((4, 2), np.float32)
    ref = np.array([0, 1, 0, 0])
    idx = np.array([0, 2, 3, 1])  # equal, tie (1 vs 2 both at 1), farther, farther
    out = ms.agreement(queries, stored, idx, ref, "sqeuclidean")
    assert out == {"equal": 0.25, "ties": 0.25, "closer": 0.0, "farther": 0.5}


def test_search_row_and_resume(tmp_path):
    output = str(tmp_path / "memory_search.json")
    args = dict(dim=16, num_queries=32, metrics=["sqeuclidean", "cosine"], chunk=1_000,
                repeats=1, repeats_large=1, km_points=400, km_clusters=4, km_iters=3,
                km_repeats=1, min_free_gb=6.0, redo=False, note="test", output=output)
    out = ms.run([3_000], **args)
    rows = out["search"]
    assert [r["metric"] for r in rows] == ["sqeuclidean", "cosine"]
    for row in rows:
        assert set(row["qps"]) >= {"jaxact", "jaxact_argmin", "xla_mm", "numpy"}
        assert all(a["equal"] + a["ties"] == 1.0 for a in row["agreement"].values())
    assert out["kmeans"]["inertia"]["jaxact"] > 0
    if ms.faiss is not None:
        assert "jaxact_over_faiss_3k" in out["ratios"] and "faiss" in rows[0]["qps"]
    again = ms.run([3_000], **{**args, "km_repeats": 0})  # finished rows are kept, not rerun
    assert [r["date"] for r in again["search"]] == [r["date"] for r in rows]
    assert again["kmeans"] == json.loads(open(output).read())["kmeans"]
    other = ms.run([1_000], **{**args, "metrics": ["cosine"], "km_repeats": 0})
    assert [(r["n"], r["metric"]) for r in other["search"]] == [
        (1_000, "cosine"), (3_000, "sqeuclidean"), (3_000, "cosine")]  # earlier rows kept


def test_large_rows_skip_without_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(ms, "mem_available_gb", lambda: 1.0)
    out = ms.run([ms.LARGE], dim=4, num_queries=2, metrics=["sqeuclidean"], chunk=1_000,
                 repeats=1, repeats_large=1, km_points=100, km_clusters=2, km_iters=1,
                 km_repeats=0, min_free_gb=6.0, redo=False, note="", output="")
    assert "MemAvailable" in out["search"][0]["skipped"]


@needs_faiss
def test_faiss_kmeans_and_inertia():
    points = ms.kmeans_data(600, 8, centres=4)
    centroids = ms.faiss_kmeans(points, 4, 5, seed=1)
    assert centroids.shape == (4, 8)
    assert ms.inertia(points, centroids) < ms.inertia(points, points.mean(0, keepdims=True))
