"""A-LLMRec inference and evaluation, run as Ray tasks over shards of the evaluated users.

For each user the Figure-3 prompt (history + the split's 20 stored candidates, shuffled by a fixed seed) is run
through the frozen LLM once; its key/value cache then serves both
  - generation: greedy decoding (optionally with a repetition penalty) until EOS or `max_new_tokens`. The output
    (first line, outer quotes and a final period stripped) must equal one candidate title after normalisation
    (lower-cased, whitespace collapsed, punctuation dropped unless `strict_punctuation`): Hit@1 = it equals the
    target, valid rate = it equals any candidate. Unlike the public code's substring rule, a title inside a
    longer title or a list of titles never counts;
  - ranking (beyond the paper): each candidate's log-likelihood as the answer (the answer tokens + EOS), both
    summed and divided by the token count, for all 20 candidates in one batch over the shared prompt cache.
Both rankings go through the shared Evaluator as candidate-only score functions (−inf off the candidates), so
HR@K/NDCG@K and the warm/median/cold buckets are computed exactly as for every other model; `rank_by` picks the
headline one. The ID backbone, the configured other ID models and item popularity (training counts) are scored on
the same users and candidates for the comparison.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import string
import time
from pathlib import Path

import numpy as np
import pandas as pd
import ray
import torch
from safetensors.torch import load_file

from raylrec.data.prepared import PreparedData
from raylrec.eval.buckets import WARM_COLD_ORDER, warm_cold_labels
from raylrec.eval.evaluator import EvalConfig, Evaluator, write_metrics
from raylrec.methods.allmrec.config import InferenceConfig
from raylrec.methods.allmrec.likelihood import answers_loglik, prompt_pass
from raylrec.methods.allmrec.stage2 import Stage2Model, Stage2Recipe
from raylrec.storage import RunStore
from raylrec.train.id_model import load_stage_model, sequence_scorer
from raylrec.train.loop import load_model_state
from raylrec.train.stage import content_key, finished_stage

log = logging.getLogger(__name__)
PUNCTUATION = re.compile("[" + re.escape(string.punctuation) + "]")


def normalize_title(text: str, strict_punctuation: bool = False) -> str:
    text = text.lower()
    if not strict_punctuation:
        text = PUNCTUATION.sub(" ", text)
    return " ".join(text.split())


def answer_of(generated: str) -> str:
    """The generated answer proper: its first non-empty line, without a final period and outer quotes."""
    lines = [line.strip() for line in generated.strip().splitlines() if line.strip()]
    text = lines[0] if lines else ""
    text = text.removesuffix(".").strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def matched_candidate(generated: str, titles: list[str], strict_punctuation: bool = False) -> int | None:
    """Index of the candidate title the output names exactly (after normalisation), or None."""
    answer = normalize_title(answer_of(generated), strict_punctuation)
    if not answer:
        return None
    return next((i for i, title in enumerate(titles) if normalize_title(title, strict_punctuation) == answer), None)


@torch.no_grad()
def greedy_decode(
    core: Stage2Model,
    cache,
    last_logits: torch.Tensor,
    prompt_length: int,
    eos_id: int,
    max_new_tokens: int,
    repetition_penalty: float = 1.0,
) -> list[int]:
    """Greedy continuation of the cached prompt until EOS; extends the cache in place."""
    device = last_logits.device
    generated: list[int] = []
    logits = last_logits
    embedding = core.llm.get_input_embeddings()
    for step in range(max_new_tokens):
        if repetition_penalty != 1.0 and generated:  # as transformers' RepetitionPenaltyLogitsProcessor
            seen = torch.tensor(sorted(set(generated)), device=device)
            values = logits[seen]
            logits = logits.clone()
            logits[seen] = torch.where(values > 0, values / repetition_penalty, values * repetition_penalty)
        token = int(logits.argmax())
        if token == eos_id:
            break
        generated.append(token)
        length = prompt_length + step + 1
        out = core.llm(
            inputs_embeds=embedding(torch.tensor([[token]], device=device)),
            attention_mask=torch.ones((1, length), dtype=torch.long, device=device),
            position_ids=torch.tensor([[length - 1]], device=device),
            cache=cache,
            use_cache=True,
        )
        logits = out.logits[0, -1].float()
    return generated


def evaluate_users(
    recipe: Stage2Recipe,
    data_dir: str,
    stage2_dir: str,
    split: str,
    variant: str,
    users: np.ndarray,
    config: InferenceConfig,
) -> dict:
    """One shard: per user the generated text, whether it hits, and the candidates' log-likelihoods."""
    torch.set_num_threads(config.threads_per_worker)
    data = PreparedData(data_dir)
    core = recipe.build(data)
    load_model_state(core, load_file(str(Path(stage2_dir) / "model.safetensors")))
    core.to("cuda" if config.gpus_per_worker > 0 and torch.cuda.is_available() else "cpu").eval()
    builder = recipe.context.builder
    rows = []
    for user in users:
        user = int(user)
        example = recipe.example(split, user, with_target=False)
        target = int(recipe.context.targets[split][user])
        inputs = recipe.model_inputs(core, [example], np.array([user]), split, variant, with_answer=False)
        cache, last_logits, length = prompt_pass(core, inputs)
        row = {"user": user, "target": target, "candidates": example.candidates}
        if config.rank:  # on a copy: scoring expands the cache to the candidates, generation extends it
            answers = [builder.answer_tokens(c) for c in example.candidates]
            total, count = answers_loglik(
                core, copy.deepcopy(cache) if config.generate else cache, last_logits, length, answers
            )
            row.update(loglik=total.tolist(), loglik_mean=(total / count).tolist())
        if config.generate:
            tokens = greedy_decode(
                core, cache, last_logits, length, builder.eos_id, config.max_new_tokens, config.repetition_penalty
            )
            text = builder.tokenizer.decode(tokens, skip_special_tokens=True)
            match = matched_candidate(text, [builder.titles[c] for c in example.candidates], config.strict_punctuation)
            named = None if match is None else example.candidates[match]
            row.update(generated=text, named=named, valid=named is not None, hit=named == target)
        rows.append(row)
    return {"rows": rows}


