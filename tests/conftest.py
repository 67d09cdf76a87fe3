import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
logging.getLogger("ray.data").setLevel(logging.WARNING)  # its DEBUG log dumps the whole DataContext


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    """One local Ray instance shared by every test that needs it; stopped by this process only.

    `address="local"`: a new instance even when another Ray cluster runs on the host (two test runs at once).
    """
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            logging_level="WARNING",
            _temp_dir=str(tmp_path_factory.mktemp("ray")),
        )
    yield ray
    ray.shutdown()


def write_synthetic_log(path: Path, num_users: int = 30, num_items: int = 40, seed: int = 0) -> Path:
    """A small interaction log with per-user popularity-skewed sequences of 6–20 items and integer timestamps."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, num_items + 1)
    popularity /= popularity.sum()
    rows = []
    for user in range(num_users):
        length = int(rng.integers(6, 21))
        items = rng.choice(num_items, size=length, replace=False, p=popularity) + 100
        for position, item in enumerate(items):
            rows.append((f"u{user}", f"i{item}", float(rng.integers(1, 6)), 1_000 + 10 * position + user))
    pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"]).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def synthetic_log(tmp_path_factory) -> Path:
    return write_synthetic_log(tmp_path_factory.mktemp("raw") / "log.csv")


@pytest.fixture(scope="session")
def prepared_dir(ray_session, synthetic_log, tmp_path_factory) -> Path:
    from raylrec.data.prepare import DataConfig, prepare_dataset

    out = tmp_path_factory.mktemp("prepared")
    config = DataConfig(
        dataset="synthetic", interactions_path=str(synthetic_log), format="csv", negatives=[5, 10], num_blocks=2
    )
    prepare_dataset(config, out)
    return out
