"""medlnkit: LayerNorm-only fine-tuning of medical vision-language models, as a teaching kit."""

from medlnkit.errors import MedlnkitError
from medlnkit.paradigms import Paradigm, parse_paradigm

__version__ = "0.1.0"

__all__ = ["MedlnkitError", "Paradigm", "parse_paradigm", "__version__"]
