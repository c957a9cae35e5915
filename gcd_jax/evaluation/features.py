"""Clustering metrics for the semantic analysis of U-Net features (issue 30; paper's third claim).

Library half only: given per-pixel features of one image and its ground-truth layout, cluster the pixels
with scikit-learn's KMeans (maintained, k-means++ init, several restarts: no reason to hand-roll it) and
score the clusters against the layout with scikit-learn's NMI / ARI and a Hungarian-matched mIoU
(scipy.optimize.linear_sum_assignment). A linear probe (per-pixel logistic regression) gives the
"features know the class" number. ``capture_blocks`` reads the features of named U-Net blocks with
Flax's ``capture_intermediates``; ``gcd_jax.evaluation.analysis`` composes these for
``--mode analyze``.
"""

import dataclasses
import re

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from threadpoolctl import threadpool_limits

from gcd_jax.errors import InputError
from gcd_jax.evaluation import metrics


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
    # One thread: next to JAX's threads, scikit-learn's OpenMP pool of one per core spun for
    # ~80x longer (2.6 s instead of 32 ms for 1024 pixels, 8 clusters on a busy 2-core CPU).
    with threadpool_limits(limits=1):
        return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(x).reshape(h, w)


def hungarian_match(clusters: np.ndarray, layout: np.ndarray, num_classes: int) -> np.ndarray:
    """Map each cluster id to a class id maximising pixel overlap; returns the matched map [H, W]."""
    k = int(clusters.max()) + 1
    overlap = np.zeros((k, num_classes), np.int64)
    np.add.at(overlap, (clusters.ravel(), layout.ravel()), 1)
    rows, cols = linear_sum_assignment(-overlap)
    mapping = np.full(k, -1, np.int64)  # clusters left unmatched (k > classes): wrong everywhere
    mapping[rows] = cols
    return mapping[clusters]


def matched_miou(clusters: np.ndarray, layout: np.ndarray, num_classes: int) -> float:
    """Mean IoU over the classes present in the layout, after Hungarian matching of clusters."""
    pred = hungarian_match(clusters, layout, num_classes)
    pred = np.where(pred < 0, num_classes, pred)  # unmatched: a class of its own, never right
    confusion = metrics.confusion_matrix(layout, pred, num_classes + 1)
    return float(np.mean(metrics.iou_from_confusion(confusion)[np.unique(layout)]))


def score_clusters(clusters: np.ndarray, layout: np.ndarray, num_classes: int) -> ClusterScores:
    """NMI, ARI and Hungarian-matched mIoU of a cluster map [H, W] against a layout [H, W]."""
    a, b = layout.ravel(), clusters.ravel()
    return ClusterScores(
        nmi=float(normalized_mutual_info_score(a, b)),
        ari=float(adjusted_rand_score(a, b)),
        miou=matched_miou(clusters, layout, num_classes),
    )


def cluster_scores(
    features: np.ndarray, layout: np.ndarray, k: int, num_classes: int, seed: int = 0
) -> ClusterScores:
    """k-means on one image's features [H, W, C] scored against its layout [H, W] int in [0, num_classes)."""
    if features.shape[:2] != layout.shape:
        raise InputError(f"features {features.shape[:2]} and layout {layout.shape} differ in size")
    return score_clusters(kmeans_labels(features, k, seed), layout, num_classes)


def linear_probe_accuracy(features: np.ndarray, layouts: np.ndarray, seed: int = 0) -> float:
    """Per-pixel logistic regression trained on the first half of the images, accuracy on the rest.

    features: [N, ..., C] (e.g. [N, H, W, C], or [N, P, C] for P pixels drawn per image); layouts:
    [N, ...] int. N >= 2. A first half holding one class only is predicted by that class
    (LogisticRegression needs two).
    """
    n = features.shape[0]
    if n < 2:
        raise InputError(f"the linear probe needs at least 2 images, got {n}")
    half = n // 2
    c = features.shape[-1]
    x_train, y_train = features[:half].reshape(-1, c), layouts[:half].ravel()
    x_test, y_test = features[half:].reshape(-1, c), layouts[half:].ravel()
    if len(np.unique(y_train)) == 1:
        return float(np.mean(y_test == y_train[0]))
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    probe = LogisticRegression(max_iter=500, random_state=seed)
    with threadpool_limits(limits=1):  # see kmeans_labels
        probe.fit((x_train - mean) / std, y_train)
        return float(probe.score((x_test - mean) / std, y_test))


