"""Flax modules: the joint U-Net (base and super-resolution) and its layers."""

from gcd_jax.models.unet import JointUNet, build_unet, input_specs

__all__ = ["JointUNet", "build_unet", "input_specs"]
