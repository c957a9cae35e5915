"""``python -m gcd_jax.convert``: the authors' PyTorch checkpoints -> gcd_jax checkpoints (see ``authors``)."""

from gcd_jax.convert.authors import main

main()
