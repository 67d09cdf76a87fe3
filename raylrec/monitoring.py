"""Custom application metrics on Ray's Prometheus endpoint (`ray start --metrics-export-port`), which the
dashboard's Metrics view and Grafana read. Ray prefixes every name with `ray_`:

  ray_raylrec_train_epoch{stage}                    epochs finished by the stage's current run
  ray_raylrec_train_progress{stage}                 epochs finished / max_epochs (0..1)
  ray_raylrec_train_loss{stage}                     mean training loss of the last epoch
  ray_raylrec_valid_ndcg_at_10{stage}               validation NDCG@10 (full ranking) of the last epoch
  ray_raylrec_valid_metric{stage,metric}            the stage's model-selection metric (train.select_metric)
  ray_raylrec_encode_items_total{model}             items encoded (a counter: items/s = rate(...[1m]))
  ray_raylrec_encode_items_per_second{model}        throughput of each encoder actor's last batch

Per-epoch metrics also go to `ray.train.report` (the dashboard's Train view); these gauges are for
live monitoring and alerts. Recording never fails the job: outside Ray, or on a metrics error, it is skipped.
"""

from __future__ import annotations

import logging
from functools import cache

log = logging.getLogger(__name__)


@cache
def _metric(kind: str, name: str, description: str, tag_keys: tuple[str, ...]):
    from ray.util import metrics

    return getattr(metrics, kind)(name, description=description, tag_keys=tag_keys)


def _record(kind: str, name: str, description: str, value: float, tags: dict[str, str]) -> None:
    try:
        import ray

        if not ray.is_initialized():
            return
        metric = _metric(kind, name, description, tuple(sorted(tags)))
        if kind == "Counter":
            metric.inc(value, tags=tags)
        else:
            metric.set(value, tags=tags)
    except Exception as err:  # monitoring must never break training or encoding
        log.debug("metric %s not recorded: %s", name, err)


def record_epoch(
    stage: str, epoch: int, max_epochs: int, train_loss: float, valid: dict[str, float], select_metric: str
) -> None:
    """Gauges of one finished training epoch (called by the rank-0 worker)."""
    tags = {"stage": stage}
    _record("Gauge", "raylrec_train_epoch", "Epochs finished by the training stage", epoch + 1, tags)
    _record("Gauge", "raylrec_train_progress", "Epochs finished / max_epochs", (epoch + 1) / max_epochs, tags)
    _record("Gauge", "raylrec_train_loss", "Mean training loss of the last epoch", train_loss, tags)
    if "ndcg@10" in valid:
        _record(
            "Gauge",
            "raylrec_valid_ndcg_at_10",
            "Validation NDCG@10 (full ranking) of the last epoch",
            valid["ndcg@10"],
            tags,
        )
    if select_metric in valid:
        _record(
            "Gauge",
            "raylrec_valid_metric",
            "Validation model-selection metric of the last epoch",
            valid[select_metric],
            {**tags, "metric": select_metric},
        )


def record_encoded(model: str, items: int, seconds: float) -> None:
    """One encoded batch (called in the encoder actor)."""
    tags = {"model": model}
    _record("Counter", "raylrec_encode_items_total", "Items encoded", items, tags)
    if seconds > 0:
        _record(
            "Gauge",
            "raylrec_encode_items_per_second",
            "Items/s of the encoder actor's last batch",
            items / seconds,
            tags,
        )
