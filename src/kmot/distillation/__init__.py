"""Knowledge distillation on `keras.distillation`: a teacher trains a student.

`distill` trains a smaller student from a teacher, or lets a teacher guide the
fine-tuning of a pruned, clustered or quantization-aware student (which then
strips and exports as usual). See docs/distillation.md.
"""

from kmot.distillation.distill import distill
from kmot.errors import DistillationError

__all__ = ["DistillationError", "distill"]
