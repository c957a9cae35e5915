"""What a user sees of a training run: a progress bar, TensorBoard events, a JSON-lines log.

TensorBoard events need TensorFlow; where it is not installed (an accelerator image with JAX
only) the run says so once and writes metrics.jsonl alone."""

import json
import os
import time

import tqdm
from absl import logging


def _summary():
    """``tf.summary``, or None (with a warning) where TensorFlow is not installed."""
    try:
        import tensorflow as tf
    except ImportError:
        logging.warning("TensorFlow is not installed: no TensorBoard events, metrics.jsonl only.")
        return None
    return tf.summary


class MetricLog:
    """Writes scalar metrics to ``{workdir}/metrics.jsonl`` and TensorBoard events in ``workdir``.

    Only process 0 writes; other processes keep a silent progress bar.
    """

    def __init__(self, workdir: str, start_step: int, num_steps: int, is_main: bool):
        self._is_main = is_main
        self._bar = tqdm.tqdm(
            initial=start_step,
            total=num_steps,
            disable=not is_main,
            unit="step",
            dynamic_ncols=True,
        )
        self._last = (start_step, time.perf_counter())
        if is_main:
            os.makedirs(workdir, exist_ok=True)
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
            self._summary = _summary()  # None: no TensorBoard
            if self._summary is not None:
                self._tb = self._summary.create_file_writer(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        """Logs ``metrics`` (host floats) at ``step`` and advances the progress bar to it."""
        last_step, last_time = self._last
        now = time.perf_counter()
        metrics = dict(metrics, steps_per_sec=(step - last_step) / max(now - last_time, 1e-9))
        self._last = (step, now)
        self._bar.update(step - self._bar.n)
        self._bar.set_postfix(
            {k: f"{metrics[k]:.4g}" for k in ("loss", "loss_img", "loss_lbl", "steps_per_sec")}
        )
        if not self._is_main:
            return
        self._jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        self._jsonl.flush()
        if self._summary is None:
            return
        with self._tb.as_default(step=step):
            for name, value in metrics.items():
                self._summary.scalar(name, value)
        self._tb.flush()

    def message(self, text: str) -> None:
        self._bar.write(text)

    def close(self) -> None:
        self._bar.close()
        if self._is_main:
            self._jsonl.close()
            if self._summary is not None:
                self._tb.close()
