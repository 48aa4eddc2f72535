"""The memory classifier's train step in jaxact against the same model in PyTorch eager, on CPU.

  python -m benchmarks.compare_pytorch                          # the default config, both steps
  python -m benchmarks.compare_pytorch --cp_steps=memory --cp_rounds=3 --cp_note="2 idle cores"

Needs PyTorch (`pip install -e .[bench]`); without it the script says so and exits.

What is timed, one optimisation step (forward + backward + update) on one batch of the default
`configs/maneuvers_memory.py` shape (32 clips x 16 frames x 64 x 64 x 3):

  memory   the memory classifier's step (`classifier.make_memory_step`): encoder, unit-length
           features, distance of every frame to the class references (sqeuclidean, min over each
           class's clusters), frame + video cross-entropy over -distance / temperature, majority
           vote, clipped AdamW with warmup-cosine schedule and non-finite skip, and the write of
           every 2nd frame of correctly classified clips into the per-class ring buffer. The
           reference refresh (k-means, every `memory.refresh_every` steps) is not part of the
           step in either framework.
  softmax  the softmax baseline's step (`classifier.make_softmax_step`): encoder + head +
           last-frame + per-frame cross-entropy, the same optimizer.

The PyTorch twin (`TorchClassifierNet`) is the same architecture: patchify conv + strided 3x3 conv
(flax's SAME padding, asymmetric for stride 2) + flatten + Dense, a bidirectional `nn.LSTM`
(flax's OptimizedLSTMCell: the input-side gate bias is the flax hidden-side bias; torch's second
bias, `bias_hh`, is frozen at zero, so the trainable parameter counts are equal), Dense
projection, softmax head. `copy_flax_params` copies a flax parameter tree into it;
tests/test_perf_benchmarks.py checks that features, logits, losses and gradients then agree. Each
framework gets its native layout (NHWC for XLA, NCHW for PyTorch) and its own random clips; the
clips' values do not change the work.

Timing: `--cp_rounds` rounds, each timing `--cp_timed` steps of every (framework, step) pair,
the encoder's layers alone (`layer_timers`: forward + backward of the stem, the 3x3 conv, the
Dense embedding and the biLSTM, and the stem as reshape + matmul) and an f32 matmul
(`--cp_matmul_n`) in XLA and in PyTorch, interleaved (the order flips every round) so that a busy
machine slows them alike; the median round counts. PyTorch runs with `torch.set_num_threads`
= the usable cores (the headline ratio) and with 1 thread (`ratio_over_best_torch` takes the
faster); OMP_WAIT_POLICY=PASSIVE unless set (below). jaxact's GFLOP/s divides the FLOPs of XLA's
cost analysis of the compiled step by its step time; XLA counts a loop body once, so the RNN's
time loop is undercounted there: `model_gflop_per_step` (the convs', Dense layers' and LSTM's
multiply-adds: forward, and backward's weight and input gradients, less the stem's input
gradient) is given beside it and `percent_of_peak` uses the larger. The peak is the fastest
matmul of the same rounds.

Results and where the time goes: docs/performance.md (the JSON has the latest run). The
model's convolutions run as matmuls (`PatchConv`, `Im2ColConv`) because XLA:CPU's strided
convolutions, above all their kernel gradients, lose to oneDNN's; `layer_timers` times both
forms.

The detector's train step has no PyTorch twin here: it holds a ResNet/FPN backbone, RoIAlign,
Hungarian matching on the host and the decoupled fusion head, and a faithful twin with a
numerics check is a project of its own (`DETECTOR_NOTE`).

JSON (`--cp_output`): `{"date", "machine", "note", "versions", "omp_wait_policy",
"torch_threads", "config", "batch", "clip_shape", "default_step", "params": {"jaxact",
"torch_trainable", "torch_frozen"}, "steps": {NAME: {"jaxact_clips_per_s", "torch_clips_per_s",
"ratio", "torch_clips_per_s_by_threads", "ratio_over_best_torch", "jaxact_ms", "torch_ms",
"jaxact_compile_s", "xla_gflop_per_step", "model_gflop_per_step", "jaxact_gflops",
"torch_gflops", "percent_of_peak", "rounds_ms"}}, "matmul_peak_gflops", "layer_breakdown_ms",
"ratios": {"jaxact_over_torch_clips_per_s", "jaxact_over_best_torch_clips_per_s", ...},
"bars": [{"step", "bar", "measured", "met", "short_by", "why"}], "detector"}`.
"""

from __future__ import annotations

import math
import os
import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging
from jax import lax

from benchmarks.machine import cpu_cores, machine_description, now
from configs import maneuvers_memory
from jaxact import files, settings
from jaxact.models import memory as memlib
from jaxact.models.recurrent_encoder import Im2ColConv, PatchConv
from jaxact.train import classifier, parallel
from jaxact.train.state import count_params

# OpenMP threads that spin at barriers stall each other when the cores are shared (2 threads ran
# a 128^3 matmul 300x slower than 1 on a busy 2-core machine); sleeping waits keep PyTorch's
# multi-threaded numbers sane there and cost nothing measurable on an idle machine. Set before
# PyTorch loads its OpenMP runtime; an explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:  # optional: pip install -e .[bench]
    import torch
    import torch.nn.functional as F
    from torch import nn as tnn
except ImportError:  # pragma: no cover - exercised where torch is absent
    torch = None

