"""One training step: cached-negative accumulation, precision, Matryoshka."""
import pytest
import torch

from jointspace.config import ModelConfig, ObjectiveSpec, TowerSpec
from jointspace.errors import ConfigError
from jointspace.model import JointModel
from jointspace.objectives import MatryoshkaObjective
from jointspace.train.step import backward, build_optimizer, train_step, training_objective


def _model(objective="infonce", **kw) -> JointModel:
    # LayerNorm towers only: batch norm would see sub-batch statistics under accumulation
    torch.manual_seed(0)
    cfg = ModelConfig(embed_dim=16, objective=ObjectiveSpec(objective), towers={
        "image": TowerSpec("vit", {"width": 32, "layers": 1, "heads": 2, "patch_size": 16}),
        "text": TowerSpec("transformer", {"vocab_size": 64, "width": 32, "layers": 1, "heads": 2,
                                          "context_length": 12})}, **kw)
    return JointModel(cfg)


def _batch(n=24, seed=1):
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(3, 64, (n, 12), generator=g)
    text[:, 8:] = 0  # padding
    return {"image": torch.randint(0, 256, (n, 3, 64, 64), dtype=torch.uint8, generator=g), "text": text}


def _grads(model, **kw):
    model.zero_grad(set_to_none=True)
    loss = backward(model, training_objective(model.config), _batch(), **kw)
    return loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("objective", ["infonce", "sigmoid"])
@pytest.mark.parametrize("accum_steps", [2, 4])
def test_accumulation_equals_one_large_batch(objective, accum_steps):
    model = _model(objective)
    loss_1, grads_1 = _grads(model, accum_steps=1)
    loss_k, grads_k = _grads(model, accum_steps=accum_steps)
    torch.testing.assert_close(loss_k, loss_1, rtol=1e-5, atol=1e-6)
    for name in grads_1:
        torch.testing.assert_close(grads_k[name], grads_1[name], rtol=1e-4, atol=1e-6, msg=name)


def test_accumulation_is_not_the_average_of_small_batch_losses():
    """The weaker scheme (mean of per-sub-batch losses) gives different gradients."""
    model = _model()
    _, grads_1 = _grads(model, accum_steps=1)
    objective = training_objective(model.config)
    model.zero_grad(set_to_none=True)
    batch = _batch()
    for i in range(4):
        sub = {m: x[i * 6:(i + 1) * 6] for m, x in batch.items()}
        emb = model(sub)
        (objective(emb["image"], emb["text"], model.logit_scale) / 4).backward()
    diff = max((p.grad - grads_1[n]).abs().max().item() for n, p in model.named_parameters())
    assert diff > 1e-3


def test_accumulation_replays_dropout_exactly():
    """With dropout on, the replayed sub-batches must draw the same masks as the
    no-graph pass: gradients then equal those of the loss on those embeddings."""
    model = _model()
    for layer in model.towers["text"].encoder.layers:
        layer.dropout.p = layer.dropout1.p = layer.dropout2.p = 0.3
    objective = training_objective(model.config)
    batch = _batch()
    torch.manual_seed(5)
    model.zero_grad(set_to_none=True)
    subs = [{m: x[i * 6:(i + 1) * 6] for m, x in batch.items()} for i in range(4)]
    embs = [model(sub) for sub in subs]  # same RNG order as the cached pass
    full = {m: torch.cat([e[m] for e in embs]) for m in embs[0]}
    objective(full["image"], full["text"], model.logit_scale).backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters()}
    torch.manual_seed(5)
    _, grads = _grads(model, accum_steps=4)
    for name in reference:
        torch.testing.assert_close(grads[name], reference[name], rtol=1e-4, atol=1e-6, msg=name)
    torch.manual_seed(5)
    _, plain = _grads(model, accum_steps=1)  # one pass draws other masks: dropout is really on
    assert max((plain[n] - reference[n]).abs().max().item() for n in reference) > 1e-4


def test_bad_accumulation_split():
    with pytest.raises(ConfigError, match="must divide the contrastive batch"):
        _grads(_model(), accum_steps=5)


def test_bf16_step_runs_and_tracks_fp32():
    model = _model()
    loss_32, _ = _grads(model, precision="fp32")
    loss_16, grads_16 = _grads(model, precision="bf16")
    assert abs(float(loss_16) - float(loss_32)) < 0.05 * float(loss_32)
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads_16.values())
    with pytest.raises(ConfigError, match="train.precision"):
        _grads(model, precision="fp8")


