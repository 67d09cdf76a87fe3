"""A-LLMRec: prompt builder, stage-1 loss terms, stage-2 projectors on a frozen LLM, cached scoring/generation,
and the stages on Ray Train (DeepSpeed ZeRO-2 on 2 CPU workers) with resume — all on tiny random-weight models
built from configs (a word-level tokenizer, a 2-layer BERT, a 2-layer Llama)."""

import copy
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from raylrec.config import load_config
from raylrec.data.prepared import PreparedData
from raylrec.methods.allmrec.config import (
    ALLMRecConfig,
    CollapseCheck,
    PromptConfig,
    Stage1Config,
    Stage1Losses,
    Stage2Config,
    TextTowerConfig,
)
from raylrec.methods.allmrec.diagnostics import collapse_problems, retrieval_at_1, stage1_diagnostics, table_stats
from raylrec.methods.allmrec.inference import greedy_decode, matched_candidate
from raylrec.methods.allmrec.likelihood import answers_loglik, candidate_scores, prompt_pass
from raylrec.methods.allmrec.prompt import PromptBuilder, collate, shuffled_candidates, splice
from raylrec.methods.allmrec.stage1 import CollapseError, Stage1Recipe, item_texts
from raylrec.methods.allmrec.stage2 import Stage2Recipe
from raylrec.models.base import ModelConfig
from raylrec.train.config import TrainConfig

NUM_ITEMS = 40
TINY_BACKBONE = ModelConfig(
    name="sasrec", hidden_size=8, max_len=8, num_layers=1, num_heads=2, inner_size=16, dropout=0.1, attn_dropout=0.1
)
GENRES = ["Drama", "Comedy", "Action", "Horror"]


def title_of(i: int) -> str:
    return f"Movie {i} Part {i % 3}"


def tiny_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t)})
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "<s>", "</s>", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", bos_token="<s>", eos_token="</s>"
    )


