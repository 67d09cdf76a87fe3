import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from raylrec.cli import main
from raylrec.config import load_config
from raylrec.data.prepared import CSR, PreparedData
from raylrec.errors import RaylrecError
from raylrec.eval.buckets import frequency_buckets
from raylrec.eval.evaluator import EvalConfig, Evaluator
from raylrec.eval.metrics import mean_metrics
from raylrec.methods.pad.alignment import AlignmentRecipe, alignment_sample
from raylrec.methods.pad.config import AlignConfig, AlignmentLossConfig, ExpertsConfig, PadConfig, TowerConfig
from raylrec.methods.pad.diagnostics import expert_diagnostics
from raylrec.methods.pad.experts import ExpertsRecipe
from raylrec.methods.pad.kendall import behaviour_target_pairs, kendall_by_bucket, kendall_tau
from raylrec.methods.pad.mixture import ExpertScale, FrequencyGate
from raylrec.methods.pad.mmd import alignment_loss
from raylrec.methods.pad.towers import FusedTower
from raylrec.models import build_model
from raylrec.models.base import ModelConfig
from raylrec.text.artifacts import EmbeddingMeta, write_embeddings
from raylrec.train.mmd import bandwidths, kernel_matrix, mk_mmd, squared_distances
from raylrec.train.stage import StageJob, run_stage

TINY_MODEL = ModelConfig(
    name="sasrec", hidden_size=8, max_len=6, num_layers=1, num_heads=2, inner_size=16, dropout=0.1, attn_dropout=0.1
)
TEXT_DIM = 12
EXPONENTS = [-3.0, -2.0, -1.0, 0.0, 1.0]


# ---------- MK-MMD ----------


def gaussian_sample(n, d, shift, seed):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) + shift


def direct_mk_mmd(x, y, kernel, estimator):
    """MK-MMD² by explicit loops in float64: the reference the vectorised code must match."""
    z = np.concatenate([x, y]).astype(np.float64)
    n, m = len(x), len(z)
    if kernel == "gaussian":
        dist = np.array([[np.sum((z[i] - z[j]) ** 2) for j in range(m)] for i in range(m)])
        k = sum(np.exp(-dist / (2 * 2.0**e * dist.mean())) for e in EXPONENTS)
    else:
        dist = np.array([[np.sum(np.abs(z[i] - z[j])) for j in range(m)] for i in range(m)])
        k = sum(np.exp(-dist / (2.0**e * dist.mean())) for e in EXPONENTS)
    total = 0.0
    for i in range(n):
        for j in range(n):
            if estimator == "biased":
                total += (k[i, j] + k[n + i, n + j] - 2 * k[i, n + j]) / n**2
            elif i != j:
                total += (k[i, j] + k[n + i, n + j] - k[i, n + j] - k[j, n + i]) / (n * (n - 1))
    return total


@pytest.mark.parametrize("kernel", ["gaussian", "laplacian", "linear", "cosine"])
@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_mmd_is_zero_for_identical_samples(kernel, estimator):
    x = gaussian_sample(32, 8, 0.0, 0)
    assert mk_mmd(x, x.clone(), kernel=kernel, estimator=estimator).abs().item() < 1e-5


@pytest.mark.parametrize("kernel", ["gaussian", "laplacian", "linear"])
@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_mmd_is_positive_and_grows_with_the_shift(kernel, estimator):
    x = gaussian_sample(64, 8, 0.0, 0)
    near = mk_mmd(x, gaussian_sample(64, 8, 0.5, 1), kernel=kernel, estimator=estimator)
    far = mk_mmd(x, gaussian_sample(64, 8, 2.0, 1), kernel=kernel, estimator=estimator)
    assert 0 < near < far


@pytest.mark.parametrize("kernel", ["gaussian", "laplacian"])
@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_mmd_matches_the_direct_float64_computation(kernel, estimator):
    x, y = gaussian_sample(10, 4, 0.0, 2), gaussian_sample(10, 4, 0.7, 3)
    ours = mk_mmd(x.double(), y.double(), kernel=kernel, exponents=EXPONENTS, estimator=estimator).item()
    assert ours == pytest.approx(direct_mk_mmd(x.numpy(), y.numpy(), kernel, estimator), rel=1e-9, abs=1e-12)
    assert mk_mmd(x, y, kernel=kernel, estimator=estimator).item() == pytest.approx(ours, rel=1e-4, abs=1e-6)


