"""What a tower trains: all, head, adapter or none; frozen parts stay in eval mode."""
import pytest
import torch

from jointspace.config import TowerSpec
from jointspace.errors import ConfigError
from jointspace.towers import build_tower


def _trainable(tower):
    return {n for n, p in tower.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("name, options", [
    ("convnet", {"widths": [8, 16]}),
    ("transformer", {"vocab_size": 64, "width": 32, "layers": 1, "heads": 2, "context_length": 12}),
])
def test_modes_freeze_what_they_should(name, options):
    modality = "image" if name == "convnet" else "text"
    tower = build_tower(TowerSpec(name, options, "head"), 16, modality)
    assert _trainable(tower) == {n for n, _ in tower.named_parameters() if n.startswith("proj.")}
    tower = build_tower(TowerSpec(name, options, "adapter"), 16, modality)
    assert _trainable(tower) and all(n.startswith(("proj.", "adapter.")) for n in _trainable(tower))
    assert any(n.startswith("adapter.") for n in _trainable(tower))
    tower = build_tower(TowerSpec(name, options, "none"), 16, modality)
    assert not _trainable(tower)
    counts = tower.parameter_counts()
    assert counts["trainable"] == 0 and counts["frozen"] == sum(p.numel() for p in tower.parameters())
    with pytest.raises(ConfigError, match="trainable"):
        TowerSpec(name, options, "some")


def test_adapter_starts_as_the_identity():
    torch.manual_seed(0)
    plain = build_tower(TowerSpec("convnet", {"widths": [8, 16]}), 16, "image")
    torch.manual_seed(0)
    adapted = build_tower(TowerSpec("convnet", {"widths": [8, 16]}, "adapter"), 16, "image")
    x = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    plain.eval(), adapted.eval()
    torch.testing.assert_close(adapted(x), plain(x))


def test_frozen_backbone_stays_in_eval_mode_and_keeps_its_statistics():
    tower = build_tower(TowerSpec("convnet", {"widths": [8, 16]}, "head"), 16, "image")
    tower.train()
    assert tower.proj.training
    assert not any(m.training for n, m in tower.named_modules() if n.startswith("trunk"))
    before = {n: b.clone() for n, b in tower.named_buffers()}
    tower(torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8))
    for n, b in tower.named_buffers():
        assert torch.equal(b, before[n]), n  # batch-norm statistics untouched
    full = build_tower(TowerSpec("convnet", {"widths": [8, 16]}), 16, "image").train()
    full(torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8))
    assert int(dict(full.named_buffers())["trunk.1.num_batches_tracked"]) == 1  # the contrast


@pytest.mark.parametrize("mode", ["head", "adapter", "none"])
@pytest.mark.parametrize("accum_steps", [1, 2])
def test_a_train_step_leaves_a_frozen_backbones_batch_norm_statistics(mode, accum_steps):
    """Through the trainer's step (cached-negative passes included) and with the
    batch norms converted for multi-process training, as the trainer does."""
    from jointspace.config import ModelConfig
    from jointspace.model import JointModel
    from jointspace.towers.sync_norm import SyncBatchNorm, convert_sync_batchnorm
    from jointspace.train.step import build_optimizer, train_step, training_objectives
    torch.manual_seed(0)
    model = JointModel(ModelConfig(embed_dim=16, towers={
        "image": TowerSpec("convnet", {"widths": [8, 16]}, mode),
        "text": TowerSpec("transformer", {"vocab_size": 64, "width": 32, "layers": 1, "heads": 2,
                                          "context_length": 12})}))
    convert_sync_batchnorm(model)
    assert any(isinstance(m, SyncBatchNorm) for m in model.modules())
    model.train()
    image = model.towers["image"]
    before = {n: b.clone() for n, b in image.named_buffers()}
    head = {n: p.clone() for n, p in image.named_parameters() if p.requires_grad}
    g = torch.Generator().manual_seed(1)
    batch = {"image": torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8, generator=g),
             "text": torch.randint(3, 64, (8, 12), generator=g)}
    optimizer = build_optimizer(model, 1e-2, 0.0)
    train_step(model, training_objectives(model.config), optimizer, batch, accum_steps=accum_steps)
    for n, b in image.named_buffers():
        assert torch.equal(b, before[n]), n
    # the head did train (the adapter's zero-initialised output layer moves first)
    assert mode == "none" or any(not torch.equal(p, head[n])
                                 for n, p in image.named_parameters() if n in head)
