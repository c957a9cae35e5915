"""TFDS CLI entry: `tfds build datasets/cityscapes_captions --manual_dir=...`
(see ../README.md; TFDS 4.9's CLI needs apache-beam, `python -m gcd_jax.data.build` does not).

The builder lives in `gcd_jax.data.cityscapes`; the CLI needs a class defined in this module, so
this subclass adds nothing. Its name, from this module's, is the library's: cityscapes_captions.
"""

from gcd_jax.data import cityscapes


class Builder(cityscapes.CityscapesCaptions, skip_registration=True):
    """Cityscapes with captions, as built by `gcd_jax.data.cityscapes.CityscapesCaptions`."""
