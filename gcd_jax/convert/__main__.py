"""``python -m gcd_jax.convert``: the authors' PyTorch checkpoints -> gcd_jax checkpoints. A
package's ``__main__`` is an entry point: the command line lives in ``gcd_jax.cli.convert``."""

from gcd_jax.cli import runtime

runtime.quiet_third_party()  # before TensorFlow and transformers are imported

from gcd_jax.cli.convert import main  # noqa: E402

main()
