"""The report's figures, one function per figure (each returns a `Plot`).

`common` holds the Plot record and the drawing helpers; `accuracy` the scaling figures
(Figures 3/4/5, patch size), `cost` the speed, memory and time figures (Figure 12), `compare`
the equal-compute figure, `curves` the training curves.
"""
from benchbench.report.plots.accuracy import compute_accuracy, dataset_size, patch_size
from benchbench.report.plots.common import (
    DEFAULT_FORMATS,
    NO_TRAIN,
    PAIR_COLORS,
    STYLE,
    Plot,
    model_colors,
    models_in,
)
from benchbench.report.plots.compare import equal_compute_plot
from benchbench.report.plots.cost import speed_memory, throughput_batch, wall_time
from benchbench.report.plots.curves import training_curves

__all__ = [
    "DEFAULT_FORMATS", "NO_TRAIN", "PAIR_COLORS", "STYLE", "Plot", "compute_accuracy",
    "dataset_size", "equal_compute_plot", "model_colors", "models_in", "patch_size",
    "speed_memory", "throughput_batch", "training_curves", "wall_time",
]