def test_bandwidths_follow_the_public_rule():
    z = gaussian_sample(20, 5, 0.0, 4).double()
    d2 = squared_distances(z)
    mean_sq = np.mean([[np.sum((a - b) ** 2) for b in z.numpy()] for a in z.numpy()])
    assert bandwidths(d2, EXPONENTS).tolist() == pytest.approx([2.0**k * mean_sq for k in EXPONENTS])
    expected = sum(torch.exp(-d2 / (2 * 2.0**k * mean_sq)) for k in EXPONENTS)
    assert torch.allclose(kernel_matrix(z, "gaussian", EXPONENTS), expected)
    # A custom list (a Tune target) is used as given.
    assert bandwidths(d2, [0.0]).tolist() == pytest.approx([mean_sq])


def test_padding_rows_are_masked_out():
    x, y = gaussian_sample(16, 6, 0.0, 5), gaussian_sample(16, 6, 1.0, 6)
    padded_x = torch.cat([x, torch.zeros(5, 6)])
    padded_y = torch.cat([y, torch.full((5, 6), 3.0)])
    mask = torch.cat([torch.ones(16, dtype=torch.bool), torch.zeros(5, dtype=torch.bool)])
    clean = mk_mmd(x, y)
    assert mk_mmd(padded_x, padded_y, mask).item() == pytest.approx(clean.item())
    assert mk_mmd(padded_x, padded_y).item() != pytest.approx(clean.item())
    # The phase-2 sample of a batch never holds the padding item.
    items = torch.tensor([[0, 0, 3, 4], [0, 5, 5, 6]])
    sample = alignment_sample(items, None, False, torch.Generator().manual_seed(0))
    assert sorted(sample.tolist()) == [3, 4, 5, 5, 6]
    assert sorted(alignment_sample(items, None, True, torch.Generator()).tolist()) == [3, 4, 5, 6]
    assert len(alignment_sample(items, 3, False, torch.Generator().manual_seed(0))) == 3


def test_info_nce_prefers_matched_pairs():
    x = gaussian_sample(16, 8, 0.0, 7)
    config = AlignmentLossConfig(kernel="infonce", temperature=0.1)
    assert alignment_loss(x, x, config) < alignment_loss(x, x[torch.randperm(16)], config)


# ---------- artifacts the phase recipes read ----------


@pytest.fixture(scope="module")
def data(prepared_dir) -> PreparedData:
    return PreparedData(prepared_dir)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("pad-run")


@pytest.fixture(scope="module")
def phase1_dir(run_dir, data):
    """A phase-1 artifact as an ID-model stage exports it (weights + model config), from a random SASRec."""
    torch.manual_seed(0)
    out = run_dir / "models" / "sasrec-bce"
    out.mkdir(parents=True)
    save_file(build_model(data.num_items, TINY_MODEL).state_dict(), str(out / "model.safetensors"))
    (out / "model_config.json").write_text(json.dumps({"num_items": data.num_items, **TINY_MODEL.model_dump()}))
    return out


@pytest.fixture(scope="module")
def text_dir(run_dir, data):
    """Random item text embeddings in the artifact format of `raylrec encode`."""
    vectors = np.random.default_rng(0).normal(size=(data.num_items + 1, TEXT_DIM)).astype(np.float32)
    vectors[0] = 0
    meta = EmbeddingMeta(
        key="random",
        model="random",
        model_source="test",
        model_family="decoder",
        pooling="mean",
        normalize=False,
        max_length=8,
        template="{title}",
        text_hash="x",
        dim=TEXT_DIM,
        dtype="float32",
        dataset=data.report["dataset"],
        dataset_fingerprint=data.fingerprint,
        num_items=data.num_items,
        missing_fields={},
        empty_texts=0,
        encode_seconds=0.0,
    )
    return write_embeddings(run_dir / "embeddings" / "random", vectors, meta)


