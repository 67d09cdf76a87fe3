"""IDLE-Adapter: gate, refinement, key/value prefix injection (encoder and decoder), frozen parts, MMD,
ablation switches, hard prompt, sub-sequences, and one tiny end-to-end stage on the shared Ray Train loop.
Backbones are tiny random-weight BERT/Llama models built from configs."""

import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from raylrec.data.prepared import PreparedData
from raylrec.methods.idle.adapter import IdleAdapter, refine
from raylrec.methods.idle.config import AdapterConfig, HeadConfig, IdleConfig, MMDConfig, PromptConfig
from raylrec.methods.idle.injection import Prefix, wrap_backbone
from raylrec.methods.idle.mmd import layerwise_mmd
from raylrec.methods.idle.model import IdleModel
from raylrec.methods.idle.prompt import PromptBuilder, special_tokens
from raylrec.methods.idle.recipe import IdleRecipe, subsequence_cuts
from raylrec.models import build_model
from raylrec.models.base import ModelConfig
from raylrec.text.registry import resolve_model
from raylrec.train.mmd import gaussian_mmd

TINY_ID = ModelConfig(
    name="sasrec", hidden_size=8, max_len=6, num_layers=1, num_heads=2, inner_size=16, dropout=0.1, attn_dropout=0.1
)


def tiny_bert(impl="sdpa", vocab=100):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=32,
        max_position_embeddings=64,
        attn_implementation=impl,
    )
    return BertModel(config, add_pooling_layer=False).eval()


def tiny_llama(impl="sdpa", vocab=100):
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        attn_implementation=impl,
    )
    return LlamaModel(config).eval()


def backbone(kind, impl="sdpa", injection="kv", pooling="auto"):
    model = tiny_bert(impl) if kind == "encoder" else tiny_llama(impl)
    return wrap_backbone(model, kind, pooling, injection)


# ---------- adapter (eq. 5–7) ----------


def test_gate_shape_and_range():
    torch.manual_seed(0)
    adapter = IdleAdapter(8, 16, num_layers=3, config=AdapterConfig(prompt_length=2))
    with torch.no_grad():
        adapter.gate_weight.mul_(300)  # push the gate logits far from 0 to see the range
    refined, gate, key_values = adapter(torch.randn(5, 8) * 10)
    assert key_values is None
    assert refined.shape == (3, 5, 2, 16) and gate.shape == (3, 5, 2)
    assert (gate > 0).all() and (gate < 1).all() and gate.std() > 0.1


def test_prefix_equal_to_the_projection_gives_the_projection():
    torch.manual_seed(0)
    projected = torch.randn(3, 4, 2, 16)
    refined, gate = refine(projected.clone(), projected, torch.randn(1, 32))
    assert torch.allclose(refined, projected, atol=1e-6)
    # Otherwise D is the convex mix of C and P that the gate says.
    prefix = torch.randn(3, 1, 2, 16)
    refined, gate = refine(prefix, projected, torch.randn(3, 32))
    expected = gate[..., None] * prefix + (1 - gate[..., None]) * projected
    assert torch.allclose(refined, expected, atol=1e-6)


# ---------- injection (eq. 8–11) ----------


