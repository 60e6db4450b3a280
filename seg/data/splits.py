"""Which frames validate a run: the dataset's val split, or frames held out of train.

Two hold-out rules, one owner: ``data.val_fraction`` (a seeded fraction of train, when the
dataset has no val split) and ``data.val_sequences`` (every training frame of the named
sequences, in place of the val split, so that validation measures drives the model never saw).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from seg.data.layouts import Sample
from seg.errors import ConfigError, DataError

#: A frame's sequence is its file name up to the first separator (CamVid: ``0001TP_006690.png``).
SEQUENCE_SEPARATOR = "_"


def sequence_of(sample: Sample) -> str:
    """The sequence (drive) ``sample`` was recorded in: its file name up to the first ``_``."""
    return sample.image.stem.split(SEQUENCE_SEPARATOR, 1)[0]


def _listed(names: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


@dataclass(frozen=True)
class ValidationSplit:
    """Where validation frames come from (``data.val_fraction``, ``data.val_sequences``,
    ``data.split_seed``); ``None`` / empty for both: the dataset's own val split."""

    fraction: float | None = None
    sequences: tuple[str, ...] = ()
    seed: int = 0

    @classmethod
    def from_config(
        cls, fraction: float | None, sequences: str | Sequence[Any] | None, seed: int
    ) -> ValidationSplit:
        """Check the values a user can get wrong, naming the key and the fix."""
        if fraction is not None and not 0 < fraction < 1:
            raise DataError(f"data.val_fraction={fraction} must be between 0 and 1")
        names = (sequences,) if isinstance(sequences, str) else tuple(sequences or ())
        names = tuple(dict.fromkeys(str(name) for name in names))
        if names and fraction is not None:
            raise ConfigError(
                f"data.val_sequences=[{', '.join(names)}] and data.val_fraction={fraction} both choose "
                "the validation frames: set one of them (data.val_fraction=null)"
            )
        return cls(fraction, names, seed)

    def replaces_val_split(self) -> bool:
        """Whether the dataset's val split is left unread (held-out sequences validate instead)."""
        return bool(self.sequences)

    def takes_val_from_train(self, has_val_split: bool) -> bool:
        """Whether validation frames are held out of train: named sequences always, a fraction
        only when the dataset has no val split of its own."""
        return self.replaces_val_split() or (bool(self.fraction) and not has_val_split)

    def carve(self, found: dict[str, list[Sample]]) -> tuple[dict[str, list[Sample]], str]:
        """``found`` with val held out of train by this rule, and the source of val it used:
        ``sequences``, ``fraction`` or ``split`` (the dataset's own, or none)."""
        train = found.get("train", [])
        if self.sequences:
            return {**found, **self._by_sequence(train)}, "sequences"
        if self.fraction and train and self.takes_val_from_train("val" in found):
            order = np.random.default_rng(self.seed).permutation(len(train))
            held_out = set(order[: max(1, round(self.fraction * len(order)))].tolist())
            carved = {
                "train": [s for i, s in enumerate(train) if i not in held_out],
                "val": [s for i, s in enumerate(train) if i in held_out],
            }
            return {**found, **carved}, "fraction"
        return found, "split"

    def _by_sequence(self, train: list[Sample]) -> dict[str, list[Sample]]:
        if not train:  # an empty or missing train folder is reported as a data problem
            return {"train": [], "val": []}
        present = sorted({sequence_of(sample) for sample in train})
        unknown = [name for name in self.sequences if name not in present]
        if unknown:
            raise ConfigError(
                f"data.val_sequences: no training frames of sequence {', '.join(unknown)}; the training "
                f"frames' sequences (file name up to the first '{SEQUENCE_SEPARATOR}') are {_listed(present)}"
            )
        if set(present) <= set(self.sequences):
            raise ConfigError(
                f"data.val_sequences=[{', '.join(self.sequences)}] holds out every training sequence, "
                "leaving nothing to train on: keep at least one of them out of the list"
            )
        held = set(self.sequences)
        return {
            "train": [s for s in train if sequence_of(s) not in held],
            "val": [s for s in train if sequence_of(s) in held],
        }

    def summary(self, source: str, sizes: dict[str, int]) -> dict[str, Any]:
        """Which frames validate, as JSON with a one-line ``description``, so that numbers from
        different validation splits are told apart (the run's metrics and log)."""
        val, train = sizes.get("val", 0), sizes.get("train", 0)
        if source == "sequences":
            line = (
                f"{val} training frames of sequence {', '.join(self.sequences)}, held out of train "
                f"(sequence-disjoint: data.val_sequences); training on the other {train}"
            )
        elif source == "fraction":
            line = (
                f"{val} training frames held out at random (data.val_fraction={self.fraction}, "
                f"data.split_seed={self.seed}); training on the other {train}"
            )
        else:
            line = f"the dataset's val split ({val} frames); training on {train}"
        return {
            "split": source,
            "sequences": list(self.sequences) if source == "sequences" else None,
            "fraction": self.fraction if source == "fraction" else None,
            "sizes": dict(sizes),
            "description": line,
        }
