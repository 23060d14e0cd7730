"""Datasets -> uint8 tensors at native resolution; nested class-balanced subsets; loaders.

Registry keyed by the name users type (`data=fashion_mnist`, files in conf/data/); each module
in `readers/` registers its formats. Nothing is ever downloaded: a missing dataset is a
DataError that names what to install or set.
Small sets live on the training device as uint8 (DeviceLoader); ImageFolder trees larger than
`data.max_resident_bytes` stream through DataLoader workers (StreamLoader). Both yield the
same batches for the same (seed, step), so a resumed run sees what it would have seen.

Modules: `base` (types, registry), `readers/` (one per format, webdataset shards included),
`manifest` (cached indexes of folders and shards, fingerprints), `identity` (the dataset's
part of the run_id), `decode` (torchvision decoding), `subsets` (nested subsets), `load`
(load_dataset), `loaders` (DeviceLoader, StreamLoader, make_loader).
"""
import torch  # noqa: F401 - callers reach torch as data.torch, as they did before the split

from benchbench.data import readers  # noqa: F401 - registers every format
from benchbench.data.base import DATASETS as DATASETS
from benchbench.data.base import DEFAULT_MAX_RESIDENT_BYTES as DEFAULT_MAX_RESIDENT_BYTES
from benchbench.data.base import Dataset as Dataset
from benchbench.data.base import DatasetSpec as DatasetSpec
from benchbench.data.base import Split as Split
from benchbench.data.base import _positive as _positive
from benchbench.data.base import _seed as _seed
from benchbench.data.load import channel_stats as channel_stats
from benchbench.data.load import load_dataset as load_dataset
from benchbench.data.loaders import DeviceLoader as DeviceLoader
from benchbench.data.loaders import StreamLoader as StreamLoader
from benchbench.data.loaders import make_loader as make_loader
from benchbench.data.readers.cifar import _cifar_batch as _cifar_batch
from benchbench.data.readers.folders import IMAGENET_MEAN as IMAGENET_MEAN
from benchbench.data.readers.folders import IMAGENET_STD as IMAGENET_STD
from benchbench.data.readers.folders import IMG_EXTENSIONS as IMG_EXTENSIONS
from benchbench.data.readers.folders import decode_image as decode_image
from benchbench.data.readers.idx import FASHION_ROOT as FASHION_ROOT
from benchbench.data.readers.idx import IDX_IMAGES as IDX_IMAGES
from benchbench.data.readers.idx import IDX_LABELS as IDX_LABELS
from benchbench.data.readers.idx import _idx_split as _idx_split
from benchbench.data.readers.idx import read_idx as read_idx
from benchbench.data.readers.synthetic import SYN_CHUNK as SYN_CHUNK
from benchbench.data.readers.synthetic import SYN_CLASSES as SYN_CLASSES
from benchbench.data.readers.synthetic import SYN_DEFAULT_TEST as SYN_DEFAULT_TEST
from benchbench.data.readers.synthetic import SYN_DEFAULT_TRAIN as SYN_DEFAULT_TRAIN
from benchbench.data.readers.synthetic import SYN_SHAPES as SYN_SHAPES
from benchbench.data.readers.synthetic import SYN_SIZE as SYN_SIZE
from benchbench.data.readers.synthetic import SYN_VERSION as SYN_VERSION
from benchbench.data.readers.synthetic import synthetic_split as synthetic_split
from benchbench.data.subsets import nested_subset as nested_subset
from benchbench.errors import ConfigError as ConfigError
from benchbench.errors import DataError as DataError
