"""Pure NumPy metrics of generated image–layout pairs: alignment, semantic recall, Fréchet distance.

* Alignment: how well a generated layout describes its generated image. A segmenter labels the
  image; the generated layout is the reference and the segmentation the prediction; per-class IoU
  and pixel accuracy come from their confusion matrix.
* Semantic recall / precision: do the classes a prompt names appear (above a minimum pixel
  fraction) in a label map — the segmentation of the generated image or the generated layout?
* Fréchet distance between Gaussians fitted to features of real and generated images (FID when
  the features are Inception pool features), the feature network being any callable.

No JAX and no SciPy: the matrix square root uses symmetric eigen-decompositions.
"""

from collections.abc import Callable

import numpy as np

FeatureFn = Callable[[np.ndarray], np.ndarray]  # images [N, H, W, 3] in [-1, 1] -> [N, F]


def confusion_matrix(
    reference: np.ndarray, prediction: np.ndarray, num_classes: int, ignore_class: int = -1
) -> np.ndarray:
    """Pixel counts ``[K, K]``: entry ``[i, j]`` counts pixels with reference ``i``, prediction ``j``.

    Args:
      reference, prediction: int ``[..., H, W]`` label maps in [0, K) of the same shape.
      ignore_class: pixels whose *reference* is this class are not counted (-1: none). A
        prediction of the ignore class on a counted pixel is an error like any other.
    """
    reference, prediction = np.asarray(reference), np.asarray(prediction)
    if reference.shape != prediction.shape:
        raise ValueError(f"label maps differ in shape: {reference.shape} vs {prediction.shape}")
    keep = reference != ignore_class
    pairs = reference[keep].astype(np.int64) * num_classes + prediction[keep]
    return np.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes)


def iou_from_confusion(confusion: np.ndarray, ignore_class: int = -1) -> np.ndarray:
    """Per-class IoU ``[K]`` = TP / (TP + FP + FN) of a confusion matrix ``[K, K]``.

    NaN for the ignore class and for classes absent from both reference and prediction
    (TP + FP + FN = 0): they carry no evidence either way and are left out of means (`nanmean`).
    """
    confusion = np.asarray(confusion, np.float64)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    iou = np.divide(tp, union, out=np.full_like(tp, np.nan), where=union > 0)
    if ignore_class >= 0:
        iou[ignore_class] = np.nan
    return iou


def mean_ignoring_nan(values: np.ndarray) -> float:
    """Mean of the finite entries; NaN when there are none (no warning)."""
    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def alignment(
    layouts: np.ndarray, segmented: np.ndarray, num_classes: int, ignore_class: int = -1
) -> dict[str, np.ndarray | float]:
    """Agreement of generated layouts with the segmentation of their generated images.

    Args:
      layouts: int ``[N, H, W]`` generated layouts (the reference).
      segmented: int ``[N, H, W]`` segmenter predictions on the generated images.

    Returns:
      ``per_class_iou`` ``[K]`` (from the confusion matrix summed over all samples; NaN for the
      ignore class and classes absent from both), ``miou`` (their NaN-ignoring mean),
      ``pixel_accuracy`` (over non-ignored pixels), ``sample_miou`` ``[N]`` (each sample's own
      mIoU, for ranking examples).
    """
    pairs = zip(layouts, segmented, strict=True)
    per_sample = np.stack([confusion_matrix(a, b, num_classes, ignore_class) for a, b in pairs])
    # per_sample: [N, K, K]
    total = per_sample.sum(0)
    iou = iou_from_confusion(total, ignore_class)
    counted = total.sum()
    return {
        "per_class_iou": iou,
        "miou": mean_ignoring_nan(iou),
        "pixel_accuracy": float(np.trace(total) / counted) if counted else float("nan"),
        "sample_miou": np.array(
            [mean_ignoring_nan(iou_from_confusion(c, ignore_class)) for c in per_sample]
        ),
    }


