"""Data sets and mini-batches: NumPy arrays on the host, moved to the backend batch by batch.

Example::

    import portaconv
    from portaconv.data import DataLoader, load_dataset, train_val_split

    portaconv.set_backend("torch")
    ds = load_dataset("digits")          # embedded: no download; X (N, 1, 8, 8) in [0, 1]
    X_train, y_train, X_val, y_val = train_val_split(ds.X_train, ds.y_train, 0.1, seed=0)
    loader = DataLoader(X_train, y_train, batch_size=64, shuffle=True, seed=0)
    for epoch in range(3):
        loader.set_epoch(epoch)          # the order is a function of (seed, epoch) alone
        for X_batch, y_batch in loader:  # torch tensors: float32 (64, 1, 8, 8), int64 (64,)
            ...

``load_dataset("fashion-mnist")``, ``"mnist"`` and ``"cifar10"`` read the standard files from
``data_dir``, ``$PORTACONV_DATA``, ``~/.cache/portaconv`` or a system directory, downloading
them (MD5-checked) when absent. :mod:`portaconv.data.datasets` holds the registry, splits and
scaling; :mod:`~portaconv.data.sources` the search path and downloads;
:mod:`~portaconv.data.readers` the IDX and CIFAR file formats.
"""

from .augment import AUGMENTATIONS, flip_and_shift, random_flip, random_shift
from .datasets import (
    DATASETS,
    SYSTEM_DIRS,
    Dataset,
    DatasetNotFoundError,
    cache_dir,
    load_cifar10,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    load_iris,
    load_mnist,
    mean_std,
    normalize,
    read_cifar_batch,
    read_idx,
    standardize,
    stratified_folds,
    train_val_split,
)
from .loader import DataLoader

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "SYSTEM_DIRS",
    "DataLoader",
    "Dataset",
    "DatasetNotFoundError",
    "cache_dir",
    "flip_and_shift",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_iris",
    "load_mnist",
    "mean_std",
    "normalize",
    "random_flip",
    "random_shift",
    "read_cifar_batch",
    "read_idx",
    "standardize",
    "stratified_folds",
    "train_val_split",
]
