import json

import numpy as np
import pandas as pd
import pytest

from raylrec.data.prepare import DataConfig, prepare_dataset
from raylrec.data.prepared import PreparedData
from raylrec.errors import DataError


def prepare_frame(tmp_path, frame: pd.DataFrame, items: pd.DataFrame | None = None, **settings) -> dict:
    log = tmp_path / "log.csv"
    frame.to_csv(log, index=False)
    items_path = None
    if items is not None:
        items_path = tmp_path / "items.csv"
        items.to_csv(items_path, index=False)
    config = DataConfig(
        dataset="t",
        interactions_path=str(log),
        items_path=str(items_path) if items_path else None,
        format="csv",
        num_blocks=2,
        negatives=settings.pop("negatives", [2]),
        **settings,
    )
    return prepare_frame_config(config, tmp_path)


def prepare_frame_config(config: DataConfig, tmp_path) -> dict:
    return prepare_dataset(config, tmp_path / "prepared")


def test_report_accounts_for_every_row(prepared_dir, synthetic_log):
    report = json.loads((prepared_dir / "data_report.json").read_text())
    raw_rows = len(pd.read_csv(synthetic_log))
    assert report["steps"][0]["rows_in"] == raw_rows
    for step in report["steps"]:
        assert step["rows_in"] - step["rows_out"] == sum(step["dropped"].values())
    assert report["steps"][-1]["rows_out"] == report["counts"]["interactions"]
    assert len(pd.read_parquet(prepared_dir / "interactions.parquet")) == report["counts"]["interactions"]


def test_leave_one_out_split_has_no_leakage(prepared_dir):
    data = PreparedData(prepared_dir)
    interactions = pd.read_parquet(prepared_dir / "interactions.parquet").sort_values(["user", "position"])
    train = data.history("train")
    valid, test = data.targets("valid"), data.targets("test")
    for user, group in interactions.groupby("user"):
        items = group["item"].to_numpy()
        assert items[-1] == test[user] and items[-2] == valid[user]  # targets are the latest two interactions
        assert np.array_equal(train.row(user), items[:-2])
        assert (np.diff(group["timestamp"].to_numpy()) >= 0).all()
    valid_windows = data.input_windows("valid", np.arange(data.num_users), 50)
    for user in range(data.num_users):
        assert valid[user] not in valid_windows[user] and test[user] not in valid_windows[user]
        assert test[user] not in data.input_windows("test", np.array([user]), 50)


@pytest.mark.parametrize("stride", [None, 2, 4])
def test_training_windows_cover_each_training_transition_once(prepared_dir, stride):
    data = PreparedData(prepared_dir)
    train = data.history("train")
    inputs, targets = data.train_windows(max_len=4, stride=stride)
    windows_of_pairs = {(int(a), int(b)) for a, b in zip(inputs[targets > 0], targets[targets > 0])}
    expected = [(int(a), int(b)) for u in range(data.num_users) for a, b in zip(train.row(u)[:-1], train.row(u)[1:])]
    assert (targets > 0).sum() == len(expected)  # every transition trained exactly once
    assert windows_of_pairs == set(expected)
    # Nothing outside the training part (no validation or test target) ever enters a training window.
    for u in range(data.num_users):
        assert data.targets("valid")[u] not in train.row(u) and data.targets("test")[u] not in train.row(u)
    assert set(inputs[inputs > 0].tolist()) | set(targets[targets > 0].tolist()) <= set(train.indices.tolist())


def test_negatives_are_stored_unseen_and_deterministic(prepared_dir, tmp_path, synthetic_log):
    data = PreparedData(prepared_dir)
    for (_split, count), negatives in data.negatives.items():
        assert negatives.shape == (data.num_users, count)
        for user in range(data.num_users):
            seen = set(data.sequences.row(user).tolist())
            assert not seen & set(negatives[user].tolist())
            assert len(set(negatives[user].tolist())) == count
    again = DataConfig(
        dataset="synthetic", interactions_path=str(synthetic_log), format="csv", negatives=[5, 10], num_blocks=2
    )
    prepare_dataset(again, tmp_path / "again")
    redo = PreparedData(tmp_path / "again")
    for key, negatives in data.negatives.items():
        assert np.array_equal(redo.negatives[key], negatives)