def states_as_prefix(bb, full_hidden, length):
    """Hidden states of the first `length` tokens of a full run, as virtual tokens of every layer."""
    return torch.stack([full_hidden[layer][:, :length] for layer in range(bb.num_layers)])


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_virtual_tokens_act_exactly_like_real_tokens(kind, impl):
    """Injecting the per-layer hidden states of real tokens as D reproduces the full run on the rest: keys and
    values come from Concat(D, H) through the layer's own projections, with rotary positions and masks right."""
    bb = backbone(kind, impl)
    ids = torch.randint(1, 100, (3, 9))
    length = 3
    full = bb(ids, torch.ones_like(ids), None, output_hidden_states=True)
    refined = states_as_prefix(bb, full.hidden_states, length)
    rest = ids[:, length:]
    positions = torch.arange(length, 9).unsqueeze(0) if kind == "encoder" else None
    out = bb(rest, torch.ones_like(rest), bb.prefix_from_states(refined), position_ids=positions)
    assert torch.allclose(out.last_hidden_state, full.last_hidden_state[:, length:], atol=1e-5)


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_prefix_reaches_attention_and_zero_length_is_the_plain_model(kind):
    bb = backbone(kind)
    ids = torch.randint(1, 100, (2, 6))
    mask = torch.ones_like(ids)
    plain = bb.model(input_ids=ids, attention_mask=mask).last_hidden_state
    empty = Prefix(
        [torch.zeros(2, bb.num_kv_heads, 0, bb.head_dim)] * bb.num_layers,
        [torch.zeros(2, bb.num_kv_heads, 0, bb.head_dim)] * bb.num_layers,
    )
    assert torch.equal(bb(ids, mask, empty).last_hidden_state, plain)
    assert torch.equal(bb(ids, mask, None).last_hidden_state, plain)
    refined = torch.randn(bb.num_layers, 2, 2, bb.hidden_size)
    first = bb(ids, mask, bb.prefix_from_states(refined)).last_hidden_state
    assert not torch.allclose(first, plain, atol=1e-4)
    changed = refined.clone()
    changed[-1] += 1.0  # only the last layer's virtual tokens change: the output still moves
    second = bb(ids, mask, bb.prefix_from_states(changed)).last_hidden_state
    assert not torch.allclose(first, second, atol=1e-5)
    # The same holds for the P-tuning-v2 style injection (keys/values given directly).
    kv = torch.randn(bb.num_layers, 2, 2, 2 * bb.kv_dim)
    assert not torch.allclose(bb(ids, mask, bb.prefix_from_key_values(kv)).last_hidden_state, plain, atol=1e-4)


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_padding_does_not_leak_into_the_prompt(kind):
    """A right-padded batch gives each prompt the same pooled state as running it alone (mask covers L' + T)."""
    bb = backbone(kind, pooling="mean" if kind == "encoder" else "last")
    ids = torch.randint(1, 100, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    refined = torch.randn(bb.num_layers, 2, 2, bb.hidden_size)
    batch = bb(ids, mask, bb.prefix_from_states(refined))
    pooled = bb.pool(batch.last_hidden_state, mask)
    alone = bb(ids[1:, :4], mask[1:, :4], bb.prefix_from_states(refined[:, 1:]))
    assert torch.allclose(pooled[1], bb.pool(alone.last_hidden_state, mask[1:, :4])[0], atol=1e-5)


# ---------- the trained module ----------


def idle_model(kind="encoder", num_items=20, head=None, text_rows=None, **adapter):
    torch.manual_seed(1)
    return IdleModel(
        backbone(kind), build_model(num_items, TINY_ID), num_items, AdapterConfig(**adapter), head, text_rows
    )


def batch_of(num_items=20, size=4, length=6):
    generator = torch.Generator().manual_seed(3)
    windows = torch.randint(0, num_items + 1, (size, TINY_ID.max_len), generator=generator)
    ids = torch.randint(1, 100, (size, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, -2:] = 0
    return windows, ids, mask, torch.randint(1, num_items + 1, (size,), generator=generator)


def idle_loss(model, batch, weight=0.5, rho=None):
    windows, ids, mask, targets = batch
    logits, refined = model(windows, ids, mask)
    loss = torch.nn.functional.cross_entropy(logits, targets)
    if weight:
        hidden = [h[mask.bool()] for h in model.frozen_hidden_states(ids, mask)]
        loss = loss + weight * layerwise_mmd(refined, hidden, rho)
    return loss


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
@pytest.mark.parametrize("injection", ["kv", "ptuning_v2"])
def test_only_the_adapter_and_head_train(kind, injection):
    model = idle_model(kind, injection=injection)
    idle_loss(model, batch_of()).backward()
    frozen = list(model.backbone.parameters()) + list(model.id_model.parameters())
    assert frozen and all(p.grad is None and not p.requires_grad for p in frozen)
    trained = dict(model.named_parameters())
    assert all(name.startswith(("adapter.", "head.")) for name in trained)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trained.values()), [
        n for n, p in trained.items() if p.grad is None or p.grad.abs().sum() == 0
    ]
    # Checkpoints hold only the trainable part; the frozen models still follow .to() and stay in eval mode.
    assert all(key.startswith(("adapter.", "head.")) for key in model.state_dict())
    model.train()
    assert not model.backbone.training and not model.id_model.training
    model.double()
    assert next(model.backbone.parameters()).dtype == torch.float64


# ---------- item head options (eq. 14 and our extensions) ----------


@pytest.mark.parametrize("init", ["random", "id_tied", "text"])
@pytest.mark.parametrize("id_residual", [False, True])
def test_each_head_option_scores_every_item_and_trains(init, id_residual):
    num_items, hidden = 20, 16
    text_rows = torch.randn(num_items + 1, hidden) if init == "text" else None
    model = idle_model(head=HeadConfig(init=init, id_residual=id_residual), text_rows=text_rows)
    batch = batch_of(num_items)
    logits, _ = model(*batch[:3])
    assert logits.shape == (4, num_items + 1) and torch.isfinite(logits).all()
    shapes = {name: tuple(p.shape) for name, p in model.head.named_parameters()}
    expected = {"id_map": (hidden, TINY_ID.hidden_size)} if init == "id_tied" else {"weight": (num_items + 1, hidden)}
    if id_residual:
        expected.update(gain=(1,), log_temperature=(1,))
    assert shapes == expected
    idle_loss(model, batch, weight=0.0).backward()
    # With id_residual the head's own parameters get no gradient until the gain has left 0; the gain and τ do.
    moved = {name for name, p in model.head.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert moved == ({"gain", "log_temperature"} if id_residual else set(expected))
    if text_rows is not None:
        assert torch.equal(model.head.weight, text_rows)
    with pytest.raises(ValueError, match="text embeddings"):
        idle_model(head=HeadConfig(init="text"))


@pytest.mark.parametrize("init", ["random", "id_tied", "text"])
def test_id_residual_with_a_zero_head_gives_exactly_the_id_models_scores(init):
    num_items = 20
    model = idle_model(
        head=HeadConfig(init=init, id_residual=True),
        text_rows=torch.randn(num_items + 1, 16) if init == "text" else None,
    )
    windows, ids, mask, _ = batch_of(num_items)
    expected = model.id_model.score_all(model.id_model.user_vector(windows))
    assert torch.equal(model.score(windows, ids, mask), expected)  # gain 0, τ 1: the ID model, bit for bit
    with torch.no_grad():
        model.head.gain.fill_(1.0)
    assert not torch.allclose(model.score(windows, ids, mask)[:, 1:], expected[:, 1:])


def test_a_head_saved_with_zero_dimensional_scalars_still_loads():
    model = idle_model(head=HeadConfig(init="id_tied", id_residual=True))
    state = {k: v.clone() for k, v in model.head.state_dict().items()}
    state["gain"], state["log_temperature"] = torch.tensor(0.25), torch.tensor(0.5)  # as stages before the (1,) shape
    model.head.load_state_dict(state)
    assert model.head.gain.shape == (1,) and float(model.head.gain) == 0.25
    assert float(model.head.log_temperature) == 0.5


def test_text_init_is_the_frozen_models_embedding_of_each_item_text(artifacts, data):
    """Row i of W_y starts as the backbone's own pooled output for item i's text alone; padding row 0 is zero."""
    from transformers import AutoTokenizer

    root, id_dir, folders = artifacts
    config = tiny_config(root, head={"init": "text", "batch_items": 7})
    core = IdleRecipe(config, id_dir, folders["encoder"], "encoder").build(data)
    tokenizer = AutoTokenizer.from_pretrained(folders["encoder"], local_files_only=True)
    items = data.items_table()
    assert core.head.weight.shape == (data.num_items + 1, core.backbone.hidden_size)
    assert torch.equal(core.head.weight[0], torch.zeros(core.backbone.hidden_size))
    for item in (1, 2, data.num_items):
        text = "item " + str(items.loc[items["item"] == item, "item_id"].iloc[0])
        encoded = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            alone = core.backbone.model(**encoded).last_hidden_state[0, 0]  # [CLS] pooling of a plain BERT folder
        assert torch.allclose(core.head.weight[item], alone, atol=1e-5)


# ---------- MMD (eq. 12) ----------


def test_mmd_is_zero_for_identical_samples_and_grows_with_the_shift():
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    y = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
    for rho in (None, 4.0):
        assert gaussian_mmd(x, x.clone(), rho).abs() < 1e-6
        values = [gaussian_mmd(x, y + shift, rho).item() for shift in (0.0, 0.5, 1.0, 2.0)]
        assert 0 <= values[0] < values[1] < values[2] < values[3]


def test_mmd_matches_the_direct_formula():
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) + 0.3
    rho = 1.7

    def k(a, b):
        return float(np.exp(-np.sum((a - b) ** 2) / (2 * rho)))

    direct = (
        np.mean([[k(a, b) for b in x.numpy()] for a in x.numpy()])
        + np.mean([[k(a, b) for b in y.numpy()] for a in y.numpy()])
        - 2 * np.mean([[k(a, b) for b in y.numpy()] for a in x.numpy()])
    )
    assert gaussian_mmd(x, y, rho).item() == pytest.approx(direct, rel=1e-9)
    refined = torch.stack([x.view(1, 5, 3), y[:5].view(1, 5, 3)])  # 2 layers, B=1, L'=5
    total = layerwise_mmd(refined, [y, x], rho)
    assert total.item() == pytest.approx((gaussian_mmd(x, y, rho) + gaussian_mmd(y[:5], x, rho)).item())


# ---------- ablation switches ----------


def test_each_ablation_switch_changes_the_computation():
    batch = batch_of()
    full = idle_model()
    refined, gate, _ = full.adapter(full.user_vectors(batch[0]))
    assert not torch.allclose(refined[0], refined[1])  # a different D per layer

    shared = idle_model(layerwise=False)  # w/o LayerWise: one adapter for every layer
    assert shared.adapter.user_weight.shape[0] == 1 and full.adapter.user_weight.shape[0] == 2
    refined_shared, _, _ = shared.adapter(shared.user_vectors(batch[0]))
    assert torch.equal(refined_shared[0], refined_shared[1])

    plain = idle_model(refinement=False)  # w/o Refinement: D = P
    assert not hasattr(plain.adapter, "prefix") and not hasattr(plain.adapter, "gate_weight")
    refined_plain, gate_plain, _ = plain.adapter(plain.user_vectors(batch[0]))
    assert gate_plain is None
    assert torch.equal(refined_plain, plain.adapter.project(plain.user_vectors(batch[0])))

    with_mmd = idle_loss(full, batch, weight=0.5)  # w/o Distribution: λ = 0
    without = idle_loss(full, batch, weight=0.0)
    assert with_mmd.item() > without.item()

    longer = idle_model(prompt_length=4)  # L'
    assert longer.prefix(*longer.adapter(longer.user_vectors(batch[0]))[::2]).length == 4
    logits = {
        name: model(*batch[:3])[0]
        for name, model in {
            "full": full,
            "shared": shared,
            "plain": plain,
            "longer": longer,
            "ptuning": idle_model(injection="ptuning_v2"),
        }.items()
    }
    names = list(logits)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not torch.allclose(logits[a], logits[b]), (a, b)


# ---------- hard prompt and samples ----------


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model("minilm").path, local_files_only=True)


