"""An exponential moving average (EMA) of the weights, for validation, the best checkpoint and export.

Lightning's ``EMAWeightAveraging`` (as ``WeightsEMA``) keeps a copy of the module whose weights follow
``ema = decay * ema + (1 - decay) * weights`` after every optimizer step (the first update copies
the weights). While validating it swaps the averaged weights in, so ``val/*``, the best
checkpoint's choice and the validation pictures are those of the EMA. Every checkpoint stores
the EMA under ``state_dict`` (what ``load_from_checkpoint``, the TorchScript model, testing, ``seg.evaluate``
and ``seg.predict`` read) and the trained weights under ``current_model_state``, with the
averaging state beside them, so ``resume=`` continues both where they stopped.

Batch-norm running statistics are averaged like the weights, not copied: they describe the
activations of the weights that produced them, and averaged over the same window they describe
those of the averaged weights to first order (the running mean is, step by step, close to linear
in the weights). Copying them would pair the statistics of the latest weights with weights that
lag behind by about ``1 / (1 - decay)`` steps. (``num_batches_tracked`` is averaged too; batch norm
ignores it while its ``momentum`` is set, the default.)
"""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks.weight_averaging import EMAWeightAveraging

from seg.errors import ConfigError


class WeightsEMA(EMAWeightAveraging):
    """Lightning's ``EMAWeightAveraging``, except that the module keeps its trained weights when
    training ends.

    Lightning copies the average into the module at ``on_train_end``, before the checkpoint
    callbacks' own ``on_train_end``, where a ``ModelCheckpoint`` that has not yet written
    its last checkpoint writes it: that file would then hold the average as the trained weights, and a
    run resumed from it (say with more epochs) would continue from the average. Every checkpoint
    already holds the average as its ``state_dict``, and the best one is what is tested and exported.
    """

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pass


def ema(decay: float | None = None) -> WeightsEMA | None:
    """Lightning's EMA callback, updated after every optimizer step, or ``None`` (off) while
    ``decay`` is null.

    ``decay`` is the weight of the running average at each update: the average spans about
    ``1 / (1 - decay)`` steps, which should stay well below the run's number of training steps
    (0.99: about 100 steps; the common 0.999 needs thousands).
    """
    if decay is None:
        return None
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay < 1:
        raise ConfigError(
            f"callbacks.ema.decay={decay!r} is not valid: expected null (off) or a number in (0, 1)"
        )
    return WeightsEMA(decay=float(decay), use_buffers=True)
