"""``--mode train`` (the default): trains the config's model in the workdir, resuming from its
latest checkpoint, with sample grids of held-out captions every ``train.sample_every`` steps.

    python run.py --config experiments/demo.py --workdir /tmp/demo
"""

import os

import jax
import ml_collections

from gcd_jax import viz
from gcd_jax.data import classes, pipeline
from gcd_jax.inference import generation
from gcd_jax.inference.model import from_state
from gcd_jax.training import loop
from gcd_jax.training.train_state import TrainState


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Trains (or resumes) until ``config.train.num_steps``; returns the final state."""
    return loop.train(config, workdir, sample_grid(config, workdir))


def sample_grid(config: ml_collections.ConfigDict, workdir: str) -> loop.SampleGrid | None:
    """The training-time grid: the captions of the first ``train.num_sample_images`` held-out
    examples (and, for an SR model, their own image and layout resized down as the SR condition
    is) sampled with the EMA parameters into ``samples/step_{N}.png``; None when disabled."""
    if not config.train.sample_every:
        return None
    examples = pipeline.load_eval_examples(config, config.train.num_sample_images)
    prompts = [str(c) for c in examples["captions"]]
    lowres = None
    if config.model.sr:
        lowres = generation.lowres_from_data(config, examples["image"], examples["label"])
    info = classes.dataset_info(config.data.name)

    def write(nets, state, frozen) -> str:
        step = int(state.step)
        model = from_state(config, nets, state.ema_params, frozen, step)
        images, layouts = generation.generate(model, prompts, jax.random.key(step), lowres=lowres)
        path = os.path.join(workdir, "samples", f"step_{step:07d}.png")
        if jax.process_index() == 0:
            grid = viz.pair_grid(images, layouts, info.palette, prompts, info.class_names)
            viz.save_png(path, grid)
        return path

    return write
