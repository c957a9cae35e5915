"""Text encoders: the Flax T5 against Hugging Face's PyTorch T5EncoderModel, the byte and word
encoders.

The T5 references (tiny random checkpoints, a SentencePiece tokenizer, the reference tokenizer's
ids and the PyTorch encoder's float64 outputs) are written by tests/fixtures/make_t5_fixtures.py.
"""

import json
import pathlib
import shutil
import time
import warnings

import huggingface_hub
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from experiments import base
from gcd_jax.data import scenes
from gcd_jax.models import t5, text

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
STYLES = ["relu", "gated"]  # T5 v1.0 (ReLU) and v1.1 (gated GELU)
LONG_CAPTION = 2  # Index of the caption that the fixture's max_length truncates.


def t5_encoder(folder: pathlib.Path, max_length: int) -> text.TextEncoder:
    config = base.get_config()
    config.text.encoder = "t5"
    config.text.t5_name = str(folder)
    config.text.max_length = max_length
    return text.build_text_encoder(config)


def learned_encoder(max_length: int = 32) -> text.TextEncoder:
    config = base.get_config()
    config.text.encoder = "learned"
    config.text.max_length = max_length
    config.text.embed_dim, config.text.depth, config.text.heads = 16, 2, 2
    return text.build_text_encoder(config)


@pytest.mark.parametrize("style", STYLES)
def test_t5_matches_pytorch_reference(style):
    folder = FIXTURES / f"t5_tiny_{style}"
    ref = np.load(folder / "reference.npz")
    encoder = t5_encoder(folder, max_length=ref["tokens"].shape[1])
    assert (encoder.width, encoder.frozen) == (ref["outputs"].shape[-1], True)
    params = encoder.load_params()
    out = np.asarray(jax.jit(encoder.module.apply)({"params": params}, ref["tokens"], ref["mask"]))
    assert out.dtype == np.float32 and out.shape == ref["outputs"].shape
    valid = ref["mask"]
    rel_err = np.max(np.abs(out[valid] - ref["outputs"][valid])) / np.max(np.abs(ref["outputs"]))
    assert rel_err < 1e-5
    np.testing.assert_array_equal(out[~valid], 0.0)


@pytest.mark.parametrize("style", STYLES)
def test_t5_tokenize_gives_reference_ids(style):
    folder = FIXTURES / f"t5_tiny_{style}"
    ref = np.load(folder / "reference.npz")
    encoder = t5_encoder(folder, max_length=ref["tokens"].shape[1])
    with pytest.warns(UserWarning, match="1 caption"):
        tokens, mask = encoder.tokenize(list(ref["captions"]))
    assert tokens.dtype == np.int32 and mask.dtype == np.bool_
    np.testing.assert_array_equal(tokens, ref["tokens"])
    np.testing.assert_array_equal(mask, ref["mask"])
    short = [c for i, c in enumerate(ref["captions"]) if i != LONG_CAPTION]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoder.tokenize(short)


def test_relative_position_buckets_hand_computed():
    # T5 defaults (32 buckets, max distance 128): 16 buckets per direction, 8 of them exact; larger
    # distances d get 8 + floor(log(d / 8) / log(16) * 8), capped at 15.
    buckets = t5.relative_position_buckets(200, 32, 128)
    key_minus_query = {0: 0, -1: 1, 1: 17, -7: 7, 7: 23, -8: 8, 8: 24, -16: 10, -127: 15, 199: 31}
    for offset, want in key_minus_query.items():
        query = 0 if offset >= 0 else -offset
        assert buckets[query, query + offset] == want, offset


def test_missing_t5_model_fails_fast_with_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    cases = {
        "gcd-jax/no-such-t5": "nor in the local Hugging Face cache.*hf download gcd-jax/no-such-t5",
        str(tmp_path / "no_such_folder"): "no_such_folder' does not exist",
    }
    for name, message in cases.items():
        start = time.monotonic()
        with pytest.raises(FileNotFoundError, match=message):
            t5_encoder(name, max_length=8)
        assert time.monotonic() - start < 5.0


def test_t5_checkpoint_missing_tensor_is_named(tmp_path):
    folder = tmp_path / "t5"
    shutil.copytree(FIXTURES / "t5_tiny_gated", folder)
    tensors = safetensors.numpy.load_file(folder / "model.safetensors")
    del tensors["encoder.block.1.layer.1.DenseReluDense.wi_1.weight"]
    safetensors.numpy.save_file(tensors, folder / "model.safetensors")
    with pytest.raises(
        ValueError, match=r"lacks tensors.*block\.1\.layer\.1\.DenseReluDense\.wi_1"
    ):
        t5_encoder(folder, max_length=8).load_params()


