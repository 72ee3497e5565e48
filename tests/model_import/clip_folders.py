"""Tiny random CLIP / SigLIP folders: weights, config, a real tokenizer (CLIP: byte-level
BPE trained here with CLIP's own normaliser and pre-tokeniser; SigLIP: a SentencePiece
model trained here) and the image processor, in the two layouts folders have: CLIP's as
the pinned transformers' ``CLIPProcessor.save_pretrained`` alone writes it (the image
processor's settings nested in ``processor_config.json``), SigLIP's as hub folders have it
(tokenizer files and ``preprocessor_config.json``, no ``processor_config.json``)."""
from __future__ import annotations

import io
import math
from pathlib import Path

import torch
import transformers

SENTENCES = ["a photo of a red circle", "a blue square on a green background", "two small triangles",
             "a large yellow star", "the cat sat on the mat", "a picture of a dog", "three shapes near "
             "each other", "an orange hexagon, top left", "A PURPLE Rhombus!", "photo 42 of things"]
CLIP_PATTERN = (r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]"""
                r"""|[^\s\p{L}\p{N}]+""")
#: texts that exercise the tokenizers: case, punctuation, digits, unknown words, empty, too long
TEXTS = ["a photo of a red circle", "A Blue SQUARE, on green!", "", "zebra quokka 123",
         "two small triangles " * 30, "a photo of a dog"]


def clip_tokenizer(specials_last: bool = False) -> transformers.CLIPTokenizer:
    """CLIP's tokenizer class over a BPE vocabulary trained on :data:`SENTENCES`;
    ``specials_last``: ``<|startoftext|>`` and ``<|endoftext|>`` take the two highest ids,
    as in OpenAI's vocabulary (49406, 49407)."""
    import json

    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE

    tok = Tokenizer(BPE(unk_token="<|endoftext|>", continuing_subword_prefix="",
                        end_of_word_suffix="</w>", fuse_unk=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CLIP_PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|startoftext|>", "<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  end_of_word_suffix="</w>", show_progress=False)
    tok.train_from_iterator(SENTENCES * 3, trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    vocab = model["vocab"]
    if specials_last:
        specials = ["<|startoftext|>", "<|endoftext|>"]
        order = sorted((t for t in vocab if t not in specials), key=vocab.get) + specials
        vocab = {t: i for i, t in enumerate(order)}
    return transformers.CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def write_tiny_clip(folder: Path, *, seed: int = 0, projection_dim: int = 16,
                    logit_scale: float = 3.1, legacy_eos: bool = False) -> Path:
    """A random ``CLIPModel`` (hidden 32, 2 layers, 32 px images) with CLIPProcessor files.
    ``legacy_eos``: the text config's token ids of OpenAI's checkpoints (bos 0, eos 2, pad 1,
    none of them the tokenizer's), with which transformers pools the position of the highest
    token id, and the tokenizer's specials at the highest ids, as in OpenAI's vocabulary."""
    folder.mkdir(parents=True, exist_ok=True)
    tok = clip_tokenizer(specials_last=legacy_eos)
    layers = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4)
    ids = (dict(bos_token_id=0, eos_token_id=2, pad_token_id=1) if legacy_eos else
           dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    config = transformers.CLIPConfig(
        text_config=dict(vocab_size=len(tok), max_position_embeddings=77, **ids, **layers),
        vision_config=dict(image_size=32, patch_size=8, **layers), projection_dim=projection_dim)
    torch.manual_seed(seed)
    model = transformers.CLIPModel(config).eval()
    with torch.no_grad():
        model.logit_scale.fill_(logit_scale)  # not the init value, so a copy can be told apart
    image = transformers.CLIPImageProcessor(size={"shortest_edge": 32},
                                            crop_size={"height": 32, "width": 32})
    model.save_pretrained(str(folder))
    # processor_config.json only: no preprocessor_config.json
    transformers.CLIPProcessor(image_processor=image, tokenizer=tok).save_pretrained(str(folder))
    return folder


def siglip_tokenizer(folder: Path) -> transformers.SiglipTokenizer:
    """SigLIP's tokenizer class over a SentencePiece model trained on :data:`SENTENCES`."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES * 10), model_writer=buf, vocab_size=48, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>",
        unk_piece="<unk>", character_coverage=1.0, minloglevel=2)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spiece.model").write_bytes(buf.getvalue())
    return transformers.SiglipTokenizer(vocab_file=str(folder / "spiece.model"), model_max_length=64)


def write_tiny_siglip(folder: Path, *, seed: int = 0, logit_scale: float = math.log(10) + 0.4,
                      logit_bias: float = -7.5) -> Path:
    """A random ``SiglipModel`` (hidden 32, 2 layers, 32 px, 64 text positions) with
    SiglipProcessor files; ``logit_scale``/``logit_bias`` set (its init is 0, 0)."""
    tok = siglip_tokenizer(folder)
    layers = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4)
    config = transformers.SiglipConfig(
        text_config=dict(vocab_size=tok.vocab_size, max_position_embeddings=64, projection_size=32,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
                         **layers),
        vision_config=dict(image_size=32, patch_size=8, **layers))
    torch.manual_seed(seed)
    model = transformers.SiglipModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # SigLIP's init leaves some layers at zero: use them all
            p.add_(0.02 * torch.randn_like(p))
        model.logit_scale.fill_(logit_scale)
        model.logit_bias.fill_(logit_bias)
    image = transformers.SiglipImageProcessor(size={"height": 32, "width": 32})
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))  # the hub's layout: tokenizer and image processor files apart
    image.save_pretrained(str(folder))
    return folder


def siglip2_tokenizer() -> transformers.Siglip2Tokenizer:
    """SigLIP 2's (Gemma) tokenizer class over a byte-fallback BPE trained on :data:`SENTENCES`;
    it pads on the left, as the class does by default."""
    import json

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous")
    tok.train_from_iterator(SENTENCES * 3, trainers.BpeTrainer(
        vocab_size=120, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"],
        show_progress=False))
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return transformers.Siglip2Tokenizer(vocab=model["vocab"], merges=merges, model_max_length=64)


def write_tiny_siglip2(folder: Path, *, seed: int = 0) -> Path:
    """A random ``Siglip2Model`` (hidden 32, 2 layers) with Siglip2Processor files."""
    folder.mkdir(parents=True, exist_ok=True)
    tok = siglip2_tokenizer()
    layers = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4)
    config = transformers.Siglip2Config(
        text_config=dict(vocab_size=len(tok), max_position_embeddings=64, projection_size=32,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                         bos_token_id=tok.bos_token_id, **layers),
        vision_config=dict(num_patches=16, patch_size=8, **layers))
    torch.manual_seed(seed)
    model = transformers.Siglip2Model(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    model.save_pretrained(str(folder))
    image = transformers.Siglip2ImageProcessor(patch_size=8, max_num_patches=16)
    transformers.Siglip2Processor(image_processor=image, tokenizer=tok).save_pretrained(str(folder))
    image.save_pretrained(str(folder))
    return folder


def reference(folder: Path) -> tuple[torch.nn.Module, object]:
    """transformers' own model and processor for a folder (offline)."""
    model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    processor = transformers.AutoProcessor.from_pretrained(str(folder), local_files_only=True)
    return model, processor


def reference_text(model, processor, texts: list[str], **padding) -> torch.Tensor:
    """``get_text_features`` of raw strings through the folder's processor, L2-normalised.
    SigLIP: ``padding="max_length"`` (64) and no attention mask, as its documentation says."""
    siglip = "siglip" in model.config.model_type
    kwargs = padding or ({"padding": "max_length", "max_length": 64} if siglip else {"padding": True})
    inputs = processor(text=texts, truncation=True, return_tensors="pt", **kwargs)
    if siglip:
        inputs.pop("attention_mask", None)
    with torch.no_grad():
        out = model.get_text_features(**inputs).pooler_output
    return torch.nn.functional.normalize(out, dim=-1)


def reference_images(model, processor, paths: list[Path]) -> torch.Tensor:
    """``get_image_features`` of image files through the folder's processor, L2-normalised."""
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in paths]
    inputs = processor(images=images, return_tensors="pt")
    with torch.no_grad():
        out = model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
    return torch.nn.functional.normalize(out, dim=-1)
