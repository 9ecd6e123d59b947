"""A small CLIP for digits, with captions that the code writes from each image's own pixels (chapter 5).

CLIP (Radford et al. 2021) trains an image encoder and a text encoder so that an image and its
caption land close together in one embedding space: in a batch of B pairs, each image must pick
its caption among the B captions and each caption its image (a symmetric cross-entropy over the
B x B matrix of cosine similarities times a learned inverse temperature, "InfoNCE").

Nobody has captioned MNIST, so the captions are generated, and everything they say is checkable:

- the digit's name ("seven"), from the label;
- three attributes measured from the pixels (:func:`measure_attributes`): stroke **thickness**
  (twice the mean distance from an ink pixel to the background), **size** (the square root of the
  ink's bounding-box area) and **slant** (how far the ink's x moves per row upwards, from image
  moments). Each is cut into thirds *within its digit class* on the bundled training digits
  (:func:`attribute_thresholds`), so "a thick one" means thick for a one: the lowest third is
  "thin" / "small" / "left-slanted", the highest "thick" / "large" / "right-slanted"; a middle slant
  is "upright" and a middle thickness or size goes unsaid.

A training caption keeps each attribute with probability 1/2, e.g. "a thick, left-slanted seven"
or just "a seven", so that short prompts work too. Captions repeat (there are 10 x 27 full ones),
so pairs in a batch with the same caption text are all counted as matches (soft targets), not
as each other's negatives.

The text encoder is transformers' ``CLIPTextModelWithProjection`` (configured small), and its
tokenizer is transformers' ``CLIPTokenizer`` reading a vocabulary that :func:`write_tokenizer`
writes -- the byte-level base of CLIP's BPE plus merges that make each caption word one token --
so chapter 6 can put this text tower into diffusers' Stable Diffusion pipelines. Nothing is
downloaded.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from coursekit.checkpoint import register_model

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ATTRIBUTES = ("thickness", "size", "slant")
# words for the lowest and highest third of each attribute (within a digit class); None = unsaid
ATTRIBUTE_WORDS = {"thickness": ("thin", None, "thick"), "size": ("small", None, "large"),
                   "slant": ("left-slanted", "upright", "right-slanted")}
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
CONTEXT_LENGTH = 12  # tokens, with BOS and EOS: the longest caption, "an upright, thick, large, ... seven", has 10


# ----------------------------------------------------------------------------------------------
# Attributes measured from pixels, and captions
# ----------------------------------------------------------------------------------------------

def measure_attributes(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Thickness, size and slant of each ``(N, 1, 28, 28)`` digit in [0, 1] (float64 tensors of shape (N,)).

    - thickness: 2 x the mean Euclidean distance from an ink pixel (> 0.5) to the nearest background
      pixel, i.e. roughly the stroke width in pixels;
    - size: sqrt of the area of the bounding box of the pixels > 0.3, in pixels;
    - slant: the least-squares shift of x per unit of height, from the intensity-weighted second
      moments (cov(x, y) / var(y), y pointing up): > 0 leans right, < 0 leans left.
    """
    from scipy.ndimage import distance_transform_edt

    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"expected images of shape (N, 1, H, W) in [0, 1], got {tuple(images.shape)}")
    pixels = images[:, 0].double().cpu().numpy()
    n, height, width = pixels.shape
    thickness = np.zeros(n)
    size = np.zeros(n)
    for i, image in enumerate(pixels):
        ink = image > 0.5
        if ink.any():
            thickness[i] = 2 * distance_transform_edt(ink)[ink].mean()
        rows, cols = np.nonzero(image > 0.3)
        if len(rows):
            size[i] = math.sqrt((rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1))
    ys = -np.arange(height, dtype=np.float64)[None, :, None]  # y points up
    xs = np.arange(width, dtype=np.float64)[None, None, :]
    mass = pixels.sum(axis=(1, 2)).clip(min=1e-8)
    mean_x = (pixels * xs).sum(axis=(1, 2)) / mass
    mean_y = (pixels * ys).sum(axis=(1, 2)) / mass
    dx, dy = xs - mean_x[:, None, None], ys - mean_y[:, None, None]
    slant = (pixels * dx * dy).sum(axis=(1, 2)) / (pixels * dy * dy).sum(axis=(1, 2)).clip(min=1e-8)
    return {"thickness": torch.from_numpy(thickness), "size": torch.from_numpy(size),
            "slant": torch.from_numpy(slant)}