@ray.remote
def _evaluate_shard(recipe, data_dir, stage2_dir, split, variant, users, config, run_dir):
    if run_dir:  # on a node without the run directory: its mirror, synced
        RunStore(run_dir).pull()
    return evaluate_users(recipe, data_dir, stage2_dir, split, variant, users, config)


def evaluation_users(
    data: PreparedData, split: str, config: InferenceConfig, eval_config: EvalConfig, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(users for the overall metrics, all evaluated users): a fixed random sample (or everyone), plus every user
    whose target is cold when `all_cold_users` (they feed the cold bucket only)."""
    everyone = np.arange(data.num_users)
    sample = everyone
    if config.users is not None and config.users < data.num_users:
        sample = np.sort(np.random.default_rng(seed).choice(everyone, config.users, replace=False))
    evaluated = sample
    if config.all_cold_users:
        labels = warm_cold_labels(data.item_train_counts(), eval_config.warm_cold_fraction)
        cold = everyone[labels[data.targets(split)] == "cold"]
        evaluated = np.union1d(sample, cold)
    return sample, evaluated


def candidate_summary(
    evaluator: Evaluator, ranks: np.ndarray, users: np.ndarray, overall_users: np.ndarray, num_negatives: int
) -> dict:
    """Metrics over the 1 + n candidates: overall on `overall_users`, buckets on every evaluated user."""
    position = {int(u): i for i, u in enumerate(users)}
    overall_index = np.array([position[int(u)] for u in overall_users])
    overall = evaluator.summarize({"full": ranks[overall_index]}, overall_users)
    buckets = evaluator.summarize({"full": ranks}, users)["buckets"]
    return {f"sampled_{num_negatives}": overall["full"], "buckets": buckets}


def generation_summary(rows: list[dict], labels: np.ndarray, overall_users: set[int]) -> dict:
    """Hit@1 (the output names the target) and valid rate (it names some candidate), overall and per bucket."""
    groups: dict[str, list[dict]] = {"all": [], **{name: [] for name in WARM_COLD_ORDER}}
    for row in rows:
        if row["user"] in overall_users:
            groups["all"].append(row)
        groups[labels[row["target"]]].append(row)
    return {
        name: {
            "hit@1": float(np.mean([r["hit"] for r in v])) if v else None,
            "valid_rate": float(np.mean([r["valid"] for r in v])) if v else None,
            "n": len(v),
        }
        for name, v in groups.items()
    }


def score_table(rows: list[dict], num_items: int, key: str = "loglik") -> dict[int, torch.Tensor]:
    out = {}
    for row in rows:
        scores = torch.full((num_items + 1,), float("-inf"))
        scores[torch.tensor(row["candidates"])] = torch.tensor(row[key])
        out[row["user"]] = scores
    return out


def popularity_scorer(data: PreparedData):
    """Every user gets the items' training interaction counts as scores (the popularity floor)."""
    counts = torch.from_numpy(data.item_train_counts().astype(np.float32))
    return lambda users: counts.unsqueeze(0).expand(len(users), -1)


def upstream_warnings(*stage_dirs: Path) -> list[str]:
    """Warnings the earlier stages recorded in their DONE.json (e.g. a collapse kept with `action: warn`)."""
    found = []
    for stage in stage_dirs:
        done = Path(stage) / "DONE.json"
        if done.exists():
            found += json.loads(done.read_text()).get("warnings", [])
    return found


def run_inference(
    recipe: Stage2Recipe,
    data_dir: Path,
    stage2_dir: Path,
    backbone_dir: Path,
    out: Path,
    config: InferenceConfig,
    eval_config: EvalConfig,
    seed: int,
    force: bool = False,
    run_dir: str | None = None,
) -> dict:
    """Evaluate every configured split and variant; metrics JSONs, predictions CSVs and DONE.json under `out`
    (`run_dir`: the run directory's location, for a URI one synced through its mirror)."""
    done = out / "DONE.json"
    # Keyed on content like a training stage: a finished evaluation is reused only for the same settings, stage-2
    # artifact and ID models; after stage 2 (or a backbone) changed it is an error until rerun with --force.
    key = content_key(
        {
            "stage2": recipe.config_dump(),
            "inference": config.model_dump(mode="json"),
            "eval": eval_config.model_dump(mode="json"),
            "seed": seed,
        },
        [stage2_dir, backbone_dir, *(backbone_dir.parent / n for n in config.compare_id_models)],
        data_dir,
        run_dir or out.parents[1],
    )
    finished = finished_stage(out.name, out, key, force, RunStore(run_dir or out.parents[1]))
    if finished is not None:
        return finished
    out.mkdir(parents=True, exist_ok=True)
    data = PreparedData(data_dir)
    num_negatives = recipe.config.prompt.num_negatives
    labels = warm_cold_labels(data.item_train_counts(), eval_config.warm_cold_fraction)
    summary: dict = {"splits": {}, "config": config.model_dump(mode="json")}
    id_models = {"backbone": backbone_dir}
    for name in config.compare_id_models:
        stage = backbone_dir.parent / name
        if (stage / "DONE.json").exists() and stage != backbone_dir:
            id_models[name] = stage
        elif stage != backbone_dir:
            log.warning("A-LLMRec inference: ID model stage %s is not finished; not compared", stage)
    summary["id_models_missing"] = [
        n for n in config.compare_id_models if n not in id_models and backbone_dir.parent / n != backbone_dir
    ]
    warnings = upstream_warnings(Path(recipe.stage1_dir), stage2_dir)
    for warning in warnings:
        log.warning("A-LLMRec inference: %s", warning)
    summary["warnings"] = warnings
    for split in config.splits:
        evaluator = Evaluator(data, split, eval_config)
        sample, users = evaluation_users(data, split, config, eval_config, seed)
        split_summary = {"users": int(len(sample)), "evaluated_users": int(len(users))}
        for label, stage in id_models.items():
            model = load_stage_model(stage)
            ranks = evaluator.ranks(sequence_scorer(model, data, split, torch.device("cpu")), users)
            metrics = candidate_summary(evaluator, ranks[f"sampled_{num_negatives}"], users, sample, num_negatives)
            suffix = "backbone" if label == "backbone" else f"id_{label}"
            # named by stage (sasrec-bce, gru4rec, …), not model class: two SASRec stages stay two leaderboard rows
            write_metrics(
                out / f"metrics_{split}_{suffix}.json",
                model=stage.name,
                split=split,
                metrics=metrics,
                config={"stage": str(stage)},
                data=data,
                extra={"users": sample.tolist(), "evaluated_users": users.tolist()},
            )
            evaluator.write_ranks(out / f"ranks_{split}_{suffix}.parquet", ranks, users)
            split_summary[suffix] = flat_metrics(metrics, num_negatives)
        ranks = evaluator.ranks(popularity_scorer(data), users)
        evaluator.write_ranks(out / f"ranks_{split}_popularity.parquet", ranks, users)
        metrics = candidate_summary(evaluator, ranks[f"sampled_{num_negatives}"], users, sample, num_negatives)
        write_metrics(
            out / f"metrics_{split}_popularity.json",
            model="popularity",
            split=split,
            metrics=metrics,
            config={"scores": "training interaction count of each item"},
            data=data,
            extra={"users": sample.tolist(), "evaluated_users": users.tolist()},
        )
        split_summary["popularity"] = flat_metrics(metrics, num_negatives)
        for variant in config.variants:
            started = time.perf_counter()
            shards = [users[i :: config.num_workers] for i in range(config.num_workers)]
            remote = _evaluate_shard.options(num_cpus=config.cpus_per_worker, num_gpus=config.gpus_per_worker)
            parts = ray.get(
                [
                    remote.remote(recipe, str(data_dir), str(stage2_dir), split, variant, shard, config, run_dir)
                    for shard in shards
                    if len(shard)
                ]
            )
            rows = sorted((r for part in parts for r in part["rows"]), key=lambda r: r["user"])
            seconds = time.perf_counter() - started
            metrics: dict = {"inference_seconds": round(seconds, 1)}
            if config.rank:
                likelihood = {}
                for scoring, column in (("sum", "loglik"), ("mean", "loglik_mean")):
                    table = score_table(rows, data.num_items, column)
                    llm_ranks = evaluator.ranks(
                        lambda batch, table=table: torch.stack([table[int(u)] for u in batch]), users
                    )
                    likelihood[scoring] = candidate_summary(evaluator, llm_ranks["full"], users, sample, num_negatives)
                    # candidate-only scores: the "full" rank is the rank among the candidates too
                    evaluator.write_ranks(out / f"ranks_{split}_{variant}_{scoring}.parquet", llm_ranks, users)
                metrics.update(likelihood[config.rank_by])  # the headline ranking (sampled_<n>, buckets)
                metrics["likelihood"] = {"headline": config.rank_by, **likelihood}
            if config.generate:
                metrics["generation"] = generation_summary(rows, labels, set(sample.tolist()))
            write_metrics(
                out / f"metrics_{split}_{variant}.json",
                model=f"{recipe.name}[{variant}]",
                split=split,
                metrics=metrics,
                config={"stage2": recipe.config_dump(), "inference": config.model_dump(mode="json")},
                data=data,
                extra={"users": sample.tolist(), "evaluated_users": users.tolist(), "warnings": warnings},
            )
            pd.DataFrame(
                [
                    {
                        "user": r["user"],
                        "target": r["target"],
                        "target_title": recipe_title(recipe, data, r["target"]),
                        "bucket": labels[r["target"]],
                        "generated": r.get("generated"),
                        "named": r.get("named"),
                        "valid": r.get("valid"),
                        "hit": r.get("hit"),
                        "target_loglik": r["loglik"][r["candidates"].index(r["target"])] if "loglik" in r else None,
                    }
                    for r in rows
                ]
            ).to_csv(out / f"predictions_{split}_{variant}.csv", index=False)
            split_summary[variant] = flat_metrics(metrics, num_negatives)
            log.info("A-LLMRec %s [%s]: %s", split, variant, split_summary[variant])
        summary["splits"][split] = split_summary
    summary["stage_key"] = key.record()
    done.write_text(json.dumps(summary, indent=2))
    RunStore(run_dir or out).push(out)
    return summary


def recipe_title(recipe: Stage2Recipe, data: PreparedData, item: int) -> str:
    if recipe.context is None:  # the driver never built the model; titles come from the same rule
        from raylrec.methods.allmrec.prompt import item_titles

        recipe._titles = getattr(recipe, "_titles", None) or item_titles(
            data, recipe.config.prompt.title_template, recipe.config.prompt.max_title_chars
        )
        return recipe._titles[item]
    return recipe.context.builder.titles[item]


def flat_metrics(metrics: dict, num_negatives: int) -> dict:
    """The headline numbers: Hit@1 of generation and HR/NDCG over the candidates, overall and warm/cold."""
    flat: dict = {}
    sampled = metrics.get(f"sampled_{num_negatives}")
    if sampled:
        flat.update({k: v for k, v in sampled.items() if k.split("@")[0] in ("hr", "ndcg") or k == "n"})
        for bucket in ("warm", "cold"):
            values = metrics["buckets"]["warm_cold"].get(bucket, {})
            flat.update({f"{bucket}_{k}": v for k, v in values.items() if k in ("hr@1", "ndcg@5", "n")})
    for scoring in ("sum", "mean"):
        sampled = metrics.get("likelihood", {}).get(scoring, {}).get(f"sampled_{num_negatives}")
        if sampled:
            flat.update({f"{scoring}_hr@1": sampled["hr@1"], f"{scoring}_ndcg@5": sampled["ndcg@5"]})
    if "generation" in metrics:
        flat.update({f"gen_hit@1{'' if k == 'all' else '_' + k}": v["hit@1"] for k, v in metrics["generation"].items()})
        flat["gen_valid_rate"] = metrics["generation"]["all"]["valid_rate"]
    if "inference_seconds" in metrics:
        flat["inference_seconds"] = metrics["inference_seconds"]
    return flat