def test_t5_sharded_checkpoint_loads_like_single_file(tmp_path):
    folder = tmp_path / "t5"
    shutil.copytree(FIXTURES / "t5_tiny_gated", folder)
    tensors = safetensors.numpy.load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {
        "model-00001-of-00002.safetensors": names[::2],
        "model-00002-of-00002.safetensors": names[1::2],
    }
    for file, shard in shards.items():
        safetensors.numpy.save_file({n: tensors[n] for n in shard}, folder / file)
    weight_map = {n: file for file, shard in shards.items() for n in shard}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    sharded = t5_encoder(folder, max_length=8).load_params()
    single = t5_encoder(FIXTURES / "t5_tiny_gated", max_length=8).load_params()
    jax.tree.map(np.testing.assert_array_equal, sharded, single)
    np.testing.assert_array_equal(
        sharded["block_1"]["ffn"]["wi_0"]["kernel"],
        tensors["encoder.block.1.layer.1.DenseReluDense.wi_0.weight"].T,
    )


def test_t5_checkpoint_shape_mismatch_is_named(tmp_path):
    folder = tmp_path / "t5"
    shutil.copytree(FIXTURES / "t5_tiny_relu", folder)
    config = (folder / "config.json").read_text()
    (folder / "config.json").write_text(config.replace('"d_ff": 32', '"d_ff": 48'))
    with pytest.raises(ValueError, match=r"does not match.*DenseReluDense\.wi\.weight"):
        t5_encoder(folder, max_length=8).load_params()


def test_unknown_encoder_lists_valid_names():
    config = base.get_config()
    config.text.encoder = "bert"
    with pytest.raises(ValueError, match=r"'bert'.*\['learned', 't5', 'words'\]"):
        text.build_text_encoder(config)


@pytest.mark.parametrize("caption", ["A street with cars.", "Ünïcödé façade — 東京 🚗"])
def test_byte_tokenizer_round_trip(caption):
    tokens, mask = text.tokenize_bytes([caption, ""], max_length=64)
    want = np.frombuffer(caption.encode("utf-8"), np.uint8).astype(np.int32) + 1
    assert tokens.shape == mask.shape == (2, 64) and tokens.dtype == np.int32
    np.testing.assert_array_equal(tokens[0, : len(want)], want)
    np.testing.assert_array_equal(mask[0], np.arange(64) < len(want))
    assert bytes((tokens[0][mask[0]] - 1).astype(np.uint8)).decode("utf-8") == caption
    assert not mask[1].any() and not tokens[1].any()


def test_byte_tokenizer_truncates_whole_characters_and_warns():
    with pytest.warns(UserWarning, match="2 caption"):
        tokens, mask = text.tokenize_bytes(["abcdefgh", "ééé", "abc"], max_length=5)
    decoded = [
        bytes((row[m] - 1).astype(np.uint8)).decode("utf-8")
        for row, m in zip(tokens, mask, strict=True)
    ]
    assert decoded == ["abcde", "éé", "abc"]  # "ééé" is 6 bytes; the third é would be cut in half.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        text.tokenize_bytes(["abcde"], max_length=5)


def test_learned_encoder_ignores_padding():
    encoder = learned_encoder(max_length=32)
    assert (encoder.width, encoder.frozen, encoder.load_params) == (16, False, None)
    tokens, mask = encoder.tokenize(["a red car", "Grüße", ""])
    tokens, mask = tokens[:, :16], mask[:, :16]
    params = jax.jit(encoder.module.init)(jax.random.key(0), tokens, mask)["params"]
    apply = jax.jit(encoder.module.apply)
    out = np.asarray(apply({"params": params}, tokens, mask))
    assert out.shape == (3, 16, 16) and np.all(np.isfinite(out))
    np.testing.assert_array_equal(out[~mask], 0.0)

    # Longer padding, and garbage tokens where mask is False: valid positions unchanged.
    padded = np.pad(tokens, ((0, 0), (0, 16)))
    padded_mask = np.pad(mask, ((0, 0), (0, 16)))
    garbage = np.where(padded_mask, padded, np.random.default_rng(0).integers(1, 257, padded.shape))
    for candidate in [padded, garbage]:
        out_long = np.asarray(apply({"params": params}, jnp.asarray(candidate), padded_mask))
        np.testing.assert_allclose(out_long[:, :16][mask], out[mask], atol=1e-5)

    # A valid token does change the others: the check above can fail.
    changed = tokens.copy()
    changed[0, 1] += 1
    out_changed = np.asarray(apply({"params": params}, changed, mask))
    assert np.abs(out_changed[0, 0] - out[0, 0]).max() > 1e-3