def align_recipe(phase1_dir, text_dir, towers=None, **align) -> AlignmentRecipe:
    config = AlignConfig(**{"train": {"max_epochs": 1, "batch_size": 16, "lr": 0.01}, **align})
    return AlignmentRecipe(
        "pad-align", TINY_MODEL, towers or TowerConfig(text_mlp_layers=2), config, phase1_dir, text_dir
    )


@pytest.fixture(scope="module")
def align_dir(run_dir, data, phase1_dir, text_dir):
    """A phase-2 artifact (the alignment model's weights), for unit tests of phase 3."""
    out = run_dir / "models" / "unit-align"
    out.mkdir(parents=True)
    save_file(align_recipe(phase1_dir, text_dir).build(data).state_dict(), str(out / "model.safetensors"))
    return out


def experts_recipe(phase1_dir, text_dir, align_dir, **experts) -> ExpertsRecipe:
    config = ExpertsConfig(**{"train": {"max_epochs": 1, "batch_size": 16, "lr": 0.01}, **experts})
    return ExpertsRecipe(
        "pad",
        TINY_MODEL,
        TowerConfig(text_mlp_layers=2),
        config,
        text_dir,
        phase1_dir,
        align_dir,
        EvalConfig(num_negatives=[5], length_edges=[5, 10], frequency_buckets=4),
    )


# ---------- buckets and gating ----------


def test_buckets_have_equal_mass_and_come_from_the_training_split(data, phase1_dir, text_dir, align_dir):
    counts = data.item_train_counts()
    assert counts.sum() == data.sequences.lengths.sum() - 2 * data.num_users  # valid and test targets left out
    assert (counts == np.bincount(data.history("train").indices, minlength=data.num_items + 1)).all()
    buckets = frequency_buckets(counts, 4)
    mass = np.array([counts[1:][buckets[1:] == b].sum() for b in range(4)])
    assert (np.abs(mass - counts.sum() / 4) <= counts.max()).all()
    core = experts_recipe(phase1_dir, text_dir, align_dir, num_buckets=4).build(data)
    assert (core.gate.item_buckets.numpy()[1:] == buckets[1:]).all()


@pytest.mark.parametrize("mode", ["frequency", "frequency_embedding", "global"])
def test_gate_weights_sum_to_one_per_bucket(mode):
    torch.manual_seed(0)
    names = ["id", "align", "llm"]
    init = {"id": (0.0, 1.0), "align": (-5.0, -4.0), "llm": (1.0, 0.0)}
    gate = FrequencyGate(names, torch.tensor([-1, 0, 1, 2, 2, 1]), 3, mode, init, dim=4)
    with torch.no_grad():
        gate.logits.add_(torch.randn_like(gate.logits))
        if gate.item_terms is not None:
            for term in gate.item_terms.values():
                term[1].weight.normal_()
    per_bucket = gate.bucket_weights()
    assert per_bucket.shape == (1 if mode == "global" else 3, 3)
    assert torch.allclose(per_bucket.sum(-1), torch.ones(len(per_bucket)))
    items = torch.tensor([[1, 2, 3], [4, 5, 1]])
    weights = gate(items, {n: torch.randn(2, 3, 4) for n in names})
    assert weights.shape == (2, 3, 3) and torch.allclose(weights.sum(-1), torch.ones(2, 3))
    if mode == "frequency":  # items of one bucket share their weights
        assert torch.allclose(weights[0, 2], weights[1, 0])


