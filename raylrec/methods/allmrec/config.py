"""Typed configuration of A-LLMRec (Kim et al., KDD'24): stage 1 (collaborative ↔ text alignment), stage 2
(joint embeddings → a frozen LLM's token space), and inference (generation Hit@1, likelihood ranking)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from raylrec.config import StrictModel
from raylrec.data.prepare import DataConfig
from raylrec.eval.evaluator import EvalConfig
from raylrec.storage import DEFAULT_RUN_DIR
from raylrec.train.config import TrainConfig
from raylrec.train.spec import StageSpec

USER_SLOT = "[UserRep]"
ITEM_SLOT = "[ItemEmb]"


class TextTowerConfig(StrictModel):
    """The SBERT-family encoder of item texts, fine-tuned in stage 1 (Q_i = SBERT(text_i))."""

    model: str = "minilm"  # packaged short name, local folder or sentence-transformers / HF id
    template: str | None = None  # None: the dataset's default (MovieLens "{title}; {genres}", Amazon title+description)
    max_length: int = Field(64, ge=4)  # tokens per item text
    pooling: Literal["mean", "cls"] = "mean"  # sentence-transformers' all-* models use mean pooling
    finetune: bool = True  # False: the "Freeze SBERT" ablation (Table 6); its text embeddings are computed once
    # Learning rate of the fine-tuned encoder, in its own optimizer group (the encoders/decoders use
    # stage1.train.lr). The paper's 1e-4 (Table 11); at 1e-3 MiniLM's outputs collapsed to one point.
    lr: float = Field(1e-4, gt=0)


class Stage1Losses(StrictModel):
    """Switches of the stage-1 loss terms (eq. 6); each off-switch is one row of the paper's Table 6."""

    matching: bool = True  # eq. 2, MSE(e_i, q_i)
    recon: bool = True  # eq. 3 + 4, item and text reconstruction (the ablation drops both together)
    rec: bool = True  # eq. 5, BCE of x_u against the decoded positive vs. a sampled negative


class CollapseCheck(StrictModel):
    """When the stage-1 tables (SBERT outputs Q, e = f_I^enc(E), q = f_T^enc(Q)) count as collapsed: every item
    would reach the LLM as nearly the same soft token. Checked at export; the numbers go to DONE.json and
    `diagnostics.json` either way."""

    # Mean pairwise cosine of the rows of Q, e or q above this: collapsed (MiniLM's titles+genres ≈ 0.3–0.5).
    max_mean_cosine: float = Field(0.95, gt=0, le=1)
    # e→q retrieval@1 (is q_i the nearest q to e_i?) below this many times chance (1 / number of items): the two
    # sides no longer match item by item.
    min_retrieval_over_chance: float = Field(5.0, ge=0)
    # error: stop with a message naming the numbers (no DONE.json, so nothing downstream reads the tables);
    # warn: log it and carry the warning into stage 1's DONE.json and every A-LLMRec metrics JSON.
    action: Literal["error", "warn"] = "error"
    # The tables `action` applies to; a collapse of any other table is always only a carried warning (e.g. q when
    # only the `e` variant is evaluated). text_encoder = SBERT's outputs Q; e→q retrieval counts as "q".
    checked: list[Literal["text_encoder", "e", "q", "projected_e", "projected_q"]] = Field(
        default_factory=lambda: ["text_encoder", "e", "q", "projected_e", "projected_q"]
    )


def stage1_train() -> TrainConfig:
    # Paper §5.1 / Table 11: batch 32, 10 epochs, lr 1e-4 with Adam.
    return TrainConfig(lr=1e-4, batch_size=32, max_epochs=10, patience=10)


class Stage1Config(StrictModel):
    joint_dim: int = Field(128, ge=1)  # d' (Table 11)
    # None: encoder and decoder are one Linear each (the paper's "1-layer MLP"); an int: Linear → act → Linear with
    # this hidden width (the public code's shape).
    hidden_dim: int | None = None
    alpha: float = Field(0.5, ge=0)  # item reconstruction weight
    beta: float = Field(0.2, ge=0)  # text reconstruction weight
    losses: Stage1Losses = Stage1Losses()
    # last: one sample per user, its last training item (paper default); all: every item of the user's last
    # training window (A-LLMRec_all, §5.4.2).
    sequence_items: Literal["last", "all"] = "last"
    text: TextTowerConfig = TextTowerConfig()
    # The per-epoch validation scorer (model selection). text: x_u · f_I^dec(q_i), the collaborative signal that
    # reaches the text side (§4.1.4's cold-item path) — it falls when e and q stop matching item by item or
    # collapse; item: x_u · f_I^dec(f_I^enc(E_i)), which a (near-)invertible autoencoder keeps even when e collapses.
    validation: Literal["text", "item"] = "text"
    collapse: CollapseCheck = CollapseCheck()
    train: TrainConfig = Field(default_factory=stage1_train)


