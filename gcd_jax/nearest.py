"""The reference's nearest-neighbour rule, shared by the input pipeline and the SR low-res path.

PyTorch's ``F.interpolate(mode='nearest')`` and torchvision's tensor ``Resize(NEAREST)`` (the
reference's resizes of images and layouts) give output pixel ``i`` of ``n_out`` the source pixel
``floor(i · n_in / n_out)``; PIL's NEAREST samples pixel centres, ``floor((i + ½) · n_in / n_out)``.
"""

import numpy as np


def source_index(
    n_in: int, n_out: int, start: float = 0.0, extent: float | None = None
) -> np.ndarray:
    """int ``[n_out]``: the source pixel of each output pixel when the window ``[start, start +
    extent)`` of ``n_in`` pixels (default: all of them) is resized to ``n_out``:
    ``floor(start + i · extent / n_out)``, clipped to ``[0, n_in)``. The whole-axis case is
    computed in integers (exact)."""
    i = np.arange(n_out)
    if start == 0.0 and extent is None:
        return (i * n_in) // n_out
    index = np.floor(start + i * (extent / n_out)).astype(np.int64)
    return np.clip(index, 0, n_in - 1)
