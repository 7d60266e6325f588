"""Outputs written whole or not at all, and never over an existing file unless asked.

Every file the project writes (videos through the hosts' own savers, reports, calibration
files, metrics) goes through ``atomic_write``: the writer fills a hidden temporary file in the
destination folder, which is renamed to the final name only when it is complete. An
interruption (an exception, Ctrl-C, SIGTERM) removes the temporary file; the final name
either holds the previous content or the complete new one. Files get the user's umask.
"""

import contextlib
import json
import os
import signal
import threading
from typing import Callable, Optional, TypeVar

Result = TypeVar("Result")


class OutputError(OSError):
    """An output that could not be written, or would overwrite an existing file."""


class InvalidOutput(OutputError):
    """An output not written because what it would hold is invalid (NaN or Inf)."""


def temporary_path(final_path: str) -> str:
    """The hidden name a file is written under before it is complete; it keeps the extension,
    as writers choose their format by it."""
    folder, name = os.path.split(os.path.abspath(final_path))
    root, ext = os.path.splitext(name)
    return os.path.join(folder, f".{root}.incomplete-{os.getpid()}{ext}")


@contextlib.contextmanager
def _sigterm_raises():
    """SIGTERM unwinds like Ctrl-C while a file is being written, so the cleanup below runs
    (the default action ends the process at once). Only the main thread can handle signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def folder_problem(folder: str) -> Optional[str]:
    """Why files cannot be written into ``folder`` (or its nearest existing parent, where it will
    be created), or None; tried with a real file, as permissions alone do not tell (read-only
    file systems, root)."""
    folder = os.path.abspath(folder or ".")
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"{existing} is not a folder"
    probe = os.path.join(existing, f".easycache-write-test-{os.getpid()}")
    try:
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        return f"cannot write in {existing} ({error.strerror})"
    return None


def same_file(a, b) -> bool:
    """Whether two paths name one existing file (an output over an input)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def atomic_write(final_path, write: Callable[[str], Result], overwrite: bool = False) -> Result:
    """Call ``write(tmp_path)``, then rename ``tmp_path`` to ``final_path``; returns what
    ``write`` returned. An existing ``final_path`` is kept unless ``overwrite``; a writer that
    leaves nothing (or an empty file) behind is an ``OutputError``."""
    final_path = os.fspath(final_path)
    if os.path.isdir(final_path):
        raise OutputError(f"{final_path} is a folder, not a file")
    if os.path.exists(final_path) and not overwrite:
        raise OutputError(f"{final_path} exists; pass --overwrite to replace it")
    tmp_path = temporary_path(final_path)
    try:
        with _sigterm_raises():
            result = write(tmp_path)
            if not os.path.exists(tmp_path) or os.path.getsize(tmp_path) == 0:
                raise OutputError(f"could not write {final_path}")
            os.replace(tmp_path, final_path)
        return result
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)


def write_text(final_path, text: str, overwrite: bool = False) -> None:
    def write(tmp_path):
        with open(tmp_path, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    atomic_write(final_path, write, overwrite=overwrite)


def write_json(final_path, obj, overwrite: bool = False) -> None:
    """``obj`` as indented JSON."""
    write_text(final_path, json.dumps(obj, indent=1) + "\n", overwrite=overwrite)
