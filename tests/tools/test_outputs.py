"""Outputs are written whole or not at all: never over an existing file unless asked, with the
user's umask, and an interrupted write (an exception, Ctrl-C, SIGTERM) leaves neither a partial
file nor its temporary behind."""

import os
import signal
import subprocess
import sys
import time

import pytest

from easycache.outputs import OutputError, atomic_write, folder_problem, write_json
from helpers import ROOT


def test_an_existing_file_is_kept_unless_overwrite(tmp_path):
    path = tmp_path / "r.json"
    path.write_text("keep me")
    with pytest.raises(OutputError, match="exists; pass --overwrite"):
        write_json(path, {"a": 1})
    assert path.read_text() == "keep me"
    write_json(path, {"a": 1}, overwrite=True)
    assert path.read_text().strip() == '{\n "a": 1\n}'


def test_files_get_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "r.json", {})
    finally:
        os.umask(old)
    assert oct((tmp_path / "r.json").stat().st_mode & 0o777) == "0o644"


def test_a_failing_writer_leaves_nothing(tmp_path):
    def broken(tmp):
        open(tmp, "w").write("half")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "v.mp4", broken)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OutputError, match="could not write"):
        atomic_write(tmp_path / "v.mp4", lambda tmp: None)  # a saver that logs its failure and returns
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_write_leaves_nothing(tmp_path, signum):
    code = ("import sys, time; sys.path.insert(0, sys.argv[1]); from easycache.outputs import atomic_write\n"
            "def slow(tmp):\n"
            "    open(tmp, 'w').write('half a video')\n"
            "    print('writing', flush=True)\n"
            "    time.sleep(60)\n"
            "atomic_write(sys.argv[2], slow)\n")
    # a shell's background job inherits SIGINT ignored, and Python then installs no Ctrl-C handler:
    # give the child the default disposition a terminal's foreground process has
    process = subprocess.Popen([sys.executable, "-c", code, ROOT, str(tmp_path / "v.mp4")], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert process.stdout.readline().strip() == "writing"
    assert len(list(tmp_path.iterdir())) == 1  # the temporary file, hidden
    process.send_signal(signum)
    process.wait(timeout=30)
    assert process.returncode != 0
    assert list(tmp_path.iterdir()) == []


def test_folder_problem_tries_a_real_file(tmp_path):
    assert folder_problem(str(tmp_path / "new" / "deeper")) is None  # would be created under tmp_path
    (tmp_path / "file").write_text("x")
    assert "is not a folder" in folder_problem(str(tmp_path / "file" / "x"))
    if os.path.isdir("/sys"):
        assert folder_problem("/sys") and "cannot write in /sys" in folder_problem("/sys")
    assert not any(name.startswith(".easycache-write-test") for name in os.listdir(tmp_path))
