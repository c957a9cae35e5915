"""The semantic analysis of a trained U-Net's features (the paper's third claim; issue 30).

For ``N`` held-out images with their layouts as ground truth: noise each image to a time ``t``
with the process's own forward kernel (``gaussian.q_sample`` with the image schedule; for the
joint model the layout too, a draw of ``categorical.q_probs`` with the layout schedule, the
training loss's ``q(y_t | y_0)``), run the U-Net once per text condition ('cond': the image's
caption, 'null': the learned null text), take the outputs of chosen blocks
(``features.capture_blocks``), upsample them to the image size (``jax.image.resize``, bilinear
by default, ``analysis.upsample``) and cluster each image's pixel features with scikit-learn's
k-means, ``K`` = the dataset's class count and ``K`` = the classes present in the image. Scores
per block × t × condition: NMI, ARI and Hungarian-matched mIoU of the clusters against the
layout (mean ± std over images), and a linear probe (per-pixel logistic regression trained on
the first half of the images, accuracy on the other half).

The noise is drawn once per ``t`` for all images (the same for every condition and block), from
``fold_in(key(analysis.seed), index of t)``.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gcd_jax import viz
from gcd_jax.diffusion import categorical, gaussian, joint, sampling
from gcd_jax.errors import ConfigError, InputError
from gcd_jax.evaluation import features
from gcd_jax.inference import generation
from gcd_jax.inference.model import Model

CONDITIONS = {"cond": False, "null": True}  # analysis.conditions -> drop_text (the null text)
K_CHOICES = {  # analysis.k -> K of one image's k-means, from its layout and the class count
    "classes": lambda layout, num_classes: num_classes,
    "present": lambda layout, num_classes: len(np.unique(layout)),
}
UPSAMPLE = ("bilinear", "nearest")  # analysis.upsample: jax.image.resize methods
SCORES = ("nmi", "ari", "miou")
UNMATCHED = (0, 0, 0)  # figure colour of clusters left without a class (more clusters than classes)


@dataclasses.dataclass(frozen=True)
class Settings:
    """``config.analysis`` validated; ``blocks`` resolved (``()`` -> ``features.default_blocks``)."""

    num_images: int
    times: tuple[float, ...]
    blocks: tuple[str, ...]
    conditions: tuple[str, ...]
    k: tuple[str, ...]
    probe: bool
    probe_max_pixels: int
    upsample: str
    batch_size: int
    figure_images: int
    seed: int

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "Settings":
        a = config.analysis
        for field, values, known in (
            ("conditions", a.conditions, CONDITIONS),
            ("k", a.k, K_CHOICES),
            ("upsample", (a.upsample,), UPSAMPLE),
        ):
            unknown = sorted(set(values) - set(known))
            if unknown or not values:
                raise ConfigError(
                    f"Unknown analysis.{field} {unknown or values!r}; expected one of {sorted(known)}."
                )
        if not a.times or not all(0.0 <= t < 1.0 for t in a.times):
            raise ConfigError(f"analysis.times={tuple(a.times)} must be times in [0, 1).")
        minimum = 2 if a.probe else 1
        if a.num_images < minimum or a.batch_size < 1:
            raise ConfigError(
                f"analysis.num_images={a.num_images} must be at least {minimum} (the probe trains "
                f"on half the images) and analysis.batch_size={a.batch_size} at least 1."
            )
        blocks = tuple(a.blocks) or features.default_blocks(len(config.model.dim_mults))
        return cls(
            num_images=int(a.num_images),
            times=tuple(float(t) for t in a.times),
            blocks=blocks,
            conditions=tuple(a.conditions),
            k=tuple(a.k),
            probe=bool(a.probe),
            probe_max_pixels=int(a.probe_max_pixels),
            upsample=a.upsample,
            batch_size=int(a.batch_size),
            figure_images=int(a.figure_images),
            seed=int(a.seed),
        )


@functools.partial(jax.jit, static_argnames=("process",))
def noised(process: joint.Process, image, label, t, key):
    """``(x_t [N, H, W, 3], y_t [N, H, W] int32 | None, λ_img(t) [N])`` of images ``[N, H, W, 3]``
    in [−1, 1] and layouts ``[N, H, W]`` at the scalar time ``t``, as the training loss draws
    them (its layout time trails ``t`` by less than 1/T; here the layout is noised at ``t``)."""
    t = jnp.full((image.shape[0],), t, jnp.float32)
    k_image, k_label = jax.random.split(key)
    logsnr = process.image_logsnr(t)
    x_t = gaussian.q_sample(image, logsnr, joint.standard_normal(k_image, image.shape))
    if not process.joint:
        return x_t, None, logsnr
    log_y0 = categorical.index_to_log_onehot(label, process.num_classes)
    y_t = categorical.sample(k_label, categorical.q_probs(log_y0, process.label_logsnr(t)))
    return x_t, y_t, logsnr


@functools.partial(jax.jit, static_argnames=("unet", "blocks"))
def _capture(unet, blocks, params, x_t, y_t, logsnr, cond):
    """``features.capture_blocks`` compiled; ``cond`` as ``gcd_jax.interfaces`` describes it."""
    text = (cond["text"], cond["text_mask"], cond["drop_text"])
    lowres = {k: v for k, v in cond.items() if k.startswith("lowres_")}
    return features.capture_blocks(unet, params, blocks, x_t, y_t, logsnr, *text, **lowres)[1]


@functools.partial(jax.jit, static_argnames=("size", "method"))
def upsample(feature_map: jax.Array, size: tuple[int, int], method: str) -> jax.Array:
    """One block's features ``[h, w, C]`` -> ``[H, W, C]`` float32 (``jax.image.resize``)."""
    return jax.image.resize(feature_map, size + feature_map.shape[-1:], method)


