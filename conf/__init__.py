"""The Hydra configs every seg command composes; installed with the package as ``seg.conf``."""
