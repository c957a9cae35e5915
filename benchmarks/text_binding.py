"""Does a trained joint model's layout depend on WHICH class a caption names, or only on how many?

    python -m benchmarks.text_binding --runs /tmp/demo [/tmp/demo2 ...] [--step 3200]

For each run (a workdir; its config is read from its checkpoint) and each object class k, the
one-object caption ``--template`` naming class k (default "A large {} in the center.") is given to
the network on ``--num`` fixed noisy inputs (Gaussian image noise, uniformly random layout) at
each log-SNR of ``--logsnrs``, without guidance. The predicted layout's class probabilities,
averaged over pixels and inputs, give a K × K matrix (named class × predicted class); the printed
**binding** is the mean over k of the share of the predicted *object* mass (classes ≥ 1) that
goes to class k. A model that reads only the object count from the caption scores 1/(K − 1),
one that draws exactly the named class scores 1. The noisy inputs are the same for every caption,
so differences between rows come from the caption alone. Joint models only (the image-only
model has no layout head).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.analysis import with_defaults  # noqa: E402
from experiments import base  # noqa: E402
from gcd_jax.data import classes  # noqa: E402
from gcd_jax.inference import model as model_lib  # noqa: E402
from gcd_jax.training import checkpoint  # noqa: E402


def class_mass(model: model_lib.Model, prompts: list[str], logsnr: float, num: int, key):
    """``[len(prompts), K]``: mean predicted layout class probabilities of each prompt on the
    same ``num`` noisy inputs at ``logsnr``."""
    h, w = model.config.data.image_size
    k_image, k_layout = jax.random.split(key)
    x_t = jax.random.normal(k_image, (num, h, w, 3))
    y_t = jax.random.randint(k_layout, (num, h, w), 0, model.config.data.num_classes)
    rows = []
    for prompt in prompts:
        cond = model.text_condition([prompt] * num)
        _, logits = model.nets.apply(model.params, x_t, y_t, jnp.full((num,), logsnr), cond)
        rows.append(np.asarray(jax.nn.softmax(logits.astype(jnp.float32), -1).mean((0, 1, 2))))
    return np.stack(rows)


def binding(mass: np.ndarray) -> float:
    """Mean share of the object mass (classes 1..K-1) on the named class; row i names class i+1."""
    objects = mass[:, 1:] / mass[:, 1:].sum(-1, keepdims=True)
    return float(np.mean(np.diag(objects)))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="workdirs of joint runs")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    parser.add_argument("--template", default="A large {} in the center.")
    parser.add_argument("--logsnrs", default="-6,-3,0,3")
    parser.add_argument("--num", type=int, default=32, help="noisy inputs per caption")
    parser.add_argument("--matrix", action="store_true", help="also print each K x K matrix")
    args = parser.parse_args(argv)
    logsnrs = [float(v) for v in args.logsnrs.split(",")]

    print("| run | step | " + " | ".join(f"binding, log-SNR {v:g}" for v in logsnrs) + " |")
    print("|---|---|" + "---|" * len(logsnrs))
    for run in args.runs:
        config = with_defaults(checkpoint.read_config(run, args.step), base.get_config())
        if not config.model.joint:
            print(f"| {run} | — | the image-only model has no layout head |")
            continue
        model = model_lib.load(config, run, step=args.step)
        names = classes.dataset_info(config.data.name).class_names[1:]
        prompts = [args.template.format(name) for name in names]
        cells, matrices = [], []
        for i, logsnr in enumerate(logsnrs):
            mass = class_mass(model, prompts, logsnr, args.num, jax.random.key(i))
            cells.append(f"{binding(mass):.3f}")
            matrices.append((logsnr, mass))
        print(f"| {run} | {model.step} | " + " | ".join(cells) + " |")
        if args.matrix:
            for logsnr, mass in matrices:
                print(f"\nlog-SNR {logsnr:g}: named class (rows) x predicted mass x 1000 (cols)")
                for name, row in zip(names, mass, strict=True):
                    print(f"  {name:>16s}", " ".join(f"{v * 1000:4.0f}" for v in row))
    print("\nA model that reads only the count from the caption scores 1 / (K - 1) (demo: 0.143).")


if __name__ == "__main__":
    main()
