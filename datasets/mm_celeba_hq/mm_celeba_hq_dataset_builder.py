"""TFDS CLI entry: `tfds build datasets/mm_celeba_hq --manual_dir=...`
(see ../README.md; TFDS 4.9's CLI needs apache-beam, `python -m gcd_jax.data.build` does not).

The builder lives in `gcd_jax.data.celeba`; the CLI needs a class defined in this module, so this
subclass adds nothing. Its name, from this module's, is the library's: mm_celeba_hq.
"""

from gcd_jax.data import celeba


class Builder(celeba.MmCelebaHq, skip_registration=True):
    """Multi-Modal CelebA-HQ, as built by `gcd_jax.data.celeba.MmCelebaHq`."""