def test_train_step_moves_parameters():
    model = _model()
    opt = build_optimizer(model, 1e-3, 0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = train_step(model, training_objective(model.config), opt, _batch(), grad_clip=1.0)
    assert out.loss > 0 and out.grad_norm > 0
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert len(moved) == len(before)
    decay = {id(p) for p in opt.param_groups[0]["params"]}
    assert id(model.logit_scale) not in decay  # no weight decay on the temperature


def test_matryoshka_objective_from_config():
    model = _model(matryoshka_dims=[8, 4], matryoshka_weights=[1.0, 0.5, 0.25])
    objective = training_objective(model.config)
    assert isinstance(objective, MatryoshkaObjective)
    assert objective.dims == [16, 8, 4] and objective.weights == [1.0, 0.5, 0.25]
    with pytest.raises(ConfigError, match="matryoshka_weights has 1 entries"):
        _model(matryoshka_dims=[8], matryoshka_weights=[1.0])


def test_precision_resolution(monkeypatch):
    from jointspace.train import step
    cpu = torch.device("cpu")
    assert step.resolve_precision("fp32", cpu) == "fp32"
    assert step.resolve_precision("bf16", cpu) == "bf16"
    monkeypatch.setattr(step, "native_bf16", lambda device: True)
    assert step.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(step, "native_bf16", lambda device: False)
    assert step.resolve_precision("auto", cpu) == "fp32"
    with pytest.raises(ConfigError, match="'fp32', 'bf16' or 'auto'"):
        step.resolve_precision("half", cpu)


def test_batch_norm_statistics_are_updated_once_per_sub_batch():
    """The graph-free pass of cached-negative accumulation must not update batch-norm
    running statistics; only the graph pass does, once per sub-batch."""
    import copy
    torch.manual_seed(0)
    cfg = ModelConfig(embed_dim=16, towers={
        "image": TowerSpec("convnet", {"widths": [8, 16]}),
        "text": TowerSpec("transformer", {"vocab_size": 64, "width": 32, "layers": 1, "heads": 2,
                                          "context_length": 12})})
    model = JointModel(cfg).train()
    reference = copy.deepcopy(model)
    batch = _batch()
    with torch.no_grad():
        for i in range(4):
            reference({m: x[i * 6:(i + 1) * 6] for m, x in batch.items()})
    backward(model, training_objective(cfg), batch, accum_steps=4)
    buffers = dict(reference.named_buffers())
    for name, value in model.named_buffers():
        if "running" in name or "num_batches" in name:
            torch.testing.assert_close(value, buffers[name], msg=name)


def test_device_rng_is_saved_and_restored(monkeypatch):
    """On a GPU the replay must restore the device generator too (dropout draws from it).
    No GPU here: the CUDA RNG calls are stood in for, to check they are made."""
    from jointspace.train import step
    device_state = {"value": torch.tensor([1], dtype=torch.uint8)}
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device=None: device_state["value"].clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state",
                        lambda state, device=None: device_state.update(value=state.clone()))
    cuda = torch.device("cuda", 0)
    saved = step.get_rng_states(cuda)
    cpu_draw = torch.rand(3)
    device_state["value"] = torch.tensor([9], dtype=torch.uint8)  # the device generator advanced
    step.set_rng_states(saved, cuda)
    assert device_state["value"].item() == 1
    torch.testing.assert_close(torch.rand(3), cpu_draw)
    assert "cuda" not in step.get_rng_states(torch.device("cpu"))


def test_each_replay_restores_its_sub_batch_rng_on_the_step_device(monkeypatch):
    """The replay of sub-batch i restores the generator states saved before its first
    pass, on the step's own device (so a CUDA step restores the CUDA generator)."""
    from jointspace.train import step
    saved, restored = [], []
    real_get, real_set = step.get_rng_states, step.set_rng_states

    def get(device):
        states = real_get(device)
        saved.append((states["cpu"].clone(), device))
        return states

    def put(states, device):
        restored.append((states["cpu"].clone(), device))
        real_set(states, device)
    monkeypatch.setattr(step, "get_rng_states", get)
    monkeypatch.setattr(step, "set_rng_states", put)
    model = _model()
    for layer in model.towers["text"].encoder.layers:  # dropout draws from the generator
        layer.dropout.p = layer.dropout1.p = layer.dropout2.p = 0.3
    backward(model, training_objective(model.config), _batch(), accum_steps=3)
    assert len(saved) == len(restored) == 3
    for (s, d1), (r, d2) in zip(saved, restored):
        assert torch.equal(s, r) and d1 == d2 == model.logit_scale.device
    assert not torch.equal(saved[0][0], saved[1][0])  # each sub-batch has its own state


@pytest.mark.parametrize("mode", ["none", "head"])
def test_replay_never_reruns_a_frozen_backbone(monkeypatch, mode):
    """Cached-negative accumulation: a frozen backbone runs once per sub-batch (the
    graph-free pass); the replay uses its features (head) or skips it (none)."""
    from jointspace.towers.text import TextTransformerTower
    calls = []
    real = TextTransformerTower.features
    monkeypatch.setattr(TextTransformerTower, "features",
                        lambda self, x: calls.append(len(x)) or real(self, x))
    model = _model()
    model.towers["text"].set_trainable(mode)
    _, grads = _grads(model, accum_steps=4)
    assert calls == [6, 6, 6, 6]
    text_grads = {n for n, p in model.named_parameters() if n.startswith("towers.text.") and p.grad is not None}
    assert text_grads == ({"towers.text.proj.weight"} if mode == "head" else set())
    # the head's gradient equals the one without accumulation
    if mode == "head":
        _, direct = _grads(model, accum_steps=1)
        torch.testing.assert_close(grads["towers.text.proj.weight"], direct["towers.text.proj.weight"],
                                   rtol=1e-4, atol=1e-6)