_STEPS = flags.DEFINE_list("cp_steps", ["memory", "softmax"], "Train steps to compare.")
_VARIANT = flags.DEFINE_string("cp_variant", "", "Config variant of maneuvers_memory ('' = default).")
_BATCH = flags.DEFINE_integer("cp_batch", 0, "Batch size (0 = the config's).")
_ROUNDS = flags.DEFINE_integer("cp_rounds", 5, "Interleaved rounds (the median counts).")
_TIMED = flags.DEFINE_integer("cp_timed", 4, "Timed steps per framework and round.")
_MATMUL_N = flags.DEFINE_integer("cp_matmul_n", 1024, "Size of the square f32 matmul of the peak.")
_THREADS = flags.DEFINE_integer("cp_threads", 0, "torch.set_num_threads (0 = the usable cores).")
_SINGLE = flags.DEFINE_boolean("cp_single_thread", True,
                               "Also time PyTorch with 1 thread (fairer on a busy machine).")
_BREAKDOWN = flags.DEFINE_boolean("cp_breakdown", True,
                                  "Also time the encoder's layers alone, XLA vs PyTorch.")
_NOTE = flags.DEFINE_string("cp_note", "", "How busy the machine was (saved in the JSON).")
_OUTPUT = flags.DEFINE_string("cp_output", "benchmarks/results/compare_pytorch.json", "JSON path.")

NUM_CLASSES = 6  # maneuvers
BAR = 1.0  # jaxact clips/s over PyTorch eager's, issue 26
DETECTOR_NOTE = (
    "not compared: the detector step (ResNet/FPN backbone, RoIAlign, Hungarian matching of "
    "predictions to people, decoupled fusion head, detection losses) has no PyTorch twin here; "
    "writing one with a weight-copy numerics check is a port of ~2,000 lines, beyond this "
    "benchmark. benchmarks.step_time times the jaxact detector step alone.")


def torch_missing_message() -> str:
    return ("compare_pytorch needs PyTorch, an optional benchmark dependency: "
            "pip install -e .[bench]  (a CPU-only torch wheel is enough)")


# ----------------------------------------------------------------------------- shapes + config


def get_config(variant: str = "", batch_size: int = 0) -> ml_collections.ConfigDict:
    config = maneuvers_memory.get_config(variant) if variant else maneuvers_memory.get_config()
    if batch_size:
        config.train.batch_size = batch_size
    return config


def clip_shape(config, resolution: int = 64) -> tuple[int, int, int, int]:
    """`(T, H, W, C)` of one clip (maneuvers clips are 64 x 64 RGB)."""
    return (config.data.num_frames, resolution, resolution, 3)