def test_filters_dedup_and_kcore_are_counted(ray_session, tmp_path):
    rows = [
        ("a", "x", 5, 1),
        ("a", "y", 4, 2),
        ("a", "x", 5, 3),
        ("a", "z", 4, 4),
        ("a", "w", 1, 5),
        ("b", "x", 5, 1),
        ("b", "y", 5, 2),
        ("b", "z", 5, 3),
        ("c", "x", 4, 1),
        ("c", "q", 4, 2),
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    report = prepare_frame(tmp_path, frame, min_rating=4, user_core=3, item_core=2, negatives=[0])
    steps = {s["step"]: s for s in report["steps"]}
    assert steps["rating filter"]["dropped"] == {"rating below 4.0": 1}
    assert steps["order by time and de-duplicate"]["dropped"] == {"repeated (user, item) pair, first kept": 1}
    kcore = [s for name, s in steps.items() if name.startswith("k-core")]
    assert sum(sum(s["dropped"].values()) for s in kcore) == 2  # user c (2 rows) goes; then every item has >= 2
    assert report["counts"] == {**report["counts"], "users": 2, "items": 3, "interactions": 6}


def test_ties_in_time_keep_file_order(ray_session, tmp_path):
    frame = pd.DataFrame(
        [("a", "i3", 5, 7), ("a", "i1", 5, 7), ("a", "i2", 5, 1), ("a", "i4", 5, 9)],
        columns=["user_id", "item_id", "rating", "timestamp"],
    )
    prepare_frame(tmp_path, frame, negatives=[0])
    items = pd.read_parquet(tmp_path / "prepared" / "items.parquet").set_index("item")["item_id"]
    sequence = pd.read_parquet(tmp_path / "prepared" / "sequences.parquet")["items"][0]
    assert [items[i] for i in sequence] == ["i2", "i3", "i1", "i4"]


def test_short_users_are_dropped_and_reported(ray_session, tmp_path):
    frame = pd.DataFrame(
        [("a", "x", 5, 1), ("a", "y", 5, 2), ("a", "z", 5, 3), ("b", "x", 5, 1), ("b", "y", 5, 2)],
        columns=["user_id", "item_id", "rating", "timestamp"],
    )
    report = prepare_frame(tmp_path, frame, negatives=[0])
    last = report["steps"][-1]
    assert last["dropped"] == {"user has fewer than 3 interactions (1 users)": 2}


def test_empty_after_filtering_is_a_clear_error(ray_session, tmp_path):
    frame = pd.DataFrame([("a", "x", 1, 1), ("a", "y", 2, 2)], columns=["user_id", "item_id", "rating", "timestamp"])
    with pytest.raises(DataError, match="empty after step 'rating filter'"):
        prepare_frame(tmp_path, frame, min_rating=4)


def test_items_file_that_disagrees_with_interactions(ray_session, tmp_path):
    frame = pd.DataFrame(
        [("a", "x", 5, 1), ("a", "y", 5, 2), ("a", "z", 5, 3)], columns=["user_id", "item_id", "rating", "timestamp"]
    )
    items = pd.DataFrame({"item_id": ["x", "y"], "title": ["X", "Y"]})
    with pytest.raises(DataError, match=r"log.csv line 4: field 'item_id' value 'z' is not in items.csv"):
        prepare_frame(tmp_path, frame, items)
    duplicated = pd.DataFrame({"item_id": ["x", "y", "z", "y"], "title": ["X", "Y", "Z", "Y2"]})
    with pytest.raises(DataError, match=r"items.csv: line 5, column 'item_id': item id 'y' already appeared on line 3"):
        prepare_frame(tmp_path, frame, duplicated)


def test_too_few_unseen_items_for_negatives(ray_session, tmp_path):
    frame = pd.DataFrame(
        [("a", "x", 5, 1), ("a", "y", 5, 2), ("a", "z", 5, 3), ("b", "x", 5, 1)],
        columns=["user_id", "item_id", "rating", "timestamp"],
    )
    with pytest.raises(DataError, match="user 'a' interacted with 3 of 3 items: cannot draw 2"):
        prepare_frame(tmp_path, frame, negatives=[2])


@pytest.mark.parametrize("dtype", [object, "str", "large_string[pyarrow]"])
def test_ids_are_numbered_in_sorted_order_whatever_the_column_type(dtype):
    """Ray Data hands back Arrow-backed strings; their order of arrival must not decide the numbering."""
    from raylrec.data.prepare import natural_order

    assert list(natural_order(pd.Series(["i101", "i100", "i117", "i2"], dtype=dtype))) == ["i100", "i101", "i117", "i2"]
    assert list(natural_order(pd.Series(["10", "9", "100"], dtype=dtype))) == ["9", "10", "100"]


def test_prepared_item_ids_are_sorted(prepared_dir):
    items = pd.read_parquet(prepared_dir / "items.parquet")
    users = pd.read_parquet(prepared_dir / "users.parquet")
    assert items["item_id"].tolist() == sorted(items["item_id"])
    assert items["item"].tolist() == list(range(1, len(items) + 1))
    assert users["user_id"].tolist() == sorted(users["user_id"])


def test_headerless_log_without_timestamps_prepares(ray_session, tmp_path):
    """A real `user item` log (SASRec repository format: no header, no rating, no timestamp) used to crash after
    Ray Data pickled the all-null timestamp lists; it is a supported input: file order is the time order."""
    rng = np.random.default_rng(0)
    lines, expected = [], {}
    for user in range(300):
        items = [f"i{x}" for x in rng.choice(500, size=int(rng.integers(3, 12)), replace=False)]
        expected[f"u{user}"] = items
        lines += [f"u{user} {item}" for item in items]
    log = tmp_path / "Beauty.txt"
    log.write_text("\n".join(lines) + "\n")
    config = DataConfig(
        dataset="t",
        interactions_path=str(log),
        format="whitespace",
        fields=["user", "item"],
        columns={"user": "user", "item": "item", "rating": None, "timestamp": None},
        num_blocks=4,
        negatives=[5],
    )
    report = prepare_frame_config(config, tmp_path)
    assert report["counts"]["interactions"] == len(lines) and report["counts"]["users"] == 300
    assert any("no timestamps" in note for note in report["notes"])
    data = PreparedData(tmp_path / "prepared")
    users = pd.read_parquet(tmp_path / "prepared" / "users.parquet")["user_id"]
    items = pd.read_parquet(tmp_path / "prepared" / "items.parquet").set_index("item")["item_id"]
    for user, raw in enumerate(users):
        assert [items[i] for i in data.sequences.row(user)] == expected[raw]
    stored = pd.read_parquet(tmp_path / "prepared" / "interactions.parquet")
    assert stored["timestamp"].isna().all() and stored["rating"].isna().all()


def test_p5_sequences_with_an_item_table_and_id_map(ray_session, tmp_path):
    """The shared Beauty layout: user_sequence.txt + products_lookup.csv + item_id_to_int.json; the unused
    item of the table is counted in the report's item steps."""
    (tmp_path / "user_sequence.txt").write_text("A1 B1 B2 B3\nA2 B2 B3 B1 B2\n")
    (tmp_path / "products_lookup.csv").write_text(",global_product_id,name\n0,7,Soap\n1,8,Brush\n2,9,Comb\n3,4,X\n")
    (tmp_path / "item_id_to_int.json").write_text('{"B1": 7, "B2": 8, "B3": 9}')
    config = DataConfig(
        dataset="t",
        interactions_path=str(tmp_path / "user_sequence.txt"),
        items_path=str(tmp_path / "products_lookup.csv"),
        items_format="csv",
        item_columns={"item": "global_product_id", "title": "name"},
        item_ids_path=str(tmp_path / "item_id_to_int.json"),
        num_blocks=2,
        negatives=[0],
    )
    report = prepare_frame_config(config, tmp_path)
    assert report["item_steps"] == [
        {
            "step": "read products_lookup.csv",
            "rows_in": 4,
            "rows_out": 3,
            "dropped": {"item not named in item_id_to_int.json": 1},
        }
    ]
    steps = {s["step"]: s for s in report["steps"]}
    assert steps["order by time and de-duplicate"]["dropped"] == {"repeated (user, item) pair, first kept": 1}
    items = pd.read_parquet(tmp_path / "prepared" / "items.parquet")
    assert items[["item_id", "title"]].values.tolist() == [["B1", "Soap"], ["B2", "Brush"], ["B3", "Comb"]]
    assert PreparedData(tmp_path / "prepared").sequences.row(1).tolist() == [2, 3, 1]


def test_settings_added_later_stay_out_of_saved_configs_at_their_defaults():
    """Prepared data and fingerprints saved before these settings existed must still match a default config."""
    from raylrec.data.prepare import ADDED_FIELDS

    assert not set(ADDED_FIELDS) & set(DataConfig().model_dump(mode="json"))
    assert DataConfig(fields=["user_id", "item_id"]).model_dump(mode="json")["fields"] == ["user_id", "item_id"]


def test_raw_files_of_a_config_include_the_files_read_with_them(tmp_path):
    """The reuse check fingerprints the same files preparation did: the item id map and the other split files."""
    from raylrec.data.prepare import user_raw_files

    for name in ("T.train.inter", "T.valid.inter", "T.test.inter", "T.item2index", "T.text", "ids.json"):
        (tmp_path / name).write_text("x")
    splits = DataConfig(
        interactions_path=str(tmp_path / "T.train.inter"),
        items_path=str(tmp_path / "T.text"),
        item_ids_path=str(tmp_path / "ids.json"),
    )
    assert [p.name for p in user_raw_files(splits)] == [
        "T.train.inter",
        "T.text",
        "T.valid.inter",
        "T.test.inter",
        "T.item2index",
        "ids.json",
    ]
    assert user_raw_files(DataConfig()) == []