def vocabulary_texts() -> list[str]:
    prompt = PromptConfig()
    return [
        prompt.template,
        prompt.user_sentence,
        prompt.item_format,
        "movie watch watched item ; ,",
        *[f"{title_of(i)}; {g}" for i in range(100, 100 + NUM_ITEMS) for g in GENRES],
        "0 1 2 3 4 5 6 7 8 9",
    ]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Folders holding a tiny BERT (the SBERT stand-in) and a tiny Llama (the LLM stand-in), random weights."""
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tiny-models")
    tokenizer = tiny_tokenizer(vocabulary_texts())
    bert = BertModel(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=128,
        )
    )
    bert.save_pretrained(root / "bert")
    tokenizer.save_pretrained(root / "bert")
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            bos_token_id=2,
            eos_token_id=3,
            pad_token_id=0,
        )
    )
    llama.save_pretrained(root / "llama")
    tokenizer.save_pretrained(root / "llama")
    return {"bert": str(root / "bert"), "llama": str(root / "llama"), "tokenizer": tokenizer}


@pytest.fixture(scope="module")
def titled_data_dir(tmp_path_factory):
    """A small prepared dataset written directly (no Ray): 30 users, 40 titled items with genres, sequences of
    6–14 items, 5 stored negatives per user and split."""
    root = tmp_path_factory.mktemp("allmrec-data")
    rng = np.random.default_rng(0)
    sequences = [
        rng.choice(np.arange(1, NUM_ITEMS + 1), size=int(rng.integers(6, 15)), replace=False) for _ in range(30)
    ]
    rows = [(u, int(i), 1000 + t, 4.0, t) for u, seq in enumerate(sequences) for t, i in enumerate(seq)]
    pd.DataFrame(rows, columns=["user", "item", "timestamp", "rating", "position"]).to_parquet(
        root / "interactions.parquet"
    )
    pd.DataFrame(
        {
            "item": np.arange(1, NUM_ITEMS + 1),
            "item_id": [f"i{i}" for i in range(100, 100 + NUM_ITEMS)],
            "title": [title_of(i) for i in range(100, 100 + NUM_ITEMS)],
            "genres": [GENRES[i % 4] for i in range(NUM_ITEMS)],
        }
    ).to_parquet(root / "items.parquet")
    pd.DataFrame({"user": np.arange(30), "user_id": [f"u{u}" for u in range(30)]}).to_parquet(root / "users.parquet")
    pd.DataFrame({"user": np.arange(30), "items": [list(map(int, s)) for s in sequences]}).to_parquet(
        root / "sequences.parquet"
    )
    negatives = []
    for u, seq in enumerate(sequences):
        pool = np.setdiff1d(np.arange(1, NUM_ITEMS + 1), seq)
        for split in ("valid", "test"):
            negatives.append((u, split, 5, list(map(int, rng.choice(pool, 5, replace=False)))))
    pd.DataFrame(negatives, columns=["user", "split", "num_negatives", "items"]).to_parquet(root / "negatives.parquet")
    (root / "data_report.json").write_text(
        json.dumps({"dataset": "ml-tiny", "fingerprint": "tiny", "counts": {"items": NUM_ITEMS, "users": 30}})
    )
    return root


def prompt_config(**overrides) -> PromptConfig:
    return PromptConfig(num_history=4, num_negatives=5, **overrides)


# ---------- prompt ----------


def builder(tiny_models, user_slot=True, item_slots=True, **prompt) -> PromptBuilder:
    titles = [""] + [title_of(i) for i in range(100, 100 + NUM_ITEMS)]
    return PromptBuilder(tiny_models["tokenizer"], titles, prompt_config(**prompt), user_slot, item_slots)


def test_placeholders_match_the_vectors_and_land_in_place(tiny_models):
    b = builder(tiny_models)
    example = b.build(history=[1, 2, 3, 4, 5, 6], candidates=[9, 8, 7, 10, 11, 12], target=7)
    assert example.history == [3, 4, 5, 6]  # the most recent num_history items
    assert len(example.user_slots) == 1 and example.user_slots[0] == len(b.bos)  # O_u first
    assert len(example.item_slots) == len(example.slot_items) == 4 + 6
    assert example.slot_items == [3, 4, 5, 6, 9, 8, 7, 10, 11, 12]
    assert example.answer[-1] == b.eos_id
    batch = collate([example, b.build([1], [2, 3, 4, 5, 6, 7], 2)], pad_id=0)
    assert int(batch.item_mask.sum()) == len(batch.slot_items) == 10 + 7
    assert (batch.labels[0, : len(example.ids)] == -100).all()  # the prompt carries no loss
    embeds = torch.zeros(2, batch.input_ids.shape[1], 3)
    vectors = torch.arange(17 * 3, dtype=torch.float).view(17, 3)
    spliced = splice(embeds, batch.item_mask, vectors)
    assert torch.equal(spliced[0, example.item_slots[0]], vectors[0])
    assert torch.equal(spliced[1, batch.item_mask[1].nonzero()[-1, 0]], vectors[-1])
    with pytest.raises(ValueError, match="placeholders"):
        splice(embeds, batch.item_mask, vectors[:-1])


def test_ablations_remove_their_slots(tiny_models):
    no_user = builder(tiny_models, user_slot=False).build([1, 2], [3, 4, 5, 6, 7, 8])
    assert no_user.user_slots == [] and "user representation" not in no_user_text(tiny_models, no_user)
    no_items = builder(tiny_models, item_slots=False).build([1, 2], [3, 4, 5, 6, 7, 8])
    assert no_items.item_slots == [] and no_items.slot_items == [] and len(no_items.user_slots) == 1


def no_user_text(tiny_models, example) -> str:
    return tiny_models["tokenizer"].decode(example.ids)


def test_truncation_drops_the_oldest_history_first(tiny_models):
    full = builder(tiny_models).build([1, 2, 3, 4], [5, 6, 7, 8, 9, 10])
    limit = len(full.ids) - 3
    cut = builder(tiny_models, max_prompt_tokens=limit).build([1, 2, 3, 4], [5, 6, 7, 8, 9, 10])
    assert len(cut.ids) <= limit and cut.history == [2, 3, 4][-len(cut.history) :] and len(cut.history) < 4
    assert len(cut.item_slots) == len(cut.history) + 6
    with pytest.raises(ValueError, match="max_prompt_tokens"):
        builder(tiny_models, max_prompt_tokens=20).build([1, 2], [5, 6, 7, 8, 9, 10])


def test_candidate_shuffling_is_seeded_per_split_and_user():
    negatives = np.array([11, 12, 13, 14, 15])
    first = shuffled_candidates(7, negatives, seed=0, split="test", user=3)
    assert sorted(first) == [7, 11, 12, 13, 14, 15]
    assert np.array_equal(first, shuffled_candidates(7, negatives, seed=0, split="test", user=3))
    orders = {tuple(shuffled_candidates(7, negatives, 0, "test", u)) for u in range(10)}
    assert len(orders) > 5  # the target is not always in the same slot
    assert not np.array_equal(
        first, shuffled_candidates(7, negatives, seed=1, split="test", user=3)
    ) or not np.array_equal(first, shuffled_candidates(7, negatives, seed=2, split="test", user=3))


def test_answer_uses_the_prompts_surface_form_and_its_tokens_occur_in_the_prompt(tiny_models):
    b = builder(tiny_models)
    example = b.build(history=[1, 2, 3], candidates=[9, 8, 7, 10, 11, 12], target=7)
    assert example.ids[0] == tiny_models["tokenizer"].bos_token_id  # the tokenizer's BOS starts a plain prompt
    answer = example.answer[:-1]
    assert tiny_models["tokenizer"].decode(answer).replace(" ", "") == f'"{title_of(106)}"'.replace(" ", "")
    assert contains(example.ids, answer)  # the whole quoted title, as listed: the LLM can copy it
    # With a chat template the prompt is the user turn and the answer the assistant turn; no extra BOS.
    tokenizer = copy.deepcopy(tiny_models["tokenizer"])
    tokenizer.chat_template = (
        "{% for m in messages %}<s> {{ m['content'] }} </s> {% endfor %}{% if add_generation_prompt %}<s>{% endif %}"
    )
    titles = [""] + [title_of(i) for i in range(100, 100 + NUM_ITEMS)]
    chat = PromptBuilder(tokenizer, titles, prompt_config()).build([1, 2, 3], [9, 8, 7, 10, 11, 12], 7)
    assert chat.ids[0] == 2 and chat.ids[-1] == 2 and chat.ids.count(2) == 2 and chat.ids.count(3) == 1  # <s>, </s>
    assert contains(chat.ids, chat.answer[:-1]) and len(chat.item_slots) == 3 + 6
    plain = PromptBuilder(tokenizer, titles, prompt_config(chat_template=False)).build([1], [9, 8, 7, 10, 11, 12], 7)
    assert plain.ids.count(2) == 1 and 3 not in plain.ids  # switchable: the plain prompt after one BOS


def contains(sequence: list[int], part: list[int]) -> bool:
    return any(sequence[i : i + len(part)] == part for i in range(len(sequence) - len(part) + 1))


def test_generation_hits_only_on_an_exact_candidate_title():
    titles = ["Heat (1995)", "White Heat (1949)", "Toy Story (1995)"]
    assert matched_candidate(' "Heat (1995)"', titles) == 0
    assert matched_candidate("white heat 1949.", titles) == 1  # punctuation and case normalised
    assert matched_candidate("White Heat (1949)", titles[:1]) is None  # a title inside another is no match
    assert matched_candidate('"Heat (1995)", "Toy Story (1995)"', titles) is None  # a list names no one title
    assert matched_candidate("Heat (1995) is great", titles) is None
    assert matched_candidate('"Heat (1995)"\nmore text', titles) == 0  # the first line is the answer
    assert matched_candidate("heat 1995", titles, strict_punctuation=True) is None
    assert matched_candidate("", titles) is None


# ---------- stage 1 ----------


@pytest.fixture(scope="module")
def backbone_dir(titled_data_dir, tmp_path_factory):
    """A finished backbone stage without Ray: an untrained tiny SASRec exported as an ID stage would be."""
    from safetensors.torch import save_file

    from raylrec.models import build_model
    from raylrec.train.config import StageConfig
    from raylrec.train.id_model import IDModelRecipe
    from raylrec.train.stage import DONE_FILE

    torch.manual_seed(0)
    data = PreparedData(titled_data_dir)
    run_dir = tmp_path_factory.mktemp("allmrec-run")
    out = run_dir / "models" / "sasrec-bce"
    out.mkdir(parents=True)
    model = build_model(data.num_items, TINY_BACKBONE).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "model.safetensors")
    IDModelRecipe(StageConfig(name="sasrec-bce", model=TINY_BACKBONE)).export(model, data, out)
    (out / DONE_FILE).write_text(json.dumps({"stage": "sasrec-bce", "trainable_params": 0}))
    return out


def stage1_config(tiny_models, **overrides) -> Stage1Config:
    # Tiny random-weight models give near-identical rows (an untrained SASRec's E is ≈ 0): stage-1 exports here
    # record the collapse instead of failing on it; the collapse test sets `action: error` itself.
    settings = {
        "joint_dim": 6,
        "text": TextTowerConfig(model=tiny_models["bert"], max_length=16),
        "train": TrainConfig(lr=1e-3, batch_size=8, max_epochs=1),
        "collapse": CollapseCheck(action="warn"),
        **overrides,
    }
    return Stage1Config(**settings)


def test_stage1_loss_terms_are_nonzero_and_switchable(tiny_models, titled_data_dir, backbone_dir):
    data = PreparedData(titled_data_dir)
    recipe = Stage1Recipe("s1", stage1_config(tiny_models), backbone_dir)
    core = recipe.build(data)
    users, positives, seen = recipe.training_tensors(data)
    assert len(users) == data.num_users  # one sample per user: the last training item
    assert item_texts(data, None)[1] == f"{title_of(100)}; {GENRES[0]}"  # MovieLens-style "{title}; {genres}"
    negatives = torch.randint(1, data.num_items + 1, positives.shape)
    terms = core(users[:8], positives[:8], negatives[:8])
    assert set(terms) == {"matching", "item_recon", "text_recon", "rec"}
    assert all(float(v.detach()) > 0 for v in terms.values()), terms
    full = core.total(terms)
    assert full.item() == pytest.approx(
        (terms["matching"] + 0.5 * terms["item_recon"] + 0.2 * terms["text_recon"] + terms["rec"]).item(), rel=1e-6
    )
    for switch, gone in (("matching", ["matching"]), ("recon", ["item_recon", "text_recon"]), ("rec", ["rec"])):
        config = stage1_config(tiny_models, losses=Stage1Losses(**{switch: False}))
        weights = Stage1Recipe("s1", config, backbone_dir).build(data).loss_weights()
        assert all(weights[name] == 0 for name in gone) and sum(w > 0 for w in weights.values()) == 4 - len(gone)
    # Fine-tuned SBERT receives gradients; the frozen-SBERT ablation does not.
    core.total(terms).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in core.tower.parameters())
    frozen = Stage1Recipe(
        "s1",
        stage1_config(tiny_models, text=TextTowerConfig(model=tiny_models["bert"], max_length=16, finetune=False)),
        backbone_dir,
    ).build(data)
    frozen.total(frozen(users[:8], positives[:8], negatives[:8])).backward()
    assert all(p.grad is None for p in frozen.tower.parameters())
    # The text-reconstruction target is detached (the public code's `.data`): SBERT gets the gradient of the
    # reconstruction only, not the pull of its own outputs towards what the decoder reproduces.
    core.eval()  # no dropout: the same forward twice

    def tower_grads(detach: bool) -> list[torch.Tensor]:
        core.zero_grad()
        text = core.text_embeddings(positives[:8])
        target = text.detach() if detach else text
        torch.nn.functional.mse_loss(core.text_decoder(core.text_encoder(text)), target).backward()
        return [p.grad.clone() for p in core.tower.parameters() if p.grad is not None]

    core.zero_grad()
    core(users[:8], positives[:8], negatives[:8])["text_recon"].backward()
    used = [p.grad.clone() for p in core.tower.parameters() if p.grad is not None]
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(used, tower_grads(detach=True)))
    assert not all(torch.allclose(a, b, atol=1e-7) for a, b in zip(used, tower_grads(detach=False)))
    # SBERT trains in its own optimizer group at text.lr; with a frozen SBERT there is no such group.
    groups = recipe.parameter_groups(core)
    assert (
        len(groups) == 2
        and groups[1]["lr"] == 1e-4
        and {id(p) for p in groups[1]["params"]} == {id(p) for p in core.tower.parameters()}
    )
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in core.parameters() if p.requires_grad)
    assert len(Stage1Recipe("s1", frozen.config, backbone_dir).parameter_groups(frozen)) == 1
    all_items = Stage1Recipe("s1", stage1_config(tiny_models, sequence_items="all"), backbone_dir)
    # A-LLMRec_all: one sample per training transition of the whole sequence, not only the last window
    transitions = sum(max(len(data.history("train").row(u)) - 1, 0) for u in range(data.num_users))
    assert len(all_items.training_tensors(data)[0]) == transitions


def test_collapse_diagnostics_detect_a_collapsed_model(tiny_models, titled_data_dir, backbone_dir, tmp_path):
    torch.manual_seed(0)
    spread = torch.randn(50, 8)
    assert table_stats(spread)["mean_cosine"] == pytest.approx(
        float(
            (torch.nn.functional.normalize(spread, dim=1) @ torch.nn.functional.normalize(spread, dim=1).T)
            .fill_diagonal_(0)
            .sum()
            / (50 * 49)
        ),
        abs=1e-5,
    )
    assert retrieval_at_1(spread, spread + 0.01 * torch.randn(50, 8)) == 1.0
    healthy = stage1_diagnostics(spread, spread, spread + 0.01 * torch.randn(50, 8))
    assert collapse_problems(healthy, CollapseCheck()) == ([], [])
    point = torch.ones(50, 8) + 1e-3 * torch.randn(50, 8)  # every item nearly the same vector
    collapsed = stage1_diagnostics(point, point, torch.ones(50, 8) + 1e-3 * torch.randn(50, 8))
    assert collapsed["e"]["mean_cosine"] > 0.99 and collapsed["e"]["std_per_dim"] < 0.01
    problems, other = collapse_problems(collapsed, CollapseCheck())
    assert any(p.startswith("e rows") for p in problems) and any("retrieval" in p for p in problems) and not other
    problems, other = collapse_problems(collapsed, CollapseCheck(checked=["text_encoder"]))  # only warnings
    assert any(p.startswith("text_encoder") for p in problems) and any(p.startswith("e rows") for p in other)
    # A stage-1 model whose item encoder outputs one point fails at export, loudly; `warn` keeps and records it.
    data = PreparedData(titled_data_dir)
    recipe = Stage1Recipe("s1", stage1_config(tiny_models, collapse=CollapseCheck(action="error")), backbone_dir)
    core = recipe.build(data).eval()
    with torch.no_grad():
        for encoder in (core.item_encoder, core.text_encoder):
            encoder.weight.mul_(1e-6)
            encoder.bias.fill_(1.0)
    with pytest.raises(CollapseError, match="collapsed"):
        recipe.export(core, data, tmp_path)
    assert not (tmp_path / "joint_embeddings.safetensors").exists()
    warned = Stage1Recipe("s1", stage1_config(tiny_models), backbone_dir)  # action: warn
    facts = warned.export(core, data, tmp_path)
    assert facts["warnings"] and facts["diagnostics"]["e"]["mean_cosine"] > 0.99
    assert json.loads((tmp_path / "diagnostics.json").read_text())["collapse"]
    # The validation scorer goes through the text side: a collapsed q gives every item (nearly) one score.
    with torch.no_grad():
        scores = recipe.scorer(core, data, "valid", torch.device("cpu"))(np.arange(4))[:, 1:]
    assert float(scores.std(1).max()) < 1e-3 * float(scores.abs().mean())


# ---------- stage 2 (without Ray) ----------


def stage2_config(tiny_models, **overrides) -> Stage2Config:
    train = TrainConfig(
        lr=1e-2,
        batch_size=2,
        max_epochs=1,
        deepspeed="zero2",
        valid_users=4,
        select_metric="ndcg@5",
        num_workers=2,
        cpus_per_worker=0.5,
    )
    return Stage2Config(llm=tiny_models["llama"], prompt=prompt_config(), train=train, **overrides)


@pytest.fixture(scope="module")
def stage1_dir(tiny_models, titled_data_dir, backbone_dir):
    """A stage-1 artifact made without Ray: its export (joint tables) from an untrained stage-1 model."""
    from raylrec.train.stage import DONE_FILE

    data = PreparedData(titled_data_dir)
    recipe = Stage1Recipe("allmrec-stage1", stage1_config(tiny_models), backbone_dir)
    out = backbone_dir.parent / "untrained-stage1"
    out.mkdir(exist_ok=True)
    recipe.export(recipe.build(data).eval(), data, out)
    (out / DONE_FILE).write_text("{}")
    return out


def test_only_the_projectors_learn_and_vectors_match_the_token_scale(
    tiny_models, titled_data_dir, backbone_dir, stage1_dir
):
    data = PreparedData(titled_data_dir)
    recipe = Stage2Recipe("s2", stage2_config(tiny_models), backbone_dir, stage1_dir)
    core = recipe.build(data)
    core.train()
    assert not core.llm.training  # the frozen LLM stays in eval mode
    loss = recipe.loss(core, core, (torch.tensor([0, 1, 2]),), torch.Generator().manual_seed(0))
    loss.backward()
    assert all(p.grad is None for p in core.llm.parameters())
    for proj in (core.user_proj, core.item_proj):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in proj.parameters())
    projected = core.project(core.item_proj, core.joint_e[1:5])
    assert torch.allclose(projected.norm(dim=-1), torch.full((4,), core.token_scale), rtol=1e-4)
    table = core.llm.get_input_embeddings().weight
    assert core.token_scale == pytest.approx(float(table.norm(dim=-1).mean()), rel=1e-4)
    # Ablations: no user projector / no item projector / a random table of e's scale.
    assert (
        Stage2Recipe("s2", stage2_config(tiny_models, user_representation=False), backbone_dir, stage1_dir)
        .build(data)
        .user_proj
        is None
    )
    assert (
        Stage2Recipe("s2", stage2_config(tiny_models, item_embeddings="none"), backbone_dir, stage1_dir)
        .build(data)
        .item_proj
        is None
    )
    random = Stage2Recipe("s2", stage2_config(tiny_models, item_embeddings="random"), backbone_dir, stage1_dir).build(
        data
    )
    assert not torch.allclose(random.joint_e, core.joint_e)
    assert float(random.joint_e[1:].std()) == pytest.approx(float(core.joint_e[1:].std()), rel=0.2)


def example_drawn_by_loss(recipe: Stage2Recipe, user: int, seed: int):
    """The training prompt `recipe.loss` builds for `user` from a generator seeded `seed`, and its target's place."""
    rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=torch.Generator().manual_seed(seed))))
    example = recipe.example("train", user, rng)
    return example, example.candidates.index(int(recipe.context.targets["train"][user]))