def check_supported(model_config) -> None:
    """The twin covers the conv frame encoder and the LSTM, without dropout, in float32."""
    problems = []
    if model_config.frame_encoder != "conv":
        problems.append(f"frame_encoder={model_config.frame_encoder!r} (twin: 'conv')")
    if model_config.cell != "lstm":
        problems.append(f"cell={model_config.cell!r} (twin: 'lstm')")
    if model_config.dropout_rate:
        problems.append(f"dropout_rate={model_config.dropout_rate} (twin: 0)")
    if model_config.get("dtype", "float32") != "float32":
        problems.append(f"dtype={model_config.dtype!r} (twin: float32)")
    if problems:
        raise ValueError("no PyTorch twin for " + ", ".join(problems))


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(low, high) padding of XLA's / flax's 'SAME' along one axis of `size`."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def train_flops(model_config, shape: tuple[int, ...], num_classes: int = NUM_CLASSES) -> float:
    """FLOPs of one clip's train step: forward, and backward's two matmuls per layer (weights
    and inputs) except the stem's input gradient, which training does not need."""
    t, h, w, c = shape
    kw = dict(model_config.frame_encoder_kwargs)
    p = kw["patch_size"]
    stem = 2.0 * (h // p) * (w // p) * kw["widths"][0] * p * p * c * t
    return 3 * model_flops(model_config, shape, num_classes) - stem


def model_flops(model_config, shape: tuple[int, ...], num_classes: int = NUM_CLASSES) -> float:
    """FLOPs of one clip's forward pass: 2 x the multiply-adds of the convs, Dense layers and
    LSTM matmuls (elementwise work left out)."""
    t, h, w, c = shape
    kw = dict(model_config.frame_encoder_kwargs)
    widths, patch, embed = tuple(kw["widths"]), kw["patch_size"], kw["embed_dim"]
    h, w = h // patch, w // patch
    macs = h * w * widths[0] * patch * patch * c
    cin = widths[0]
    for width in widths[1:]:
        h, w = -(-h // 2), -(-w // 2)
        macs += h * w * width * 9 * cin
        cin = width
    macs += h * w * cin * embed
    hid = model_config.hidden_size
    dirs = 2 if model_config.bidirectional else 1
    macs += dirs * (embed + hid) * 4 * hid
    macs += dirs * hid * model_config.feature_dim + model_config.feature_dim * num_classes
    return 2.0 * macs * t


# ----------------------------------------------------------------------------- jaxact side


def memory_settings(config) -> memlib.MemorySettings:
    return settings.from_section(memlib.MemorySettings, config.memory, "memory")


def jaxact_programs(config, shape, dp: parallel.DataParallel) -> classifier.Programs:
    """The classifier's compiled programs (exactly what training uses) for clips of `shape`."""
    model = classifier.build_model(config.model, NUM_CLASSES)
    return classifier.programs(model, memory_settings(config),
                               ml_collections.FrozenConfigDict(config.train), dp, (1, *shape),
                               NUM_CLASSES, config.model.feature_dim)


def random_batch(batch_size: int, shape, seed: int = 0) -> dict:
    """Normalised clips `[B, T, H, W, C]`, labels covering every class, all rows real."""
    rng = np.random.default_rng(seed)
    return {"video": rng.standard_normal((batch_size, *shape), dtype=np.float32),
            "label": (np.arange(batch_size) % NUM_CLASSES).astype(np.int32),
            "mask": np.ones(batch_size, bool)}


def jaxact_state(config, progs: classifier.Programs, kind: str, batch: dict, seed: int = 0):
    """The train state of step `kind`: for 'memory', the bank filled with the model's features
    of `memory.init_batches` batches and its references computed, as training starts it."""
    state = progs.init(jax.random.key(seed))
    if kind == "softmax":
        return state
    bank, references = progs.empty_memory()
    for _ in range(config.memory.init_batches):
        bank = progs.fill(state.params, bank, batch)
    fields = {name: getattr(state, name) for name in state.__dataclass_fields__}
    state = classifier.MemoryTrainState(**fields, memory=bank, references=references)
    return progs.refresh(state)


def xla_flops(step, state, batch) -> float:
    """FLOPs of the compiled step by XLA's cost analysis (a loop body counted once)."""
    analysis = step.lower(state, batch).compile().cost_analysis()
    if isinstance(analysis, list | tuple):
        analysis = analysis[0]
    return float(analysis.get("flops", float("nan")))


# ----------------------------------------------------------------------------- torch twin

if torch is not None:

    class TorchClassifierNet(tnn.Module):
        """`VideoClassifierNet` with the conv frame encoder and (bi)LSTM in PyTorch; clips
        `[B, T, C, H, W]` -> (features `[B, T, D]`, logits `[B, T, classes]`)."""

        def __init__(self, model_config, shape, num_classes: int = NUM_CLASSES):
            super().__init__()
            check_supported(model_config)
            t, h, w, c = shape
            kw = dict(model_config.frame_encoder_kwargs)
            widths, patch = tuple(kw["widths"]), kw["patch_size"]
            self.stem = tnn.Conv2d(c, widths[0], patch, stride=patch)
            h, w = h // patch, w // patch
            self.convs, self.pads = tnn.ModuleList(), []
            for cin, width in zip(widths[:-1], widths[1:], strict=True):
                ph, pw = same_padding(h, 3, 2), same_padding(w, 3, 2)
                self.pads.append((pw[0], pw[1], ph[0], ph[1]))
                self.convs.append(tnn.Conv2d(cin, width, 3, stride=2))
                h, w = -(-h // 2), -(-w // 2)
            self.embed = tnn.Linear(widths[-1] * h * w, kw["embed_dim"])
            self.bidirectional = bool(model_config.bidirectional)
            self.rnn = tnn.LSTM(kw["embed_dim"], model_config.hidden_size, batch_first=True,
                                bidirectional=self.bidirectional)
            for name, value in self.rnn.named_parameters():
                if name.startswith("bias_hh"):  # flax's cell has one bias per gate
                    value.requires_grad_(False)
                    value.data.zero_()
            dirs = 2 if self.bidirectional else 1
            self.project = tnn.Linear(dirs * model_config.hidden_size, model_config.feature_dim)
            self.head = tnn.Linear(model_config.feature_dim, num_classes)
            self.normalize = bool(model_config.normalize_features)

        def forward(self, video):
            b, t = video.shape[:2]
            x = F.relu(self.stem(video.reshape(b * t, *video.shape[2:])))
            for conv, pad in zip(self.convs, self.pads, strict=True):
                x = F.relu(conv(F.pad(x, pad)))
            x = F.relu(self.embed(x.flatten(1))).reshape(b, t, -1)
            x, _ = self.rnn(x)
            feats = self.project(x)
            logits = self.head(F.relu(feats))
            if self.normalize:
                feats = feats * torch.rsqrt(feats.square().sum(-1, keepdim=True) + 1e-12)
            return feats, logits


def torch_param_counts(net) -> tuple[int, int]:
    """(trainable, frozen) parameter counts."""
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in net.parameters()) - trainable


def _lstm_cells(encoder_params: dict) -> list[dict]:
    """Flax LSTM cell parameter dicts in direction order (forward, then backward)."""
    if "birnn" in encoder_params:  # cells declared inside the Bidirectional module
        birnn = encoder_params["birnn"]
        return [birnn[k]["cell"] for k in sorted(birnn)]
    if "rnn" in encoder_params:
        return [encoder_params["rnn"]["cell"]]
    names = sorted((k for k in encoder_params if k.startswith("OptimizedLSTMCell_")),
                   key=lambda k: int(k.rsplit("_", 1)[1]))
    return [encoder_params[k] for k in names]


def copy_flax_params(net, params) -> None:
    """Writes the flax `VideoClassifierNet` parameters `params` into `net` in place."""
    def tensor(x):
        return torch.from_numpy(np.array(x, np.float32))  # a writable copy

    def dense(layer, p):
        layer.weight.data.copy_(tensor(np.asarray(p["kernel"]).T))
        layer.bias.data.copy_(tensor(p["bias"]))

    def conv(layer, p):
        layer.weight.data.copy_(tensor(np.transpose(np.asarray(p["kernel"]), (3, 2, 0, 1))))
        layer.bias.data.copy_(tensor(p["bias"]))

    enc = params["encoder"]
    fe = enc["frame_encoder"]
    conv(net.stem, fe["stem"])
    for i, layer in enumerate(net.convs):
        conv(layer, fe[f"conv{i}"])
    # flax flattens [H, W, C], torch [C, H, W]: permute the embed kernel's rows.
    kernel = np.asarray(fe["embed"]["kernel"])
    c = net.convs[-1].out_channels if len(net.convs) else net.stem.out_channels
    hw = kernel.shape[0] // c
    h = int(round(math.sqrt(hw)))
    kernel = kernel.reshape(h, hw // h, c, -1).transpose(2, 0, 1, 3).reshape(kernel.shape)
    net.embed.weight.data.copy_(tensor(kernel.T))
    net.embed.bias.data.copy_(tensor(fe["embed"]["bias"]))
    for d, cell in enumerate(_lstm_cells(enc)):
        suffix = "_l0" + ("_reverse" if d else "")
        w_ih = np.concatenate([np.asarray(cell[f"i{g}"]["kernel"]) for g in "ifgo"], axis=1)
        w_hh = np.concatenate([np.asarray(cell[f"h{g}"]["kernel"]) for g in "ifgo"], axis=1)
        bias = np.concatenate([np.asarray(cell[f"h{g}"]["bias"]) for g in "ifgo"])
        getattr(net.rnn, "weight_ih" + suffix).data.copy_(tensor(w_ih.T))
        getattr(net.rnn, "weight_hh" + suffix).data.copy_(tensor(w_hh.T))
        getattr(net.rnn, "bias_ih" + suffix).data.copy_(tensor(bias))
        getattr(net.rnn, "bias_hh" + suffix).data.zero_()
    dense(net.project, enc["project"])
    dense(net.head, params["head"])


def torch_softmax_loss(logits, labels, frame_weight: float):
    """`jaxact.losses.softmax_loss`: (per-video loss `[B]`, correct `[B]`)."""
    b, t, c = logits.shape
    last = F.cross_entropy(logits[:, -1], labels, reduction="none")
    frames = F.cross_entropy(logits.reshape(b * t, c), labels.repeat_interleave(t),
                             reduction="none").reshape(b, t).mean(1)
    return last + frame_weight * frames, logits[:, -1].argmax(-1) == labels


def torch_sqeuclidean(x, y):
    """`jaxact.ops.distances.pairwise(x, y, 'sqeuclidean')`: the centred matmul form, rounding
    noise snapped to 0."""
    shift = y.detach().mean(0)
    x, y = x - shift, y - shift
    nx, ny = x.square().sum(-1), y.square().sum(-1)
    d2 = nx[:, None] + ny[None, :] - 2.0 * x @ y.T
    eps = torch.finfo(d2.dtype).eps
    floor = eps * (2.0 + math.sqrt(x.shape[-1])) * (nx.abs()[:, None] + ny.abs()[None, :])
    return torch.where(d2 > floor, d2, torch.zeros_like(d2))


def torch_class_distances(feats, refs, valid):
    """`memory.class_distances` (sqeuclidean): `[N, D]`, refs `[C, k, D]` -> `[N, C]`."""
    c, k, d = refs.shape
    dist = torch_sqeuclidean(feats, refs.reshape(c * k, d))
    dist = torch.where(valid.reshape(-1), dist, torch.full_like(dist, memlib.MISSING_DISTANCE))
    return dist.reshape(-1, c, k).amin(-1)


def torch_vote(dist):
    """`memory.vote`: majority of frames, ties to the smallest mean distance; `[B, T, C]` ->
    `[B]`."""
    c = dist.shape[-1]
    votes = F.one_hot(dist.argmin(-1), c).sum(1)
    tied = votes == votes.amax(-1, keepdim=True)
    mean = dist.mean(1)
    return torch.where(tied, mean, torch.full_like(mean, math.inf)).argmin(-1)


def torch_memory_loss(feats, labels, mask, refs, valid, memory: memlib.MemorySettings):
    """`jaxact.losses.memory_loss` for sqeuclidean distance and no margin: (per-video loss,
    weight, prediction)."""
    b, t, d = feats.shape
    dist = torch_class_distances(feats.reshape(b * t, d), refs, valid).reshape(b, t, -1)
    pred = torch_vote(dist.detach())
    logits = -dist / memory.temperature
    c = logits.shape[-1]
    frame_ce = F.cross_entropy(logits.reshape(b * t, c), labels.repeat_interleave(t),
                               reduction="none").reshape(b, t).mean(1)
    video_ce = F.cross_entropy(logits.mean(1), labels, reduction="none")
    per_video = memory.frame_loss_weight * frame_ce + memory.video_loss_weight * video_ce
    weight = mask.float()
    if memory.loss_on == "misclassified":
        weight = weight * (pred != labels).float()
    return per_video, weight, pred


def torch_write(bank: dict, feats, labels, mask) -> None:
    """`memory.write` in place: each class's ring buffer takes its rows in order."""
    c, cap = bank["valid"].shape
    mask = mask & torch.isfinite(feats).all(-1) & (labels >= 0) & (labels < c)
    onehot = (labels[:, None] == torch.arange(c)) & mask[:, None]
    new = onehot.sum(0)
    safe = labels.clamp(0, c - 1)
    rank = (onehot.cumsum(0) - 1).gather(1, safe[:, None])[:, 0]
    keep = mask & (rank >= new[safe] - cap)
    slot = (bank["ptr"][safe] + rank) % cap
    bank["feats"][safe[keep], slot[keep]] = feats[keep]
    bank["valid"][safe[keep], slot[keep]] = True
    bank["ptr"] = (bank["ptr"] + new) % cap
    bank["count"] = bank["count"] + new


def warmup_cosine(train_config):
    """optax.warmup_cosine_decay_schedule(0, lr, warmup, num_steps, 0) as a LambdaLR factor."""
    warmup = train_config.warmup_steps
    decay = max(train_config.num_steps, warmup + 1)

    def factor(step: int) -> float:
        if step < warmup:
            return step / warmup
        frac = min(step - warmup, decay - warmup) / (decay - warmup)
        return 0.5 * (1 + math.cos(math.pi * frac))

    return factor


class TorchTrainer:
    """The PyTorch twin of the classifier's softmax or memory train step (`step`)."""

    def __init__(self, config, shape, kind: str, flax_params=None, bank=None, references=None,
                 foreach: bool = True):
        self.net = TorchClassifierNet(config.model, shape)
        if flax_params is not None:
            copy_flax_params(self.net, flax_params)
        tc = config.train
        if tc.optimizer != "adamw":
            raise ValueError(f"train.optimizer={tc.optimizer!r}: the twin has AdamW only")
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=tc.learning_rate, betas=(0.9, 0.999),
                                     eps=1e-8, weight_decay=tc.weight_decay, foreach=foreach)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, warmup_cosine(tc))
        self.grad_clip, self.frame_weight = tc.grad_clip, tc.frame_loss_weight
        self.kind = kind
        self.memory = memory_settings(config)
        if kind == "memory":
            self.bank = {k: torch.from_numpy(np.array(getattr(bank, k))) for k in
                         ("feats", "valid", "ptr", "count")}
            self.refs = torch.from_numpy(np.array(references.refs))
            self.ref_valid = torch.from_numpy(np.array(references.valid))

    def loss(self, video, labels, mask):
        """(scalar loss, per-video correct, features) of the step's objective."""
        feats, logits = self.net(video)
        if self.kind == "softmax":
            per_video, correct = torch_softmax_loss(logits, labels, self.frame_weight)
            weight = mask.float()
        else:
            per_video, weight, pred = torch_memory_loss(feats, labels, mask, self.refs,
                                                        self.ref_valid, self.memory)
            correct = (pred == labels) & mask
        return (per_video * weight).sum() / weight.sum().clamp_min(1.0), correct, feats

    def step(self, video, labels, mask) -> float:
        self.opt.zero_grad(set_to_none=True)
        loss, correct, feats = self.loss(video, labels, mask)
        loss.backward()
        norm = tnn.utils.clip_grad_norm_(self.params, self.grad_clip)
        if torch.isfinite(norm):  # optax.apply_if_finite: skip non-finite updates
            self.opt.step()
            self.sched.step()
        if self.kind == "memory":
            with torch.no_grad():
                stride = self.memory.write_stride
                f = feats.detach()[:, ::stride]
                b, t, d = f.shape
                torch_write(self.bank, f.reshape(b * t, d), labels.repeat_interleave(t),
                            correct.repeat_interleave(t))
        return float(loss.detach()), float(correct.float().mean())


def torch_batch(batch: dict) -> tuple:
    """The numpy batch in PyTorch's layout: clips `[B, T, C, H, W]`."""
    video = torch.from_numpy(np.ascontiguousarray(np.moveaxis(batch["video"], -1, 2)))
    return (video, torch.from_numpy(batch["label"].astype(np.int64)),
            torch.from_numpy(batch["mask"]))


# ----------------------------------------------------------------------------- layer breakdown


def layer_timers(config, shape, batch_size: int) -> dict:
    """{layer: {framework: blocking call}}: forward + backward of the frame encoder's layers
    and of the biLSTM alone, at the step's sizes (B x T frames), in XLA and in PyTorch. Each
    gradient is the one training needs (the stem's kernel only: its input is data). `stem_mm`
    and `conv3x3_s2_mm` are the two convolutions as the model computes them, as matmuls
    (`PatchConv`, `Im2ColConv`: the same kernels): what each conv costs over the matmul it
    equals."""
    from flax import linen as fnn

    t, h, w, c = shape
    kw = dict(config.model.frame_encoder_kwargs)
    widths, p, embed = tuple(kw["widths"]), kw["patch_size"], kw["embed_dim"]
    n = batch_size * t
    rng = np.random.default_rng(0)

    def arr(*s):
        return rng.standard_normal(s, dtype=np.float32)

    dn = ("NHWC", "HWIO", "NHWC")
    x0, k0 = arr(n, h, w, c), arr(p, p, c, widths[0])
    hp, wp = h // p, w // p
    x1, k1 = arr(n, hp, wp, widths[0]), arr(3, 3, widths[0], widths[-1])
    flat = widths[-1] * -(-hp // 2) * -(-wp // 2)
    x2, k2 = arr(n, flat), arr(flat, embed)
    x3 = arr(batch_size, t, embed)
    pads = (same_padding(hp, 3, 2), same_padding(wp, 3, 2))

    def stem(k, x):
        return lax.conv_general_dilated(x, k, (p, p), "VALID", dimension_numbers=dn)

    patch_conv = PatchConv(widths[0], p)

    def stem_mm(k, x):
        return patch_conv.apply({"params": {"kernel": k, "bias": jnp.zeros(k.shape[-1])}}, x)

    def conv(k, x):
        return lax.conv_general_dilated(x, k, (2, 2), pads, dimension_numbers=dn)

    im2col = Im2ColConv(widths[-1], 3, 2)

    def conv_mm(k, x):
        return im2col.apply({"params": {"kernel": k, "bias": jnp.zeros(k.shape[-1])}}, x)

    cell = fnn.OptimizedLSTMCell
    hid = config.model.hidden_size
    rnn = fnn.Bidirectional(fnn.RNN(cell(hid)), fnn.RNN(cell(hid)))
    rnn_params = rnn.init(jax.random.key(0), x3[:1])

    def grad(fn, argnums):
        g = jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a)), argnums=argnums))
        return g

    jx = {
        "stem": (grad(stem, 0), (k0, x0)),
        "stem_mm": (grad(stem_mm, 0), (k0, x0)),
        "conv3x3_s2": (grad(conv, (0, 1)), (k1, x1)),
        "conv3x3_s2_mm": (grad(conv_mm, (0, 1)), (k1, x1)),
        "embed_dense": (grad(lambda k, x: x @ k, (0, 1)), (k2, x2)),
        "bilstm": (grad(lambda prm, x: rnn.apply(prm, x), (0, 1)), (rnn_params, x3)),
    }
    timers = {}
    for name, (fn, args) in jx.items():
        args = jax.tree.map(jnp.asarray, args)
        jax.block_until_ready(fn(*args))
        timers[name] = {"xla": lambda fn=fn, args=args: jax.block_until_ready(fn(*args))}
    if torch is None:
        return timers

    def tt(a, grad=True):
        return torch.from_numpy(np.ascontiguousarray(a)).requires_grad_(grad)

    t0, tk0 = tt(np.moveaxis(x0, -1, 1), False), tt(np.transpose(k0, (3, 2, 0, 1)))
    t1, tk1 = tt(np.moveaxis(x1, -1, 1)), tt(np.transpose(k1, (3, 2, 0, 1)))
    t2, tk2 = tt(x2), tt(k2.T)
    t3 = tt(x3)
    lstm = tnn.LSTM(embed, hid, batch_first=True, bidirectional=True)
    tpad = (pads[1][0], pads[1][1], pads[0][0], pads[0][1])

    def backward(fn, *leaves):
        def call():
            for leaf in leaves:
                leaf.grad = None
            fn().sum().backward()
        return call

    timers["stem"]["torch"] = backward(lambda: F.conv2d(t0, tk0, stride=p), tk0)
    timers["conv3x3_s2"]["torch"] = backward(
        lambda: F.conv2d(F.pad(t1, tpad), tk1, stride=2), tk1, t1)
    timers["embed_dense"]["torch"] = backward(lambda: F.linear(t2, tk2), tk2, t2)
    timers["bilstm"]["torch"] = backward(lambda: lstm(t3)[0], t3, *lstm.parameters())
    for name in ("stem", "conv3x3_s2", "embed_dense", "bilstm"):
        timers[name]["torch"]()
    return timers