@lru_cache(maxsize=1)
def attribute_thresholds() -> dict[str, torch.Tensor]:
    """Per attribute, a (10, 2) tensor: the 1/3 and 2/3 quantiles of each digit class among the
    4,000 bundled training digits (the cuts between low, middle and high)."""
    from coursekit.data import load_mnist

    train = load_mnist("train", source="bundled")
    measured = measure_attributes(train.images)
    out = {}
    for name, values in measured.items():
        out[name] = torch.stack([torch.quantile(values[train.labels == d], torch.tensor([1 / 3, 2 / 3], dtype=torch.float64))
                                 for d in range(10)])
    return out


def attribute_levels(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(N, 3)`` int64: for each digit, its third (0 low, 1 middle, 2 high) of thickness, size and
    slant within its own class (columns in the order of ``ATTRIBUTES``)."""
    measured, cuts = measure_attributes(images), attribute_thresholds()
    labels = torch.as_tensor(labels).long().cpu()
    columns = []
    for name in ATTRIBUTES:
        low, high = cuts[name][labels, 0], cuts[name][labels, 1]
        values = measured[name]
        columns.append((values > low).long() + (values > high).long())
    return torch.stack(columns, dim=1)


def caption(digit: int, levels=None, keep=(True, True, True)) -> str:
    """The caption of a digit with attribute levels (thickness, size, slant), saying the attributes
    for which ``keep`` is True and that have a word at their level: e.g. "a thick, left-slanted seven"."""
    if not 0 <= int(digit) <= 9:
        raise ValueError(f"digit must be 0..9, got {digit}")
    words = []
    if levels is not None:
        for name, level, kept in zip(ATTRIBUTES, levels, keep):
            word = ATTRIBUTE_WORDS[name][int(level)]
            if kept and word is not None:
                words.append(word)
    # English order of adjectives: opinion/size before shape; we say thickness, size, then slant
    phrase = ", ".join(words) + (" " if words else "") + DIGIT_NAMES[int(digit)]
    # the article goes by sound: "an eight", "an upright one", but "a one" (said "wun")
    article = "an" if phrase.split()[0].rstrip(",") in ("eight", "upright") else "a"
    return f"{article} {phrase}"


def random_captions(labels: torch.Tensor, levels: torch.Tensor, keep_prob: float = 0.5,
                    generator: torch.Generator | None = None) -> list[str]:
    """One caption per digit, each attribute said with probability ``keep_prob``."""
    keep = torch.rand(levels.shape, generator=generator, device=generator.device if generator is not None else "cpu") < keep_prob
    keep = keep.cpu()
    return [caption(int(d), lv.tolist(), k.tolist()) for d, lv, k in zip(labels.cpu(), levels.cpu(), keep)]


# ----------------------------------------------------------------------------------------------
# The tokenizer: CLIP's byte-level BPE with a vocabulary written here
# ----------------------------------------------------------------------------------------------

def _bytes_to_unicode() -> list[str]:
    """CLIP's (and GPT-2's) map from the 256 byte values to printable characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def caption_words() -> list[str]:
    """Every word the captions use, as CLIP's pre-tokenizer splits them (letters only; "-" and "," apart)."""
    words = ["a", "an", *DIGIT_NAMES]
    for names in ATTRIBUTE_WORDS.values():
        for name in names:
            if name:
                words += name.split("-")
    return list(dict.fromkeys(words))


