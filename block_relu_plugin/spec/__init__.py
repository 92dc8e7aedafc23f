from .accounting import drelu_report, format_report
from .spec import BlockReLUSpec, SpecError

__all__ = ["BlockReLUSpec", "SpecError", "drelu_report", "format_report"]
