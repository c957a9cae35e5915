"""Shared defaults for every gcd_jax experiment.

Every field the library reads is defined here, with a comment. Experiment files call
``get_config()`` and override a few fields; ``--config.section.field=value`` overrides
any of them from the command line, and an unknown field is an error (the dict is locked).

Reference values (marked *ref*) are those of the authors' PyTorch implementation.

Variants (the config argument, ``experiments/base.py:VARIANT``; see ``variants``):

* ``tiny``: docs/design.md §4's "tiny" U-Net of the speed comparisons and the model tests (dim 32,
  multipliers (1, 2, 4), one residual block per level, self- and cross-attention at the third level
  only, 2 heads of 32; K = 8, 32x32 as the defaults).
"""

import ml_collections


def variants(path: str, arg: str | None, known: tuple[str, ...]) -> set[str]:
    """The variants named by a config argument, comma-separated (``experiments/demo.py:shapes,tiny``
    gives ``{'shapes', 'tiny'}``; none gives the empty set). An unknown one is an error naming the
    known ones; ``path`` is the experiment file, for the message."""
    names = [name for name in (arg or "").split(",") if name]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(
            f"{path}:{arg}: unknown variant {', '.join(map(repr, unknown))}; known: "
            f"{', '.join(known)} (comma-separated, or none)."
        )
    return set(names)