def test_ranking_loss_adds_a_cross_entropy_over_the_candidates_to_the_paper_loss(
    tiny_models, titled_data_dir, backbone_dir, stage1_dir
):
    """With weight 0 the ranking objective is eq. 8's loss; with weight w it adds w × the cross-entropy of the
    target among the candidates' summed log-likelihoods (inference's scores), and the projectors get its gradient."""
    data = PreparedData(titled_data_dir)
    paper = Stage2Recipe("s2", stage2_config(tiny_models), backbone_dir, stage1_dir)
    ranked = Stage2Recipe("s2", stage2_config(tiny_models, ranking_loss=2.0), backbone_dir, stage1_dir)
    core = paper.build(data).eval()
    ranked.build(data)
    ranked_core = copy.deepcopy(core)
    ranked_core.ranking_weight = 2.0
    users = (torch.tensor([3]),)
    eq8 = paper.loss(core, core, users, torch.Generator().manual_seed(7))
    total = ranked.loss(ranked_core, ranked_core, users, torch.Generator().manual_seed(7))

    example, target = example_drawn_by_loss(paper, user=3, seed=7)
    inputs = paper.model_inputs(core, [example], np.array([3]), "train", with_answer=False)
    cache, last, length = prompt_pass(core, inputs)
    answers = [paper.context.builder.answer_tokens(c) for c in example.candidates]
    scores, _ = answers_loglik(core, cache, last, length, answers)
    expected_ranking = float(torch.nn.functional.cross_entropy(scores.unsqueeze(0), torch.tensor([target])))
    assert total.item() == pytest.approx(eq8.item() + 2.0 * expected_ranking, rel=1e-4)

    ranked_core.train()
    ranked.loss(ranked_core, ranked_core, users, torch.Generator().manual_seed(7)).backward()
    assert all(p.grad is None for p in ranked_core.llm.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ranked_core.item_proj.parameters())


