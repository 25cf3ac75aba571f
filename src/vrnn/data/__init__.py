"""Data for the VRNN: readers for the paper's formats and for data sets that install with the
project, the paper's preprocessing, and batching.

    >>> from vrnn.data import load_dataset, pad_batch, BucketBatchSampler
    >>> ds = load_dataset("speech")                # or "handwriting", or "path/to/TIMIT", ...
    >>> ds.info.x_dim, ds.info.mean, ds.info.std   # statistics from the training split
    >>> x, mask = pad_batch(ds.test[:8])           # (B, T_max, D), (B, T_max)

Modules: ``core`` (DataInfo, SequenceDataset, DataError, splits, cache), ``audio`` (folders of
audio files in any format soundfile reads, TIMIT, built-in speech sets), ``strokes`` (LASA
handwriting, IAM-OnDB XML), ``music`` (Bach chorales piano rolls), ``digits`` (binarised MNIST),
``text`` (one-hot characters: the built-in novel, any ``.txt`` file),
``formats`` (.npy/.npz, read without pickle, and format detection), ``tables`` (CSV, TSV and
Parquet files in long form, one row per time step: ``read_table``), ``pack`` (converting sequences
to the pickle-free .npz layout: ``vrnn data pack``), ``walk`` (folder walks that follow links
without looping or counting a file twice), ``batching`` (padding, bucketing, TBPTT windows),
``registry`` (load_dataset, list_datasets). Each module's docstring gives its sources, licences,
preprocessing and splits.

Safety: no data file is ever unpickled (``allow_pickle=False`` everywhere); an old file of NumPy
object arrays is refused with the command that converts it (``pack_sequences(...,
allow_pickle=True)``, which only a person who trusts the file should run).
"""

from vrnn.data.batching import BucketBatchSampler, contiguous_batches, pad_batch
from vrnn.data.core import DataError, DataInfo, SequenceDataset, check_same_kind, check_x_dim
from vrnn.data.pack import pack_sequences
from vrnn.data.registry import (
    BUILTIN_DATASETS,
    format_dataset_table,
    list_datasets,
    load_dataset,
)
from vrnn.data.tables import Table, read_table

__all__ = [
    "BUILTIN_DATASETS", "BucketBatchSampler", "DataError", "DataInfo", "SequenceDataset",
    "check_same_kind", "check_x_dim", "contiguous_batches", "format_dataset_table",
    "list_datasets", "load_dataset", "pack_sequences", "pad_batch", "Table", "read_table",
]