def shrink(
    c: ml_collections.ConfigDict, size: tuple[int, int] = (16, 32), byte_text: bool = False
) -> None:
    """``c`` (a Cityscapes/CelebA base or SR experiment) with a U-Net and text that XLA:CPU
    compiles in seconds, the experiments' ``tiny`` variants (a smoke run, and the device check's
    tiny size): dim 16 (two channels per GroupNorm group: at one, bfloat16 strays further from
    float32), one level with one block, self-attention in the base model only, images of
    ``size`` (SR: twice that, from ``size``); with ``byte_text`` a learned byte text encoder of
    width 32 over 32 bytes (no T5 to load). The diffusion, optimizer and data settings stay the
    experiment's."""
    m = c.model
    m.update(dim=16, dim_mults=(1,), num_res_blocks=(1,), attn_heads=1, attn_dim_head=8)
    m.update(mid_cross_attn_heads=1, mid_cross_attn_dim_head=8, num_latents=4)
    if byte_text:
        c.text.update(encoder="learned", depth=0, embed_dim=32, max_length=32)
    m.update(resampler_max_len=max(16, c.text.max_length), cross_attn_levels=(True,))
    m.attn_levels = (not m.sr,)
    c.data.image_size = (2 * size[0], 2 * size[1]) if m.sr else size
    if m.sr:
        m.lowres_size = size


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = variants("experiments/base.py", arg, ("tiny",))
    c = ml_collections.ConfigDict()

    # ---------------------------------------------------------------- data
    c.data = d = ml_collections.ConfigDict()
    # 'demo' | 'demo_shapes' (class = shape, colours shared) | 'cityscapes' | 'celeba': selects
    # the TFDS builder.
    d.name = "demo"
    # TFDS builder config = stored resolution: cityscapes 256x512 | 128x256 | full, celeba
    # 256x256 | 128x128 | full; '' = the first of these. The demo (always 32x32) ignores it.
    d.builder_config = ""
    d.data_dir = ""  # TFDS data_dir; '' = TFDS default (~/tensorflow_datasets).
    # Where examples are read from: 'tfds' (the built TFDS data set) | 'memory' (the demo
    # scenes drawn in memory: the stored scenes in another order, no TensorFlow needed) | a
    # name registered with gcd_jax.data.sources.register_source.
    d.source = "tfds"
    d.manual_dir = ""  # Raw files (Cityscapes zips, CelebA folders); if set, builds on first use.
    d.image_size = (32, 32)  # (H, W) the model sees (images resized with data.resize).
    # Image filter of the input pipeline's resize and crop: 'nearest' *ref* (the reference resizes
    # its images nearest-neighbour, from the full-size file, by torchvision's tensor rule: source
    # pixel floor(i * in / out); image and layout alike) | 'bilinear' | 'bicubic' | 'lanczos'
    # (PIL's; the layout then takes PIL's nearest, pixel centres, aligned with the image).
    d.resize = "nearest"
    d.num_classes = 8  # K, number of layout classes (Cityscapes 20, CelebA 19).
    # Training split: 'train', or 'authors_25' / 'authors_50' / 'authors_100', the images the
    # authors' caption files name *ref* (built when the manual directory holds the files; see
    # datasets/README.md).
    d.train_split = "train"
    d.eval_split = ""  # Held-out split; '' = the dataset's own (validation; CelebA: test).
    # 'none' | 'flip' | 'resized_crop' (rescale in crop_scale, crop, resize, flip), applied to image
    # and layout alike. *ref*: Cityscapes 'resized_crop', CelebA 'flip'. The demo does not flip:
    # its captions say "on the left" / "on the right".
    d.augment = "none"
    d.crop_scale = (1.0, 1.2)  # Random rescale range for 'resized_crop' *ref*.
    d.caption_fraction = (
        1.0  # Fraction of training images that keep their text (0.25/0.5/1.0 *ref*).
    )
    d.seed = 0  # Seed of the data order, augmentation and caption choice (separate from the model).
    d.num_workers = 8  # Threads decoding and augmenting examples (order stays deterministic).
    d.num_demo_examples = (
        4096  # Demo training scenes (validation: max(64, this // 8)); generated on first use.
    )

    # ---------------------------------------------------------------- text
    c.text = t = ml_collections.ConfigDict()
    # 'learned' (byte-level transformer, trained) | 'words' (word-level transformer over the words
    # of text.vocabulary, trained) | 't5' (frozen T5 encoder).
    t.encoder = "learned"
    # Words of the 'words' encoder: 'demo' / 'demo_shapes' = those of that dataset's captions.
    t.vocabulary = "demo"
    t.t5_name = "t5-large"  # Hugging Face model name or local folder for the T5 encoder *ref*.
    t.max_length = 256  # Maximum number of text tokens; longer captions are truncated *ref*.
    t.embed_dim = 64  # Output width D of the learned encoder (T5 width comes from its checkpoint).
    t.depth = 2  # Transformer layers of the learned encoder.
    t.heads = 4  # Attention heads of the learned encoder.
    t.ff_mult = 4  # Hidden width of the learned encoder's MLP, in multiples of embed_dim.
    t.drop_prob = 0.1  # Probability of replacing the text by the learned null text *ref*.

    # ---------------------------------------------------------------- model
    c.model = m = ml_collections.ConfigDict()
    m.joint = True  # True: GCDP (image + layout); False: image-only Gaussian diffusion (ablation).
    m.sr = False  # True: super-resolution U-Net conditioned on a low-resolution image and layout.
    m.lowres_size = (
        0,
        0,
    )  # (H, W) of the low-resolution input of the SR U-Net; unused when sr=False.
    m.dim = 128  # Base channel width *ref*.
    m.dim_mults = (1, 2, 4, 8)  # Channel multiplier per level *ref*.
    m.num_res_blocks = (2, 4, 8, 8)  # Residual blocks per level *ref*.
    m.attn_levels = (False, True, True, True)  # Self-attention per level *ref*.
    m.cross_attn_levels = (False, True, True, True)  # Text cross-attention per level *ref*.
    m.attn_heads = 8  # Attention heads *ref*.
    m.attn_dim_head = 64  # Width of one attention head *ref*.
    m.ff_mult = 2.0  # Feed-forward expansion in transformer blocks *ref*.
    m.num_groups = 8  # GroupNorm groups *ref*.
    m.cross_embed_kernels = (3, 7, 15)  # Kernel sizes of the cross-embedding first layer *ref*.
    m.num_time_tokens = 2  # Time tokens appended to the text tokens *ref*.
    m.num_latents = 32  # Perceiver resampler latents *ref*.
    m.resampler_depth = 2  # Perceiver resampler layers *ref*.
    m.label_embed_dim = 3  # Channels of the learned embedding of the noisy layout *ref*.
    m.num_mean_pooled_latents = 4  # Resampler latents derived from the mean-pooled text *ref*.
    m.resampler_max_len = 512  # Positions of the resampler's learned position embedding *ref*.
    m.resampler_ff_mult = 4.0  # Feed-forward expansion inside the resampler *ref*.
    # The reference's two middle blocks use fixed 8 x 64 cross-attention, not attn_heads/dim_head.
    m.mid_cross_attn_heads = 8
    m.mid_cross_attn_dim_head = 64
    m.time_sinu_dim = 16  # Learned sinusoidal features of the log-SNR embedding *ref*.
    # Compute dtype: 'float32' | 'bfloat16' | 'auto' (bfloat16 on GPU/TPU, float32 on CPU); the
    # parameters, EMA and Adam moments stay float32 (see optim.moment_dtype). The reference
    # scripts train with fp16 autocast (accelerate mixed_precision: fp16, --fp16) and a loss
    # scaler; bfloat16 needs no loss scaling. The dataset experiments set 'auto'.
    m.dtype = "float32"
    # Rematerialisation of the residual/transformer blocks (less activation memory, more compute):
    # 'none' | 'blocks' | a jax.checkpoint_policies name, e.g. 'dots_with_no_batch_dims_saveable'.
    m.remat = "none"
    # One nn.scan over the identical residual blocks of each level with >= 2 of them: XLA compiles
    # one block per level (about half the base train step's compile), parameters stacked per level
    # (gcd_jax.models.scanned.stack_blocks / unstack_blocks convert). Same outputs. Off in every
    # experiment: on XLA:CPU the scanned train step runs 2.6x slower (0.363 -> 0.945 s/step, README);
    # unmeasured on GPU/TPU, where it is kept for a measurement.
    m.scan_blocks = False

    # ---------------------------------------------------------------- diffusion
    c.diffusion = f = ml_collections.ConfigDict()
    # Image log-SNR schedule: 'linear' | 'cosine' | 'cosine_p'. The reference code's defaults are
    # image 'cosine', layout 'cosine_p' (CelebA base and both SR scripts train with them); its
    # Cityscapes base script passes linear/linear. Each experiment file sets its script's pair.
    f.noise_schedule = "linear"
    f.noise_schedule_lbl = "linear"  # Layout schedule (may differ from the image's).
    f.cosine_p = 1.0  # Exponent p of 'cosine_p'.
    f.num_timesteps = 1000  # T of the categorical variational-bound grid *ref*.
    f.t_max = 0.999  # Training times are drawn from U(0, t_max) *ref*.
    f.p2_k = 1.0  # P2 weight (k + exp(logsnr))^-gamma *ref*.
    f.p2_gamma = 0.5
    f.lambda_img = 1.0  # Weight of the image (epsilon-MSE) term *ref*.
    f.lambda_lbl = 1.0  # Weight of the layout (variational bound) term *ref*.
    f.lowres_aug_t_max = 0.999  # SR: low-res augmentation time ~ U(0, this) in training *ref*.
    # SR: augmentation-time draws per global batch, each shared by batch / groups consecutive
    # examples; the layout's time is floored to the num_timesteps grid *ref*. The reference draws
    # one per GPU's forward (per_sample_random_aug_noise_level=False): its number of processes.
    # With train.grad_accum_steps = m each micro-batch draws max(groups / m, 1).
    f.lowres_aug_groups = 1
    f.lowres_noise_schedule = "linear"  # SR: schedule noising the low-res image and layout *ref*.
    # SR: filter taking the image to model.lowres_size and back up: 'nearest' *ref* (PyTorch's
    # convention, source index floor(i * in / out)) or a jax.image.resize method ('bilinear',
    # 'bicubic', 'lanczos3'). The layout is always nearest.
    f.lowres_resize = "nearest"

    # ---------------------------------------------------------------- optimizer
    c.optim = o = ml_collections.ConfigDict()
    o.learning_rate = 1.2e-4  # Adam learning rate *ref*.
    o.b1 = 0.9
    o.b2 = 0.99  # *ref*
    o.eps = 1e-8
    o.warmup_steps = 0  # Linear learning-rate warm-up; 0 disables it.
    o.grad_clip = 0.0  # Global-norm gradient clipping; 0 disables it.
    # Storage dtype of Adam's two moments: 'float32' *ref*, or 'bfloat16' (half their memory; the
    # update is computed in float32 from them).
    o.moment_dtype = "float32"
    # EMA of the parameters, ema <- decay * ema + (1 - decay) * params after each optimizer step
    # (step s = optimizer steps done before it):
    #  'ema_pytorch' *ref* (ema-pytorch 0.2.3 as the reference trainer uses it): only every
    #    ema_update_every-th step; a copy of the parameters up to the first such step after
    #    ema_update_after; then decay = min(ema_decay, 1 - (1 + s - ema_update_after)^-ema_power).
    #  'warmup': every step, decay = min(ema_decay, (1 + s) / (10 + s)).
    #  'constant': every step, decay = ema_decay.
    o.ema_schedule = "ema_pytorch"
    o.ema_decay = 0.9999  # Largest EMA decay (ema-pytorch's beta) *ref*.
    o.ema_update_after = 100  # 'ema_pytorch': steps of plain copying first *ref*.
    o.ema_update_every = 10  # 'ema_pytorch': steps between EMA updates *ref*.
    o.ema_power = 2.0 / 3.0  # 'ema_pytorch': exponent of the decay warm-up *ref*.

    # ---------------------------------------------------------------- training
    c.train = r = ml_collections.ConfigDict()
    r.seed = 0  # Root RNG key of the model (init, time draws, noise, text dropout).
    # Examples per optimizer step over all devices; the per-device batch is derived. *ref* 8 (the
    # reference scripts' --batch_size 8 split over 4 GPUs by accelerate's split_batches=True; 4
    # for CelebA SR).
    r.global_batch_size = 8
    # FSDP/ZeRO-3: split parameters, EMA and Adam moments over the devices (the batch stays data
    # parallel); per-device state memory falls with the device count. Arrays under
    # shard_min_bytes stay replicated. 64 KiB, not big_vision's min_size_to_shard_mb=4: most of
    # the base U-Net's convolutions are under 4 MiB, and on 8 devices its step's per-device plan is
    # 4.41 GiB with 64 KiB, 6.16 GiB with 4 MiB (0.31 / 0.43 of replicated; README).
    r.shard_state = False
    r.shard_min_bytes = 64 * 2**10
    r.grad_accum_steps = 1  # Micro-batches per step (global batch must divide by it).
    r.num_steps = 300_000  # *ref*
    r.log_every = 100  # Steps between metric logs.
    # The train step as 'one' program or 'two', the gradient and the update (optimizer, EMA,
    # norms), compiled in parallel: on a 2-core CPU two started the base step in 80.6 instead of
    # 122.6 s and restarted it in 40.4 instead of 51.1 s, but planned 0.65 GiB more (the gradients
    # are an output, not scratch XLA reuses) and stepped 3-7 % slower (README). 'auto': two on
    # CPU, one on GPU/TPU, where the device memory is the limit.
    r.step_programs = "auto"
    # Also compute the gradient and parameter norms (metrics grad_norm, param_norm) in the step.
    # One reduction per group of small arrays (train.global_norm): on XLA:CPU the base step
    # started in 40 s with or without them (49 s with a reduction per array) and ran 8.02 vs
    # 7.67 s per step (README); the authors log the loss only.
    r.norm_metrics = True
    r.ckpt_every = 5000  # Steps between checkpoints (one is always written at exit).
    r.keep_checkpoints = 3  # Checkpoints kept in the workdir.
    # Persistent XLA compilation cache: 'workdir' ({workdir}/xla_cache), '' (none) or a directory;
    # $JAX_COMPILATION_CACHE_DIR overrides it. A restart loads the compiled train step.
    r.compile_cache = "workdir"
    # XLA flags added to $XLA_FLAGS before the first device is used (run.py; a flag already in
    # $XLA_FLAGS wins); both are CPU-only, GPU and TPU ignore them. The first makes XLA:CPU order
    # the step for memory rather than concurrency: at dim 32 the train step's temporaries fall
    # 22 % (45 % with model.remat='blocks', which the default scheduler undoes) at the same step
    # time; the base U-Net's plan at batch 1 did not move (15.79 GiB, measured before the
    # update-norm fix, when the optimizer update set its peak; README). The second turns off
    # XLA:CPU's YNNPACK library fusions (those ops run on XLA:CPU's other kernels): the base train
    # step ran 19.4 vs 24.0 s and a cached restart loaded it in 53 vs 70 s (README).
    r.xla_flags = (
        "--xla_cpu_enable_concurrency_optimized_scheduler=false "
        "--xla_cpu_experimental_ynn_fusion_type="
    )
    r.sample_every = 10_000  # Steps between sample grids; 0 disables them.
    r.num_sample_images = 8  # Samples in each training-time grid.

    # ---------------------------------------------------------------- sampling
    c.sample = s = ml_collections.ConfigDict()
    s.num_steps = 100  # Ancestral steps on the uniform grid 1 -> 0 *ref*.
    s.guidance_scale = 3.0  # Classifier-free guidance w on both heads *ref* (base; SR: 1.0).
    # w of the layout logits alone; None: guidance_scale (the reference guides both heads alike).
    s.label_guidance_scale = ml_collections.config_dict.placeholder(float)
    s.threshold_p = 0.95  # Dynamic-thresholding quantile *ref*.
    s.noise_schedule = ""  # Image schedule at sampling time; '' = diffusion.noise_schedule.
    s.noise_schedule_lbl = (
        ""  # Layout schedule at sampling time; '' = diffusion.noise_schedule_lbl.
    )
    s.resample_steps = 5  # RePaint resamplings per step in outpainting *ref*.
    s.lowres_aug_t = 0.2  # SR: fixed augmentation time of the low-res condition *ref*.
    # The last step (to t = 0): 'reference' *ref* (joint_imagen.py p_sample with t_next = 0: the
    # image is the posterior mean at lambda(0), the layout a draw from q(y | y_t, y0_hat)); 'x0'
    # (the predicted x0_hat and the argmax of y0_hat).
    s.final_step = "reference"
    s.batch_size = 8  # Samples per compiled call.
    s.use_ema = True  # Sample with the EMA parameters *ref*.

    # ---------------------------------------------------------------- evaluation
    c.eval = e = ml_collections.ConfigDict()
    e.num_samples = 64  # Generated pairs scored by --mode evaluate.
    e.num_examples_png = 4  # Best and worst examples shown in the report PNG.
    # A class is "present" in a label map from this fraction of its pixels (0.005 = 5 of 32x32):
    # stray pixels of sampling noise or segmenter edges do not count as an object.
    e.min_class_fraction = 0.005
    # Features of the fidelity metric (gcd_jax.cli.evaluate.FEATURES): 'colour_pixels' = 4x4 RGB
    # thumbnail + 4x4x4 RGB histogram, a weight-free FID proxy (Inception: pass a callable).
    e.features = "colour_pixels"

    # ---------------------------------------------------------------- analysis (--mode analyze)
    # Clusters of the U-Net's block features vs the layouts of held-out images (the paper's
    # representation analysis; gcd_jax/evaluation/analysis.py).
    c.analysis = a = ml_collections.ConfigDict()
    a.num_images = 16  # N held-out images (the first N of the eval split), layouts as ground truth.
    a.times = (0.1, 0.3, 0.5)  # Times t in [0, 1) each image (and layout) is noised to.
    # Blocks whose outputs are clustered (evaluation.features.block_names lists a U-Net's); () =
    # the middle and each decoder level: 'mid_block2', 'up{L-1}_upsample', ..., 'up0_upsample'.
    a.blocks = ()
    # Text input of the U-Net: 'cond' = the image's caption, 'null' = the learned null text.
    a.conditions = ("cond", "null")
    # k-means K per image: 'classes' = data.num_classes, 'present' = the classes in its layout.
    a.k = ("classes", "present")
    a.probe = True  # Linear probe: per-pixel logistic regression on half the images.
    # Pixels of each half of the images the probe uses (drawn per image, seeded); 0 = all.
    a.probe_max_pixels = 65536
    a.upsample = "bilinear"  # Block features to the image size: 'bilinear' | 'nearest'.
    a.batch_size = 8  # Images per U-Net call.
    a.figure_images = 4  # Images (rows) of figure.png.
    a.seed = 0  # Noise draws, k-means initialisation and the probe's pixel draw.

    if "tiny" in variant:
        m.dim = 32
        m.dim_mults = (1, 2, 4)
        m.num_res_blocks = (1, 1, 1)
        m.attn_levels = (False, False, True)
        m.cross_attn_levels = (False, False, True)
        m.attn_heads = 2
        m.attn_dim_head = 32
    return c
