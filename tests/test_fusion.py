"""Decoupling, hypernetwork encodings and the three fusions, each against an independent numpy
reference; shapes, bfloat16, and the Gram fusion's zero-gamma start."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxact.models.decoupling import decouple
from jaxact.models.encodings import HyperConvEncoding
from jaxact.models.fusion import (
    FUSIONS,
    ConcatFusion,
    GramFusion,
    SumFusion,
    gram_channel_attention,
    sum_branches,
)

B, N, T, S, C = 2, 3, 4, 3, 6


def _normal(shape, seed, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _perturb(params, seed, scale=0.3):
    """Moves every parameter off its initial value (zero biases and gamma would hide terms)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: p + scale * rng.standard_normal(p.shape).astype(p.dtype), params)


def _init_apply(module, *args, seed=0):
    variables = jax.jit(module.init)(jax.random.key(seed), *args)
    return variables["params"], jax.jit(lambda p, *a: module.apply({"params": p}, *a))


def _dense_np(x, p):
    return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def _branches(seed=0, c=C, lead=(B, N)):
    return (jnp.asarray(_normal((*lead, T, c), seed)), jnp.asarray(_normal((*lead, S, S, c), seed + 1)))


# ----------------------------------------------------------------------------- decoupling


def test_decouple_matches_numpy_means():
    x = _normal((B, N, T, S, S, C), 0)
    x_t, x_s = jax.jit(decouple)(jnp.asarray(x))
    chex.assert_shape([x_t, x_s], [(B, N, T, C), (B, N, S, S, C)])
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(x_t, x64.mean(axis=(3, 4)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(x_s, x64.mean(axis=2), rtol=1e-5, atol=1e-6)
    # Flat actors [R, T, S, S, C]: the same means.
    flat_t, flat_s = decouple(jnp.asarray(x.reshape(B * N, T, S, S, C)))
    np.testing.assert_allclose(flat_t.reshape(x_t.shape), x_t, rtol=1e-6)
    np.testing.assert_allclose(flat_s.reshape(x_s.shape), x_s, rtol=1e-6)
    with pytest.raises(ValueError, match="T, S, S, C"):
        decouple(jnp.zeros((S, S, C)))


@pytest.mark.parametrize("frames", [4, 5])
def test_decouple_keyframe_takes_the_middle_frame(frames):
    x = _normal((B, N, frames, S, S, C), 1)
    x_t, x_s = jax.jit(decouple, static_argnums=1)(jnp.asarray(x), "keyframe")
    np.testing.assert_allclose(x_t, x.astype(np.float64).mean(axis=(3, 4)), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_array_equal(x_s, x[:, :, frames // 2])  # the keyframe at T // 2
    # Only the keyframe reaches the spatial branch.
    moved = np.array(x)
    moved[:, :, [i for i in range(frames) if i != frames // 2]] += 3.0
    np.testing.assert_array_equal(decouple(jnp.asarray(moved), "keyframe")[1], x_s)
    with pytest.raises(ValueError, match="spatial must be one of"):
        decouple(jnp.asarray(x), "first")


# ----------------------------------------------------------------------------- encodings


def _hyper_kernel_np(p, c_in, c_out):
    """The 1 x 1 conv kernel recomputed from z and the hypernetwork's weights."""
    z = np.asarray(p["z"], np.float64)
    h = np.maximum(_dense_np(z, p["hyper_hidden"]), 0.0)
    return _dense_np(h, p["hyper_kernel"]).reshape(c_in, c_out) / np.sqrt(c_in)


@pytest.mark.parametrize("shape", [(B, N, T, C), (B, N, S, S, C), (C,)],
                         ids=["temporal", "spatial", "vector"])
def test_hyper_conv_is_a_1x1_conv_with_the_generated_kernel(shape):
    module = HyperConvEncoding(features=5, z_dim=4, hidden=8)
    x = jnp.asarray(_normal(shape, 1))
    params, apply = _init_apply(module, x)
    assert set(params) == {"z", "hyper_hidden", "hyper_kernel", "bias"}
    chex.assert_shape([params["z"], params["hyper_kernel"]["kernel"], params["bias"]],
                      [(4,), (8, C * 5), (5,)])
    params = _perturb(params, 2)
    out = apply(params, x)
    chex.assert_shape(out, (*shape[:-1], 5))
    kernel = _hyper_kernel_np(params, C, 5)
    ref = np.einsum("...i,io->...o", np.asarray(x, np.float64), kernel) + np.asarray(params["bias"])
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_hyper_conv_kernel_is_a_parameter_not_an_input_function():
    # The kernel comes from the parameters only: f(x) - bias is linear in x.
    module = HyperConvEncoding(features=3)
    x, y = jnp.asarray(_normal((7, C), 3)), jnp.asarray(_normal((7, C), 4))
    params, apply = _init_apply(module, x)
    params = _perturb(params, 5)
    bias = np.asarray(params["bias"])
    lhs = np.asarray(apply(params, 2.0 * x + y)) - bias
    rhs = 2.0 * (np.asarray(apply(params, x)) - bias) + (np.asarray(apply(params, y)) - bias)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-5, atol=1e-5)


def test_hyper_conv_disabled_is_a_plain_1x1_conv():
    module = HyperConvEncoding(features=5, enabled=False)
    x = jnp.asarray(_normal((B, N, S, S, C), 6))
    params, apply = _init_apply(module, x)
    assert set(params) == {"conv"}
    chex.assert_shape(params["conv"]["kernel"], (C, 5))
    params = _perturb(params, 7)
    np.testing.assert_allclose(apply(params, x), _dense_np(np.asarray(x, np.float64), params["conv"]),
                               rtol=1e-5, atol=1e-5)


def test_hyper_conv_initial_scale_is_that_of_a_dense():
    # The 1 / sqrt(C_in) factor: output variance of order the input's for any C_in.
    for c_in in (8, 256):
        x = jnp.asarray(_normal((512, c_in), 8))
        out = HyperConvEncoding(features=64).init_with_output(jax.random.key(c_in), x)[0]
        assert 0.05 < float(jnp.var(out)) < 5.0, (c_in, float(jnp.var(out)))


# ----------------------------------------------------------------------------- sum and concat


def test_sum_branches_cheap_form_equals_full_form():
    temporal, spatial = _branches(10)
    cheap = sum_branches(temporal, spatial, pool_time_first=True)
    full = sum_branches(temporal, spatial, pool_time_first=False)
    chex.assert_shape([cheap, full], [(B, N, S, S, C)] * 2)
    # Numpy reference of the full form: broadcast to [B, N, T, S, S, C], then mean over T.
    t, s = np.asarray(temporal, np.float64), np.asarray(spatial, np.float64)
    ref = (t[:, :, :, None, None, :] + s[:, :, None]).mean(axis=2)
    np.testing.assert_allclose(full, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cheap, ref, rtol=1e-5, atol=1e-6)


def test_sum_fusion_forms_share_parameters_and_output():
    temporal, spatial = _branches(11)
    params, apply = _init_apply(SumFusion(7), temporal, spatial)
    params = _perturb(params, 12)
    _, apply_full = _init_apply(SumFusion(7, pool_time_first=False), temporal, spatial)
    cheap, full = apply(params, temporal, spatial), apply_full(params, temporal, spatial)
    chex.assert_shape(cheap, (B, N, S, S, 7))
    np.testing.assert_allclose(cheap, full, rtol=1e-5, atol=1e-5)
    t, s = np.asarray(temporal, np.float64), np.asarray(spatial, np.float64)
    ref = _dense_np(s + t.mean(axis=2)[:, :, None, None, :], params["out"])
    np.testing.assert_allclose(cheap, ref, rtol=1e-5, atol=1e-5)


def test_concat_fusion_matches_numpy():
    temporal, _ = _branches(13, c=4)
    spatial = jnp.asarray(_normal((B, N, S, S, C), 14))  # channel counts may differ
    params, apply = _init_apply(ConcatFusion(7), temporal, spatial)
    params = _perturb(params, 15)
    out = apply(params, temporal, spatial)
    chex.assert_shape([out, params["out"]["kernel"]], [(B, N, S, S, 7), (C + 4, 7)])
    t, s = np.asarray(temporal, np.float64), np.asarray(spatial, np.float64)
    pooled = np.broadcast_to(t.mean(axis=2)[:, :, None, None, :], (B, N, S, S, 4))
    ref = _dense_np(np.concatenate([s, pooled], axis=-1), params["out"])
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fusion", [SumFusion, ConcatFusion, GramFusion])
def test_fusions_reject_mismatched_branches(fusion):
    temporal, spatial = _branches(16)
    with pytest.raises((ValueError, AssertionError)):
        fusion(4).init(jax.random.key(0), temporal[:1], spatial)  # other leading axes
    with pytest.raises(ValueError, match="same leading axes"):
        fusion(4).init(jax.random.key(0), temporal[0], spatial)  # other rank


# ----------------------------------------------------------------------------- Gram attention


def _gram_attention_np(b):
    """Loop over actors: F [C, S*S], G = F F^T, row softmax, M F, back to [S, S, C]."""
    b = np.asarray(b, np.float64)
    lead, (h, w, c) = b.shape[:-3], b.shape[-3:]
    out = np.empty_like(b)
    for idx in np.ndindex(*lead):
        f = b[idx].reshape(h * w, c).T
        g = f @ f.T
        m = np.exp(g - g.max(axis=1, keepdims=True))
        m /= m.sum(axis=1, keepdims=True)
        out[idx] = (m @ f).T.reshape(h, w, c)
    return out


@pytest.mark.parametrize("lead", [(B, N), (B * N,), ()], ids=["BN", "R", "single"])
def test_gram_channel_attention_matches_numpy(lead):
    b = _normal((*lead, S, S, 5), 20)
    got = jax.jit(gram_channel_attention)(jnp.asarray(b))
    assert got.shape == b.shape and got.dtype == jnp.float32
    np.testing.assert_allclose(got, _gram_attention_np(b), rtol=1e-5, atol=1e-5)


def test_gram_channel_attention_is_plain_softmax_of_g():
    # One channel dominating the Gram row of channel 0: plain softmax(G) sends channel 0 to it
    # (DANet's softmax(max(G) - G) would send it away from it).
    b = np.zeros((S, S, 3), np.float32)
    b[..., 0] = 1.0
    b[..., 1] = 2.0  # G[0] = S*S * (1, 2, -0.5)
    b[..., 2] = -0.5
    mf = np.asarray(gram_channel_attention(jnp.asarray(b)))
    np.testing.assert_allclose(mf[..., 0], 2.0, rtol=1e-3)


def test_gram_channel_attention_bfloat16():
    b = _normal((B, S, S, 5), 21)
    got = gram_channel_attention(jnp.asarray(b, jnp.bfloat16))
    assert got.dtype == jnp.bfloat16
    ref = _gram_attention_np(np.asarray(jnp.asarray(b, jnp.bfloat16), np.float64))
    np.testing.assert_allclose(np.asarray(got, np.float32), ref, rtol=2e-2, atol=2e-2)


# ----------------------------------------------------------------------------- Gram fusion


@pytest.fixture(scope="module")
def gram():
    temporal, spatial = _branches(30)
    module = GramFusion(7, reduce_dim=3, gram_dim=5)
    params, apply = _init_apply(module, temporal, spatial)
    return module, params, apply, temporal, spatial


def test_gram_fusion_shapes(gram):
    _, params, apply, temporal, spatial = gram
    chex.assert_shape([params["reduce_temporal"]["kernel"], params["reduce_spatial"]["kernel"],
                       params["mix1"]["kernel"], params["mix2"]["kernel"], params["gamma"],
                       params["out1"]["kernel"], params["out2"]["kernel"]],
                      [(C, 3), (C, 3), (3, 3, (1 + T) * 3, 5), (3, 3, 5, 5), (), (3, 3, 5, 7),
                       (3, 3, 7, 7)])
    out = apply(params, temporal, spatial)
    chex.assert_shape(out, (B, N, S, S, 7))
    chex.assert_tree_all_finite(out)
    # Flat actors [R, ...]: the same map.
    flat = apply(params, temporal.reshape(B * N, T, C), spatial.reshape(B * N, S, S, C))
    np.testing.assert_allclose(flat.reshape(out.shape), out, rtol=1e-5, atol=1e-5)


def test_gram_fusion_starts_without_attention(gram):
    _, params, apply, temporal, spatial = gram
    assert float(params["gamma"]) == 0.0
    without = {k: v for k, v in params.items() if k != "gamma"}
    _, apply_plain = _init_apply(GramFusion(7, reduce_dim=3, gram_dim=5, attention=False),
                                 temporal, spatial)
    # gamma = 0: exactly the attention-free function (B + 0 * MF == B).
    np.testing.assert_array_equal(apply(params, temporal, spatial),
                                  apply_plain(without, temporal, spatial))
    # ... but gamma gets a gradient, so training lets the attention in.
    weights = jnp.asarray(_normal((B, N, S, S, 7), 31))
    grad = jax.grad(lambda p: jnp.sum(weights * apply(p, temporal, spatial)))(params)
    assert abs(float(grad["gamma"])) > 1e-6
    moved = dict(params, gamma=jnp.float32(0.5))
    assert not np.allclose(apply(moved, temporal, spatial), apply_plain(without, temporal, spatial))


def test_only_gram_fusion_sees_temporal_order(gram):
    _, params, apply, temporal, spatial = gram
    reversed_t = temporal[..., ::-1, :]
    assert not np.allclose(apply(params, temporal, spatial), apply(params, reversed_t, spatial),
                           atol=1e-5)
    for fusion in (SumFusion(7), ConcatFusion(7)):
        p, f = _init_apply(fusion, temporal, spatial)
        np.testing.assert_allclose(f(p, temporal, spatial), f(p, reversed_t, spatial),
                                   rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- bfloat16


@pytest.mark.parametrize("name", sorted(FUSIONS))
def test_fusions_bfloat16(name):
    temporal, spatial = (jnp.asarray(x, jnp.bfloat16) for x in _branches(40))
    module = FUSIONS[name](7, dtype=jnp.bfloat16)
    params, apply = _init_apply(module, temporal, spatial)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    out = apply(params, temporal, spatial)
    assert out.dtype == jnp.bfloat16
    chex.assert_shape(out, (B, N, S, S, 7))
    chex.assert_tree_all_finite(out)
    enc = HyperConvEncoding(5, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    p, f = _init_apply(enc, spatial)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(p))
    assert f(p, spatial).dtype == jnp.bfloat16
