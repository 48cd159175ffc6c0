"""Models built from the layers: an MLP, scanning MLPs written as CNNs, a 1-d CNN classifier.

>>> from portaconv.models import MLP, CNN_SimpleScanningMLP, CNN_DistributedScanningMLP, CNN
"""

from .cnn import CNN
from .mlp import MLP
from .mlp_scan import CNN_DistributedScanningMLP, CNN_SimpleScanningMLP

__all__ = ["CNN", "MLP", "CNN_DistributedScanningMLP", "CNN_SimpleScanningMLP"]
