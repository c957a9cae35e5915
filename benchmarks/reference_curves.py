"""Train the authors' PyTorch JointImagen and gcd_jax side by side; compare their loss curves.

Both start from the same weights (a small joint U-Net, the Flax parameters mapped to the reference's
``JointUnet`` by ``tests/fixtures/make_unet_fixture.py``), see the same demo batches (generated once
in NumPy) with the same frozen text embeddings (a fixed random vector per caption word), use the
same diffusion settings (linear/linear, T = 1000, P2 γ = 0.5, text dropout 0.1) and the same Adam
(lr, β = (0.9, 0.99), ε = 1e-8, no clipping, no warm-up). Each draws its own randomness (times,
noise, label noise, dropout) from ``--seeds``; the seeds show how far two runs of one implementation
part, which is the yardstick for the gap between the implementations.

Logged every ``--log_every`` steps: the mean training loss terms (image, layout) of the last
``--log_every`` steps, and both models' loss terms on one fixed evaluation batch with common random
numbers (the same times, noise and layout draws for both; times stratified on [0.002, 0.999], so
the layout's i = 0 step, where the two losses knowingly differ, is not drawn). Writes
``curves.csv`` (one row per log point, implementation and seed) and ``summary.json`` to ``--out``.

    python -m benchmarks.reference_curves --gcdp_dir /tmp/GCDP [--steps 300] [--seeds 0,1]
        [--out /tmp/reference_curves]

The reference's modules are loaded from ``--gcdp_dir`` with the import stubs of the fixture
scripts (needs torch, einops, einops-exts); nothing of theirs is copied here.
"""

import argparse
import contextlib
import csv
import dataclasses
import functools
import json
import os
import pathlib
import re
import sys
import time

os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import configs  # noqa: E402
from gcd_jax.convert import torch_names  # noqa: E402
from gcd_jax.data import scenes  # noqa: E402
from gcd_jax.diffusion import categorical, joint  # noqa: E402
from gcd_jax.models.networks import Apply, build_networks  # noqa: E402
from gcd_jax.training import train_state, train_step  # noqa: E402

# The U-Net both implementations train: 32×32 demo scenes, K = 8, three levels.
CASE = dict(
    model=dict(
        dim=16,
        dim_mults=(1, 2, 4),
        num_res_blocks=(1, 1, 1),
        attn_levels=(False, False, True),
        cross_attn_levels=(False, True, True),
        attn_heads=2,
        attn_dim_head=16,
        num_groups=4,
        num_latents=4,
    ),
    num_classes=8,
    max_text_len=36,
    text_len=36,
    text_dim=32,
    image_size=(32, 32),
)
EVAL_SIZE = 16


# ----------------------------------------------------------------------------- data


def _words(caption: str) -> list[str]:
    return re.findall(r"[a-z]+", caption.lower())


def demo_data(num_batches: int, batch: int, seed: int) -> tuple[list[dict], dict]:
    """Training batches and the evaluation batch, NumPy, generated once.

    Returns ``(batches, eval_batch)``; each batch holds ``image`` float32 ``[B, 32, 32, 3]`` in
    [−1, 1], ``label`` int32 ``[B, 32, 32]``, ``text`` float32 ``[B, L, D]`` (a fixed random
    N(0, 1) vector per caption word, zero padding) and ``text_mask`` bool ``[B, L]``. Scenes are
    the demo's training stream (one caption of three, chosen at random) and validation stream.
    """
    rng = np.random.default_rng(seed)
    pool = [scenes.demo_example(0, 0, i) for i in range(min(num_batches * batch, 2048))]
    held_out = [scenes.demo_example(0, 1, i) for i in range(EVAL_SIZE)]

    def embed(word: str) -> np.ndarray:  # fixed per word, whatever the other words
        word_rng = np.random.default_rng([seed, *word.encode()])
        return word_rng.standard_normal(CASE["text_dim"]).astype(np.float32)

    def stack(examples: list[dict]) -> dict:
        length = CASE["text_len"]
        text = np.zeros((len(examples), length, CASE["text_dim"]), np.float32)
        mask = np.zeros((len(examples), length), bool)
        for row, example in enumerate(examples):
            words = _words(example["captions"][rng.integers(3)])[:length]
            text[row, : len(words)] = [embed(w) for w in words]
            mask[row, : len(words)] = True
        return dict(
            image=np.stack([e["image"] for e in examples]).astype(np.float32) / 127.5 - 1.0,
            label=np.stack([e["label"] for e in examples]).astype(np.int32),
            text=text,
            text_mask=mask,
        )

    eval_batch = stack(held_out)  # first: the same whatever the number of steps
    order = [rng.choice(len(pool), batch, replace=False) for _ in range(num_batches)]
    return [stack([pool[i] for i in rows]) for rows in order], eval_batch


