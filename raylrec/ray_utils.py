"""Connecting to Ray: the local cluster by default, any cluster by address, with the same code."""

from __future__ import annotations

import logging
import os

import ray


def ensure_ray(address: str | None = None) -> None:
    """Join `address` (or $RAY_ADDRESS) if given; otherwise start a new local Ray instance.

    Without an address Ray would attach to any cluster already running on the host (e.g. another
    user's); "local" keeps the default run on its own instance. Pass `auto` to join the host's cluster.
    """
    quiet_ray_data()
    if ray.is_initialized():
        return
    # Ray Data's progress bars garble a terminal shared with our own logs; tqdm covers the long loops.
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    ray.init(address=address or os.environ.get("RAY_ADDRESS") or "local", logging_level="WARNING")


def quiet_ray_data() -> None:
    """Ray Data logs every execution plan at INFO; our own step log says what runs."""
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def cluster_has_gpus() -> bool:
    return ray.cluster_resources().get("GPU", 0) > 0
