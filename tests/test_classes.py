"""ClassInfo: the defaults for unnamed classes, the classes file round trip, and what the data
module reports."""

from __future__ import annotations

import json
from pathlib import Path

from hydra.utils import instantiate
from support import compose_train

from seg.classes import ClassInfo, default_names, default_palette


def test_unnamed_classes_get_numbered_names_and_distinct_stable_colours() -> None:
    assert default_names(3) == ["class_0", "class_1", "class_2"]
    palette = default_palette(40)
    assert len({tuple(colour) for colour in palette}) == 40
    assert palette[:5] == default_palette(5)  # a class keeps its colour whatever the count
    assert all(0 <= value <= 255 for colour in palette for value in colour)


def test_the_classes_file_reads_back_what_was_written(tmp_path: Path) -> None:
    info = ClassInfo(["road", "car"], [[128, 64, 128], [0, 0, 142]], 255, 1)
    path = info.write(tmp_path / "classes.json")
    assert ClassInfo.read(path) == info
    assert json.loads(path.read_text())["num_classes"] == 2
    # a file without colours (written by hand) gets the default ones
    path.write_text(json.dumps({"class_names": ["a", "b", "c"]}))
    assert ClassInfo.read(path) == ClassInfo(["a", "b", "c"], default_palette(3), None, 3)


def test_the_data_module_names_its_classes_from_the_data_config(tmp_path: Path) -> None:
    data = ["data=folder", f"data.root={tmp_path}", "data.num_classes=3"]
    cfg = compose_train([f"paths.data_dir={tmp_path}", *data])
    classes = instantiate(cfg.data).classes
    assert classes == ClassInfo(default_names(3), default_palette(3), cfg.data.ignore_index, 3)
    named = compose_train([f"paths.data_dir={tmp_path}", "data=cityscapes"])
    cityscapes = instantiate(named.data).classes
    assert cityscapes.class_names[:3] == ["road", "sidewalk", "building"] and cityscapes.ignore_index == 255
    assert cityscapes.palette[0] == [128, 64, 128]