def with_draws(batch: dict, rng: np.random.Generator, t: np.ndarray, drop_prob: float) -> dict:
    """``batch`` with explicit draws for both implementations: times ``t`` float32 ``[B]``, ε
    ``noise`` ``[B, H, W, 3]``, ``drop_text`` bool ``[B]`` and the uniforms of the Gumbel-max
    draw of ``y_t`` ``[B, K, H, W]`` (the reference's layout)."""
    b, h, w, _ = batch["image"].shape
    k = CASE["num_classes"]
    return dict(
        batch,
        t=np.float32(t),
        noise=rng.standard_normal((b, h, w, 3)).astype(np.float32),
        gumbel_uniform=rng.uniform(size=(b, k, h, w)).astype(np.float32),
        drop_text=rng.uniform(size=b) < drop_prob,
    )


def eval_draws(eval_batch: dict, seed: int = 1234) -> dict:
    """The evaluation batch's common random numbers: times stratified on [0.002, 0.999] (i ≥ 2),
    no text dropout."""
    b = eval_batch["image"].shape[0]
    t = 0.002 + (np.arange(b) + 0.5) / b * 0.997
    return with_draws(eval_batch, np.random.default_rng(seed), t, drop_prob=0.0)


def lockstep_draws(batch: dict, seed: int, step: int) -> dict:
    """Training draws of one lock-step step: ``t ~ U(0, 0.999)``, text dropout 0.1."""
    rng = np.random.default_rng([seed, step])
    t = rng.uniform(0.0, 0.999, batch["image"].shape[0])
    return with_draws(batch, rng, t, drop_prob=0.1)


# ----------------------------------------------------------------------------- the two sides