def test_hard_prompt_keeps_the_instruction_and_the_newest_items(tokenizer):
    import pandas as pd

    items = pd.DataFrame({"item": [1, 2, 3, 4], "title": ["Alpha", "Bravo", "Charlie Delta Echo", "Foxtrot"]})
    config = PromptConfig(max_tokens=31, max_items=10)
    builder = PromptBuilder(tokenizer, items, 4, config, "ml-100k")
    opening, closing = special_tokens(tokenizer)
    assert opening == [tokenizer.cls_token_id] and closing == [tokenizer.sep_token_id]
    text = tokenizer.decode(builder.ids(np.array([1, 2, 3, 4])))
    assert text.startswith("[CLS] your task is to recommend a movie") and text.endswith("[SEP]")
    ids, mask = builder.batch([np.array([1, 2, 3, 4]), np.array([0, 0, 2])])
    assert ids.shape == (2, 31) and mask[0].sum() == 30
    first = tokenizer.decode(ids[0][mask[0] == 1])
    assert "foxtrot" in first and first.index("charlie") < first.index("foxtrot")  # time order, newest last
    assert "alpha" not in first  # the oldest item did not fit the budget
    assert tokenizer.decode(ids[1][mask[1] == 1]).endswith("history : bravo. [SEP]")  # padding 0 skipped
    with pytest.raises(Exception, match="history"):
        PromptBuilder(tokenizer, items, 4, PromptConfig(template="no placeholder"), "ml-100k")