def _apply_merges(pieces: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """BPE as CLIP applies it: merge the adjacent pair of lowest rank until none is in ``ranks``."""
    while len(pieces) > 1:
        pairs = [(ranks.get((a, b), math.inf), i) for i, (a, b) in enumerate(zip(pieces, pieces[1:]))]
        rank, i = min(pairs)
        if rank == math.inf:
            break
        pieces = pieces[:i] + [pieces[i] + pieces[i + 1]] + pieces[i + 2:]
    return pieces


def build_vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's 512 byte-level base tokens (each byte, and each byte ending a word), merges that turn
    every caption word into a single token, and the start and end tokens."""
    base = _bytes_to_unicode()
    tokens = base + [c + "</w>" for c in base]
    merges: list[tuple[str, str]] = []
    for word in caption_words():
        while True:
            pieces = _apply_merges(list(word[:-1]) + [word[-1] + "</w>"], {m: r for r, m in enumerate(merges)})
            if len(pieces) == 1:
                break
            merges.append((pieces[0], pieces[1]))  # the newest merge has the highest rank: applied last
            if pieces[0] + pieces[1] not in tokens:
                tokens.append(pieces[0] + pieces[1])
    tokens += [BOS, EOS]
    return {token: i for i, token in enumerate(tokens)}, merges


def write_tokenizer(directory: str | Path) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` (the files ``CLIPTokenizer.from_pretrained`` reads) to ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocabulary()
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    (directory / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}))
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "CLIPTokenizer", "model_max_length": CONTEXT_LENGTH, "bos_token": BOS, "eos_token": EOS,
         "unk_token": EOS, "pad_token": EOS, "do_lower_case": True}))
    return directory


@lru_cache(maxsize=1)
def load_tokenizer():
    """transformers' ``CLIPTokenizer`` on the vocabulary of :func:`write_tokenizer` (written to a temporary folder)."""
    from transformers import CLIPTokenizer

    directory = write_tokenizer(Path(tempfile.mkdtemp(prefix="coursekit-tokenizer-")))
    return CLIPTokenizer.from_pretrained(str(directory))


def tokenize(texts: list[str] | str, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` of shape (B, CONTEXT_LENGTH), padded with the end token."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    out = load_tokenizer()(texts, padding="max_length", max_length=CONTEXT_LENGTH, truncation=True, return_tensors="pt")
    return {"input_ids": out["input_ids"].to(device), "attention_mask": out["attention_mask"].to(device)}


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------

@dataclass
class CLIPConfig:
    embed_dim: int = 64            # the shared embedding space
    image_channels: tuple[int, ...] = (32, 64, 128)
    text_width: int = 64           # the text transformer's hidden size (what a U-Net cross-attends to)
    text_layers: int = 3
    text_heads: int = 4
    init_temperature: float = 0.07

    def __post_init__(self):
        self.image_channels = tuple(self.image_channels)


class ImageEncoder(nn.Module):
    """A small CNN: 28 -> 14 -> 7 pixels, then a linear map of the whole 7 x 7 feature map to the embedding.

    Not global average pooling: after GroupNorm, the spatial mean of each group is fixed, so a pooled
    vector says little about where the strokes are (a model built that way did not learn at all)."""

    def __init__(self, channels: tuple[int, ...], embed_dim: int):
        super().__init__()
        layers, previous = [], 1
        for i, width in enumerate(channels):
            layers += [nn.Conv2d(previous, width, 3, stride=1 if i == 0 else 2, padding=1), nn.GroupNorm(8, width), nn.SiLU(),
                       nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(8, width), nn.SiLU()]
            previous = width
        self.features = nn.Sequential(*layers)
        side = 28 // 2 ** (len(channels) - 1)
        self.proj = nn.Linear(previous * side * side, embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(images).flatten(1))


def text_config(config: CLIPConfig):
    from transformers import CLIPTextConfig

    vocab, _ = build_vocabulary()
    return CLIPTextConfig(vocab_size=len(vocab), hidden_size=config.text_width, intermediate_size=4 * config.text_width,
                          projection_dim=config.embed_dim, num_hidden_layers=config.text_layers,
                          num_attention_heads=config.text_heads, max_position_embeddings=CONTEXT_LENGTH,
                          bos_token_id=vocab[BOS], eos_token_id=vocab[EOS], pad_token_id=vocab[EOS])


@register_model("clip", CLIPConfig)
class DigitCLIP(nn.Module):
    """Image and text encoders into one normalised embedding space, and the learned temperature."""

    def __init__(self, config: CLIPConfig | None = None):
        super().__init__()
        from transformers import CLIPTextModelWithProjection

        self.config = config = config or CLIPConfig()
        self.image_encoder = ImageEncoder(config.image_channels, config.embed_dim)
        self.text_encoder = CLIPTextModelWithProjection(text_config(config))
        # logits = exp(logit_scale) * cosine similarity; CLIP starts at 1 / 0.07 and caps it at 100
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / config.init_temperature)))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings (N, embed_dim) of ``(N, 1, 28, 28)`` images in [0, 1]."""
        if images.ndim != 4 or images.shape[1:] != (1, 28, 28):
            raise ValueError(f"expected images of shape (N, 1, 28, 28) in [0, 1], got {tuple(images.shape)}")
        return F.normalize(self.image_encoder(images), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Unit-norm embeddings (B, embed_dim) of tokenized texts (the end token's features, projected)."""
        return F.normalize(self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).text_embeds, dim=-1)

    def encode_prompts(self, texts: list[str] | str) -> torch.Tensor:
        device = self.logit_scale.device
        return self.encode_text(**tokenize(texts, device))

    def text_features(self, texts: list[str] | str) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-token features (B, CONTEXT_LENGTH, text_width) a U-Net cross-attends to, and the attention mask."""
        tokens = tokenize(texts, self.logit_scale.device)
        hidden = self.text_encoder.text_model(**tokens).last_hidden_state
        return hidden, tokens["attention_mask"]

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """Logits image -> text (N, B): the scaled cosine similarities."""
        scale = self.logit_scale.clamp(max=math.log(100)).exp()
        return scale * self.encode_image(images) @ self.encode_text(input_ids, attention_mask).T


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image moved by a random whole number of pixels in -max_shift..max_shift along each axis
    (background 0 comes in at the edges); thickness, size and slant do not change."""
    if max_shift <= 0:
        return images
    n, _, h, w = images.shape
    device = generator.device if generator is not None else images.device
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=generator, device=device).tolist()
    padded = F.pad(images, (max_shift,) * 4)
    return torch.stack([padded[i, :, max_shift - dy:max_shift - dy + h, max_shift - dx:max_shift - dx + w]
                        for i, (dy, dx) in enumerate(shifts)])


def clip_loss(model: DigitCLIP, batch, generator: torch.Generator | None = None, keep_prob: float = 0.5,
              max_shift: int = 0) -> torch.Tensor:
    """Symmetric InfoNCE on a batch (images in [0, 1], labels, attribute levels (N, 3)) with freshly drawn
    captions; pairs whose captions are the same text are all targets (each row's targets sum to 1).
    ``max_shift`` > 0 moves each image by a few pixels first (augmentation)."""
    images, labels, levels = random_shift(batch[0], max_shift, generator), batch[1], batch[2]
    texts = random_captions(labels, levels, keep_prob, generator)
    tokens = tokenize(texts, images.device)
    logits = model(images, **tokens)
    ids = {text: i for i, text in enumerate(dict.fromkeys(texts))}
    caption_ids = torch.tensor([ids[t] for t in texts], device=images.device)
    targets = (caption_ids[:, None] == caption_ids[None, :]).float()
    targets = targets / targets.sum(dim=1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


# ----------------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------------

@torch.no_grad()
def zero_shot_digits(model: DigitCLIP, images: torch.Tensor) -> torch.Tensor:
    """The digit each image is closest to among the prompts "a zero", "a one", ..., "a nine"."""
    model.eval()
    prompts = model.encode_prompts([caption(d) for d in range(10)])
    return torch.cat([(model.encode_image(images[i:i + 500].to(prompts.device)) @ prompts.T).argmax(1).cpu()
                      for i in range(0, len(images), 500)])


@torch.no_grad()
def attribute_accuracy(model: DigitCLIP, images: torch.Tensor, labels: torch.Tensor) -> dict[str, dict]:
    """For each attribute, over the digits in its lowest or highest third: how often the image is closer
    to the right one of the two prompts "a <low word> <digit>" and "a <high word> <digit>" (the true digit)."""
    model.eval()
    levels = attribute_levels(images, labels)
    embeddings = torch.cat([model.encode_image(images[i:i + 500].to(model.logit_scale.device)).cpu()
                            for i in range(0, len(images), 500)])
    out = {}
    for column, name in enumerate(ATTRIBUTES):
        only = [j == column for j in range(3)]  # the prompts say this attribute and the digit, nothing else
        low_prompts = model.encode_prompts([caption(d, [0, 0, 0], only) for d in range(10)]).cpu()
        high_prompts = model.encode_prompts([caption(d, [2, 2, 2], only) for d in range(10)]).cpu()
        extreme = levels[:, column] != 1
        digits, chosen = labels[extreme].long(), embeddings[extreme]
        says_high = (chosen * high_prompts[digits]).sum(1) > (chosen * low_prompts[digits]).sum(1)
        correct = says_high == (levels[extreme, column] == 2)
        out[name] = {"accuracy": round(correct.float().mean().item(), 4), "images": int(extreme.sum()),
                     "prompts": [caption(7, [0, 0, 0], only), caption(7, [2, 2, 2], only)]}
    return out


@torch.no_grad()
def retrieval_recall(model: DigitCLIP, images: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[str, float]:
    """Recall@k both ways between images and their full captions (every attribute said). Captions
    repeat, so a retrieved caption (image) counts as a hit when its text equals the query's caption
    (the query image's caption)."""
    model.eval()
    levels = attribute_levels(images, labels)
    texts = [caption(int(d), lv.tolist()) for d, lv in zip(labels, levels)]
    device = model.logit_scale.device
    image_emb = torch.cat([model.encode_image(images[i:i + 500].to(device)).cpu() for i in range(0, len(images), 500)])
    text_emb = torch.cat([model.encode_prompts(texts[i:i + 500]).cpu() for i in range(0, len(texts), 500)])
    ids = {t: i for i, t in enumerate(dict.fromkeys(texts))}
    caption_ids = torch.tensor([ids[t] for t in texts])
    similarity = image_emb @ text_emb.T
    out = {}
    for k in ks:
        i2t = caption_ids[similarity.topk(k, dim=1).indices] == caption_ids[:, None]
        t2i = caption_ids[similarity.T.topk(k, dim=1).indices] == caption_ids[:, None]
        out[f"image_to_text_recall@{k}"] = round(i2t.any(1).float().mean().item(), 4)
        out[f"text_to_image_recall@{k}"] = round(t2i.any(1).float().mean().item(), 4)
    out["distinct_captions"] = len(ids)
    return out
