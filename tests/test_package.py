"""seg as users install it: a wheel that carries its configs and puts the commands on PATH, run
from an empty folder of a fresh virtual environment with no checkout in sight."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image
from support import REPO, TINY, cli_ok

from seg.config import CONF_DIR

tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def test_every_package_folder_is_listed_for_the_wheel() -> None:
    """pyproject.toml lists the packages by hand (the configs' mapping needs it): a new folder under
    seg/ that is not listed would be missing from every installed copy."""
    listed = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    folders = {".".join(path.parent.relative_to(REPO).parts) for path in (REPO / "seg").rglob("__init__.py")}
    assert sorted(listed) == sorted({*folders, "seg.conf"})
    assert (REPO / "seg" / "data" / "__init__.py").is_file()  # a namespace folder is left out of wheels


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement line (``Foo_bar[x]>=1`` -> ``foo-bar``)."""
    return re.split(r"[\s\[<>=!~;@]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pins() -> dict[str, str]:
    lines = (REPO / "constraints.txt").read_text().splitlines()
    pairs = [line.split("==") for line in lines if line.strip() and not line.startswith("#")]
    return {_name(name): version for name, version in pairs}


def test_the_constraints_pin_every_dependency_and_extra() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    required = [
        *project["dependencies"],
        *(r for extra in project["optional-dependencies"].values() for r in extra),
    ]
    unpinned = sorted({_name(r) for r in required} - set(_pins()))
    assert not unpinned, f"add these to constraints.txt (make constraints): {unpinned}"


@pytest.mark.skipif(
    not (Path(sys.prefix) / ".seg-installed").is_file(), reason="not the environment `make install` made"
)
def test_the_environment_make_installs_has_the_pinned_versions() -> None:
    installed = {_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    differ = {
        name: (pinned, installed[name])
        for name, pinned in _pins().items()
        if name in installed and installed[name].split("+")[0] != pinned
    }
    assert not differ, f"pinned, installed: {differ}; run make install, or make constraints to pin these"


def test_import_seg_loads_no_torch_and_torchvision_still_imports_after_it() -> None:
    # torchvision's import is checked (seg.models.torchvision_compat) only when something first
    # imports it; a PyPI torchvision beside a CPU torch build would otherwise fail right there
    code = (
        "import sys, seg; assert 'torch' not in sys.modules, 'import seg loaded torch'; "
        "import torchmetrics; from seg.models import torchvision_compat as c; "
        "waiting = any(isinstance(f, c._CheckBeforeImport) for f in sys.meta_path); "
        "print('torchvision' in sys.modules, not waiting)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    installed = importlib.util.find_spec("torchvision") is not None
    # torchmetrics imported torchvision (when installed), and the check ran once and left the import path
    assert result.stdout.split() == [str(installed), str(installed)]


def test_the_configs_are_read_from_the_package() -> None:
    assert (CONF_DIR / "train.yaml").is_file()
    assert CONF_DIR.samefile(REPO / "conf")  # in a checkout, the package is the repository's conf/


@pytest.mark.parametrize("how", ["--config-dir", "hydra.searchpath"])
def test_a_users_own_config_folder_adds_options_beside_the_packages(tmp_path: Path, how: str) -> None:
    """Users keep their experiments and datasets in their own folder, not in a copy of seg's."""
    mine = tmp_path / "my_configs"
    (mine / "experiment").mkdir(parents=True)
    (mine / "data").mkdir()
    (mine / "experiment" / "mine.yaml").write_text(
        "# @package _global_\nmodel:\n  optimizer:\n    lr: 0.0123\n"
    )
    (mine / "data" / "my_scans.yaml").write_text("defaults:\n  - folder\nroot: /scans\nnum_classes: 4\n")
    where = ["--config-dir", str(mine)] if how == "--config-dir" else [f"hydra.searchpath=[file://{mine}]"]
    done = cli_ok(["seg.train", *where, "experiment=mine", "data=my_scans", "--cfg", "job"], cwd=tmp_path)
    cfg = OmegaConf.create(done.stdout)
    assert cfg.model.optimizer.lr == 0.0123
    assert (cfg.data.root, cfg.data.num_classes) == ("/scans", 4)
    assert cfg.data.layout == OmegaConf.load(CONF_DIR / "data" / "folder.yaml").layout  # seg's folder


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
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
         "."],
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
    evaluation = _run([str(scripts / "seg-evaluate"), "run=run", "split=val"], work, env)
    assert (run_dir / "eval" / "val" / "metrics.json").is_file(), evaluation.stdout[-2000:]
    Image.new("RGB", (40, 30), (90, 120, 60)).save(work / "photo.png")
    _run([str(scripts / "seg-predict"), "run=run", "input=photo.png", "output=masks"], work, env)
    assert any((work / "masks").iterdir())
    page = _run([str(scripts / "seg-predict"), "--help"], work, env).stdout
    assert page.startswith("seg-predict: ") and "*run" in page