def test_subsequences_are_every_prefix_or_the_most_recent():
    users, cuts = subsequence_cuts(np.array([4, 2]), None)
    assert list(zip(users.tolist(), cuts.tolist())) == [(0, 1), (0, 2), (0, 3), (1, 1)]
    users, cuts = subsequence_cuts(np.array([4, 2]), 2)
    assert list(zip(users.tolist(), cuts.tolist())) == [(0, 2), (0, 3), (1, 1)]


# ---------- recipe and one stage on the shared loop ----------


@pytest.fixture(scope="module")
def data(prepared_dir) -> PreparedData:
    return PreparedData(prepared_dir)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, data, tokenizer):
    """A random SASRec stage export and tiny random BERT/Llama folders (with the MiniLM tokenizer)."""
    root = tmp_path_factory.mktemp("idle")
    id_dir = root / "models" / "sasrec"
    id_dir.mkdir(parents=True)
    torch.manual_seed(0)
    save_file(build_model(data.num_items, TINY_ID).state_dict(), str(id_dir / "model.safetensors"))
    (id_dir / "model_config.json").write_text(json.dumps({"num_items": data.num_items, **TINY_ID.model_dump()}))
    folders = {}
    from transformers import LlamaForCausalLM

    decoder = LlamaForCausalLM(tiny_llama(vocab=len(tokenizer)).config)  # a causal-LM folder, as packaged decoders
    for kind, model in (("encoder", tiny_bert(vocab=len(tokenizer))), ("decoder", decoder)):
        folders[kind] = root / kind
        model.save_pretrained(folders[kind])
        tokenizer.save_pretrained(folders[kind])
    return root, id_dir, folders