class Reference:
    """The authors' JointImagen: ``forward`` (their loss) + ``torch.optim.Adam``."""

    def __init__(self, fixture, classes, params, lr: float, seed: int):
        import torch

        self.torch = torch
        self.fixture = fixture
        self.unet = self.fixture.make_unet_fixture.torch_unet(classes[2], CASE, params)
        loss = dict(noise_schedule="linear", noise_schedule_lbl="linear")
        self.imagen = self.fixture.reference_imagen(classes, CASE, loss, self.unet)
        self.optimizer = torch.optim.Adam(
            self.unet.parameters(), lr=lr, betas=(0.9, 0.99), eps=1e-8
        )
        torch.manual_seed(seed)

    def step(self, batch: dict, step: int, draws: dict | None = None) -> tuple[float, ...]:
        """One Adam step on ``batch`` with the torch RNG's draws, or with ``draws`` (lock-step:
        ``t``, ``noise``, ``gumbel_uniform``, ``drop_text``; the ``y_t`` the U-Net saw is kept in
        ``self.y_t``). Returns the mean loss terms and NaN (the count of i = 0 examples, which
        the reference does not expose)."""
        self.unet.train()
        self.imagen.cond_drop_prob = 0.1
        if draws is None:
            loss_img, loss_lbl = self.imagen.forward(**self._forward_args(batch))
        else:
            loss_img, loss_lbl, self.y_t = self._injected_forward(batch, draws)
        self.optimizer.zero_grad()
        (loss_img + loss_lbl).backward()  # the trainer's lambdas (1, 1)
        self.optimizer.step()
        return loss_img.item(), loss_lbl.item(), np.nan

    def _forward_args(self, batch: dict) -> dict:
        torch = self.torch
        return dict(
            images=torch.from_numpy(np.ascontiguousarray(batch["image"].transpose(0, 3, 1, 2))),
            labels=torch.from_numpy(batch["label"][:, None].astype(np.float32)),
            unet=self.unet,
            unet_number=1,
            text_embeds=torch.from_numpy(batch["text"]),
            text_masks=torch.from_numpy(batch["text_mask"]),
        )

    def _injected_forward(self, batch: dict, draws: dict):
        """``JointImagen.forward`` with the draws injected: per-example times, ε, the Gumbel
        uniforms of ``y_t`` and the text-dropout mask (``prob_mask_like`` patched). Returns the
        loss terms (tensors) and ``y_t`` int32 ``[B, H, W]``."""
        torch, fixture, seen = self.torch, self.fixture, {}
        forward = self.unet.forward

        def record(x, lbl, time, **kwargs):
            seen["y_t"] = lbl[:, 0].numpy().astype(np.int32)
            return forward(x, lbl, time, **kwargs)

        def times(*args, **kwargs):
            return torch.from_numpy(draws["t"])

        def keep_mask(*args, **kwargs):
            return torch.from_numpy(~draws["drop_text"])

        noise = np.ascontiguousarray(draws["noise"].transpose(0, 3, 1, 2))
        schedule = self.imagen.noise_schedulers[0]
        module = sys.modules["imagen_pytorch.joint_imagen"]
        with contextlib.ExitStack() as stack:
            stack.enter_context(fixture.injected(torch, [noise], [draws["gumbel_uniform"]]))
            stack.enter_context(fixture.patched(self.unet, "forward", record))
            stack.enter_context(fixture.patched(schedule, "sample_random_times", times))
            stack.enter_context(fixture.patched(module, "prob_mask_like", keep_mask))
            loss_img, loss_lbl = self.imagen.forward(**self._forward_args(batch))
        return loss_img, loss_lbl, seen["y_t"]

    def gradients(self, draws: dict) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Gradients of the batch-mean loss (image + layout) on ``draws`` (a batch with its
        draws), per parameter name, and the ``y_t`` the U-Net saw ``[B, H, W]``."""
        loss_img, loss_lbl, y_t = self._injected_forward(draws, draws)
        self.optimizer.zero_grad()
        (loss_img + loss_lbl).backward()
        grads = {n: p.grad.numpy().copy() for n, p in self.unet.named_parameters()}
        self.optimizer.zero_grad()
        return grads, y_t

    def evaluate(self, draws: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-example ``(loss_img, loss_lbl, y_t)`` with the injected draws."""
        state = self.torch.get_rng_state()  # the evaluation leaves the training draws alone
        self.unet.eval()
        examples = [
            self.fixture.one_example(self.torch, self.imagen, self.unet, draws, i)
            for i in range(len(draws["t"]))
        ]
        self.torch.set_rng_state(state)
        cat = lambda name: np.concatenate([e[name] for e in examples])  # noqa: E731
        return cat("loss_img"), cat("loss_lbl"), cat("y_t")


def reference_keep_schedule(schedule, num_timesteps: int):
    """The reference's layout keep table as a schedule ``t -> λ``: keep ``ᾱ(t) / ᾱ(0)`` (1, i.e.
    ``λ = +∞``, at t = 0), with t clipped to ``(T − 1)/T``, the last entry its prior term reads."""

    def logsnr(t):
        t = jnp.minimum(t, (num_timesteps - 1) / num_timesteps)
        log_keep = jax.nn.log_sigmoid(schedule(t)) - jax.nn.log_sigmoid(schedule(jnp.float32(0)))
        log_keep = jnp.minimum(log_keep, 0.0)
        return log_keep - categorical.log1mexp(log_keep)

    return logsnr