def test_match_loss_adds_a_token_space_cross_entropy_and_needs_both_projectors(
    tiny_models, titled_data_dir, backbone_dir, stage1_dir
):
    """The matching term is w × the cross-entropy of the target among the candidates scored by cos(F_U(x_u),
    F_I(e_c)) / temperature; it trains both projectors and is refused when one of them is switched off."""
    data = PreparedData(titled_data_dir)
    paper = Stage2Recipe("s2", stage2_config(tiny_models), backbone_dir, stage1_dir)
    matched = Stage2Recipe(
        "s2", stage2_config(tiny_models, match_loss=0.5, match_temperature=0.2), backbone_dir, stage1_dir
    )
    core = paper.build(data).eval()
    matched.build(data)
    matched_core = copy.deepcopy(core)
    matched_core.match_weight, matched_core.match_temperature = 0.5, 0.2
    users = (torch.tensor([3]),)
    eq8 = paper.loss(core, core, users, torch.Generator().manual_seed(7))
    total = matched.loss(matched_core, matched_core, users, torch.Generator().manual_seed(7))

    example, target = example_drawn_by_loss(paper, user=3, seed=7)
    with torch.no_grad():
        user = core.project(core.user_proj, core.users_train[3:4])
        items = core.project(core.item_proj, core.joint_e[torch.tensor(example.candidates)])
    cosines = torch.nn.functional.cosine_similarity(user, items) / 0.2
    expected = float(torch.nn.functional.cross_entropy(cosines.unsqueeze(0), torch.tensor([target])))
    assert total.item() == pytest.approx(eq8.item() + 0.5 * expected, rel=1e-4)

    matched_core.train()
    matched.loss(matched_core, matched_core, users, torch.Generator().manual_seed(7)).backward()
    for projector_module in (matched_core.user_proj, matched_core.item_proj):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in projector_module.parameters())
    with pytest.raises(ValueError, match="match_loss"):
        stage2_config(tiny_models, match_loss=1.0, user_representation=False)


