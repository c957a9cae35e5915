"""Text encoders: captions -> token embeddings ``[B, L, D]`` and a padding mask ``[B, L]``.

Three implementations, chosen by ``config.text.encoder``:

- ``'t5'``: the frozen T5 encoder of the reference (``t5-large``, D = 1024), run in Flax from the
  Hugging Face weights (``t5.py``) with the ``transformers`` SentencePiece tokenizer;
- ``'learned'``: a small byte-level pre-LN transformer trained jointly with the U-Net; it needs no
  vocabulary file or download, for offline work and tests;
- ``'words'``: the same transformer over word tokens of a small closed vocabulary derived from a
  caption generator (``config.text.vocabulary``; 'demo': the demo scenes' words). A word is one
  token instead of ~6 bytes, so sequences are ~5x shorter and the encoder need not learn spelling.

All tokenisers pad or truncate to ``config.text.max_length`` and warn when a caption is truncated.
Encoder outputs at padding positions are zero, and padding never influences valid positions.
"""

import dataclasses
import functools
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import transformers

from gcd_jax.data import scenes
from gcd_jax.errors import ConfigError
from gcd_jax.models import t5

PyTree = Any
Tokenizer = Callable[[Sequence[str]], tuple[np.ndarray, np.ndarray]]

# Byte-level vocabulary: id 0 is padding, byte b has id b + 1.
BYTE_PAD_ID = 0
BYTE_VOCAB_SIZE = 257

# Word-level vocabulary: id 0 is padding, id 1 an unknown word, then the sorted vocabulary.
WORD_PAD_ID, WORD_UNKNOWN_ID = 0, 1
_WORD_PATTERN = re.compile(r"\w+|[^\w\s]")  # a run of letters/digits, or one punctuation mark

# Sources of the 'words' encoder's vocabulary, by config.text.vocabulary: () -> text fragments.
VOCABULARIES: dict[str, Callable[[], Sequence[str]]] = {
    "demo": scenes.caption_fragments,
    "demo_shapes": scenes.shape_caption_fragments,
}


@dataclasses.dataclass(frozen=True)
class TextEncoder:
    """A text encoder and its tokenizer.

    Attributes:
        module: ``module.apply({'params': p}, tokens, mask)`` with tokens int32 ``[B, L]`` and mask
            bool ``[B, L]`` (True = real token) -> float32 ``[B, L, D]``, zero where mask is False.
        width: D.
        max_length: L, the length every tokenised batch is padded or truncated to.
        frozen: True when the params come from ``load_params`` and are never trained (T5).
        tokenize: captions -> (tokens int32 ``[B, L]``, mask bool ``[B, L]``); warns on truncation.
        load_params: returns the pretrained params of a frozen encoder; None for a learned one
            (its params are initialised with the rest of the model).
    """

    module: nn.Module
    width: int
    max_length: int
    frozen: bool
    tokenize: Tokenizer
    load_params: Callable[[], PyTree] | None


def _warn_truncated(lengths: Sequence[int], max_length: int, unit: str) -> None:
    longest = max(lengths, default=0)
    if longest > max_length:
        count = sum(n > max_length for n in lengths)
        warnings.warn(
            f"{count} caption(s) truncated to {max_length} {unit} (longest: {longest}); "
            "raise config.text.max_length to keep them whole.",
            stacklevel=3,
        )