class PromptConfig(StrictModel):
    """The stage-2 prompt (Figure 3), with the domain's nouns and verbs filled in."""

    template: str = (
        "{user_sentence}This user has {verb_past} {history} in the previous. Recommend one next {noun} "
        "for this user to {verb} next from the following {noun} title set, {candidates}. "
        "The recommendation is"
    )
    user_sentence: str = f"{USER_SLOT} is a user representation. "
    item_format: str = f'"{{title}}"{ITEM_SLOT}'  # one history or candidate item: its title, then its embedding
    item_format_no_embedding: str = '"{title}"'  # the "w/o joint embedding" ablation
    # The target's surface form: the title as the prompt shows it (quoted, as the public code's target), so every
    # answer token also occurs in the prompt and the frozen LLM can copy it.
    answer_format: str = '"{title}"'
    separator: str = ", "
    title_template: str = "{title}"  # item-table fields, e.g. "{title} ({year})"
    answer_prefix: str = " "  # between the prompt and the answer (" " tokenizes the opening quote as in the list)
    # Wrap the prompt in the tokenizer's chat template (user turn; the answer is the assistant turn) when the
    # tokenizer has one (instruct models such as SmolLM2-135M-Instruct); false, or a tokenizer without a
    # template: the plain prompt after the tokenizer's BOS.
    chat_template: bool = True
    noun: str = "movie"
    verb: str = "watch"
    verb_past: str = "watched"
    num_history: int = Field(10, ge=0)  # most recent history items in the prompt
    # candidates = 1 target + this many (stored for valid/test; sampled in training)
    num_negatives: int = Field(19, ge=1)
    max_title_chars: int = Field(80, ge=8)  # longer titles are cut
    max_prompt_tokens: int | None = Field(None, ge=16)  # oldest history items are dropped until the prompt fits
    shuffle_seed: int = 0  # evaluation candidates are shuffled by (seed, split, user)

    @model_validator(mode="after")
    def _slots_in_place(self) -> PromptConfig:
        for field in ("{history}", "{candidates}", "{user_sentence}"):
            if field not in self.template:
                raise ValueError(f"prompt.template must contain {field}")
        if USER_SLOT not in self.user_sentence:
            raise ValueError(f"prompt.user_sentence must contain {USER_SLOT}")
        if self.item_format.count(ITEM_SLOT) != 1 or ITEM_SLOT in self.item_format_no_embedding:
            raise ValueError(f"prompt.item_format needs one {ITEM_SLOT}; item_format_no_embedding none")
        if "{title}" not in self.answer_format or ITEM_SLOT in self.answer_format:
            raise ValueError(f"prompt.answer_format must contain {{title}} and no {ITEM_SLOT}")
        return self


def stage2_train() -> TrainConfig:
    # Paper: batch 4, 5 epochs, lr 1e-4; DeepSpeed ZeRO-2 over the workers; validation on a user sample.
    return TrainConfig(
        lr=1e-4, batch_size=4, max_epochs=5, patience=5, deepspeed="zero2", valid_users=64, select_metric="ndcg@5"
    )


class Stage2Config(StrictModel):
    llm: str = "smollm2-135m"  # packaged short name, local folder/GGUF, or a causal-LM hub id (OPT-6.7B in the paper)
    prompt: PromptConfig = PromptConfig()
    user_representation: bool = True  # False: "w/o user representation" (Table 7 row 2)
    # joint: e_i from stage 1; none: titles only ("w/o joint embedding", row 3); random: a fixed random table of the
    # same shape and scale instead of e_i ("random joint embedding", row 4).
    item_embeddings: Literal["joint", "none", "random"] = "joint"
    projector_hidden: int | None = None  # F_U, F_I hidden width; None: the LLM's token width
    # Rescale every projected vector to the mean norm of the LLM's input token embeddings (SmolLM2 ≈ 3, Gemma ≈ 26),
    # keeping its direction learnable; False: the raw MLP output (the public code).
    scale_match: bool = True
    # Ours: subtract the mean projected item token F_I(e) over all items from every projected vector (user and
    # items) before the scale match, so items differ by direction rather than sharing one large offset (after
    # training, F_I(e) rows had a mean pairwise cosine of 0.79–0.99: nearly one token to the LLM). False: the paper.
    center_tokens: bool = False
    train_users: int | None = Field(None, ge=1)  # a fixed random sample of users to train on (None: all)
    # Ours: weight of a listwise cross-entropy over each training prompt's candidates (scored by their summed
    # log-likelihood as the answer, as inference ranks), added to eq. 8's answer loss; 0 = the paper's loss only.
    # Eq. 8 teaches the frozen LLM to copy a title from the list, not which one (docs/allmrec.md).
    ranking_loss: float = Field(0.0, ge=0.0)
    # Ours: weight of a token-space matching term — a cross-entropy of the target among each training prompt's
    # candidates scored by the cosine of F_U(x_u) with F_I(e_c), divided by `match_temperature` — added to the loss.
    # It costs no LLM pass and teaches the projectors to put the user token next to its target's item token, which
    # a frozen LLM can then follow (an item token right before its title, the user token right before the answer:
    # the copy pattern of its induction heads; docs/allmrec.md). 0 = the paper's loss only.
    match_loss: float = Field(0.0, ge=0.0)
    match_temperature: float = Field(0.1, gt=0)
    # The same rule applied at export to the projected tables F_I(e), F_I(q) (mean pairwise cosine only); a
    # warning by default (carried into the metrics JSONs), since the projectors are trained by then.
    collapse: CollapseCheck = CollapseCheck(action="warn")
    train: TrainConfig = Field(default_factory=stage2_train)

    @model_validator(mode="after")
    def _projector_options_need_projectors(self) -> Stage2Config:
        if self.match_loss and (not self.user_representation or self.item_embeddings == "none"):
            raise ValueError(
                "stage2.match_loss compares F_U(x_u) with F_I(e_i): it needs the user representation "
                "and item embeddings switched on"
            )
        if self.center_tokens and self.item_embeddings == "none":
            raise ValueError(
                "stage2.center_tokens subtracts the mean projected item token F_I(e): it needs item embeddings "
                "switched on (item_embeddings: joint or random)"
            )
        return self


