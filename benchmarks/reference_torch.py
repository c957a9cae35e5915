"""Seconds per train step and per guided sampling step of the authors' PyTorch implementation.

Times github.com/pmh9960/GCDP's ``JointImagen`` / ``JointUnet`` on the configs of
``benchmarks/configs.py`` (tiny, base), with the same shapes gcd_jax's benchmarks use, so that
``benchmarks/train_step.py`` and ``benchmarks/sampling.py`` (``--reference DIR``) can print the
ratio of one run on one machine. The reference's modules are loaded from ``--gcdp_dir`` with the
import stubs of tests/fixtures/make_unet_fixture.py; nothing of theirs is copied here.

  train   ``JointImagen.forward`` (their loss: random times, ε, layout noise, text dropout 0.1) on
          random images and layouts, backward, ``torch.optim.Adam`` (β (0.9, 0.99), ε 1e-8) step
          and an EMA copy of the U-Net updated every step (``torch._foreach_lerp_``; gcd_jax's step
          computes its EMA every step too, ema_pytorch every 10). Median seconds per step after a
          warm-up step; peak resident memory of the process (all of it this run's: one subprocess
          per measurement).
  sample  ``JointImagen.p_sample`` with guidance 3 (their ``forward_with_cond_scale``: a
          conditional and a null forward) over ``--steps`` steps of their sampling grid, under
          ``torch.no_grad()``; median seconds per step over ``--repeats`` rounds after a warm-up.

Text: random [B, 256, 1024] embeddings with a full mask (precomputed frozen T5-large's shape).
Float32, eager, all CPU threads (``torch.get_num_threads()``).

    python -m benchmarks.reference_torch --gcdp_dir /tmp/GCDP [--configs tiny,base]
        [--what train,sample] [--steps 5]
"""

import argparse
import json
import pathlib
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import configs  # noqa: E402

GUIDANCE = 3.0


def build(gcdp_dir: str, name: str):
    """``(imagen, unet, config)``: the authors' JointImagen around a JointUnet of config ``name``,
    PyTorch's default initialisation."""
    import torch

    torch.manual_seed(0)
    unet_fixture = configs.fixture_module("make_unet_fixture")
    loss_fixture = configs.fixture_module("make_loss_fixture")
    classes = loss_fixture.load_reference(gcdp_dir)
    config = configs.get(name)
    case = configs.reference_case(config)
    kwargs = unet_fixture.unet_kwargs(case)
    kwargs.update(
        ff_mult=case["model"]["ff_mult"],
        init_cross_embed_kernel_sizes=case["model"]["cross_embed_kernels"],
    )
    unet = classes[2](**kwargs)
    schedules = dict(
        noise_schedule=config.diffusion.noise_schedule,
        noise_schedule_lbl=config.diffusion.noise_schedule_lbl,
    )
    imagen = loss_fixture.reference_imagen(classes, case, schedules, unet)
    return imagen, unet, config


def _inputs(config, rng: np.random.Generator) -> dict:
    import torch

    b, (h, w) = config.train.global_batch_size, tuple(config.data.image_size)
    return dict(
        images=torch.from_numpy(rng.uniform(-1, 1, (b, 3, h, w)).astype(np.float32)),
        labels=torch.from_numpy(
            rng.integers(0, config.data.num_classes, (b, 1, h, w)).astype(np.float32)
        ),
        text_embeds=torch.from_numpy(
            rng.standard_normal((b, configs.TEXT_LEN, configs.TEXT_DIM)).astype(np.float32)
        ),
        text_masks=torch.ones((b, configs.TEXT_LEN), dtype=torch.bool),
    )


def train_times(gcdp_dir: str, name: str, steps: int) -> dict:
    import torch

    imagen, unet, config = build(gcdp_dir, name)
    inputs = _inputs(config, np.random.default_rng(0))
    params = [p for p in unet.parameters() if p.requires_grad]
    ema = [p.detach().clone() for p in params]
    optimizer = torch.optim.Adam(params, lr=1.2e-4, betas=(0.9, 0.99), eps=1e-8)
    imagen.cond_drop_prob = 0.1
    unet.train()

    def step():
        loss_img, loss_lbl = imagen.forward(**inputs, unet=unet, unet_number=1)
        optimizer.zero_grad(set_to_none=True)
        (loss_img + loss_lbl).backward()
        optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - 0.9999)

    step()  # warm-up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return dict(
        implementation="reference",
        what="train",
        config=name,
        params=sum(p.numel() for p in params),
        batch=config.train.global_batch_size,
        step_s=statistics.median(times),
        peak_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        threads=torch.get_num_threads(),
    )


def sample_times(gcdp_dir: str, name: str, steps: int, repeats: int) -> dict:
    import torch

    imagen, unet, config = build(gcdp_dir, name)
    inputs = _inputs(config, np.random.default_rng(0))
    unet.eval()
    b, (h, w), k = config.train.global_batch_size, config.data.image_size, config.data.num_classes
    scheduler = imagen.noise_schedulers_sample[0]
    scheduler_lbl = imagen.noise_schedulers_lbl_sample[0]
    grid = scheduler.get_sampling_timesteps(b, device=torch.device("cpu"))
    stride = max(1, len(grid) // steps)
    grid = grid[::stride][:steps]

    def run():
        x = torch.randn(b, 3, h, w)
        log_lbl = scheduler_lbl.log_sample_categorical(torch.zeros(b, k, h, w))
        with torch.no_grad():
            for t, t_next in grid:
                x, log_lbl, _, _ = imagen.p_sample(
                    unet,
                    x,
                    log_lbl,
                    t,
                    t_next=t_next,
                    text_embeds=inputs["text_embeds"],
                    text_mask=inputs["text_masks"],
                    cond_scale=GUIDANCE,
                    noise_scheduler=scheduler,
                    noise_scheduler_lbl=scheduler_lbl,
                )
        return x

    run()  # warm-up
    rounds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        rounds.append((time.perf_counter() - start) / len(grid))
    return dict(
        implementation="reference",
        what="sample",
        config=name,
        params=sum(p.numel() for p in unet.parameters()),
        batch=b,
        step_s=statistics.median(rounds),
        threads=torch.get_num_threads(),
    )


def measure(gcdp_dir: str, what: str, name: str, steps: int, repeats: int = 3) -> dict:
    """One measurement in a fresh subprocess (its own peak memory; torch's threads not shared
    with JAX's)."""
    cmd = [sys.executable, "-m", "benchmarks.reference_torch", "--gcdp_dir", gcdp_dir]
    cmd += ["--child", f"{what}:{name}", "--steps", str(steps), "--repeats", str(repeats)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gcdp_dir", required=True, help="checkout of github.com/pmh9960/GCDP")
    parser.add_argument("--configs", default="tiny,base")
    parser.add_argument("--what", default="train,sample")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        what, name = args.child.split(":")
        if what == "train":
            row = train_times(args.gcdp_dir, name, args.steps)
        else:
            row = sample_times(args.gcdp_dir, name, args.steps, args.repeats)
        print(json.dumps(row))
        return
    print("| what | config | params | batch | s/step | peak GiB | torch threads |")
    print("|---|---|---|---|---|---|---|")
    for what in args.what.split(","):
        for name in args.configs.split(","):
            r = measure(args.gcdp_dir, what, name, args.steps, args.repeats)
            peak = f"{r['peak_gib']:.2f}" if "peak_gib" in r else "—"
            print(
                f"| {what} | {name} | {r['params']:,} | {r['batch']} | {r['step_s']:.4f} "
                f"| {peak} | {r['threads']} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
