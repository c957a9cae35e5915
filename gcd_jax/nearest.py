"""The reference's nearest-neighbour rule, shared by the input pipeline and the SR low-res path.

PyTorch's ``F.interpolate(mode='nearest')`` and torchvision's tensor ``Resize(NEAREST)`` (the
reference's resizes of images and layouts) give output pixel ``i`` of ``n_out`` the source pixel
``floor(i · n_in / n_out)`` (computed in float32: a few sizes round to the pixel before);
PIL's NEAREST samples pixel centres, ``floor((i + ½) · n_in / n_out)``.
"""

import numpy as np


def source_index(
    n_in: int, n_out: int, start: float = 0.0, extent: float | None = None
) -> np.ndarray:
    """int ``[n_out]``: the source pixel of each output pixel when the window ``[start, start +
    extent)`` of ``n_in`` pixels (default: all of them) is resized to ``n_out``:
    ``floor(start + i · extent / n_out)``, clipped to ``[0, n_in)``. The whole axis is computed
    as PyTorch does, in float32 arithmetic."""
    i = np.arange(n_out)
    if start == 0.0 and extent is None:
        # PyTorch's nearest_idx: exact for equal and doubled sizes, else in float32, scale
        # float(n_in) / n_out (which differs from the exact floor for e.g. 2 -> 82, 14 -> 46).
        if n_out == n_in:
            return i
        if n_out == 2 * n_in:
            return i >> 1
        scale = np.float32(n_in) / np.float32(n_out)
        return np.minimum(np.floor(i.astype(np.float32) * scale).astype(np.int64), n_in - 1)
    index = np.floor(start + i * (extent / n_out)).astype(np.int64)
    return np.clip(index, 0, n_in - 1)
