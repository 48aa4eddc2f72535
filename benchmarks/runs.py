"""Workdirs of benchmarks that train one run per (row, seed): where each lives, what a finished
run left there, and a refusal to read or resume another setting's run as this one."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

# Config fields that differ between machines, or only name the run, without changing it.
MACHINE_FIELDS = ("data.data_dir", "data.num_threads", "data.prefetch", "config_name")


def run_dir(workdir_root: str, row: str, seed: int) -> str:
    return os.path.join(workdir_root, row, f"seed_{seed}")


def read_json(path: str) -> dict | None:
    """The JSON file at `path`, or None when there is none."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def read_results(workdir: str) -> dict | None:
    """`WORKDIR/results.json` of a finished run, else None."""
    return read_json(os.path.join(workdir, "results.json"))


def _flat(tree: Mapping, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


class ConfigMismatch(ValueError):
    """A workdir holds a run of another config than the one this command would train."""


def check_saved_config(workdir: str, config,
                       hint: str = "use another --workdir_root or the --variant it was "
                                   "trained with") -> None:
    """Fails naming the fields where `WORKDIR/config.json` (when there is one) differs from
    `config` (apart from `MACHINE_FIELDS`), so a run of another setting or budget is never read
    or resumed as this one; `hint` says what to do instead."""
    from jaxact.train import loop  # jax-heavy: only where a benchmark compares configs

    if not os.path.exists(os.path.join(workdir, "config.json")):
        return
    saved = _flat(loop.read_config(workdir).to_dict())
    wanted = _flat(json.loads(config.to_json_best_effort()))
    saved = json.loads(json.dumps(saved))  # tuples -> lists, as in `wanted`
    diff = sorted(k for k in set(saved) | set(wanted)
                  if k not in MACHINE_FIELDS and saved.get(k, "<absent>") !=
                  wanted.get(k, "<absent>"))
    if diff:
        shown = ", ".join(f"{k}: saved {saved.get(k, '<absent>')!r}, now "
                          f"{wanted.get(k, '<absent>')!r}" for k in diff[:5])
        raise ConfigMismatch(f"{workdir}/config.json is another run's config ({shown}"
                             f"{', ...' if len(diff) > 5 else ''}); {hint}")
