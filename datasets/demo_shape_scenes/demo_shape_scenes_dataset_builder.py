"""TFDS CLI entry: `tfds build datasets/demo_shape_scenes`; training builds it anyway
(see ../README.md; TFDS 4.9's CLI needs apache-beam, `python -m gcd_jax.data.build` does not).

The builder lives in `gcd_jax.data.demo_scenes`; the CLI needs a class defined in this module, so
this subclass adds nothing. Its name, from this module's, is the library's: demo_shape_scenes.
"""

from gcd_jax.data import demo_scenes


class Builder(demo_scenes.DemoShapeScenes, skip_registration=True):
    """The 'demo_shapes' scenes, as built by `gcd_jax.data.demo_scenes.DemoShapeScenes`."""