def test_token_space_hit_ranks_the_stored_candidates_by_projected_cosine(
    tiny_models, titled_data_dir, backbone_dir, stage1_dir
):
    """A user token equal to its target's item token ranks the target first for every user (HR@1 = 1); without a
    user projector there is nothing to compare (None)."""
    data = PreparedData(titled_data_dir)
    recipe = Stage2Recipe("s2", stage2_config(tiny_models), backbone_dir, stage1_dir)
    core = recipe.build(data).eval()
    assert 0.0 <= recipe.token_space_hit(core) <= 1.0
    core.user_proj = core.item_proj  # the same projector on the target's own joint embedding
    core.users_valid = core.joint_e[torch.from_numpy(recipe.context.targets["valid"])]
    assert recipe.token_space_hit(core) == 1.0
    core.user_proj = None
    assert recipe.token_space_hit(core) is None


def test_centred_tokens_subtract_the_mean_projected_item_token_before_the_scale_match(
    tiny_models, titled_data_dir, backbone_dir, stage1_dir
):
    data = PreparedData(titled_data_dir)
    plain = Stage2Recipe("s2", stage2_config(tiny_models, scale_match=False), backbone_dir, stage1_dir).build(data)
    centred = copy.deepcopy(plain)
    centred.center_tokens = True
    with torch.no_grad():
        raw_items = plain.project(plain.item_proj, plain.joint_e[1:])
        assert torch.allclose(
            centred.project(centred.item_proj, centred.joint_e[1:]).mean(0), torch.zeros(1), atol=1e-5
        )
        user = plain.users_test[:3]
        expected = plain.project(plain.user_proj, user) - raw_items.mean(0)
        assert torch.allclose(centred.project(centred.user_proj, user), expected, atol=1e-5)
    with pytest.raises(ValueError, match="center_tokens"):
        stage2_config(tiny_models, center_tokens=True, item_embeddings="none")