def test_eq11_gate_sees_item_vectors_and_user_states():
    torch.manual_seed(0)
    names = ["id", "align", "llm"]
    init = {"id": (0.0, 1.0), "align": (-5.0, -4.0), "llm": (1.0, 0.0)}
    buckets = torch.tensor([-1, 0, 1, 2, 2, 1])
    gate = FrequencyGate(names, buckets, 3, "frequency_embedding", init, dim=4)
    plain = FrequencyGate(names, buckets, 3, "frequency", init, dim=4)
    items = torch.arange(6)
    tables = {n: torch.randn(6, 4) for n in names}
    states = {n: torch.randn(5, 4) for n in names}
    # Zero-initialised embedding terms: the gate starts as the frequency gate.
    assert torch.allclose(gate(items, tables, states), plain(items, tables).expand(5, -1, -1))
    with torch.no_grad():
        for terms in (gate.item_terms, gate.user_terms):
            for term in terms.values():
                term[1].weight.normal_()
    every_item = gate(items, tables, states)  # all items for R user states
    assert every_item.shape == (5, 6, 3) and torch.allclose(every_item.sum(-1), torch.ones(5, 6))
    candidates = torch.tensor([[1, 2], [3, 4], [5, 1], [2, 2], [4, 3]])
    picked = gate(candidates, {n: tables[n][candidates] for n in names}, states)  # (R, C) candidates
    assert picked.shape == (5, 2, 3)
    assert torch.allclose(picked, every_item.gather(1, candidates.unsqueeze(-1).expand(-1, -1, 3)))
    # Items of one bucket now get different weights, and so do users.
    assert not torch.allclose(every_item[0, 3], every_item[0, 4])
    assert not torch.allclose(every_item[0], every_item[1])
    # The layer norm makes the gate blind to the size of the vectors it sees.
    assert torch.allclose(gate(items, {n: 9 * t for n, t in tables.items()}, states), every_item, atol=1e-4)


def test_normalised_expert_logits_ignore_the_scale_of_any_one_expert(data, phase1_dir, text_dir, align_dir):
    window = torch.from_numpy(data.input_windows("valid", np.arange(6), TINY_MODEL.max_len))
    for gating in ("frequency", "frequency_embedding"):
        for normalize in ("standardize", "none"):
            torch.manual_seed(0)
            core = experts_recipe(phase1_dir, text_dir, align_dir, gating=gating, normalize=normalize).build(data)
            core.eval()
            assert (core.scale is not None) == (normalize == "standardize")
            with torch.no_grad():
                before = core.score_all(window)
                # The LLM expert's user states, hence its logits, × 50: its encoder ends in a post-norm layer norm.
                last_norm = core.experts["llm"].encoder.blocks.layers[-1].norm2
                last_norm.weight.mul_(50)
                last_norm.bias.mul_(50)
                after = core.score_all(window)
            same = torch.allclose(before[:, 1:], after[:, 1:], atol=1e-4)
            assert same == (normalize == "standardize"), (gating, normalize)
    z = ExpertScale.standardize(torch.randn(4, 7, 3) * torch.tensor([1.0, 10.0, 0.1]))
    assert torch.allclose(z[:, 1:].mean(1), torch.zeros(4, 3), atol=1e-5)
    assert torch.allclose(z[:, 1:].std(1), torch.ones(4, 3), atol=1e-5) and (z[:, 0] == 0).all()
    # The temperature starts at the ID expert's logit spread, so Φ starts on phase 1's scale.
    recipe = experts_recipe(phase1_dir, text_dir, align_dir, normalize="standardize")
    core = recipe.build(data)
    inputs, targets = (t[:64] for t in recipe.training_tensors(data))
    core.eval()
    with torch.no_grad():
        id_expert = core.experts["id"]
        spread = (id_expert.user_states(inputs)[targets > 0] @ id_expert.item_table()[1:].T).std(-1).mean()
    assert core.scale.temperature.item() == pytest.approx(spread.item(), rel=1e-4)