def present_classes(labels: np.ndarray, num_classes: int, min_fraction: float) -> np.ndarray:
    """bool ``[N, K]``: class ``k`` covers at least ``min_fraction`` of sample ``n``'s pixels.

    The threshold keeps a few stray pixels (sampling noise, segmenter errors at edges) from
    counting as an object. labels: int ``[N, H, W]`` in [0, K).
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    flat = labels.reshape(n, -1).astype(np.int64)
    counts = np.stack([np.bincount(row, minlength=num_classes) for row in flat])  # [N, K]
    return counts >= min_fraction * flat.shape[1]


def named_classes(prompts: list[str], parse: Callable[[str], list[int]], num_classes: int):
    """bool ``[N, K]``: the classes each prompt names, by a caption parser ``text -> ids``."""
    named = np.zeros((len(prompts), num_classes), bool)
    for i, prompt in enumerate(prompts):
        named[i, parse(prompt)] = True
    return named


def recall_precision(
    named: np.ndarray, present: np.ndarray, nameable: np.ndarray
) -> dict[str, np.ndarray | float]:
    """Semantic recall and precision of prompts' classes in label maps.

    Args:
      named: bool ``[N, K]`` classes each prompt names.
      present: bool ``[N, K]`` classes present in each label map (``present_classes``).
      nameable: bool ``[K]`` classes a prompt can name at all; only these count as present
        (the background and the ignore class are never "extra objects").

    Returns:
      ``recall`` = Σ|named ∧ present| / Σ|named| and ``precision`` = Σ|named ∧ present| /
      Σ|present ∧ nameable|, pooled over samples (NaN with an empty denominator), and per-sample
      ``sample_recall`` / ``sample_precision`` ``[N]`` (NaN where the denominator is empty).
    """
    named = np.asarray(named, bool) & nameable
    present = np.asarray(present, bool) & nameable
    hits = (named & present).sum(1).astype(np.float64)
    n_named, n_present = named.sum(1), present.sum(1)

    def ratio(num, den):
        return np.divide(num, den, out=np.full(num.shape, np.nan), where=den > 0)

    def pooled(den):
        return float(hits.sum() / den.sum()) if den.sum() else float("nan")

    return {
        "recall": pooled(n_named),
        "precision": pooled(n_present),
        "sample_recall": ratio(hits, n_named),
        "sample_precision": ratio(hits, n_present),
    }


def gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[F]`` and unbiased covariance ``[F, F]`` (float64) of features ``[N, F]``, N ≥ 2."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need features [N >= 2, F], got {features.shape}")
    return features.mean(0), np.atleast_2d(np.cov(features, rowvar=False))


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative round-off clipped)."""
    w, v = np.linalg.eigh((matrix + matrix.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Fréchet (2-Wasserstein²) distance between N(mu1, sigma1) and N(mu2, sigma2).

    ‖mu1 − mu2‖² + tr(Σ1) + tr(Σ2) − 2 tr((Σ1 Σ2)^½), with tr((Σ1 Σ2)^½) = Σ_i sqrt(λ_i) for the
    eigenvalues λ_i of the symmetric PSD matrix Σ1^½ Σ2 Σ1^½ (similar to Σ1 Σ2), which avoids a
    general matrix square root. Clipped at 0 against round-off.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    root1 = _psd_sqrt(sigma1)
    inner = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    trace_sqrt = np.sqrt(np.clip(eig, 0.0, None)).sum()
    distance = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt
    return float(max(distance, 0.0))


def fid(real_images: np.ndarray, generated_images: np.ndarray, features: FeatureFn) -> float:
    """Fréchet distance between Gaussian fits of ``features`` of real and generated images.

    ``features``: images float ``[N, H, W, 3]`` in [−1, 1] -> ``[N, F]``; with Inception-v3 pool
    features (user-supplied weights) this is the usual FID, otherwise a proxy of it. The value
    depends on N (a biased estimator): compare only numbers computed with the same N.
    """
    return frechet_distance(
        *gaussian_statistics(features(real_images)),
        *gaussian_statistics(features(generated_images)),
    )


def colour_pixel_features(images: np.ndarray, grid: int = 4, bins: int = 4) -> np.ndarray:
    """Fixed, weight-free image features for a fidelity proxy ("FID-CP"): ``[N, 3·grid² + bins³]``.

    The concatenation of (a) the images average-pooled to a ``grid x grid`` RGB thumbnail, values
    in [−1, 1] (layout and colour placement), and (b) the joint RGB histogram with ``bins`` bins
    per channel, as pixel fractions (colour statistics: flat object colours, grey textures).

    Args:
      images: float ``[N, H, W, 3]`` in [−1, 1], H and W divisible by ``grid``.
    """
    images = np.clip(np.asarray(images, np.float64), -1.0, 1.0)
    n, h, w, c = images.shape
    if h % grid or w % grid:
        raise ValueError(f"image size {(h, w)} must be divisible by grid={grid}")
    thumb = images.reshape(n, grid, h // grid, grid, w // grid, c).mean((2, 4)).reshape(n, -1)
    level = np.minimum(((images + 1.0) / 2.0 * bins).astype(np.int64), bins - 1)  # [N, H, W, 3]
    code = (level[..., 0] * bins + level[..., 1]) * bins + level[..., 2]
    hist = np.stack([np.bincount(row, minlength=bins**3) for row in code.reshape(n, -1)])
    return np.concatenate([thumb, hist / (h * w)], axis=1)
