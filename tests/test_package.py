"""seg as users install it: a wheel that carries its configs and puts the commands on PATH, run
from an empty folder of a fresh virtual environment with no checkout in sight."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, TINY
from PIL import Image

from seg.config import CONF_DIR


def test_every_package_folder_is_listed_for_the_wheel() -> None:
    """pyproject.toml lists the packages by hand (the configs' mapping needs it): a new folder under
    seg/ that is not listed would be missing from every installed copy."""
    listed = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    folders = {
        ".".join(path.parent.relative_to(REPO).parts) for path in (REPO / "seg").rglob("__init__.py")
    }
    assert sorted(listed) == sorted({*folders, "seg.conf"})
    assert (REPO / "seg" / "data" / "__init__.py").is_file()  # a namespace folder is left out of wheels


def test_the_configs_are_read_from_the_package() -> None:
    assert (CONF_DIR / "train.yaml").is_file()
    assert CONF_DIR.samefile(REPO / "conf")  # in a checkout, the package is the repository's conf/


def _scripts(environment: Path) -> Path:
    return environment / ("Scripts" if os.name == "nt" else "bin")


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{command[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_the_wheel_trains_evaluates_and_predicts_from_an_empty_folder(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), "."],
        cwd=REPO, check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    (wheel,) = dist.glob("seg-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"seg/conf/train.yaml", "seg/conf/data/_loader.yaml", "seg/data/datamodule.py"} <= names

    # A fresh environment that takes the dependencies from this one (they are large) but not seg:
    # a plain path in a .pth file, so this environment's editable install of the checkout is not run.
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=False)
    python = _scripts(environment) / ("python.exe" if os.name == "nt" else "python")
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    Path(site, "dependencies.pth").write_text(
        "\n".join({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}) + "\n"
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip

    work = tmp_path / "empty"
    work.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "HYDRA_FULL_ERROR")}
    where = _run([str(python), "-c", "import seg.config; print(seg.config.CONF_DIR)"], work, env)
    assert Path(where.stdout.strip()).is_relative_to(environment)  # not the checkout's conf/

    scripts = _scripts(environment)
    _run([str(scripts / "seg-train"), *TINY, "trainer.max_epochs=1", "hydra.run.dir=run"], work, env)
    run_dir = work / "run"
    assert (run_dir / "model.pt").is_file()
    evaluation = _run([str(scripts / "seg-evaluate"), "run_dir=run", "split=val"], work, env)
    assert (run_dir / "eval" / "val" / "metrics.json").is_file(), evaluation.stdout[-2000:]
    Image.new("RGB", (40, 30), (90, 120, 60)).save(work / "photo.png")
    _run([str(scripts / "seg-predict"), "model_path=run", "input=photo.png", "output=masks"], work, env)
    assert any((work / "masks").iterdir())
    page = _run([str(scripts / "seg-predict"), "--help"], work, env).stdout
    assert page.startswith("seg-predict: ") and "*model_path" in page