def first_step(process: joint.Process, key: jax.Array, batch_size: int) -> jax.Array:
    """bool ``[B]``: the examples ``joint.loss`` puts on the layout's decoder step i = 0, from its
    documented key split (time first)."""
    t = jax.random.uniform(jax.random.split(key, 5)[0], (batch_size,), maxval=process.t_max)
    return jnp.floor(t * process.num_timesteps) == 0


class Ours:
    """gcd_jax: the library's train step (``train_step.train_step``: ``joint.loss`` on the Flax
    U-Net, ``train_state.make_optimizer``'s Adam without warm-up or clipping, the EMA update),
    given the batch's text embeddings; compiled once and shared by the seeds (``reset`` starts a
    new run).

    ``matched``: an ablation that trains with the reference's two known departures from
    docs/design.md §3, its keep table (``reference_keep_schedule``) and a zero layout term at
    i = 0: a loss the library does not have, so its step is written here. The evaluation always
    uses the reference's table, so that it compares weights, not loss definitions.
    """

    def __init__(self, config, model, matched: bool):
        self.model, self.matched = model, matched
        process = joint.Process.from_config(config)
        table = reference_keep_schedule(process.label_logsnr, process.num_timesteps)
        self.eval_process = dataclasses.replace(process, label_logsnr=table)
        self.process = self.eval_process if matched else process
        self.optimizer = train_state.make_optimizer(config.optim)
        config.train.norm_metrics = False  # the reference logs no norms
        nets = dataclasses.replace(build_networks(config), unet=model)
        library_step = functools.partial(
            train_step.train_step,
            nets=nets,
            process=self.process,
            optimizer=self.optimizer,
            config=config,
        )
        self._library_step = jax.jit(library_step)
        self._step = jax.jit(self._matched_step, donate_argnums=(0, 1))
        self._lockstep = jax.jit(self._lockstep_step, donate_argnums=(0, 1))
        self._eval = jax.jit(self._eval_loss)

    def reset(self, params, seed: int) -> "Ours":
        self.params = jax.tree.map(jnp.array, params)
        self.opt_state = self.optimizer.init(self.params)
        self.library_opt_state = self.optimizer.init({"unet": self.params})  # the library's tree
        self.key = jax.random.key(seed)
        return self

    def _denoise(self, params):
        return lambda *args, **kwargs: self.model.apply({"params": params}, *args, **kwargs)

    def _run_library_step(self, batch: dict, step: int) -> tuple:
        """One ``train_step.train_step`` from (params, Adam state) at ``step``: its key is
        ``fold_in(key(seed), step)``, as the matched step's."""
        wrap = {"unet": self.params}
        state = train_state.TrainState(
            step=jnp.asarray(step, jnp.int32),
            params=wrap,
            ema_params=wrap,
            opt_state=self.library_opt_state,
            key=jax.random.key_data(self.key),
        )
        b = batch["image"].shape[0]
        inputs = dict(
            image=batch["image"],
            label=batch["label"],
            text=batch["text"],
            mask=batch["text_mask"],
            has_text=np.ones(b, bool),
        )
        state, metrics = self._library_step(state, inputs, {})
        self.params, self.library_opt_state = state.params["unet"], state.opt_state
        first = first_step(self.process, jax.random.fold_in(self.key, step), b)
        return metrics["loss_img"], metrics["loss_lbl"], jnp.sum(first)

    def _matched_step(self, params, opt_state, batch, key):
        first = first_step(self.process, key, batch["image"].shape[0])

        def mean_loss(params):
            has_text = jnp.ones(first.shape, bool)
            inputs = dict(batch, mask=batch["text_mask"], has_text=has_text)
            out = joint.loss(self.process, Apply(self.model), {"unet": params}, inputs, key)
            out["loss_lbl"] = jnp.where(first, 0.0, out["loss_lbl"])
            out["loss"] = out["loss_img"] + out["loss_lbl"]
            return jnp.mean(out["loss"]), out

        grads, out = jax.grad(mean_loss, has_aux=True)(params)
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        terms = (jnp.mean(out["loss_img"]), jnp.mean(out["loss_lbl"]), jnp.sum(first))
        return optax.apply_updates(params, updates), opt_state, terms

    def step(self, batch: dict, step: int, draws: dict | None = None, y_t=None) -> tuple:
        """One Adam step with ``joint.loss``'s own draws, or (lock-step) with the reference's
        ``draws`` and ``y_t`` through ``loss_from_draws`` and the reference's loss definitions.
        Returns the mean loss terms and the number of i = 0 examples."""
        if draws is None and not self.matched:
            terms = self._run_library_step(batch, step)
        elif draws is None:
            key = jax.random.fold_in(self.key, step)
            self.params, self.opt_state, terms = self._step(self.params, self.opt_state, batch, key)
        else:
            arrays = {k: v for k, v in {**batch, **draws}.items() if k != "gumbel_uniform"}
            self.params, self.opt_state, terms = self._lockstep(
                self.params, self.opt_state, arrays, y_t
            )
        return tuple(float(x) for x in terms)

    def _lockstep_step(self, params, opt_state, arrays, y_t):
        first = jnp.floor(arrays["t"] * self.process.num_timesteps) == 0

        def mean_loss(params):
            out = self._eval_loss(params, arrays, y_t)
            out["loss_lbl"] = jnp.where(first, 0.0, out["loss_lbl"])  # the reference's ≈ 0
            return jnp.mean(out["loss_img"] + out["loss_lbl"]), out

        grads, out = jax.grad(mean_loss, has_aux=True)(params)
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        terms = (jnp.mean(out["loss_img"]), jnp.mean(out["loss_lbl"]), jnp.sum(first))
        return optax.apply_updates(params, updates), opt_state, terms

    def _eval_loss(self, params, draws, y_t):
        def call(x_t, y_t, logsnr):
            text, mask, drop = draws["text"], draws["text_mask"], draws["drop_text"]
            return self._denoise(params)(x_t, y_t, logsnr, text, mask, drop)

        image, label, t, noise = (draws[k] for k in ("image", "label", "t", "noise"))
        return joint.loss_from_draws(self.eval_process, call, image, label, t, noise, y_t)

    def gradients(self, draws: dict, y_t: np.ndarray):
        """Gradients (Flax tree) of the batch-mean loss with the given draws, ``y_t`` included."""
        arrays = {k: v for k, v in draws.items() if k != "gumbel_uniform"}

        def mean_loss(params):
            return jnp.mean(self._eval_loss(params, arrays, y_t)["loss"])

        return jax.jit(jax.grad(mean_loss))(self.params)

    def evaluate(self, draws: dict, y_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        arrays = {k: v for k, v in draws.items() if k != "gumbel_uniform"}
        out = self._eval(self.params, arrays, y_t)
        return np.asarray(out["loss_img"]), np.asarray(out["loss_lbl"])


# ----------------------------------------------------------------------------- the run


def gradient_check(fixture, reference: Reference, ours: Ours, draws: dict) -> dict:
    """Both implementations' gradients at the common initial weights on the evaluation batch with
    its common random numbers (no text dropout; i ≥ 2, where the losses agree): ours mapped to the
    reference's parameter names by the fixture's Flax → PyTorch mapping, then the relative L2
    error ``‖g_ours − g_ref‖ / ‖g_ref‖`` over all parameters and per tensor (the worst)."""
    torch_grads, y_t = reference.gradients(draws)
    grads = ours.gradients(draws, y_t)
    flat = {
        tuple(p.key for p in path): v for path, v in jax.tree_util.tree_flatten_with_path(grads)[0]
    }
    table = torch_names.unet_table(grads, len(CASE["model"]["dim_mults"]), (3, 7, 15))
    mapped = {e.name: torch_names.to_torch(e, np.asarray(flat[e.path])) for e in table}
    error = {n: np.linalg.norm(mapped[n] - g) for n, g in torch_grads.items()}
    norm = {n: np.linalg.norm(g) for n, g in torch_grads.items()}
    significant = [n for n in norm if norm[n] > 1e-3 * max(norm.values())]
    worst = max(significant, key=lambda n: error[n] / norm[n])
    total = np.sqrt(sum(e**2 for e in error.values()) / sum(v**2 for v in norm.values()))
    return {
        "relative_error_all": float(total),
        "worst_tensor": worst,
        "worst_relative_error": float(error[worst] / norm[worst]),
        "tensors": len(norm),
        "tensors_compared_for_worst": len(significant),
    }


def train_side_by_side(
    args, seed: int, batches, draws, ours: dict[str, Ours], check: bool
) -> tuple[list[dict], dict | None]:
    """Trains the reference and each gcd_jax variant for ``args.steps`` steps from the same
    weights; returns the log rows (one per log point and implementation) and, if ``check``, the
    ``gradient_check`` at the initial weights."""
    fixture = configs.fixture_module("make_loss_fixture")
    classes = fixture.load_reference(args.gcdp_dir)
    _, _, params = fixture.make_unet_fixture.micro_model(CASE, seed=0)
    sides = {"reference": Reference(fixture, classes, params, args.lr, seed)}
    sides.update({name: variant.reset(params, seed) for name, variant in ours.items()})
    checked = gradient_check(fixture, sides["reference"], ours["gcd_jax"], draws) if check else None
    if checked:
        print("gradient check:", json.dumps(checked), flush=True)
    rows, window = [], {name: [] for name in sides}
    seconds = dict.fromkeys(sides, 0.0)
    for step in range(args.steps + 1):
        if step % args.log_every == 0:
            img, lbl, y_t = sides["reference"].evaluate(draws)
            evals = {"reference": (img, lbl)}
            evals.update({name: side.evaluate(draws, y_t) for name, side in ours.items()})
            for name, (img, lbl) in evals.items():
                recent = np.array(window[name] or [(np.nan,) * 3])
                rows.append(
                    dict(
                        seed=seed,
                        impl=name,
                        step=step,
                        train_img=recent[:, 0].mean(),
                        train_lbl=recent[:, 1].mean(),
                        first_steps=recent[:, 2].sum(),
                        eval_img=float(img.mean()),
                        eval_lbl=float(lbl.mean()),
                        seconds=seconds[name],
                    )
                )
                window[name] = []
            print(_format_rows(rows[-len(sides) :]), flush=True)
        if step == args.steps:
            break
        step_draws = lockstep_draws(batches[step], seed, step) if args.lockstep else None
        for name, side in sides.items():
            start = time.perf_counter()
            if step_draws is None:
                window[name].append(side.step(batches[step], step))
            elif name == "reference":
                window[name].append(side.step(batches[step], step, step_draws))
            else:
                y_t = sides["reference"].y_t
                window[name].append(side.step(batches[step], step, step_draws, y_t))
            seconds[name] += time.perf_counter() - start
    return rows, checked


def _format_rows(rows: list[dict]) -> str:
    return "\n".join(
        f"seed {r['seed']} {r['impl']:>15} step {r['step']:4d}  train img {r['train_img']:.4f} "
        f"lbl {r['train_lbl']:.4f} (i=0: {r['first_steps']:.0f})  eval img {r['eval_img']:.4f} "
        f"lbl {r['eval_lbl']:.4f}  ({r['seconds']:.0f} s)"
        for r in rows
    )


COLUMNS = ("train_img", "train_lbl", "eval_img", "eval_lbl")


def summarise(rows: list[dict], seeds: list[int], burn_in: int) -> dict:
    """Per implementation and logged quantity, over the log points after ``burn_in`` steps: the mean;
    for a gcd_jax variant, per seed the gap of those means to the reference's (ours − reference; the
    seeds are independent runs, so their spread is the yardstick) and the share of log points
    where ours is higher; with two or more seeds, the mean absolute gap between the first two
    seeds' curves of the same implementation (the seed noise, point by point)."""
    value = {(r["impl"], r["seed"], r["step"]): r for r in rows}
    steps = sorted({r["step"] for r in rows if r["step"] > burn_in})
    impls = list(dict.fromkeys(r["impl"] for r in rows))

    def get(impl, seed, column):
        return np.array([value[impl, seed, s][column] for s in steps])

    summary = {"burn_in": burn_in, "log_points": len(steps)}
    for impl in impls:
        entry = {}
        for column in COLUMNS:
            stats = {"mean": float(np.mean([get(impl, s, column) for s in seeds]))}
            if impl != "reference":
                gap = np.array([get(impl, s, column) - get("reference", s, column) for s in seeds])
                stats["gap_to_reference_per_seed"] = [float(g) for g in gap.mean(axis=1)]
                stats["share_of_points_above_reference"] = float(np.mean(gap > 0))
            if len(seeds) > 1:
                noise = get(impl, seeds[0], column) - get(impl, seeds[1], column)
                stats["seed_gap_mean_abs"] = float(np.mean(np.abs(noise)))
            entry[column] = stats
        summary[impl] = entry
    return summary


def print_table(rows: list[dict], seeds: list[int]) -> None:
    """The evaluation losses (image / layout, common random numbers) per step, seed, impl."""
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    value = {(r["impl"], r["seed"], r["step"]): r for r in rows}
    header = [f"{impl[:15]}/s{seed}" for seed in seeds for impl in impls]
    print("\neval loss img/lbl\nstep  " + "  ".join(f"{h:>17}" for h in header))
    for step in sorted({r["step"] for r in rows}):
        cells = []
        for seed in seeds:
            for impl in impls:
                r = value[impl, seed, step]
                cells.append(f"{r['eval_img']:.4f}/{r['eval_lbl']:.4f}")
        print(f"{step:4d}  " + "  ".join(f"{c:>17}" for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gcdp_dir", required=True, help="checkout of github.com/pmh9960/GCDP")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", default="0,1", help="comma-separated model seeds")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--log_every", type=int, default=25)
    parser.add_argument("--data_seed", type=int, default=0)
    variants = parser.add_mutually_exclusive_group()
    variants.add_argument(
        "--matched", action="store_true", help="also train the gcd_jax_matched ablation (Ours)"
    )
    variants.add_argument(
        "--lockstep",
        action="store_true",
        help="gcd_jax trains on the reference's draws and y_t (same steps up to float32)",
    )
    parser.add_argument("--out", default="/tmp/reference_curves")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    batches, eval_batch = demo_data(args.steps, args.batch, args.data_seed)
    draws = eval_draws(eval_batch)
    config, model, _ = configs.fixture_module("make_unet_fixture").micro_model(CASE, seed=0)
    config.text.drop_prob = 0.1
    config.optim.update(learning_rate=args.lr, b1=0.9, b2=0.99, eps=1e-8)
    config.optim.update(warmup_steps=0, grad_clip=0.0)
    ours = {"gcd_jax": Ours(config, model, matched=False)}
    if args.matched:
        ours["gcd_jax_matched"] = Ours(config, model, matched=True)
    start = time.perf_counter()
    rows, checked = [], None
    for seed in seeds:
        seed_rows, seed_check = train_side_by_side(
            args, seed, batches, draws, ours, check=seed == seeds[0]
        )
        rows += seed_rows
        checked = checked or seed_check
    summary = summarise(rows, seeds, burn_in=args.steps // 2)
    summary["gradient_check"] = checked
    summary["wall_seconds"] = time.perf_counter() - start

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "curves.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump({"args": vars(args), "case": CASE, "summary": summary}, f, indent=2)
    print_table(rows, seeds)
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out}/curves.csv and summary.json")


if __name__ == "__main__":
    main()