# ----------------------------------------------------------------------------- timing


def time_calls(fn, calls: int) -> float:
    """Seconds per call of `fn()` (which blocks until its result is ready)."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def matmul_timers(n: int):
    """{'xla': fn, 'torch': fn}: one blocking f32 `n x n` matmul each; FLOPs = 2 n^3."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    mm = jax.jit(jnp.matmul)
    mm(ja, jb).block_until_ready()
    timers = {"xla": lambda: mm(ja, jb).block_until_ready()}
    if torch is not None:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        timers["torch"] = lambda: torch.mm(ta, tb)
        timers["torch"]()
    return timers


def why_missed(step: dict, peak: dict, layers: dict | None = None) -> str:
    """A reading of a missed bar from the measured numbers: the step's FLOP rate against the
    matmul peak and, with `layers`, where XLA loses to PyTorch layer by layer."""
    torch_peak = max(v for k, v in peak.items() if k.startswith("torch"))
    text = (f"jaxact reaches {step['jaxact_gflops']:.1f} GFLOP/s ({step['percent_of_peak']:.0f}% "
            f"of the {peak['peak']:.0f} GFLOP/s f32 matmul peak measured in the same rounds: "
            f"XLA's matmul {peak['xla']:.0f}, PyTorch's {torch_peak:.0f}), PyTorch "
            f"{step['torch_gflops']:.1f} GFLOP/s")
    if layers:
        def best_torch(entry):
            return min(v for k, v in entry.items() if k.startswith("torch"))
        parts = [f"{name} {e['xla_ms']:.0f} vs {best_torch(e):.0f} ms" for name, e in
                 layers.items() if any(k.startswith("torch") for k in e)]
        text += ("; forward + backward per layer at the step's sizes, XLA vs PyTorch's "
                 "faster thread count: " + ", ".join(parts))
        for conv, what in (("stem", "the patchify stem as reshape + matmul"),
                           ("conv3x3_s2", "the 3 x 3 stride-2 conv as im2col + matmul")):
            if f"{conv}_mm" in layers and conv in layers:
                text += (f"; {what} in XLA (as the model runs it): "
                         f"{layers[f'{conv}_mm']['xla_ms']:.0f} ms instead of "
                         f"{layers[conv]['xla_ms']:.0f} ms as a conv")
    return text