def tokenize_bytes(captions: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 bytes + 1, right-padded with 0: tokens int32 ``[B, L]``, mask bool ``[B, L]``.

    A caption longer than ``max_length`` bytes is cut at the last whole character that fits.
    """
    encoded = [caption.encode("utf-8") for caption in captions]
    _warn_truncated([len(b) for b in encoded], max_length, "bytes")
    tokens = np.full((len(captions), max_length), BYTE_PAD_ID, np.int32)
    for row, data in enumerate(encoded):
        data = data[:max_length].decode("utf-8", "ignore").encode("utf-8")
        tokens[row, : len(data)] = np.frombuffer(data, np.uint8).astype(np.int32) + 1
    return tokens, tokens != BYTE_PAD_ID


def split_words(caption: str) -> list[str]:
    """Lower-cased words and punctuation marks: ``"A red, big-ish cat." -> ['a', 'red', ',',
    'big', '-', 'ish', 'cat', '.']``."""
    return _WORD_PATTERN.findall(caption.lower())


def word_vocabulary(fragments: Sequence[str]) -> tuple[str, ...]:
    """The sorted distinct words (``split_words``) of ``fragments``; word i gets token id i + 2."""
    return tuple(sorted({word for fragment in fragments for word in split_words(fragment)}))


def tokenize_words(
    captions: Sequence[str], vocabulary: Sequence[str], max_length: int
) -> tuple[np.ndarray, np.ndarray]:
    """Word ids right-padded with 0: tokens int32 ``[B, L]``, mask bool ``[B, L]``.

    ``vocabulary`` (from ``word_vocabulary``) maps word i to id i + 2; a word outside it becomes
    ``WORD_UNKNOWN_ID`` (still a valid, unmasked token) and is named in a warning. Captions of
    more than ``max_length`` words are cut, with a warning.
    """
    ids = {word: i + 2 for i, word in enumerate(vocabulary)}
    words = [split_words(caption) for caption in captions]
    _warn_truncated([len(w) for w in words], max_length, "words")
    unknown = sorted({w for row in words for w in row if w not in ids})
    if unknown:
        warnings.warn(
            f"{len(unknown)} word(s) outside the text encoder's vocabulary, encoded as unknown: "
            f"{unknown[:10]}.",
            stacklevel=2,
        )
    tokens = np.full((len(captions), max_length), WORD_PAD_ID, np.int32)
    for row, sentence in enumerate(words):
        sentence = sentence[:max_length]
        tokens[row, : len(sentence)] = [ids.get(w, WORD_UNKNOWN_ID) for w in sentence]
    return tokens, tokens != WORD_PAD_ID


def tokenize_hf(
    tokenizer: transformers.PreTrainedTokenizerBase, captions: Sequence[str], max_length: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hugging Face tokenizer (eos appended, truncated then padded): ``[B, L]`` int32 and bool."""
    captions = list(captions)
    _warn_truncated([len(ids) for ids in tokenizer(captions)["input_ids"]], max_length, "tokens")
    batch = tokenizer(
        captions, max_length=max_length, padding="max_length", truncation=True, return_tensors="np"
    )
    return batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(bool)


class TransformerBlock(nn.Module):
    """Pre-LN block: ``x + MHA(LN(x))`` then ``x + MLP(LN(x))``; padding keys are masked out."""

    heads: int
    ff_mult: int

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """x ``[B, L, D]``, mask ``[B, L]`` -> ``[B, L, D]``."""
        h = nn.LayerNorm(name="attention_norm")(x)
        key_mask = mask[:, None, None, :]  # [B, 1, 1, L]: broadcast over heads and queries.
        x = x + nn.MultiHeadDotProductAttention(self.heads, name="attention")(h, h, mask=key_mask)
        h = nn.LayerNorm(name="ffn_norm")(x)
        h = nn.Dense(self.ff_mult * x.shape[-1], name="ffn_in")(h)
        return x + nn.Dense(x.shape[-1], name="ffn_out")(nn.gelu(h))


class TokenTransformer(nn.Module):
    """Learned token encoder: ``tokens int32 [B, L], mask bool [B, L] -> [B, L, width]``.

    Token embedding (``vocab_size`` ids: bytes or words) plus a learned position embedding
    (``L <= max_length``), ``depth`` pre-LN blocks and a final LayerNorm; outputs at padding
    positions are zero. A caption with no valid token (empty string) still gives finite (zero)
    outputs.
    """

    vocab_size: int
    width: int
    depth: int
    heads: int
    ff_mult: int
    max_length: int

    @nn.compact
    def __call__(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
        length = tokens.shape[1]
        if length > self.max_length:
            raise ValueError(f"{length} tokens exceed the encoder's max_length {self.max_length}.")
        position = self.param(
            "position_embedding",
            nn.initializers.normal(0.02),
            (self.max_length, self.width),
        )
        x = nn.Embed(self.vocab_size, self.width, name="token_embedding")(tokens)
        x = x + position[:length]
        for i in range(self.depth):
            x = TransformerBlock(self.heads, self.ff_mult, name=f"block_{i}")(x, mask)
        x = nn.LayerNorm(name="final_norm")(x)
        return jnp.where(mask[..., None], x, 0.0)


def _learned_encoder(
    text: ml_collections.ConfigDict, vocab_size: int, tokenize: Tokenizer
) -> TextEncoder:
    module = TokenTransformer(
        vocab_size=vocab_size,
        width=text.embed_dim,
        depth=text.depth,
        heads=text.heads,
        ff_mult=text.ff_mult,
        max_length=text.max_length,
    )
    return TextEncoder(
        module=module,
        width=text.embed_dim,
        max_length=text.max_length,
        frozen=False,
        tokenize=tokenize,
        load_params=None,
    )


def _build_learned(text: ml_collections.ConfigDict) -> TextEncoder:
    tokenize = functools.partial(tokenize_bytes, max_length=text.max_length)
    return _learned_encoder(text, BYTE_VOCAB_SIZE, tokenize)


def _build_words(text: ml_collections.ConfigDict) -> TextEncoder:
    if text.vocabulary not in VOCABULARIES:
        raise ValueError(
            f"Unknown text.vocabulary {text.vocabulary!r}; valid: {sorted(VOCABULARIES)}."
        )
    vocabulary = word_vocabulary(VOCABULARIES[text.vocabulary]())
    tokenize = functools.partial(tokenize_words, vocabulary=vocabulary, max_length=text.max_length)
    return _learned_encoder(text, len(vocabulary) + 2, tokenize)


def _build_t5(text: ml_collections.ConfigDict) -> TextEncoder:
    folder = t5.resolve_model_dir(text.t5_name)
    config = t5.read_config(folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    return TextEncoder(
        module=t5.T5Encoder(config),
        width=config.d_model,
        max_length=text.max_length,
        frozen=True,
        tokenize=functools.partial(tokenize_hf, tokenizer, max_length=text.max_length),
        load_params=functools.partial(t5.load_params, folder, config),
    )


_ENCODERS: dict[str, Callable[[ml_collections.ConfigDict], TextEncoder]] = {
    "learned": _build_learned,
    "words": _build_words,
    "t5": _build_t5,
}


def build_text_encoder(config: ml_collections.ConfigDict) -> TextEncoder:
    """The text encoder named by ``config.text.encoder`` ('learned' | 'words' | 't5'), from
    config.text."""
    name = config.text.encoder
    if name not in _ENCODERS:
        raise ConfigError(f"Unknown text encoder {name!r}; valid: {sorted(_ENCODERS)}.")
    return _ENCODERS[name](config.text)