def test_cross_entropy_is_over_every_item_of_the_gated_scores(data, phase1_dir, text_dir, align_dir):
    for switches in ({}, {"normalize": "standardize", "gating": "frequency_embedding"}):
        recipe = experts_recipe(
            phase1_dir,
            text_dir,
            align_dir,
            **switches,
            train={"max_epochs": 1, "batch_size": 16, "loss": "ce", "label_smoothing": 0.1},
        )
        torch.manual_seed(0)
        core = recipe.build(data)
        core.eval()  # no dropout: the two computations below must see the same network
        inputs, targets = (t[:4] for t in recipe.training_tensors(data))
        loss = recipe.loss(core, core, (inputs, targets), torch.Generator().manual_seed(0))
        # The same loss by hand: Φ of every item at every trained position, softmax over the real items.
        expected = []
        for row, column in (targets > 0).nonzero().tolist():
            prefix = inputs[row : row + 1, : column + 1]  # the causal encoder sees items ≤ column at the same places
            phi = core.score_all(prefix)[0, 1:]
            expected.append(
                torch.nn.functional.cross_entropy(
                    phi.unsqueeze(0), targets[row, column : column + 1] - 1, label_smoothing=0.1
                )
            )
        assert loss.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-4)
        loss.backward()
        assert core.gate.logits.grad is not None and core.gate.logits.grad.abs().sum() > 0
        if core.scale is not None:
            assert core.scale.log_tau.grad is not None
    # Phase 2 under cross-entropy: the alignment expert's softmax over every item, plus γ · MMD.
    recipe = align_recipe(phase1_dir, text_dir, variant="none", train={"loss": "ce", "batch_size": 16})
    torch.manual_seed(0)
    model = recipe.build(data)
    model.eval()
    inputs, targets = (t[:4] for t in recipe.training_tensors(data))
    loss = recipe.loss(model, model, (inputs, targets), torch.Generator().manual_seed(0))
    logits = model.expert.user_states(inputs)[targets > 0] @ model.expert.item_table().T
    expected = torch.nn.functional.cross_entropy(logits[:, 1:], targets[targets > 0] - 1)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_fusion_starts_from_the_id_half_or_from_both(data, text_dir):
    text = torch.from_numpy(np.random.default_rng(1).normal(size=(data.num_items + 1, TEXT_DIM)).astype(np.float32))
    torch.manual_seed(0)
    identity = FusedTower(data.num_items, text, 8, TowerConfig(text_mlp_layers=2)).eval()
    items = torch.arange(1, data.num_items + 1)
    with torch.no_grad():
        assert torch.allclose(identity(items), identity.collaborative(items))
        balanced = FusedTower(data.num_items, text, 8, TowerConfig(text_mlp_layers=2, fuse_init="balanced")).eval()
        balanced.collaborative.embedding.weight.mul_(30)  # a trained table is larger than the 0.02 init
        balanced.init_fusion()
        halves = balanced.fuse.weight
        text_part = balanced.text(items) @ halves[:, :8].T
        id_part = balanced.collaborative(items) @ halves[:, 8:].T
        rms = [part.pow(2).mean().sqrt().item() for part in (text_part, id_part)]
        assert rms[0] == pytest.approx(rms[1], rel=1e-4)
        assert rms[1] == pytest.approx(balanced.collaborative(items).pow(2).mean().sqrt().item() / 2**0.5, rel=1e-4)


def test_expert_diagnostics_rank_each_expert_alone(data, phase1_dir, text_dir, align_dir):
    recipe = experts_recipe(phase1_dir, text_dir, align_dir, normalize="standardize", gating="frequency_embedding")
    core = recipe.build(data)
    core.eval()
    report, ranks = expert_diagnostics(core, data, recipe.eval_config, TINY_MODEL.max_len)
    # The ID expert starts as phase 1: alone it ranks exactly as the phase-1 backbone does.
    backbone = build_model(data.num_items, TINY_MODEL)
    backbone.load_state_dict(load_file(str(phase1_dir / "model.safetensors")))
    backbone.eval()
    for split in ("valid", "test"):
        evaluator = Evaluator(data, split, EvalConfig(num_negatives=[]))
        with torch.no_grad():
            phase1 = evaluator.ranks(
                lambda users, split=split: backbone.score_all(
                    backbone.user_vector(torch.from_numpy(data.input_windows(split, users, TINY_MODEL.max_len)))
                )
            )["full"]
        assert (ranks[split]["id"] == phase1).all()
        assert report[split]["experts"]["id"]["ndcg@10"] == pytest.approx(mean_metrics(phase1, [10])["ndcg@10"])
        for name in ("id", "align", "llm"):
            entry = report[split]["experts"][name]
            assert 0 <= entry["rarest_two_ndcg@10"] <= 1 and entry["rarest_two_n"] > 0
            assert entry["logit_range"] > entry["logit_std"] > 0
        gates = report[split]["mean_gate_by_bucket"]
        assert sorted(gates) == ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
        assert all(math.isclose(sum(g.values()), 1, abs_tol=1e-3) for g in gates.values())
        # The rarest bucket starts with the public code's init: the LLM expert trusted most.
        assert max(gates["0"], key=gates["0"].get) == "llm"
    assert report["temperature"] == pytest.approx(core.scale.temperature.item(), abs=1e-4)


