"""A non-editable install: the wheel carries the presets, the Triton kernels and every console script.

The wheel is built from a copy of the tracked sources without the compiled extension
(FACT_FAST_SKIP_EXTENSION=1: the C++ build is what `make build` tests) and installed into a fresh
virtual environment whose only other packages are this interpreter's dependencies, reached through
a .pth file (so nothing is downloaded and this checkout is not on the path).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv

import pytest

from fact_fast.data.labels.sets import NIH_CLASS_NAMES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED_PRESETS = sorted(f[:-5] for f in os.listdir(os.path.join(REPO, "configs")) if f.endswith(".yaml"))
CLIS = ["fact-train", "fact-evaluate", "fact-predict", "fact-report", "fact-export", "fact-compare",
        "fact-selftest"]

pytestmark = pytest.mark.slow


def _tracked_sources(dest: str) -> None:
    if shutil.which("git") and os.path.isdir(os.path.join(REPO, ".git")):
        files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
        for rel in files.splitlines():
            src = os.path.join(REPO, rel)
            if os.path.isfile(src):
                os.makedirs(os.path.dirname(os.path.join(dest, rel)) or dest, exist_ok=True)
                shutil.copy2(src, os.path.join(dest, rel))
    else:
        shutil.copytree(REPO, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
            ".venv", "runs", "build", "*.egg-info", "__pycache__", "*.so", "third_party"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("install")
    src, wheels, env_dir = root / "src", root / "wheels", root / "venv"
    _tracked_sources(str(src))
    env = {**os.environ, "FACT_FAST_SKIP_EXTENSION": "1", "PIP_NO_INDEX": "1"}
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                            str(wheels), str(src)], capture_output=True, text=True, env=env, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = [w for w in os.listdir(wheels) if w.endswith(".whl")]
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # this interpreter's site directories and any it reaches through .pth files (not this checkout)
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    deps |= {p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages")}
    with open(os.path.join(site, "dependencies.pth"), "w") as fh:
        fh.write("\n".join(sorted(deps)) + "\n")
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                           "--no-index", str(wheels / wheel)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return env_dir


def _run(env_dir, args, cwd):
    env = {"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "HOME": str(cwd), "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def test_the_wheel_is_imported_not_the_checkout(installed, tmp_path):
    done = _run(installed, [str(installed / "bin" / "python"), "-c",
                            "import fact_fast, fact_fast.kernels as k; print(fact_fast.__file__); print(k.__file__)"],
                tmp_path)
    assert done.returncode == 0, done.stderr
    package, kernels = done.stdout.split()
    assert package.startswith(str(installed)) and kernels.startswith(str(installed))
    assert os.path.dirname(kernels) == os.path.join(os.path.dirname(package), "kernels")


def test_the_installed_package_finds_every_shipped_preset(installed, tmp_path):
    assert SHIPPED_PRESETS
    code = ("from fact_fast.config import PRESETS_DIR, preset_names, load_config_file\n"
            "print(PRESETS_DIR); print(','.join(preset_names()))\n"
            "for name in preset_names(): load_config_file(name)\n")
    done = _run(installed, [str(installed / "bin" / "python"), "-c", code], tmp_path)
    assert done.returncode == 0, done.stderr
    where, names = done.stdout.split()
    assert where.startswith(str(installed)) and names.split(",") == SHIPPED_PRESETS


def test_the_installed_package_has_its_shipped_label_embeddings(installed, tmp_path):
    code = ("from fact_fast.data.labels.embeddings import label_embeddings, shipped_label_sets\n"
            "from fact_fast.data.labels.sets import NIH_CLASS_NAMES\n"
            "sets = shipped_label_sets(); e = label_embeddings(NIH_CLASS_NAMES, dataset='nih')\n"
            "print(len(sets), tuple(e.shape))\n")
    done = _run(installed, [str(installed / "bin" / "python"), "-c", code], tmp_path)
    assert done.returncode == 0, done.stderr
    count, shape = done.stdout.split(maxsplit=1)
    assert int(count) > 0 and shape.startswith(f"({len(NIH_CLASS_NAMES)},")


@pytest.mark.parametrize("cli", CLIS)
def test_every_cli_is_a_console_script(installed, tmp_path, cli):
    script = installed / "bin" / cli
    assert script.is_file(), f"{cli} was not installed"
    done = _run(installed, [str(script), "--help"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "usage:" in done.stdout


def test_a_preset_is_found_by_name_from_the_console_script(installed, tmp_path):
    done = _run(installed, [str(installed / "bin" / "fact-train"), "--help"], tmp_path)
    assert all(name in done.stdout for name in SHIPPED_PRESETS), done.stdout