def tiny_config(run_dir, **overrides):
    base = {
        "run_dir": str(run_dir),
        "name": "idle",
        "prompt": {"max_tokens": 32, "max_items": 5, "item_template": "item {item_id}"},
        "subsequences_per_user": 3,
        "mmd": {"weight": 0.1, "samples_per_batch": 4},
        "train": {"max_epochs": 1, "batch_size": 16, "lr": 0.01, "patience": 1},
    }
    base.update(overrides)
    return IdleConfig(**base)


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_recipe_trains_and_scores_all_items(artifacts, data, kind):
    root, id_dir, folders = artifacts
    recipe = IdleRecipe(tiny_config(root), id_dir, folders[kind], "encoder" if kind == "encoder" else "decoder")
    core = recipe.build(data)
    assert core.backbone.kind == kind
    tensors = recipe.training_tensors(data)
    assert len({len(t) for t in tensors}) == 1 and tensors[0].shape[1] == TINY_ID.max_len
    assert len(tensors[0]) <= 3 * data.num_users
    batch = tuple(t[:6] for t in tensors)
    before = {k: v.clone() for k, v in core.state_dict().items()}
    optimizer = torch.optim.AdamW(core.parameters(), lr=0.01)
    recipe.loss(core, core, batch, torch.Generator().manual_seed(0)).backward()
    optimizer.step()
    assert all(not torch.equal(before[k], v) for k, v in core.state_dict().items())
    scores = recipe.scorer(core, data, "valid", torch.device("cpu"))(np.arange(5))
    assert scores.shape == (5, data.num_items + 1) and torch.isinf(scores[:, 0]).all()
    # The recipe ships to Ray workers without its caches (tokenizer, prompts).
    import pickle

    assert pickle.loads(pickle.dumps(recipe))._cache == {}


