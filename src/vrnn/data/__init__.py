"""Data for the VRNN: readers for the paper's formats and for data sets that install with the
project, the paper's preprocessing, and batching.

    >>> from vrnn.data import load_dataset, pad_batch, BucketBatchSampler
    >>> ds = load_dataset("speech")                # or "handwriting", or "path/to/TIMIT", ...
    >>> ds.info.x_dim, ds.info.mean, ds.info.std   # statistics from the training split
    >>> x, mask = pad_batch(ds.test[:8])           # (B, T_max, D), (B, T_max)

Modules: ``core`` (DataInfo, SequenceDataset, DataError, splits, cache), ``audio`` (WAV/FLAC
folders, TIMIT, built-in speech sets), ``strokes`` (LASA handwriting, IAM-OnDB XML), ``music``
(Bach chorales piano rolls), ``digits`` (binarised MNIST), ``formats`` (.npy/.npz and format
detection), ``batching`` (padding, bucketing, TBPTT windows), ``registry`` (load_dataset,
list_datasets). Each module's docstring gives its sources, licences, preprocessing and splits.
"""

from vrnn.data.batching import BucketBatchSampler, contiguous_batches, pad_batch
from vrnn.data.core import DataError, DataInfo, SequenceDataset, check_same_kind, check_x_dim
from vrnn.data.registry import (
    BUILTIN_DATASETS,
    format_dataset_table,
    list_datasets,
    load_dataset,
)

__all__ = [
    "BUILTIN_DATASETS", "BucketBatchSampler", "DataError", "DataInfo", "SequenceDataset",
    "check_same_kind", "check_x_dim", "contiguous_batches", "format_dataset_table",
    "list_datasets", "load_dataset", "pad_batch",
]
