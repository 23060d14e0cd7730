"""One module per on-disk format; importing it registers its `data=<name>` entries in DATASETS.

A new format is a new module here plus its import below and its conf/data/<name>.yaml.
"""
from benchbench.data.readers import cifar, digits, folders, idx, synthetic, webdataset  # noqa: F401 - registers