def block_features(model: Model, examples: dict, settings: Settings, x_t, y_t, logsnr, drop):
    """``{block: [N, h, w, C] float32}`` (host) of the U-Net on the noisy pairs, in batches of
    ``settings.batch_size``; ``drop``: the learned null text instead of the captions."""
    n = len(x_t)
    captions = [str(c) for c in examples["captions"]]
    if model.sr:
        lowres = generation.lowres_from_data(model.config, examples["image"], examples["label"])
    out = {block: [] for block in settings.blocks}
    for start in range(0, n, settings.batch_size):
        rows = slice(start, min(n, start + settings.batch_size))
        cond = dict(model.text_condition(captions[rows]))
        cond["drop_text"] = jnp.full((len(captions[rows]),), drop)
        if model.sr:
            label = None if lowres[1] is None else lowres[1][rows]
            size = tuple(model.config.data.image_size)
            key = jax.random.key(settings.seed)
            sr = sampling.upsampled_condition(model.sampler, lowres[0][rows], label, size, key)
            cond.update({k: v for k, v in sr.items() if v is not None})
        y_rows = None if y_t is None else y_t[rows]
        params = model.params["unet"]
        args = (x_t[rows], y_rows, logsnr[rows], cond)
        found = _capture(model.nets.unet, settings.blocks, params, *args)
        for block in settings.blocks:
            out[block].append(np.asarray(found[block]))
    return {block: np.concatenate(maps) for block, maps in out.items()}


def _probe_pixels(num_pixels: int, settings: Settings, num_images: int) -> np.ndarray | None:
    """Pixel indices the probe sees in each image: all (None), or a seeded random subset so
    that each half holds at most ``probe_max_pixels``."""
    per_image = settings.probe_max_pixels // max(1, num_images // 2)
    if settings.probe_max_pixels <= 0 or per_image >= num_pixels:
        return None
    rng = np.random.default_rng(settings.seed)
    return np.stack(
        [rng.choice(num_pixels, max(1, per_image), replace=False) for _ in range(num_images)]
    )


def score_block(feature_maps: np.ndarray, layouts: np.ndarray, num_classes: int, settings):
    """Scores of one block at one t and condition.

    Args:
      feature_maps: ``[N, h, w, C]``; layouts: int ``[N, H, W]``.
    Returns:
      (``{k: {score: [N] per image}}``, probe accuracy or None, ``{k: matched cluster maps
      [F, H, W]}`` of the first ``settings.figure_images`` images, classes by Hungarian
      assignment, −1 for a cluster left unmatched).
    """
    n, size = len(layouts), layouts.shape[1:]
    pixels = _probe_pixels(int(np.prod(size)), settings, n)
    per_image = {k: {s: np.zeros(n) for s in SCORES} for k in settings.k}
    maps = {k: [] for k in settings.k}
    probe_x, probe_y = [], []
    for i in range(n):
        f = np.asarray(upsample(feature_maps[i], size, settings.upsample))
        for k_name in settings.k:
            k = K_CHOICES[k_name](layouts[i], num_classes)
            clusters = features.kmeans_labels(f, k, settings.seed)
            scores = features.score_clusters(clusters, layouts[i], num_classes)
            for s in SCORES:
                per_image[k_name][s][i] = getattr(scores, s)
            if i < settings.figure_images:
                maps[k_name].append(features.hungarian_match(clusters, layouts[i], num_classes))
        if settings.probe:
            flat_f, flat_y = f.reshape(-1, f.shape[-1]), layouts[i].ravel()
            rows = slice(None) if pixels is None else pixels[i]
            probe_x.append(flat_f[rows])
            probe_y.append(flat_y[rows])
    probe = None
    if settings.probe:
        probe = features.linear_probe_accuracy(np.stack(probe_x), np.stack(probe_y), settings.seed)
    return per_image, probe, {k: np.stack(v) for k, v in maps.items()}


