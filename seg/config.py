"""Where the Hydra configs every command composes live (``CONF_DIR``)."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

#: The folder of the Hydra configs every command composes: the package ``seg.conf``, which is the
#: repository's ``conf/`` in a checkout and ships inside the wheel (pyproject.toml maps it).
CONF_DIR = Path(str(importlib.resources.files("seg.conf")))