DEMO_VOCABULARY = text.word_vocabulary(scenes.caption_fragments())


def test_word_vocabulary_covers_every_demo_caption():
    assert len(DEMO_VOCABULARY) == len(set(DEMO_VOCABULARY)) == 34
    assert DEMO_VOCABULARY == tuple(sorted(DEMO_VOCABULARY))
    assert {"red", "square", "orange", "ring", "bottom", "center", ",", "."} <= set(DEMO_VOCABULARY)
    captions = [c for i in range(200) for c in scenes.demo_example(0, 0, i)["captions"]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no unknown word, no truncation
        tokens, mask = text.tokenize_words(captions, DEMO_VOCABULARY, max_length=40)
    words = [[DEMO_VOCABULARY[i - 2] for i in row[m]] for row, m in zip(tokens, mask, strict=True)]
    assert words == [text.split_words(c) for c in captions]  # the round trip
    assert max(m.sum() for m in mask) == 36  # 4 objects with size and position


def test_word_tokenizer_ids_unknown_words_and_padding():
    vocabulary = ("a", "red", "square", ".")
    with pytest.warns(UserWarning, match=r"2 word\(s\) outside.*\['big', 'purple'\]"):
        tokens, mask = text.tokenize_words(
            ["A red square.", "a BIG purple Square", ""], vocabulary, max_length=6
        )
    assert tokens.dtype == np.int32 and mask.dtype == np.bool_ and tokens.shape == (3, 6)
    unk = text.WORD_UNKNOWN_ID
    np.testing.assert_array_equal(tokens[0], [2, 3, 4, 5, 0, 0])
    np.testing.assert_array_equal(tokens[1], [2, unk, unk, 4, 0, 0])  # unknown words stay tokens
    np.testing.assert_array_equal(mask[1], [True] * 4 + [False] * 2)
    assert not mask[2].any() and not tokens[2].any()


def test_word_tokenizer_truncates_and_warns():
    vocabulary = ("a", "red", "square", ".")
    with pytest.warns(UserWarning, match="1 caption.*truncated to 3 words.*longest: 4"):
        tokens, mask = text.tokenize_words(["a red square.", "red ."], vocabulary, max_length=3)
    np.testing.assert_array_equal(tokens, [[2, 3, 4], [3, 5, 0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        text.tokenize_words(["a red square"], vocabulary, max_length=3)


def test_words_encoder_from_config_and_unknown_vocabulary():
    config = base.get_config()
    config.text.encoder, config.text.max_length = "words", 40
    encoder = text.build_text_encoder(config)
    assert (encoder.module.vocab_size, encoder.max_length, encoder.frozen) == (36, 40, False)
    tokens, mask = encoder.tokenize(["A small cyan bar in the center."])
    assert mask.sum() == 8 and text.WORD_UNKNOWN_ID not in tokens
    config.text.vocabulary = "klingon"
    with pytest.raises(ValueError, match=r"'klingon'.*\['demo', 'demo_shapes'\]"):
        text.build_text_encoder(config)


def test_demo_words_encoder_has_no_layers_and_keeps_each_word_apart():
    """The demo's encoder (text.depth = 0): a word's output is LayerNorm(embedding + position),
    computed by hand here, so it depends on neither the other words nor the caption's length."""
    from experiments import demo

    encoder = text.build_text_encoder(demo.get_config())
    captions = [
        "A large cyan bar in the center.",
        "A large orange ring at the top and a red square.",
    ]
    tokens, mask = encoder.tokenize(captions)
    params = encoder.module.init(jax.random.key(0), tokens, mask)
    out = np.asarray(encoder.module.apply(params, tokens, mask))
    p = params["params"]
    x = (
        np.asarray(p["token_embedding"]["embedding"])[tokens]
        + np.asarray(p["position_embedding"])[: tokens.shape[1]]
    )
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    norm = p["final_norm"]
    want = (x - mean) / np.sqrt(var + 1e-6) * np.asarray(norm["scale"]) + np.asarray(norm["bias"])
    np.testing.assert_allclose(out, np.where(mask[..., None], want, 0.0), atol=1e-5)
    # "A large" share their outputs across the two captions; "cyan" and "orange" do not.
    np.testing.assert_allclose(out[0, :2], out[1, :2], atol=1e-6)
    assert np.linalg.norm(out[0, 2] - out[1, 2]) > 0.5 * np.linalg.norm(out[0, 2])