def analyze(model: Model, examples: dict, settings: Settings) -> dict:
    """The analysis of ``model`` on ``examples`` (``pipeline.load_eval_examples``: ``image``
    ``[N, H, W, 3]``, ``label`` ``[N, H, W]``, ``captions``).

    Returns:
      ``{'rows': [{block, t, condition, probe_accuracy, k: {score: (mean, std)}}],
      'probe_baseline': features.majority_baseline of the layouts (None without the probe),
      'maps': {(block, t, condition, k): matched cluster maps [F, H, W]}}``. Raises InputError for a
      block the U-Net does not have (listing those it has).
    """
    valid = features.block_names(model.params["unet"])
    unknown = sorted(set(settings.blocks) - set(valid))
    if unknown:
        raise InputError(
            f"unknown U-Net block(s) {unknown} (analysis.blocks); this U-Net has: "
            + ", ".join(valid)
        )
    process = joint.Process.from_config(model.config)
    image, label = jnp.asarray(examples["image"]), jnp.asarray(examples["label"])
    rows, maps = [], {}
    for ti, t in enumerate(settings.times):
        key = jax.random.fold_in(jax.random.key(settings.seed), ti)
        x_t, y_t, logsnr = noised(process, image, label, t, key)
        for condition in settings.conditions:
            found = block_features(
                model, examples, settings, x_t, y_t, logsnr, CONDITIONS[condition]
            )
            for block in settings.blocks:
                per_image, probe, block_maps = score_block(
                    found[block], examples["label"], process.num_classes, settings
                )
                row = {"block": block, "t": t, "condition": condition, "probe_accuracy": probe}
                for k_name, scores in per_image.items():
                    row[k_name] = {
                        s: (float(np.mean(v)), float(np.std(v))) for s, v in scores.items()
                    }
                    maps[(block, t, condition, k_name)] = block_maps[k_name]
                rows.append(row)
    baseline = features.majority_baseline(examples["label"]) if settings.probe else None
    return {"rows": rows, "probe_baseline": baseline, "maps": maps}


def figure(
    examples: dict, maps: dict, settings: Settings, palette: np.ndarray, class_names
) -> np.ndarray:
    """uint8 ``[H', W', 3]``: a row per image (the first ``settings.figure_images``): image |
    ground-truth layout | the cluster map of each block and t (condition 'cond' if analysed, K =
    'classes' if analysed), clusters coloured by the class Hungarian assignment gave them (black:
    none); column titles on top, the class legend below."""
    condition = "cond" if "cond" in settings.conditions else settings.conditions[0]
    k_name = "classes" if "classes" in settings.k else settings.k[0]
    count = min(settings.figure_images, len(examples["image"]))
    colours = np.concatenate([np.asarray(palette, np.uint8), [UNMATCHED]]).astype(np.uint8)
    columns = [viz.image_to_uint8(examples["image"][:count])]
    columns.append(colours[examples["label"][:count]])
    titles = ["image", "layout"]
    for block in settings.blocks:
        for t in settings.times:
            columns.append(colours[maps[(block, t, condition, k_name)][:count]])  # -1: black
            titles.append(f"{block} t={t:g}")
    tiles = np.stack(columns, axis=1)  # [F, columns, H, W, 3]
    scale = max(1, -(-viz.MIN_TILE // tiles.shape[3]))  # titles fit over the tiles
    tiles = tiles.repeat(scale, 2).repeat(scale, 3)
    f, c, h, w, _ = tiles.shape
    pad = 2
    grid = np.full((f * (h + pad) + pad, c * (w + pad) + pad, 3), 255, np.uint8)
    for i in range(f):
        for j in range(c):
            top, left = pad + i * (h + pad), pad + j * (w + pad)
            grid[top : top + h, left : left + w] = tiles[i, j]
    width = grid.shape[1]
    header = viz.caption_band(titles, w, pad, width)
    legend = viz.legend_band(class_names, palette, width, pad)
    return np.concatenate([header, grid, legend], axis=0)