# ---------- ablation switches ----------


def graph_signature(recipe, data):
    """What one training step touches: the parameters that get a gradient, and the size of the autograd graph."""
    torch.manual_seed(0)
    core = recipe.build(data)
    inputs, targets = (t[:4] for t in recipe.training_tensors(data))
    loss = recipe.loss(core, core, (inputs, targets), torch.Generator().manual_seed(0))
    loss.backward()
    nodes, stack = set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and node not in nodes:
            nodes.add(node)
            stack.extend(next_fn for next_fn, _ in node.next_functions)
    trained = frozenset((n, tuple(p.shape)) for n, p in core.named_parameters() if p.grad is not None)
    return trained, len(nodes)


def test_each_ablation_switch_changes_the_computation_graph(data, phase1_dir, text_dir, align_dir):
    variants = {
        "default": {},
        "global gate": {"gating": "global"},
        "embedding gate": {"gating": "frequency_embedding"},
        "normalised": {"normalize": "standardize"},
        "frozen id": {"freeze": ["id"]},
        "cross-entropy": {"train": {"max_epochs": 1, "batch_size": 16, "loss": "ce"}},
    }
    for expert in ("id", "align", "llm"):
        variants[f"without {expert}"] = {"experts": [e for e in ("id", "align", "llm") if e != expert]}
        variants[f"only {expert}"] = {"experts": [expert]}
    signatures = {
        name: graph_signature(experts_recipe(phase1_dir, text_dir, align_dir, **switch), data)
        for name, switch in variants.items()
    }
    assert len(set(signatures.values())) == len(variants), signatures
    assert not any(name.startswith("experts.id.") for name, _ in signatures["frozen id"][0])
    assert any(name.startswith("experts.id.") for name, _ in signatures["default"][0])
    alignment = {
        variant: graph_signature(align_recipe(phase1_dir, text_dir, variant=variant), data)
        for variant in ("none", "non_anchored", "rec_anchored", "rec_anchored_frozen")
    }
    alignment["cross-entropy"] = graph_signature(align_recipe(phase1_dir, text_dir, train={"loss": "ce"}), data)
    assert len(set(alignment.values())) == len(alignment)
    trained_frozen = {name for name, _ in alignment["rec_anchored_frozen"][0]}
    assert "expert.tower.collaborative.embedding.weight" not in trained_frozen
    assert not any(name.startswith("expert.encoder.") for name, _ in alignment["non_anchored"][0])


def test_phase_weights_come_from_the_previous_phases(data, phase1_dir, text_dir, align_dir):
    phase1 = load_file(str(phase1_dir / "model.safetensors"))
    aligned = align_recipe(phase1_dir, text_dir).build(data)
    assert torch.equal(aligned.expert.tower.collaborative.embedding.weight, phase1["item_embedding.weight"])
    core = experts_recipe(phase1_dir, text_dir, align_dir).build(data)
    assert torch.equal(core.experts["id"].tower.embedding.weight, phase1["item_embedding.weight"])
    assert torch.equal(core.experts["id"].encoder.position_embedding.weight, phase1["position_embedding.weight"])
    saved = load_file(str(align_dir / "model.safetensors"))
    assert torch.equal(core.experts["align"].tower.fuse.weight, saved["expert.tower.fuse.weight"])
    # The text tables are frozen buffers, never parameters.
    assert not any("text.text" in name for name, _ in core.named_parameters())


# ---------- Kendall's τ ----------


