"""Fine-tuning a pretrained encoder: its own learning rate, and no weight decay on norms and biases.

Checked against a hand-computed SGD step: ``p -= lr * (grad + weight_decay * p)`` per group."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from seg.errors import ConfigError
from seg.lightning_module import SegmentationModule

pytest.importorskip("segmentation_models_pytorch", reason='needs pip install -e ".[models]"')

NET = {
    "_target_": "seg.models.smp.SmpNet",
    "arch": "FPN",
    "encoder_name": "resnet18",
    "encoder_weights": None,
    "in_channels": 3,
    "num_classes": 3,
}


def _module(**options: Any) -> SegmentationModule:
    torch.manual_seed(0)
    return SegmentationModule(
        net=NET,
        loss={"_target_": "seg.losses.DiceLoss", "smooth": 1.0},
        optimizer={"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1, "weight_decay": 0.01},
        **options,
    )


def test_encoder_lr_scale_and_no_decay_groups_step_as_computed_by_hand() -> None:
    module = _module(encoder_lr_scale=0.25, decay_norms_and_biases=False)
    optimizer = module.configure_optimizers()
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert set(groups) == {"encoder", "encoder+no_decay", "decoder", "decoder+no_decay"}
    assert groups["encoder"]["lr"] == pytest.approx(0.025) and groups["decoder"]["lr"] == pytest.approx(0.1)
    assert groups["encoder+no_decay"]["weight_decay"] == 0.0 and groups["encoder"]["weight_decay"] == 0.01
    encoder = {id(p) for p in module.net.encoder_parameters()}
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(module.parameters()))

    image, mask = torch.rand(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64))
    module.train()
    loss = module.loss_fn(module(image), mask)
    loss.backward()
    before = {id(p): (p.detach().clone(), p.grad.clone()) for p in module.parameters()}
    optimizer.step()
    for parameter in module.parameters():
        value, grad = before[id(parameter)]
        lr = 0.025 if id(parameter) in encoder else 0.1
        decay = 0.01 if parameter.ndim > 1 else 0.0
        torch.testing.assert_close(parameter.detach(), value - lr * (grad + decay * value))


def test_the_defaults_keep_one_rate_and_decay_everything() -> None:
    optimizer = _module().configure_optimizers()
    assert [g["name"] for g in optimizer.param_groups] == ["encoder", "decoder"]
    assert {g["lr"] for g in optimizer.param_groups} == {0.1}
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.01}


def test_a_network_without_an_encoder_is_one_group() -> None:
    module = SegmentationModule(
        net={"_target_": "seg.models.unet.UNet", "in_channels": 3, "num_classes": 2, "base_channels": 4},
        loss={"_target_": "seg.losses.DiceLoss", "smooth": 1.0},
        optimizer={"_target_": "torch.optim.Adam", "_partial_": True},
        encoder_lr_scale=0.1,
    )
    (group,) = module.configure_optimizers().param_groups
    assert "name" not in group and group["lr"] == pytest.approx(1e-3)  # Adam's own default
    module.hparams.decay_norms_and_biases = False
    groups = module.configure_optimizers().param_groups
    assert [g["name"] for g in groups] == ["network", "network+no_decay"]
    assert all(p.ndim == 1 for p in groups[1]["params"]) and groups[1]["weight_decay"] == 0.0


def test_a_scale_that_is_not_positive_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^model.encoder_lr_scale=0.0: expected a positive multiple$"):
        _module(encoder_lr_scale=0.0)


def test_frozen_encoder_norms_keep_their_statistics_and_affine_through_a_training_step() -> None:
    module = _module(freeze_encoder_norms=True)
    encoder_norms = {
        f"model.encoder.{name}"
        for name, m in module.net.model.encoder.named_modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    }
    assert len(module.frozen_norms()) == len(encoder_norms) == 20  # resnet18: every one of its batch norms
    optimizer = module.configure_optimizers()
    trained = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in trained for norm in module.frozen_norms() for p in norm.parameters())
    before = {k: v.clone() for k, v in module.net.state_dict().items()}
    module.train()
    assert all(not norm.training for norm in module.frozen_norms()) and module.net.model.decoder.training
    module.loss_fn(module(torch.rand(2, 3, 64, 64)), torch.randint(0, 3, (2, 64, 64))).backward()
    optimizer.step()
    after = module.net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    frozen = {k for k in before if any(k.startswith(f"{n}.") for n in encoder_norms)}
    assert frozen and not changed & frozen  # running statistics, scale and shift as loaded
    assert any(k.startswith("model.encoder.") for k in changed)  # the convolutions still learn
    assert any(k.startswith("model.decoder.") for k in changed)


def test_norms_a_trainer_swaps_in_stay_frozen() -> None:
    """``trainer.sync_batchnorm=true`` replaces every batch norm (same parameters, new modules)
    after the module is built; the new ones are kept in eval mode."""
    module = _module(freeze_encoder_norms=True)
    module.net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module.net)
    module.train()
    swapped = module.frozen_norms()
    assert len(swapped) == 20 and all(
        isinstance(n, torch.nn.SyncBatchNorm) and not n.training for n in swapped
    )
    before = module.net.model.encoder.bn1.running_mean.clone()
    module.net.model.encoder(torch.rand(2, 3, 64, 64))  # SyncBatchNorm in train mode needs a process group
    assert torch.equal(before, module.net.model.encoder.bn1.running_mean)


def test_without_freezing_a_training_step_moves_the_encoder_norms() -> None:
    module = _module()
    before = module.net.model.encoder.bn1.running_mean.clone()
    module.train()
    module(torch.rand(2, 3, 64, 64))
    assert module.frozen_norms() == [] and not torch.equal(before, module.net.model.encoder.bn1.running_mean)


def test_freezing_norms_of_a_network_without_an_encoder_names_the_key() -> None:
    with pytest.raises(
        ConfigError, match=r"^model.freeze_encoder_norms=true: UNet has no pretrained encoder"
    ):
        SegmentationModule(
            net={"_target_": "seg.models.unet.UNet", "in_channels": 3, "num_classes": 2, "base_channels": 4},
            loss={"_target_": "seg.losses.DiceLoss", "smooth": 1.0},
            optimizer={"_target_": "torch.optim.Adam", "_partial_": True},
            freeze_encoder_norms=True,
        )
