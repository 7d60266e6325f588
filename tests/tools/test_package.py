"""`pip install .` gives the library: the wheel holds the easycache package (policies, runtime,
adapters, metrics) and nothing else of the repository, under a distribution name that is not the
unrelated `easycache` on the package index, with diffusers as an optional extra; installed on its
own, the diffusers integration imports and every policy is registered."""

import os
import shutil
import subprocess
import sys
import zipfile

from helpers import ROOT


def test_the_wheel_installs_the_library_alone(tmp_path):
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info beside the sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(os.path.join(ROOT, name), source)
    shutil.copytree(os.path.join(ROOT, "easycache"), source / "easycache",
                    ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                            "--wheel-dir", str(tmp_path / "dist"), str(source)], capture_output=True, text=True,
                           timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").iterdir()
    assert wheel.name.startswith("easycache_video-")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
    packages = {name.split("/")[0] for name in names}
    assert packages == {"easycache", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    assert "easycache/adapters/diffusers.py" in names and "easycache/policies/uniform.py" in names
    assert 'Requires-Dist: diffusers>=0.41; extra == "diffusers"' in metadata

    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    probe = ("import easycache, easycache.adapters.diffusers as d, easycache.policies as p; "
             "print(easycache.__file__); print(sorted(p.REGISTRY)); print(callable(d.enable_easycache))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env=dict(os.environ, PYTHONPATH=str(target)))
    assert result.returncode == 0, result.stderr[-2000:]
    where, registered, enable = result.stdout.splitlines()
    assert where.startswith(str(target)) and "uniform" in registered and enable == "True"
