"""Clustering metrics for the semantic analysis of U-Net features (issue 30; paper's third claim).

Library half only: given per-pixel features of one image and its ground-truth layout, cluster the pixels
with scikit-learn's KMeans (maintained, k-means++ init, several restarts: no reason to hand-roll it) and
score the clusters against the layout with scikit-learn's NMI / ARI and a Hungarian-matched mIoU
(scipy.optimize.linear_sum_assignment). A linear probe (per-pixel logistic regression) gives the
"features know the class" number. The feature capture from the U-Net and the run.py driver are not
written yet.
"""

import dataclasses

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from gcd_jax.errors import InputError


@dataclasses.dataclass(frozen=True)
class ClusterScores:
    nmi: float
    ari: float
    miou: float


def kmeans_labels(features: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Cluster pixel features [H, W, C] (any float) into k clusters; returns labels [H, W] int."""
    if features.ndim != 3:
        raise InputError(f"features must be [H, W, C], got shape {features.shape}")
    h, w, c = features.shape
    x = features.reshape(h * w, c).astype(np.float64)
    k = min(k, len(np.unique(x, axis=0)))  # KMeans cannot find more clusters than distinct points
    return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(x).reshape(h, w)


def hungarian_match(clusters: np.ndarray, layout: np.ndarray, num_classes: int) -> np.ndarray:
    """Map each cluster id to a class id maximising pixel overlap; returns the matched map [H, W]."""
    k = int(clusters.max()) + 1
    overlap = np.zeros((k, num_classes), np.int64)
    np.add.at(overlap, (clusters.ravel(), layout.ravel()), 1)
    rows, cols = linear_sum_assignment(-overlap)
    mapping = np.full(
        k, -1, np.int64
    )  # clusters left unmatched (k > classes) count as wrong everywhere
    mapping[rows] = cols
    return mapping[clusters]


def matched_miou(clusters: np.ndarray, layout: np.ndarray, num_classes: int) -> float:
    """Mean IoU over the classes present in the layout, after Hungarian matching of clusters."""
    pred = hungarian_match(clusters, layout, num_classes)
    ious = []
    for c in np.unique(layout):
        inter = np.sum((pred == c) & (layout == c))
        union = np.sum((pred == c) | (layout == c))
        ious.append(inter / union)
    return float(np.mean(ious))


def cluster_scores(
    features: np.ndarray, layout: np.ndarray, k: int, num_classes: int
) -> ClusterScores:
    """k-means on one image's features [H, W, C] scored against its layout [H, W] int in [0, num_classes)."""
    if features.shape[:2] != layout.shape:
        raise InputError(f"features {features.shape[:2]} and layout {layout.shape} differ in size")
    clusters = kmeans_labels(features, k)
    a, b = layout.ravel(), clusters.ravel()
    return ClusterScores(
        nmi=float(normalized_mutual_info_score(a, b)),
        ari=float(adjusted_rand_score(a, b)),
        miou=matched_miou(clusters, layout, num_classes),
    )


def linear_probe_accuracy(features: np.ndarray, layouts: np.ndarray, seed: int = 0) -> float:
    """Per-pixel logistic regression trained on the first half of the images, accuracy on the rest.

    features: [N, H, W, C]; layouts: [N, H, W] int. N >= 2.
    """
    n = features.shape[0]
    if n < 2:
        raise InputError(f"the linear probe needs at least 2 images, got {n}")
    half = n // 2
    c = features.shape[-1]
    x_train, y_train = features[:half].reshape(-1, c), layouts[:half].ravel()
    x_test, y_test = features[half:].reshape(-1, c), layouts[half:].ravel()
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    probe = LogisticRegression(max_iter=500, random_state=seed)
    probe.fit((x_train - mean) / std, y_train)
    return float(probe.score((x_test - mean) / std, y_test))


def capture_blocks(unet, params, blocks, x_t, y_t, logsnr, text, text_mask, drop_text):
    """Run the U-Net once and return (outputs, {block: features [B, h, w, C] float32}).

    ``blocks`` are top-level submodule names of JointUNet (e.g. 'mid_attn', 'up0_upsample'); Flax's
    capture_intermediates records their ``__call__`` outputs without touching the parameters or the
    train step (which never passes ``capture_intermediates``).
    """
    import jax.numpy as jnp  # local: the metric half above stays numpy-only

    names = set(blocks)

    def wanted(module, method_name):
        return method_name == "__call__" and bool(module.path) and module.path[-1] in names

    outputs, state = unet.apply(
        {"params": params},
        x_t,
        y_t,
        logsnr,
        text,
        text_mask,
        drop_text,
        capture_intermediates=wanted,
    )
    found = {k: v["__call__"][0] for k, v in state.get("intermediates", {}).items() if k in names}
    missing = names - set(found)
    if missing:
        raise InputError(
            f"unknown U-Net block(s) {sorted(missing)}; expected names such as mid_attn, up0_upsample"
        )
    return outputs, {k: jnp.asarray(v, jnp.float32) for k, v in found.items()}