def test_cached_candidate_scores_and_greedy_decoding_match_plain_forwards(
    tiny_models, titled_data_dir, backbone_dir, stage1_dir
):
    data = PreparedData(titled_data_dir)
    recipe = Stage2Recipe("s2", stage2_config(tiny_models), backbone_dir, stage1_dir)
    core = recipe.build(data).eval()
    example = recipe.example("test", 5, with_target=False)
    inputs = recipe.model_inputs(core, [example], np.array([5]), "test", with_answer=False)
    answers = [recipe.context.builder.answer_tokens(c) for c in example.candidates]
    cache, last, length = prompt_pass(core, inputs)
    cached, counts = answers_loglik(core, copy.deepcopy(cache), last, length, answers)
    assert counts.tolist() == [len(a) for a in answers]
    normalised = candidate_scores(recipe, core, example, 5, "test", length_normalize=True)
    assert torch.allclose(normalised, cached / torch.tensor([len(a) for a in answers]), atol=1e-5)
    tokens = greedy_decode(core, cache, last, length, recipe.context.builder.eos_id, max_new_tokens=5)
    with torch.no_grad():
        prompt_embeds = core.input_embeddings(
            collate([example], 0, with_answer=False), inputs["user_vectors"], inputs["item_vectors"]
        )
        embedding = core.llm.get_input_embeddings()
        for answer, score in zip(answers, cached):
            full = torch.cat([prompt_embeds, embedding(torch.tensor([answer[:-1]]))], dim=1)
            logp = torch.log_softmax(core.llm(inputs_embeds=full).logits[0, length - 1 :], -1)
            assert float(score) == pytest.approx(float(logp[torch.arange(len(answer)), answer].sum()), abs=1e-4)
        sequence, expected = prompt_embeds, []
        for _ in range(5):  # greedy without a cache
            token = int(core.llm(inputs_embeds=sequence).logits[0, -1].argmax())
            if token == recipe.context.builder.eos_id:
                break
            expected.append(token)
            sequence = torch.cat([sequence, embedding(torch.tensor([[token]]))], dim=1)
    assert tokens == expected