def run(variant: str = "", batch_size: int = 0, steps=("memory", "softmax"), rounds: int = 5,
        timed: int = 4, matmul_n: int = 1024, threads: int = 0, note: str = "",
        output: str = "", resolution: int = 64, devices=None, single_thread: bool = True,
        breakdown: bool = True) -> dict:
    """Builds both frameworks' steps, checks the twin, times them interleaved; returns the JSON
    (written to `output` unless empty). PyTorch runs with `threads` (0: the usable cores) and,
    with `single_thread`, also with 1 thread: on a shared machine OpenMP's barriers make 2 threads
    slower than 1 for small ops, and the better of the two is the fairer baseline. With
    `breakdown`, the layers of `layer_timers` are timed in the same rounds."""
    threads = threads or cpu_cores()
    thread_counts = [threads] + ([1] if single_thread and threads != 1 else [])
    config = get_config(variant, batch_size)
    check_supported(config.model)
    shape = clip_shape(config, resolution)
    batch_size = config.train.batch_size
    batch = random_batch(batch_size, shape)
    dp = parallel.DataParallel(parallel.make_mesh(devices), config.parallel.mode)
    progs = jaxact_programs(config, shape, dp)
    jbatch = dp.batch(batch)
    tbatch = torch_batch(random_batch(batch_size, shape, seed=1))
    per_clip = train_flops(config.model, shape)
    torch.set_num_threads(threads)

    def torch_runner(fn, n):
        def call():
            torch.set_num_threads(n)
            return fn()
        return call

    runners, info = {}, {}
    for kind in steps:
        if kind not in ("memory", "softmax"):
            raise ValueError(f"steps: unknown {kind!r} (memory, softmax)")
        step = progs.memory_step if kind == "memory" else progs.softmax_step
        state = jaxact_state(config, progs, kind, batch)
        params = jax.device_get(state.params)
        start = time.perf_counter()
        state, _ = step(state, jbatch)
        jax.block_until_ready(state)
        compile_s = time.perf_counter() - start
        flops = xla_flops(step, state, jbatch)
        trainer = TorchTrainer(config, shape, kind, params,
                               *((state.memory, state.references) if kind == "memory" else ()))
        trainable, frozen = torch_param_counts(trainer.net)
        n_flax = count_params(params)
        if trainable != n_flax:
            raise AssertionError(f"parameter counts differ: jaxact {n_flax}, torch {trainable}")
        flax_out = classifier.build_model(config.model, NUM_CLASSES).apply(
            {"params": params}, jnp.asarray(batch["video"][:1]))
        with torch.no_grad():
            torch_out = trainer.net(tbatch[0][:1])
        for a, b in zip(flax_out, torch_out, strict=True):
            if tuple(a.shape) != tuple(b.shape):
                raise AssertionError(f"output shapes differ: {a.shape} vs {tuple(b.shape)}")
        trainer.step(*tbatch)  # warm-up
        holder = {"state": state}

        def run_jax(step=step, holder=holder):
            holder["state"], _ = step(holder["state"], jbatch)
            jax.block_until_ready(holder["state"])

        runners[(kind, "jaxact")] = run_jax
        for n in thread_counts:
            runners[(kind, f"torch_{n}t")] = torch_runner(
                lambda trainer=trainer: trainer.step(*tbatch), n)
        info[kind] = {"xla_flops": flops, "compile_s": compile_s}
        info["params"] = {"jaxact": n_flax, "torch_trainable": trainable, "torch_frozen": frozen}

    matmuls = matmul_timers(matmul_n)
    matmuls = {"xla": matmuls["xla"],
               **{f"torch_{n}t": torch_runner(matmuls["torch"], n) for n in thread_counts}}
    if breakdown:
        for layer, fns in layer_timers(config, shape, batch_size).items():
            runners[(f"layer:{layer}", "xla")] = fns["xla"]
            if "torch" in fns:
                for n in thread_counts:
                    runners[(f"layer:{layer}", f"torch_{n}t")] = torch_runner(fns["torch"], n)
    times = {key: [] for key in [*runners, *(("matmul", k) for k in matmuls)]}
    for r in range(rounds):  # interleaved; the order flips every round
        keys = list(runners) if r % 2 == 0 else list(reversed(runners))
        for key in keys:
            calls = timed if not key[0].startswith("layer:") else 2
            times[key].append(time_calls(runners[key], calls))
        for name, fn in matmuls.items():
            fn()
            times[("matmul", name)].append(time_calls(fn, 5))
        print(f"round {r + 1}/{rounds}: " + ", ".join(
            f"{k[0]}/{k[1]} {1e3 * v[-1]:.0f} ms" for k, v in times.items()), flush=True)
    torch.set_num_threads(threads)

    layers = {}
    for (name, fw), v in times.items():
        if name.startswith("layer:"):
            layers.setdefault(name[6:], {})[f"{fw}_ms"] = round(1e3 * statistics.median(v), 1)
    mm_flops = 2.0 * matmul_n ** 3
    peak = {name: round(mm_flops / statistics.median(times[("matmul", name)]) / 1e9, 1)
            for name in matmuls}
    peak["peak"] = max(peak.values())
    results, bars = {}, []
    main_torch = f"torch_{threads}t"
    for kind in steps:
        j_s = statistics.median(times[(kind, "jaxact")])
        torch_s = {n: statistics.median(times[(kind, f"torch_{n}t")]) for n in thread_counts}
        t_s = torch_s[threads]
        best_s = min(torch_s.values())
        xla_g = info[kind]["xla_flops"] / 1e9
        model_g = per_clip * batch_size / 1e9
        gflops = max(xla_g, model_g) / j_s
        entry = {
            "jaxact_clips_per_s": round(batch_size / j_s, 1),
            "torch_clips_per_s": round(batch_size / t_s, 1),
            "ratio": round(t_s / j_s, 3),
            "torch_clips_per_s_by_threads": {str(n): round(batch_size / v, 1)
                                             for n, v in torch_s.items()},
            "ratio_over_best_torch": round(best_s / j_s, 3),
            "jaxact_ms": round(1e3 * j_s, 1), "torch_ms": round(1e3 * t_s, 1),
            "jaxact_compile_s": round(info[kind]["compile_s"], 1),
            "xla_gflop_per_step": round(xla_g, 3), "model_gflop_per_step": round(model_g, 3),
            "jaxact_gflops": round(gflops, 1),
            "torch_gflops": round(model_g / best_s, 1),
            "percent_of_peak": round(100 * gflops / peak["peak"], 1),
            "rounds_ms": {fw: [round(1e3 * v, 1) for v in times[(kind, fw)]]
                          for fw in ["jaxact", *(f"torch_{n}t" for n in thread_counts)]},
        }
        results[kind] = entry
        worst = min(entry["ratio"], entry["ratio_over_best_torch"])
        bar = {"step": kind, "bar": BAR, "measured": entry["ratio"],
               "measured_over_best_torch": entry["ratio_over_best_torch"], "met": worst >= BAR}
        if not bar["met"]:
            bar["short_by"] = f"{100 * (1 - worst / BAR):.0f}%"
            bar["why"] = why_missed(entry, peak, layers)
        bars.append(bar)
    first = steps[0]
    ratios = {"jaxact_over_torch_clips_per_s": results[first]["ratio"], "step": first,
              "torch_threads": threads,
              "jaxact_over_best_torch_clips_per_s": results[first]["ratio_over_best_torch"]}
    for kind in steps:
        ratios[f"jaxact_over_torch_clips_per_s_{kind}"] = results[kind]["ratio"]
    out = {"date": now(), "machine": machine_description(), "note": note,
           "versions": {"torch": torch.__version__, "jax": jax.__version__},
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
           "torch_threads": thread_counts, "main_torch": main_torch,
           "config": config.config_name, "batch": batch_size,
           "clip_shape": list(shape), "default_step": first, "params": info["params"],
           "rounds": rounds, "timed_steps_per_round": timed, "steps": results,
           "matmul_peak_gflops": {"n": matmul_n, **peak}, "layer_breakdown_ms": layers,
           "ratios": ratios, "bars": bars,
           "detector": DETECTOR_NOTE}
    if output:
        files.write_json(output, out, indent=2)
    return out