@pytest.mark.parametrize(
    "kind, zero",
    [
        ("encoder", None),
        # ≈ 35 s each: DeepSpeed on the shared loop is in the default run through A-LLMRec's stage 2
        pytest.param("decoder", "zero2", marks=pytest.mark.slow),
        pytest.param("decoder", "zero3", marks=pytest.mark.slow),
    ],
)
def test_stage_runs_on_the_shared_loop(artifacts, prepared_dir, ray_session, kind, zero):
    """One epoch through run_stage: DDP for the encoder, DeepSpeed ZeRO-2 / ZeRO-3 (frozen LLM partitioned) for
    the decoder (decoder_deepspeed), with the main preset's head (id_tied + id_residual: its scalar gain and
    temperature must survive DeepSpeed's start-up broadcast)."""
    from raylrec.methods.idle.pipeline import idle_job
    from raylrec.train.stage import run_stage

    root, id_dir, folders = artifacts
    name = f"idle-{kind}-{zero}"
    config = tiny_config(
        root,
        name=name,
        backbone=str(folders[kind]),
        decoder_deepspeed=zero or "zero2",
        head={"init": "id_tied", "id_residual": True},
        eval={"num_negatives": [5, 10]},
        train={"max_epochs": 1, "batch_size": 16, "lr": 0.01, "valid_users": 10},
    )
    job = idle_job(config, prepared_dir)
    assert job.train.deepspeed == zero
    summary = run_stage(job)
    out = root / "models" / name
    assert summary["backbone_kind"] == kind and 0 <= summary["test"]["ndcg@10"] <= 1
    saved = load_file(str(out / "model.safetensors"))
    assert saved and all(k.startswith(("adapter.", "head.")) for k in saved)  # no frozen weights
    assert summary["trainable_params"] == sum(v.numel() for v in saved.values())
    assert len(json.loads((out / "idle_config.json").read_text())["mean_gate_per_layer"]) == 2
    if kind == "decoder":
        checkpoint = sorted((out / "train").glob("checkpoint_2*"))[-1]
        assert (checkpoint / "deepspeed").is_dir()


def test_presets_load():
    from raylrec.config import load_config

    cpu, paper = load_config(IdleConfig, "idle"), load_config(IdleConfig, "idle-paper")
    assert cpu.backbone == "minilm" and cpu.train.samples_per_epoch is not None
    assert paper.subsequences_per_user is None and paper.adapter.prompt_length == 2
    assert paper.head.init == "random" and not paper.head.id_residual and paper.train.lr == 5e-4
    assert paper.train.lr_schedule == "linear"
    assert re.fullmatch(r"BAAI/bge-base-en-v1\.5@[0-9a-f]{40}", paper.backbone)  # a hub id pinned to a commit
    assert MMDConfig().weight in (0.1, 0.2, 0.5, 1.0)


def test_loss_can_exclude_the_history_the_evaluation_masks():
    from raylrec.methods.idle.recipe import exclude_seen

    logits = torch.zeros(2, 6)
    windows = torch.tensor([[0, 2, 3], [0, 0, 5]])
    masked = exclude_seen(logits, windows, torch.tensor([3, 1]))
    assert torch.isinf(masked[0, [0, 2]]).all() and masked[0, 3] == 0  # the target stays even when seen
    assert torch.isinf(masked[1, [0, 5]]).all() and torch.isfinite(masked[1, [1, 2, 3, 4]]).all()
