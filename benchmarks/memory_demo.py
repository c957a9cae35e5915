"""The demo without TensorFlow: for machines whose image has JAX but no TensorFlow/TFDS.

`install()` (call it before importing `gcd_jax.training.train` or `gcd_jax.cli.evaluate`) registers two
stand-in modules: `gcd_jax.data.sources` serving the demo scenes generated in memory by the same
pure function the TFDS builder stores (`scenes.demo_example(seed, stream, index)`, identical
arrays, captions as str instead of bytes), and, where TensorFlow is not installed, a `tensorflow` for `gcd_jax.training.metric_log` with a TensorBoard writer that writes
nothing (metrics.jsonl is still written). Only `config.data.name = 'demo'` is served.
"""

import contextlib
import importlib.util
import sys
import types
from collections.abc import Sequence

_SEED = 0  # DemoConfig.seed


class _Scenes(Sequence):
    """Random-access demo scenes of one split, generated on first access and kept."""

    def __init__(self, split: str, count: int):
        self._split, self._count, self._cache = split, count, {}

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> dict:
        from gcd_jax.data import scenes

        if not 0 <= index < self._count:
            raise IndexError(index)
        if index not in self._cache:
            scene = scenes.demo_example(_SEED, scenes.STREAMS[self._split], index)
            self._cache[index] = {**scene, "file_name": f"{self._split}_{index:06d}"}
        return self._cache[index]


def _open_split(config, split: str) -> Sequence[dict]:
    if config.data.name != "demo":
        raise ValueError("benchmarks.memory_demo serves only config.data.name='demo'.")
    from gcd_jax.data import scenes

    n = config.data.num_demo_examples
    counts = {"train": n, "validation": scenes.num_validation(n)}
    return _Scenes(split, counts[split])


def install() -> None:
    """Registers the stand-ins (idempotent); call before any gcd_jax module that reads data."""
    if "gcd_jax.data.sources" in sys.modules and getattr(
        sys.modules["gcd_jax.data.sources"], "IN_MEMORY", False
    ):
        return
    sources = types.ModuleType("gcd_jax.data.sources")
    sources.IN_MEMORY = True
    sources.open_split = _open_split
    sources.eval_split = lambda config: config.data.eval_split or "validation"
    sys.modules["gcd_jax.data.sources"] = sources
    import gcd_jax.data

    gcd_jax.data.sources = sources

    if importlib.util.find_spec("tensorflow") is None:
        # Only gcd_jax.training.metric_log imports TensorFlow (for TensorBoard): give it a stand-in while it
        # is imported, then unregister it so that other libraries still see no TensorFlow.
        tf = types.ModuleType("tensorflow")

        class _Writer:
            def as_default(self, step=None):
                return contextlib.nullcontext()

            def flush(self):
                pass

            def close(self):
                pass

        tf.summary = types.SimpleNamespace(
            create_file_writer=lambda *a, **k: _Writer(), scalar=lambda *a, **k: None
        )
        sys.modules["tensorflow"] = tf
        try:
            import gcd_jax.training.metric_log  # noqa: F401
        finally:
            del sys.modules["tensorflow"]
