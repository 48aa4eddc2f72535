"""Runs launch.py in this process for tests/test_multihost.py, recording what it writes.

  python tests/multihost_worker.py WRITES.json [launch.py flags...]

WRITES.json gets the absolute paths this process opened for writing, created, renamed to or
linked (a Python audit hook sees every open(), tensorboardX's and matplotlib's included; orbax's
tensorstore writes from C++ and is not seen). With JAXACT_TEST_SHARDS=N, a single process reads
the global batches of an N-process run (its N shards' batches concatenated in process order), so
its numbers can be compared with that run's.
"""

import json
import os
import runpy
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND
_TARGET_ARG = {"os.mkdir": 0, "os.rename": 1, "os.replace": 1, "os.symlink": 1}


def record_writes(written: set) -> None:
    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writing = (any(c in mode for c in "wax+") if isinstance(mode, str)
                       else bool(flags & _WRITE_FLAGS))
        elif event in _TARGET_ARG:
            path, writing = args[_TARGET_ARG[event]], True
        else:
            return
        if writing and isinstance(path, str | bytes):
            written.add(os.path.abspath(os.fsdecode(path)))

    sys.addaudithook(hook)


class ConcatLoader:
    """The batches of `loaders` (one per emulated process) concatenated along rows."""

    def __init__(self, loaders):
        self.loaders = loaders

    def __iter__(self):
        return self

    def __next__(self):
        batches = [next(loader) for loader in self.loaders]
        return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}

    def __len__(self):
        lengths = {len(loader) for loader in self.loaders}
        assert len(lengths) == 1, f"shards have different numbers of batches: {lengths}"
        return lengths.pop()

    def get_state(self):
        return {"shards": [loader.get_state() for loader in self.loaders]}

    def set_state(self, state):
        for loader, shard in zip(self.loaders, state["shards"], strict=True):
            loader.set_state(shard)


def emulate_shards(num: int) -> None:
    from jaxact.data import pipeline

    make_loader = pipeline.make_loader

    def make_sharded(source, transform, **kwargs):
        return ConcatLoader([make_loader(source, transform, process_index=i, process_count=num,
                                         **kwargs) for i in range(num)])

    pipeline.make_loader = make_sharded


def main():
    out, argv = sys.argv[1], sys.argv[2:]
    sys.path.insert(0, ROOT)
    if "JAXACT_TEST_SHARDS" in os.environ:
        emulate_shards(int(os.environ["JAXACT_TEST_SHARDS"]))
    written = set()
    record_writes(written)
    sys.argv = [os.path.join(ROOT, "launch.py"), *argv]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    finally:
        with open(out, "w") as f:
            json.dump(sorted(written), f)


if __name__ == "__main__":
    main()