class InferenceConfig(StrictModel):
    """Evaluation of stage 2: greedy generation Hit@1 and log-likelihood ranking of the candidates."""

    splits: list[Literal["valid", "test"]] = Field(default_factory=lambda: ["test"])
    users: int | None = Field(None, ge=1)  # a fixed random user sample (None: every user)
    # Also evaluate every user whose target item is cold, for the cold bucket (a random sample holds few of
    # them); overall metrics still come from the random sample only.
    all_cold_users: bool = False
    # e: joint embeddings e_i for every item (default); q: the text-side q_i for every item ("A-LLMRec (SBERT)");
    # q_cold: q_i for cold items only (§4.1.4), e_i otherwise.
    variants: list[Literal["e", "q", "q_cold"]] = Field(default_factory=lambda: ["e", "q"])
    # Other finished ID-model stages of the same run directory, scored on the same users and candidates as the
    # backbone (for a fair comparison); a stage that is not there is reported as missing in the summary.
    compare_id_models: list[str] = Field(default_factory=lambda: ["sasrec", "gru4rec"])
    generate: bool = True
    rank: bool = True
    max_new_tokens: int = Field(32, ge=1)
    repetition_penalty: float = Field(1.0, ge=1.0)  # 1.0 = plain greedy (the public code uses 1.5)
    # Generation: the output (its first line, outer quotes and a trailing period stripped) is matched against the
    # 20 candidate titles after normalisation (lower-cased, whitespace collapsed, and with `strict_punctuation:
    # false` punctuation dropped); a hit is an exact match with the target, "valid" an exact match with any
    # candidate. Substrings never count (the public code's substring rule let "Heat" hit inside "White Heat").
    strict_punctuation: bool = False
    # Which likelihood ranking is the headline (`sampled_<n>` in the metrics JSON, the leaderboard's row): sum =
    # summed token log-likelihood of the answer, mean = divided by its token count. Both are always reported.
    rank_by: Literal["sum", "mean"] = "sum"
    num_workers: int = Field(2, ge=1)  # Ray tasks, each on a shard of the users
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)  # > 0 on GPU clusters: each task runs the LLM on its GPU share
    threads_per_worker: int = Field(1, ge=1)


class ALLMRecConfig(StrictModel):
    """Everything `raylrec train --method allmrec` runs: backbone → stage 1 → stage 2 → inference."""

    run_dir: str = DEFAULT_RUN_DIR
    name: str = "allmrec"  # stage folders <name>-stage1, <name>-stage2, <name>-eval under models/
    data: DataConfig = DataConfig()
    eval: EvalConfig = EvalConfig(num_negatives=[19], ks=[1, 5, 10])
    backbone: StageSpec = StageSpec(name="sasrec-bce", preset="sasrec-bce")
    stage1: Stage1Config = Stage1Config()
    stage2: Stage2Config = Stage2Config()
    inference: InferenceConfig = InferenceConfig()
    stages: list[Literal["stage1", "stage2", "inference"]] = Field(
        default_factory=lambda: ["stage1", "stage2", "inference"]
    )  # what `raylrec train --method allmrec` runs

    @model_validator(mode="after")
    def _candidates_are_stored(self) -> ALLMRecConfig:
        n = self.stage2.prompt.num_negatives
        if n not in self.data.negatives or n not in self.eval.num_negatives:
            raise ValueError(
                f"stage2.prompt.num_negatives={n} must be among data.negatives {self.data.negatives} "
                f"and eval.num_negatives {self.eval.num_negatives} (the stored candidates)"
            )
        return self

    @property
    def stage1_name(self) -> str:
        return f"{self.name}-stage1"

    @property
    def stage2_name(self) -> str:
        return f"{self.name}-stage2"

    @property
    def eval_name(self) -> str:
        return f"{self.name}-eval"


def stage2_name(config: ALLMRecConfig) -> str:
    """The stage a sweep selects on (the registry's final stage)."""
    return config.stage2_name