# ---------- stage 2 on Ray Train with DeepSpeed ZeRO-2 on 2 CPU workers, from a stage-1 artifact ----------


@pytest.mark.parametrize("zero", ["zero2", pytest.param("zero3", marks=pytest.mark.slow)])
def test_stage2_trains_with_deepspeed_on_two_workers_from_a_stage1_artifact(
    ray_session, tiny_models, titled_data_dir, backbone_dir, stage1_dir, zero
):
    from raylrec.eval.evaluator import EvalConfig
    from raylrec.train.stage import StageJob, run_stage

    config = stage2_config(tiny_models, train_users=8)
    config = config.model_copy(update={"train": config.train.model_copy(update={"deepspeed": zero})})
    recipe = Stage2Recipe(f"ds-smoke-{zero}", config, backbone_dir, stage1_dir)
    run_dir = backbone_dir.parents[1]  # <run>/models/<backbone>
    summary = run_stage(
        StageJob(
            recipe,
            config.train,
            EvalConfig(num_negatives=[5], ks=[1, 5, 10]),
            titled_data_dir,
            str(run_dir),
            "stage2: smoke",
        )
    )
    out = run_dir / "models" / f"ds-smoke-{zero}"
    weights = load_file(out / "model.safetensors")
    assert weights and all(k.startswith(("user_proj.", "item_proj.")) for k in weights)  # never the frozen LLM
    assert summary["trainable_params"] == sum(v.numel() for v in weights.values())
    checkpoint = sorted((out / "train").glob("checkpoint_2*"))[-1]
    files = list((checkpoint / "deepspeed").rglob("*.pt"))
    assert len([f for f in files if "optim_states" in f.name]) == 2  # each worker's ZeRO-2 partition
    for file in files:
        module = torch.load(file, weights_only=False).get("module") or {}
        assert not any(k.startswith("llm.") for k in module), file
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == [0] and 0 <= history["valid_ndcg@5"].iloc[0] <= 1
    if zero == "zero2":
        check_inference_on_the_same_candidates(recipe, titled_data_dir, backbone_dir, out)


def check_inference_on_the_same_candidates(recipe, data_dir, backbone_dir, stage2_dir):
    """Inference from a stage-2 artifact: generation + likelihood ranking for 3 sampled users, and every ID model
    of the run directory scored on exactly those users and candidates; a missing ID stage is reported."""
    import shutil

    from raylrec.eval.evaluator import EvalConfig
    from raylrec.methods.allmrec.config import InferenceConfig
    from raylrec.methods.allmrec.inference import run_inference

    shutil.copytree(backbone_dir, backbone_dir.parent / "other-id", dirs_exist_ok=True)
    config = InferenceConfig(
        users=3,
        num_workers=1,
        cpus_per_worker=0.5,
        max_new_tokens=4,
        variants=["e"],
        compare_id_models=["other-id", "not-trained"],
    )
    out = stage2_dir.parent / "allmrec-eval"
    summary = run_inference(
        recipe,
        data_dir,
        stage2_dir,
        backbone_dir,
        out,
        config,
        EvalConfig(num_negatives=[5], ks=[1, 5, 10], length_edges=[5, 10]),
        seed=0,
    )
    assert summary["id_models_missing"] == ["not-trained"]
    llm = json.loads((out / "metrics_test_e.json").read_text())
    other = json.loads((out / "metrics_test_id_other-id.json").read_text())
    backbone = json.loads((out / "metrics_test_backbone.json").read_text())
    assert llm["users"] == other["users"] == backbone["users"] and len(llm["users"]) == 3
    assert other["metrics"] == backbone["metrics"]  # the same model on the same candidates scores the same
    assert (backbone["model"], other["model"]) == (backbone_dir.name, "other-id")  # named by stage
    assert llm["metrics"]["generation"]["all"]["n"] == 3 and 0 <= llm["metrics"]["sampled_5"]["ndcg@5"] <= 1
    assert 0 <= llm["metrics"]["generation"]["all"]["valid_rate"] <= 1
    # stage 2's warnings (tiny random models: projected tokens alike) are carried into every metrics JSON
    assert llm["warnings"] == json.loads((stage2_dir / "DONE.json").read_text())["warnings"]
    likelihood = llm["metrics"]["likelihood"]  # both rankings; the headline one is sampled_5
    assert likelihood["headline"] == "sum" and likelihood["sum"]["sampled_5"] == llm["metrics"]["sampled_5"]
    # Popularity on the same users and candidates, as a row of the leaderboard's candidate table.
    from raylrec.leaderboard.core import read_record

    popularity = read_record(out / "metrics_test_popularity.json")
    assert popularity.label == "Popularity (same users)" and popularity.protocol == "candidates"
    assert popularity.users == 3 and "cand_hit@1" in popularity.values
    for name in ("backbone", "popularity", "e_sum", "e_mean"):  # per-user ranks for paired comparisons
        assert set(pd.read_parquet(out / f"ranks_test_{name}.parquet")["user"]) >= set(llm["users"])


