"""Atomic file writes: a temporary file beside the target, then a rename over it, so a crash or a
kill mid-write never leaves a partial file under the final name (resume, eval and readers of
reports trust what they find)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from typing import IO, Any


def write_atomic(path: str, write: Callable[[IO], Any], binary: bool = True) -> str:
    """Calls `write(file)` on a temporary file beside `path` (opened "wb", or "w" with
    `binary=False`), then renames it over `path`; the temporary file is removed if `write`
    fails. Creates `path`'s folder if needed. Returns `path`."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"  # the pid keeps two writers of one folder apart
    try:
        with open(tmp, "wb" if binary else "w") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def write_json(path: str, obj, **dump_kwargs) -> str:
    """`json.dump(obj, file, **dump_kwargs)` written atomically (`write_atomic`)."""
    return write_atomic(path, lambda f: json.dump(obj, f, **dump_kwargs), binary=False)


@contextlib.contextmanager
def array_record_writer(path: str, options: str = "group_size:1") -> Iterator[Any]:
    """An `ArrayRecordWriter` on a temporary file beside `path`, renamed over `path` when the
    `with` block ends normally and removed when it raises (a half-written cache never appears
    under the final name)."""
    from array_record.python import array_record_module

    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    writer = array_record_module.ArrayRecordWriter(tmp, options)
    try:
        yield writer
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        writer.close()
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
