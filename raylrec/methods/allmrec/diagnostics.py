"""Collapse diagnostics of A-LLMRec's item tables: do the items still differ where the LLM will see them?

The paper warns that the matching loss alone drives the encoders to a trivial output (§4.1.1); a fine-tuned
SBERT can do the same to its own outputs. A collapsed table still has a small matching loss and a linear
autoencoder still decodes it (it is invertible), so loss curves do not show it; these numbers do:
  - per-dimension std: the std over items of each dimension, averaged over dimensions;
  - mean pairwise cosine of the rows (1.0: every item points the same way);
  - e→q retrieval@1: the share of items whose nearest q (by cosine) is their own (chance: 1 / items).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raylrec.methods.allmrec.config import CollapseCheck


@torch.no_grad()
def table_stats(table: torch.Tensor) -> dict[str, float]:
    """Per-dimension std and mean pairwise cosine (self-pairs excluded) of an (items, dim) table."""
    rows = table.float()
    count = rows.shape[0]
    unit = F.normalize(rows, dim=1)
    summed = unit.sum(0)
    # Σ_{i≠j} cos(i, j) = |Σ_i u_i|² − Σ_i |u_i|², without the (items × items) matrix
    pairwise = (float(summed @ summed) - float((unit * unit).sum())) / max(count * (count - 1), 1)
    return {"std_per_dim": float(rows.std(0).mean()) if count > 1 else 0.0, "mean_cosine": pairwise}


@torch.no_grad()
def retrieval_at_1(queries: torch.Tensor, keys: torch.Tensor, chunk: int = 1024) -> float:
    """Share of rows i whose most cosine-similar row of `keys` is row i."""
    keys = F.normalize(keys.float(), dim=1)
    hits = 0
    for start in range(0, queries.shape[0], chunk):
        block = F.normalize(queries[start : start + chunk].float(), dim=1) @ keys.T
        hits += int((block.argmax(1) == torch.arange(start, start + block.shape[0])).sum())
    return hits / max(queries.shape[0], 1)


def stage1_diagnostics(text: torch.Tensor, e: torch.Tensor, q: torch.Tensor) -> dict:
    """Stats of SBERT's outputs Q, of e and of q (rows = items, no padding row), and e→q retrieval@1."""
    return {
        "text_encoder": table_stats(text),
        "e": table_stats(e),
        "q": table_stats(q),
        "e_to_q_retrieval@1": retrieval_at_1(e, q),
        "chance_retrieval@1": 1.0 / max(e.shape[0], 1),
    }


def collapse_problems(diagnostics: dict, check: CollapseCheck) -> tuple[list[str], list[str]]:
    """Sentences naming each table that counts as collapsed under `check`: (of the tables `check.checked`, the
    action applies to them; of the others, warnings only). Both empty: nothing collapsed."""
    found: list[tuple[str, str]] = []
    for name in ("text_encoder", "e", "q", "projected_e", "projected_q"):
        stats = diagnostics.get(name)
        if stats and stats["mean_cosine"] > check.max_mean_cosine:
            found.append(
                (
                    name,
                    (
                        f"{name} rows have mean pairwise cosine {stats['mean_cosine']:.3f} > "
                        f"{check.max_mean_cosine} (per-dimension std {stats['std_per_dim']:.4g})"
                    ),
                )
            )
    retrieval = diagnostics.get("e_to_q_retrieval@1")
    if retrieval is not None:
        floor = check.min_retrieval_over_chance * diagnostics["chance_retrieval@1"]
        if retrieval < floor:
            found.append(
                ("q", (f"e→q retrieval@1 is {retrieval:.4f} < {check.min_retrieval_over_chance}× chance ({floor:.4f})"))
            )
    return (
        [text for name, text in found if name in check.checked],
        [text for name, text in found if name not in check.checked],
    )