# ---------- the whole method on Ray: stage 1, stage 2 (DeepSpeed), inference, resume ----------


def pipeline_config(tiny_models, run_dir, data_dir, **stage2) -> ALLMRecConfig:
    return ALLMRecConfig(
        run_dir=str(run_dir),
        name="allmrec",
        data={"dataset": "synthetic", "interactions_path": "unused", "negatives": [5]},
        eval={"num_negatives": [5], "ks": [1, 5, 10], "length_edges": [5, 10]},
        backbone={
            "name": "sasrec-bce",
            "model": TINY_BACKBONE.model_dump(),
            "train": {"loss": "bce", "max_epochs": 1, "batch_size": 16},
        },
        stage1=stage1_config(tiny_models),
        stage2=stage2_config(tiny_models, train_users=8, **stage2),
        inference={
            "users": 3,
            "all_cold_users": True,
            "num_workers": 1,
            "cpus_per_worker": 0.5,
            "max_new_tokens": 4,
            "variants": ["e", "q"],
        },
    )


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_stages_run_on_ray_with_deepspeed_and_resume(
    ray_session, tiny_models, titled_data_dir, backbone_dir, monkeypatch
):
    from raylrec.methods.allmrec import pipeline

    run_dir = backbone_dir.parent.parent
    monkeypatch.setattr(pipeline, "ensure_prepared", lambda *args, **kwargs: titled_data_dir)
    config = pipeline_config(tiny_models, run_dir, titled_data_dir)
    summaries = pipeline.run_allmrec(config)
    models = run_dir / "models"
    joint = load_file(models / "allmrec-stage1" / "joint_embeddings.safetensors")
    assert joint["e"].shape == joint["q"].shape == (NUM_ITEMS + 1, 6)
    stage2 = load_file(models / "allmrec-stage2" / "model.safetensors")
    assert stage2 and all(k.startswith(("user_proj.", "item_proj.")) for k in stage2)  # no frozen LLM weights
    checkpoint = sorted((models / "allmrec-stage2" / "train").glob("checkpoint_2*"))[-1]
    assert (checkpoint / "deepspeed").is_dir()
    saved = [f for f in (checkpoint / "deepspeed").rglob("*.pt")]
    assert len([f for f in saved if "optim_states" in f.name]) == 2  # one ZeRO partition per worker
    for file in saved:
        state = torch.load(file, weights_only=False)
        module = state.get("module") or {}
        assert not any(k.startswith("llm.") for k in module), file
    assert summaries["stage2"]["trainable_params"] == sum(v.numel() for v in stage2.values())
    metrics = json.loads((models / "allmrec-eval" / "metrics_test_e.json").read_text())["metrics"]
    assert metrics["sampled_5"]["n"] == 3 and 0 <= metrics["sampled_5"]["ndcg@5"] <= 1
    assert metrics["generation"]["all"]["n"] == 3 and "cold" in metrics["buckets"]["warm_cold"]
    assert (models / "allmrec-eval" / "metrics_test_q.json").exists()
    assert (models / "allmrec-eval" / "metrics_test_backbone.json").exists()

    # Stage 2 alone, longer: reads stage 1's artifact (not retrained) and resumes from its DeepSpeed checkpoint.
    stage1_done = (models / "allmrec-stage1" / "DONE.json").stat().st_mtime
    longer = config.model_copy(
        update={
            "stages": ["stage2"],
            "stage2": config.stage2.model_copy(
                update={"train": config.stage2.train.model_copy(update={"max_epochs": 2})}
            ),
        }
    )
    (models / "allmrec-stage2" / "DONE.json").unlink()  # as if the driver was lost after the last checkpoint
    resumed = pipeline.run_allmrec(longer)
    assert (models / "allmrec-stage1" / "DONE.json").stat().st_mtime == stage1_done
    assert pd.read_csv(models / "allmrec-stage2" / "history.csv")["epoch"].tolist() == [0, 1]
    assert resumed["stage2"]["final_metrics"]["epoch"] == 1


def test_presets_load(tmp_path):
    cpu = load_config(ALLMRecConfig, "allmrec")
    paper = load_config(ALLMRecConfig, "allmrec-paper")
    long = load_config(ALLMRecConfig, "allmrec-long")
    assert not cpu.stage1.text.finetune and cpu.inference.variants == ["e"]  # frozen MiniLM; no q in the main job
    assert long.name != cpu.name and long.stage2.train_users is None and long.inference.variants == ["e", "q"]
    assert long.backbone == cpu.backbone  # one shared backbone stage in a run directory
    assert cpu.stage2.llm == "smollm2-135m" and cpu.stage2.train.deepspeed == "zero2"
    assert paper.stage1.train.batch_size == 32
    assert paper.stage2.train.batch_size * paper.stage2.train.num_workers == 4  # global batch 4
    assert paper.stage2.prompt.num_history == 10 and paper.inference.users is None
    with pytest.raises(Exception, match="num_negatives"):
        ALLMRecConfig(stage2={"prompt": {"num_negatives": 7}})
