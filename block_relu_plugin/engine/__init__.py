"""Training-loop pieces for the paper's schedules; importing registers them with mmengine."""
from .schedulers import WarmupPolyLR

__all__ = ['WarmupPolyLR']
