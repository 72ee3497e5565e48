"""The text half of a local CLIP or SigLIP folder as a tower (``hf_clip_text``).

``path`` is a whole-model folder that ``transformers`` loads offline: ``CLIPModel``,
``SiglipModel`` or ``Siglip2Model``, of which only the text model and its projection are
read (``CLIPTextModelWithProjection`` / ``SiglipTextModel`` / ``Siglip2TextModel`` on the
whole folder: the vision weights stay on disk). The tower computes what the family's
``get_text_features`` computes, from raw strings:

* the folder's own tokenizer (``AutoTokenizer``; CLIP's byte-level BPE, SigLIP's
  SentencePiece with its text canonicalisation), truncating to its
  ``model_max_length`` (CLIP 77, SigLIP 64), then the family's padding:
  CLIP pads with the tokenizer's pad token and passes the attention mask (padded
  only to the batch's longest text: CLIP's attention is causal and it pools the
  ``eos_token_id`` position, so this equals padding to 77); SigLIP always pads to
  ``max_length`` (64) and passes no mask, as SiglipProcessor's documentation
  says, since it pools the last position, padding included;
* :meth:`~HFClipTextTower.features`: the text model's ``pooler_output`` (CLIP: the
  EOS token's final state; SigLIP: the last position's, before its ``head``);
* ``head: pretrained`` (default): ``proj`` *is* the family's projection (CLIP's
  ``text_projection``, bias-free; SigLIP's ``head``), so ``embed_dim`` must be its
  output size; ``head: new``: a fresh trainable ``Linear(hidden, embed_dim)``.

The ``trainable`` modes, ``precision``/``quantize``, the held-aside weights and the
rebuild from a model folder with no access to ``path`` are those of the ``hf``
text tower (:class:`~jointspace.towers.hf_text.HFTextTower`, its module docstring);
the tower's subfolder holds the tokenizer (``save_pretrained``), the text model's
``config.json`` and ``hf_clip_text.json``. Tested with transformers 5.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError, JointspaceError
from .base import TOWERS
from .hf_backbone import InferenceOptions
from .hf_loading import (HF_CONFIG_FILE, LOCAL_ONLY, FolderSource, config_signature,
                         quiet_transformers, read_json, transformers_module)
from .hf_text import HFTextTower

SETTINGS_FILE = "hf_clip_text.json"
HEADS = ("pretrained", "new")


@dataclass(frozen=True)
class TextFamily:
    """Where a whole model keeps its text part. ``loader`` reads only that part of the
    folder's weights (its text model and projection, none of the vision model's);
    ``backbone`` and ``head`` are module paths in it (``""``: the loaded model itself);
    ``masked``: the family passes an attention mask (else it pads to max_length)."""

    loader: str  # the transformers class that loads the text part of the whole folder
    text_class: str  # the class of its text model (rebuilt from the saved config)
    backbone: str
    head: str
    masked: bool
    head_bias: bool  # whether the projection has a bias


#: model_type of a whole-model config.json → its text part
FAMILIES = {
    "clip": TextFamily("CLIPTextModelWithProjection", "CLIPTextModel", "text_model", "text_projection",
                       masked=True, head_bias=False),
    "siglip": TextFamily("SiglipTextModel", "SiglipTextModel", "", "head", masked=False, head_bias=True),
    "siglip2": TextFamily("Siglip2TextModel", "Siglip2TextModel", "", "head", masked=False,
                          head_bias=True),
}


@dataclass
class HFClipTextConfig(InferenceOptions):
    """Options of the ``hf_clip_text`` tower (``precision`` and ``quantize`` of its text
    model: :class:`~.hf_backbone.InferenceOptions`)."""

    #: a local CLIPModel / SiglipModel / Siglip2Model folder ("" in an imported model:
    #: everything comes from the model folder)
    path: str = ""
    #: pretrained: the family's own projection; new: a fresh Linear(hidden, embed_dim)
    head: str = "pretrained"
    #: longest input in tokens; 0 = the tokenizer's model_max_length (CLIP 77, SigLIP 64)
    max_length: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.head not in HEADS:
            raise ConfigError(f"head must be one of {', '.join(HEADS)}, got {self.head!r}")
        if self.max_length < 0:
            raise ConfigError(f"max_length must be 0 (the tokenizer's) or positive, got {self.max_length}")


@TOWERS.register("hf_clip_text")
class HFClipTextTower(HFTextTower):
    """The text encoder of a local CLIP / SigLIP folder with its own tokenizer, padding,
    pooling and projection (see the module docstring).

    >>> tower = build_tower(TowerSpec("hf_clip_text", {"path": "clip"}), 512, "text")  # doctest: +SKIP
    """

    Config = HFClipTextConfig
    pretrained = True

    def __init__(self, config: HFClipTextConfig, embed_dim: int) -> None:
        self.text_class = ""
        self.masked = True
        self.padding_side = "right"
        self._loaded_head: list[nn.Linear] = []  # the family's projection, once loaded
        super().__init__(config, embed_dim)  # builds from path (or holds off: see hf_text)
        if self._loaded_head and config.head == "pretrained":
            head = self._loaded_head.pop()
            if head.out_features != embed_dim:
                raise ConfigError(f"the pretrained text projection of {config.path} gives "
                                  f"{head.out_features}-d vectors, but embed_dim is {embed_dim}; set "
                                  f"model.embed_dim={head.out_features} or the tower's head: new")
            self.proj = head
        self._loaded_head.clear()

    def resolve_path(self) -> Path:
        if not self.config.path:
            raise ConfigError("the hf_clip_text tower needs a path: options: {path: /a/clip/folder} "
                              "(an imported model loads it from its model folder)")
        return Path(self.config.path).expanduser()

    def _build_from_folder(self, folder: Path, src: FolderSource) -> None:
        model_type = str(read_json(src.model_dir / HF_CONFIG_FILE).get("model_type", ""))
        family = FAMILIES.get(model_type)
        if family is None:
            raise ConfigError(f"{folder} holds a {model_type or 'model of unknown type'!r}; the "
                              f"hf_clip_text tower opens whole {', '.join(FAMILIES)} folders (tower "
                              "hf opens other text models)")
        transformers = transformers_module()
        with quiet_transformers():
            try:
                tokenizer = transformers.AutoTokenizer.from_pretrained(
                    str(src.model_dir), **LOCAL_ONLY)
                whole = transformers.AutoConfig.from_pretrained(
                    str(src.model_dir), **LOCAL_ONLY)
                text_config = whole.text_config
                if hasattr(whole, "projection_dim"):
                    text_config.projection_dim = whole.projection_dim  # CLIP's, not the default
                model, info = getattr(transformers, family.loader).from_pretrained(
                    str(src.model_dir), config=text_config, local_files_only=True,
                    trust_remote_code=False, attn_implementation="sdpa", output_loading_info=True)
            except (OSError, ValueError, KeyError, ImportError, RuntimeError) as e:
                raise ConfigError(f"cannot load the {family.loader} in {src.model_dir}: "
                                  f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        missing = sorted(info.get("missing_keys") or ())
        if missing:
            raise ConfigError(f"the weights in {src.model_dir} lack {', '.join(missing[:3])}"
                              f"{' …' if len(missing) > 3 else ''}")
        text = model.get_submodule(family.backbone)
        if not isinstance(text, getattr(transformers, family.text_class)):
            raise ConfigError(f"the hf_clip_text tower needs transformers >= 5 (this one's "
                              f"{family.loader} holds a {type(text).__name__})")
        head = model.get_submodule(family.head)
        if family.backbone == "":
            text.head = nn.Identity()  # SigLIP: the head is the tower's proj, not the backbone's
        self._loaded_head[:] = [head.float()]
        self.text_class, self.masked = family.text_class, family.masked
        self._set_tokenizer(tokenizer, text.config)
        self.source = str(folder)
        self.backbone = text.float()
        self.backbone.eval()

    def _set_tokenizer(self, tokenizer: Any, text_config: Any, max_length: int | None = None) -> None:
        positions = int(text_config.max_position_embeddings)
        folder_len = getattr(tokenizer, "model_max_length", None)
        if not isinstance(folder_len, int) or not 0 < folder_len <= positions:
            folder_len = positions  # an unset model_max_length is a huge number
        length = max_length or self.config.max_length or folder_len
        if length > positions:
            raise ConfigError(f"max_length {length} exceeds the text model's {positions} positions")
        if tokenizer.pad_token_id is None:
            raise ConfigError("the folder's tokenizer has no pad token")
        self.tokenizer = tokenizer
        self.max_seq_length = length
        self.pad_id = int(tokenizer.pad_token_id)
        self.padding_side = str(getattr(tokenizer, "padding_side", "right"))

    # -- data --------------------------------------------------------------------
    def preprocess_one(self, item: Any) -> torch.Tensor:
        """Token ids of one text as the folder's tokenizer gives them (special tokens
        included), truncated to ``max_length``, unpadded."""
        if not isinstance(item, str):
            raise DataError(f"expected a string, got {type(item).__name__}")
        if self.tokenizer is None:
            raise ConfigError(self.unavailable or "text tower has no tokenizer")
        ids = self.tokenizer(item, truncation=True, max_length=self.max_seq_length)["input_ids"]
        return torch.tensor(ids, dtype=torch.long)

    def collate(self, items: Sequence[torch.Tensor]) -> torch.Tensor:
        """Pad on the tokenizer's side: SigLIP with its pad id to ``max_length``; CLIP to the
        longest item with ``-1`` (the mask, read back by :meth:`features`)."""
        if self.tokenizer is None:
            raise ConfigError(self.unavailable or "text tower has no tokenizer")
        length = max(len(t) for t in items) if self.masked else self.max_seq_length
        x = torch.full((len(items), length), -1 if self.masked else self.pad_id, dtype=torch.long)
        for row, t in enumerate(items):
            if self.padding_side == "left":
                x[row, length - len(t):] = t
            else:
                x[row, :len(t)] = t
        return x

    # -- model -------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The text model's ``pooler_output`` → float32 ``[B, hidden]`` (no projection)."""
        self._check_ready()
        mask = None
        if self.masked:
            mask = x >= 0
            x = x.masked_fill(~mask, self.pad_id)
        backbone, ctx = self._runner(x.device)
        with ctx:
            pooled = backbone(input_ids=x, attention_mask=None if mask is None else mask.long()).pooler_output
        return pooled.float()

    @torch.inference_mode()
    def encode_features(self, texts: Sequence[str] | str, batch_size: int = 64,
                        normalize: bool = True) -> torch.Tensor:
        """Pooled features of ``texts`` → float32 ``[N, hidden]`` (L2-normalised unless
        ``normalize=False``), in eval mode, in the order given."""
        self._check_ready()
        texts = [texts] if isinstance(texts, str) else list(texts)
        device = next(self.backbone.parameters()).device
        was_training = self.training
        self.eval()
        out = [torch.zeros(0, self.hidden_size)]
        try:
            for start in range(0, len(texts), batch_size):
                x = self.collate([self.preprocess_one(t) for t in texts[start:start + batch_size]])
                f = self.features(x.to(device)).float().cpu()
                out.append(F.normalize(f, dim=-1) if normalize else f)
        finally:
            self.train(was_training)
        return torch.cat(out)

    # -- assets ------------------------------------------------------------------
    def save_assets(self, folder: Path) -> None:
        """The tokenizer (its own files), the text model's config and the settings."""
        self._check_ready()
        folder = Path(folder)
        with quiet_transformers():
            self.tokenizer.save_pretrained(str(folder))
        self.backbone.config.to_json_file(str(folder / HF_CONFIG_FILE))
        settings = {"text_class": self.text_class, "max_length": self.max_seq_length,
                    "source": self.source}
        (folder / SETTINGS_FILE).write_text(json.dumps(settings, indent=2), encoding="utf-8")

    def load_assets(self, folder: Path) -> None:
        """Read what :meth:`save_assets` wrote; (re)build the text model from the saved
        config when there is none or it differs, and place held-aside weights."""
        folder = Path(folder)
        for name in (HF_CONFIG_FILE, SETTINGS_FILE):
            if not (folder / name).is_file():
                raise JointspaceError(f"model folder {folder} lacks {name} of the text tower")
        settings = read_json(folder / SETTINGS_FILE)
        family = next((f for f in FAMILIES.values() if f.text_class == settings.get("text_class")), None)
        if family is None:
            raise JointspaceError(f"{folder / SETTINGS_FILE}: unknown text_class "
                                  f"{settings.get('text_class')!r}")
        transformers = transformers_module()
        cls = getattr(transformers, family.text_class)
        with quiet_transformers():
            hf_config = cls.config_class.from_pretrained(str(folder), local_files_only=True)
            tokenizer = transformers.AutoTokenizer.from_pretrained(
                str(folder), **LOCAL_ONLY)
        self.text_class, self.masked = family.text_class, family.masked
        if self.backbone is None or config_signature(hf_config) != config_signature(self.backbone.config):
            self._rebuild_text(cls, hf_config)
        bias = family.head_bias or self.config.head == "new"
        if (self.proj.bias is not None) != bias:  # a placeholder proj (built without the folder)
            self.proj = nn.Linear(self.proj.in_features, self.embed_dim, bias=bias).to(self._device())
            self.set_trainable(self.trainable)
            self.train(self.training)
        self._set_tokenizer(tokenizer, hf_config, int(settings["max_length"]))
        self.source = str(settings.get("source", ""))
        self.unavailable = None

    def _rebuild_text(self, cls: Any, hf_config: Any) -> None:
        with quiet_transformers():
            model = cls._from_config(hf_config, attn_implementation="sdpa").float()
        if not self.masked:
            model.head = nn.Identity()  # SigLIP's head lives in proj
        self._adopt_backbone(model.eval(), int(hf_config.hidden_size))

    def _fit_head_to_state(self, state_dict: dict[str, Any], prefix: str) -> None:
        """Also take the incoming projection's bias or its absence (CLIP's has none)."""
        weight = state_dict.get(prefix + "proj.weight")
        if weight is not None and weight.ndim == 2:
            bias = prefix + "proj.bias" in state_dict
            if (self.proj.bias is not None) != bias or self.proj.in_features != weight.shape[1]:
                self.proj = nn.Linear(int(weight.shape[1]), self.embed_dim, bias=bias).to(self._device())
        super()._fit_head_to_state(state_dict, prefix)