def majority_baseline(layouts: np.ndarray) -> float:
    """The probe's floor: accuracy on the second half of ``layouts`` [N, ...] of the first half's
    most frequent class (a probe that learnt nothing; background-heavy layouts set it high)."""
    half = layouts.shape[0] // 2
    majority = np.bincount(layouts[:half].ravel()).argmax()
    return float(np.mean(layouts[half:] == majority))


# Top-level JointUNet blocks whose output is a feature map [B, h, w, C] (not the heads, the text
# or time modules, nor mid_attn, whose output is [B, h*w, C] tokens, nor nn.scan'd levels), with
# their place in the network: (stage, level, position in the level).
_SPATIAL_BLOCK = re.compile(
    r"(?P<stem>init_conv|init_resnet_block)|mid_block(?P<mid>\d+)|(?P<final>final_res_block)"
    r"|(?P<path>down|up)(?P<level>\d+)_(?P<part>downsample|upsample|init_block|block\d+|attn)"
)
_PART_ORDER = {"downsample": -1, "init_block": 0, "attn": 1_000, "upsample": 1_001}


def _network_order(match: re.Match) -> tuple[int, int, int]:
    if match["stem"]:
        return (0, 0, int(match["stem"] == "init_resnet_block"))
    if match["mid"]:
        return (2, int(match["mid"]), 0)
    if match["final"]:
        return (4, 0, 0)
    part = match["part"]
    position = _PART_ORDER[part] if part in _PART_ORDER else 1 + int(part[len("block") :])
    if match["path"] == "down":
        return (1, int(match["level"]), position)
    return (3, -int(match["level"]), position)


def block_names(params) -> list[str]:
    """The block names ``capture_blocks`` accepts for a U-Net with parameters ``params`` (its
    top-level submodules whose output is a feature map), in network order, input to output."""
    found = {name: _SPATIAL_BLOCK.fullmatch(name) for name in params}
    return sorted((n for n, m in found.items() if m), key=lambda n: _network_order(found[n]))


def default_blocks(num_levels: int) -> tuple[str, ...]:
    """The middle (output of the last middle block) and each decoder level (its upsampling
    layer's output), coarse to fine: ``('mid_block2', 'up{L-1}_upsample', ..., 'up0_upsample')``."""
    return ("mid_block2",) + tuple(f"up{level}_upsample" for level in reversed(range(num_levels)))


def capture_blocks(unet, params, blocks, x_t, y_t, logsnr, text, text_mask, drop_text, **lowres):
    """Run the U-Net once and return (outputs, {block: features [B, h, w, C] float32}).

    ``params``: the U-Net's parameters (``params['unet']`` of the trainable tree); the inputs are
    ``JointUNet.__call__``'s (``lowres``: an SR U-Net's ``lowres_image``, ``lowres_label``,
    ``lowres_logsnr``). ``blocks`` are names of ``block_names(params)`` (e.g. 'mid_block2',
    'up0_upsample'); Flax's capture_intermediates records their ``__call__`` outputs without
    touching the parameters or the train step (which never passes ``capture_intermediates``).
    An unknown name is an InputError listing the valid ones.
    """
    import jax.numpy as jnp  # local: the metric half above stays numpy-only

    names = set(blocks)
    valid = block_names(params)
    unknown = sorted(names - set(valid))
    if unknown:
        raise InputError(
            f"unknown U-Net block(s) {unknown} (analysis.blocks); this U-Net has: "
            + ", ".join(valid)
        )

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
        **lowres,
        capture_intermediates=wanted,
    )
    found = {k: v["__call__"][0] for k, v in state["intermediates"].items() if k in names}
    return outputs, {k: jnp.asarray(v, jnp.float32) for k, v in found.items()}