def print_table(out: dict) -> None:
    peak = out["matmul_peak_gflops"]
    print(f"\n{out['machine']}; torch {out['versions']['torch']} (threads "
          f"{out['torch_threads']}), jax {out['versions']['jax']}; {out['config']}, "
          f"batch {out['batch']}, clip {tuple(out['clip_shape'])}; note: {out['note'] or '-'}")
    print(f"f32 {peak['n']}^3 matmul GFLOP/s: " + ", ".join(
        f"{k} {v:.0f}" for k, v in peak.items() if k != "n"))
    threads = out["torch_threads"]
    print(f"{'step':>8} | {'jaxact clips/s':>14} | " + " | ".join(
        f"{f'torch {n}t clips/s':>16}" for n in threads) + f" | {'ratio':>6} | {'vs best':>7} | "
        f"{'GFLOP/step':>10} | {'GFLOP/s':>7} | {'% peak':>6}")
    for kind, e in out["steps"].items():
        gflop = max(e["xla_gflop_per_step"], e["model_gflop_per_step"])
        by = e["torch_clips_per_s_by_threads"]
        print(f"{kind:>8} | {e['jaxact_clips_per_s']:>14.1f} | " + " | ".join(
            f"{by[str(n)]:>16.1f}" for n in threads) + f" | {e['ratio']:>6.2f} | "
            f"{e['ratio_over_best_torch']:>7.2f} | {gflop:>10.2f} | {e['jaxact_gflops']:>7.1f} | "
            f"{e['percent_of_peak']:>6.1f}")
    layers = out.get("layer_breakdown_ms") or {}
    if layers:
        cols = sorted({k for e in layers.values() for k in e}, key=lambda k: (k != "xla_ms", k))
        print("\nforward + backward per layer (ms): " + " | ".join(f"{c[:-3]:>9}" for c in cols))
        for name, e in layers.items():
            print(f"{name:>34}: " + " | ".join(f"{e.get(c, float('nan')):>9.1f}" for c in cols))
    for bar in out["bars"]:
        verdict = "met" if bar["met"] else f"missed by {bar['short_by']}: {bar['why']}"
        print(f"bar {bar['step']}: {bar['measured']:.2f}x (vs best torch "
              f"{bar['measured_over_best_torch']:.2f}x) >= {bar['bar']}x: {verdict}")
    print(f"detector: {out['detector']}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if torch is None:
        print(torch_missing_message())
        return
    logging.set_verbosity(logging.WARNING)
    out = run(_VARIANT.value, _BATCH.value, tuple(_STEPS.value), _ROUNDS.value, _TIMED.value,
              _MATMUL_N.value, _THREADS.value, _NOTE.value, _OUTPUT.value,
              single_thread=_SINGLE.value, breakdown=_BREAKDOWN.value)
    print_table(out)
    print(f"\nwritten: {_OUTPUT.value}")


if __name__ == "__main__":
    app.run(main)
