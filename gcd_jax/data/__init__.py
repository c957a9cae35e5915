"""Datasets and the input pipeline.

Light modules (NumPy only): `classes` (class tables, palettes, caption parsers), `scenes` (the demo
scene generator and its exact segmenter), `augment`. TFDS modules: `cityscapes`, `celeba`,
`demo_scenes` (builders), `sources` (builder per config, built on first use), `pipeline` (training
batches, evaluation examples). Import the submodule you need; this package imports nothing.
"""
