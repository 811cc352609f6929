"""Datasets with Chainer's names: tuple/transform/sub datasets, labeled images, real data."""
from ..errors import DataError, DataFileNotFoundError
from .dataset_mixin import DatasetMixin
from .image_dataset import LabeledImageDataset
from .real import (DATASET_NAMES, get_dataset, get_digits, get_kmnist_test, get_mnist_test,
                   get_torchvision, kmnist_classmap)
from .sub_dataset import SubDataset, split_dataset, split_dataset_random
from .transform_dataset import TransformDataset
from .tuple_dataset import TupleDataset

__all__ = [
    'DataError', 'DataFileNotFoundError', 'DatasetMixin', 'TupleDataset', 'TransformDataset',
    'SubDataset', 'split_dataset', 'split_dataset_random', 'LabeledImageDataset', 'get_digits',
    'get_mnist_test', 'get_kmnist_test', 'kmnist_classmap', 'get_torchvision', 'get_dataset',
    'DATASET_NAMES',
]
