"""The data a network is trained, calibrated and scored on: the registered datasets, one reader
per data format behind one interface (``reader.DatasetReader``: IDX, CIFAR, OpenML ARFF, npz),
the facade that finds, downloads, verifies and reads a split (``datasets.load_split``), and
the preprocessing that turns stored samples into network inputs (``preprocess``).

The facade is re-exported here (numpy and the standard library only)."""

from evaluators.data.datasets import (
    DATASETS,
    FORMATS,
    DatasetError,
    Split,
    class_count,
    find_folder,
    load_split,
    locate,
    study_splits,
)

__all__ = ["DATASETS", "FORMATS", "DatasetError", "Split", "class_count", "find_folder",
           "load_split", "locate", "study_splits"]
