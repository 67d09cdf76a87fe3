"""Datasets: fetching raw files into the cache and reading them into canonical Arrow tables."""

from raylrec.data.fetch import RawDataset, fetch_dataset
from raylrec.data.readers import ColumnMapping, ItemColumnMapping, read_interactions, read_items

__all__ = ["ColumnMapping", "ItemColumnMapping", "RawDataset", "fetch_dataset", "read_interactions", "read_items"]
