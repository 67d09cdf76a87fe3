"""Does the frozen LLM follow A-LLMRec's user token? For a finished stage 2 (the same --config / --run-dir / --set as
bench/allmrec.py), on inference's user sample and the same stored candidates (1 target + negatives), the candidates
ranked six ways:

- likelihood sum / mean: the answer's summed / length-normalised log-likelihood (inference's two rankings);
- first token: the log-probability of the answer's first token only (where the choice among copied titles is made);
- likelihood sum, mean user's token: the same with the mean training user's token in place of the user's own
  (history and candidates unchanged): what the prompt ranks without the user representation;
- user-token effect: the summed log-likelihood with the user's own token F_U(x_u) minus that with the mean training
  user's token in its place — what the user token changes, with each title's prior and list position cancelled;
- token cosine: cos(F_U(x_u), F_I(e_c)), no LLM — what the projected tokens carry.

If the token cosine ranks well and the user-token effect near chance (1 / candidates), the tokens hold the answer
and the LLM does not read it.

    python bench/allmrec_user_token.py --run-dir runs/e2e
    python bench/allmrec_user_token.py --run-dir /work/runs/ar4 --set stage2.match_loss=1.0 [...]

One process, `--threads` torch threads; about 5 s per user with SmolLM2-135M on one CPU thread (two prompt passes).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from raylrec.config import load_config, parse_overrides
from raylrec.data.prepare import ensure_prepared
from raylrec.data.prepared import PreparedData
from raylrec.eval.evaluator import Evaluator
from raylrec.methods.allmrec.config import ALLMRecConfig
from raylrec.methods.allmrec.inference import (
    candidate_summary,
    evaluation_users,
    popularity_scorer,
    score_table,
)
from raylrec.methods.allmrec.likelihood import answers_loglik, prompt_pass
from raylrec.methods.allmrec.pipeline import stage2_recipe
from raylrec.storage import RunLayout
from raylrec.train.loop import load_model_state

SCORINGS = (
    "likelihood sum",
    "likelihood mean",
    "first token",
    "likelihood sum, mean user's token",
    "user-token effect",
    "token cosine",
)


@torch.no_grad()
def answer_logliks(recipe, core, example, user: int, split: str, user_vectors: torch.Tensor | None = None):
    """(summed, per-token, first-token) log-likelihood of each candidate's answer; `user_vectors` replaces the
    user's own representation in the prompt."""
    inputs = recipe.model_inputs(core, [example], np.array([user]), split, with_answer=False)
    if user_vectors is not None:
        inputs["user_vectors"] = user_vectors
    cache, last_logits, length = prompt_pass(core, inputs)
    answers = [recipe.context.builder.answer_tokens(c) for c in example.candidates]
    first = torch.log_softmax(last_logits, -1)[[answer[0] for answer in answers]]
    total, count = answers_loglik(core, cache, last_logits, length, answers)
    return total.cpu(), (total / count).cpu(), first.cpu()


def candidate_scorings(recipe, core, split: str, user: int, mean_user: torch.Tensor) -> dict:
    """A row of `score_table`: the user's shown candidates and their (C,) scores under each of `SCORINGS`."""
    example = recipe.example(split, user, with_target=False)
    total, mean, first = answer_logliks(recipe, core, example, user, split)
    mean_user_total, _, _ = answer_logliks(recipe, core, example, user, split, mean_user)
    candidates = torch.tensor([example.candidates], device=core.joint_e.device)
    with torch.no_grad():
        cosine = core.token_cosines(getattr(core, f"users_{split}")[[user]], core.joint_e[candidates])[0].cpu()
    scores = [total, mean, first, mean_user_total, total - mean_user_total, cosine]
    return {"user": user, "candidates": example.candidates, **{k: v.tolist() for k, v in zip(SCORINGS, scores)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="allmrec", help="the A-LLMRec preset or YAML the stage 2 was trained with")
    parser.add_argument("--run-dir", default="runs/e2e")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--split", default="test", choices=["valid", "test"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    overrides = {**parse_overrides(args.set), "run_dir": str(Path(args.run_dir).resolve())}
    config = load_config(ALLMRecConfig, args.config, overrides)
    torch.set_num_threads(args.threads)

    layout = RunLayout(config.run_dir)
    data = PreparedData(ensure_prepared(config.data, config.run_dir))
    recipe = stage2_recipe(config)
    core = recipe.build(data).eval()
    load_model_state(core, load_file(str(layout.model_dir(config.stage2_name) / "model.safetensors")))
    sample, _ = evaluation_users(data, args.split, config.inference, config.eval, config.data.seed)

    started = time.perf_counter()
    mean_user = core.users_train.mean(0, keepdim=True)
    rows = [candidate_scorings(recipe, core, args.split, user, mean_user) for user in sample.tolist()]
    seconds = time.perf_counter() - started

    evaluator = Evaluator(data, args.split, config.eval)
    n = config.stage2.prompt.num_negatives
    print(f"\n{len(sample)} {args.split} users of {config.run_dir}, 1 target + {n} stored negatives each:\n")
    print("| candidates ranked by | HR@1 | NDCG@5 |\n|---|---|---|")
    for name in SCORINGS:
        table = score_table(rows, data.num_items, name)
        ranks = evaluator.ranks(lambda batch, table=table: torch.stack([table[int(u)] for u in batch]), sample)
        overall = candidate_summary(evaluator, ranks["full"], sample, sample, n)[f"sampled_{n}"]
        print(f"| {name} | {overall['hr@1']:.3f} | {overall['ndcg@5']:.3f} |")
    ranks = evaluator.ranks(popularity_scorer(data), sample)  # every item scored: its rank among the stored ones
    overall = candidate_summary(evaluator, ranks[f"sampled_{n}"], sample, sample, n)[f"sampled_{n}"]
    print(f"| popularity (training counts) | {overall['hr@1']:.3f} | {overall['ndcg@5']:.3f} |")
    print(f"\nchance HR@1: {1 / (n + 1):.3f}; {seconds:.0f} s on {args.threads} thread(s)")


if __name__ == "__main__":
    main()