def test_kendall_tau_on_a_hand_made_example():
    # Orders of 4 values: one discordant pair (2, 3) of 6 → (5 − 1) / 6.
    assert kendall_tau(np.array([1.0, 2, 3, 4]), np.array([1.0, 3, 2, 4])) == pytest.approx(4 / 6)
    assert kendall_tau(np.array([1.0, 2, 3]), np.array([3.0, 2, 1])) == pytest.approx(-1)
    history = CSR(np.array([0, 3, 5]), np.array([1, 2, 3, 4, 1]))
    behaviours, targets = behaviour_target_pairs(history, window=2)
    assert sorted(zip(behaviours.tolist(), targets.tolist())) == [(1, 2), (1, 3), (2, 3), (4, 1)]
    # Items on a line: distances in table B = 2 × those in A keep every order; a shuffled table does not.
    table = torch.tensor([[0.0], [0.0], [1.0], [3.0], [7.0]])
    buckets = np.array([-1, 0, 0, 0, 0])
    same = kendall_by_bucket(table, 2 * table, behaviours, targets, buckets, 1, None)
    assert same[0].tau == pytest.approx(1.0) and same[0].pairs == 4
    other = kendall_by_bucket(table, table[[0, 4, 3, 2, 1]], behaviours, targets, buckets, 1, None)
    assert other[0].tau < 1


# ---------- presets and CLI ----------


def test_presets_load_and_model_with_method_is_an_error(tmp_path, capsys):
    cpu, paper = load_config(PadConfig, "pad"), load_config(PadConfig, "pad-paper")
    assert cpu.align.gamma == paper.align.gamma == 0.2
    assert paper.align.loss.bandwidth_exponents == EXPONENTS and paper.experts.num_buckets == 10
    with pytest.raises(SystemExit) as stopped:  # argparse: the two options are mutually exclusive
        main(["train", "--method", "pad", "--model", "sasrec", "--run-dir", str(tmp_path)])
    assert stopped.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert load_config(PadConfig, "pad", {"align": {"train": {"loss": "ce"}}}).align.train.loss == "ce"
    with pytest.raises(RaylrecError, match="loss"):
        load_config(PadConfig, "pad", {"align": {"train": {"loss": "softmax"}}})


# ---------- phases 2 and 3 through the shared Ray Train stage runner ----------


def test_phases_two_and_three_run_as_ray_train_stages(
    ray_session, prepared_dir, data, run_dir, phase1_dir, text_dir, capsys
):
    eval_config = EvalConfig(num_negatives=[5], length_edges=[5, 10])
    align = align_recipe(phase1_dir, text_dir)
    align_job = StageJob(align, align.train, eval_config, prepared_dir, str(run_dir), "phase: 2")
    align_summary = run_stage(align_job)
    experts = experts_recipe(phase1_dir, text_dir, run_dir / "models" / "pad-align")
    experts_job = StageJob(experts, experts.train, eval_config, prepared_dir, str(run_dir), "phase: 3")
    summary = run_stage(experts_job)
    out = run_dir / "models" / "pad"
    for artifact in (
        "model.safetensors",
        "item_embeddings.safetensors",
        "gates.json",
        "expert_diagnostics.json",
        "metrics_valid.json",
        "metrics_test.json",
        "history.csv",
        "DONE.json",
        "model_config.json",
    ):
        assert (out / artifact).exists(), artifact
    metrics = json.loads((out / "metrics_test.json").read_text())
    assert 0 <= metrics["metrics"]["full"]["ndcg@10"] <= 1 and "warm_cold" in metrics["metrics"]["buckets"]
    assert summary["experts"] == ["id", "align", "llm"]
    assert all(math.isclose(sum(w.values()), 1, abs_tol=1e-3) for w in summary["gates"].values())
    assert len(pd.read_csv(out / "history.csv")) == 1
    assert "collaborative" in load_file(str(run_dir / "models" / "pad-align" / "item_embeddings.safetensors"))
    # Finished phases are skipped on a rerun.
    assert run_stage(align_job) == align_summary and run_stage(experts_job) == summary
    # The Kendall tool compares phase 1's table with the alignment expert's collaborative table.
    save_file(
        {"item_embeddings": load_file(str(phase1_dir / "model.safetensors"))["item_embedding.weight"]},
        str(phase1_dir / "item_embeddings.safetensors"),
    )
    code = main(
        [
            "analyze",
            "kendall",
            str(phase1_dir),
            str(out),
            "--table-b",
            "align.collaborative",
            "--data-dir",
            str(prepared_dir),
            "--buckets",
            "3",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "| 0 |" in printed and "| 2 |" in printed
    assert list((run_dir / "analysis").glob("kendall_*.png"))
