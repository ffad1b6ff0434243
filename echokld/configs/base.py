"""Shared defaults for all seven models. Model files change only what differs.

`--config=<model>` (or a path such as configs/<model>.py) gives a quick run on the built-in
synthetic set (minutes on a CPU); `--config=<model>:paper` gives the paper's protocol (§3.3:
Adam 1e-5, batch 2, plateau halving after 10 epochs, early stopping after 30, native
resolution); `:cpu_study` the study's CPU-scale protocol (96x96, runs end by early stopping);
`:best` the best-measured recipe for masks, not the paper's (128x128, geometric on-device
augmentation; docs/RESULTS.md). A model is its name and display name plus explicit
switches: `model.heads`, `model.dist_injection` and `loss.terms`; the name itself never
changes behaviour.
"""

import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0  # Seeds the split, the initialisation and the data order.

  config.model = ml_collections.ConfigDict()
  config.model.name = "dice"  # Label of the run (its folder and report rows); no behaviour.
  config.model.display_name = "Dice"  # The name the paper's tables use.
  config.model.paper_number = 1  # Model number in the paper (0: not one of the paper's).
  # Non-empty: another reading of model `paper_number` (not in the paper's seven); says which.
  config.model.variant = ""
  config.model.init_features = 16  # Filters at the first level; doubled at each level (§3.2).
  config.model.blocks_down = (1, 2, 2, 4)  # ResNet blocks per encoder level.
  config.model.num_groups = 8  # GroupNorm groups.
  config.model.heads = ()  # Registered heads (echokld.nn.heads): vae (Model 3), dist (6-7).
  # Distribution parameters (loss.family) entering the bottleneck (objectives.conditioning): none,
  # reference (the training set's fit, Model 6) or batch (each mini-batch's fit, Model 7).
  config.model.dist_injection = "none"
  # How the parameters enter (echokld.nn.heads): broadcast (an embedding added at every
  # position, Model 6) or flat_latent (a dense latent over the flattened bottleneck, Model 7).
  config.model.inject_via = "broadcast"
  # Model 7, while training: the injected and target fit is that of the mini-batch's
  # ground_truth LV or of the model's own prediction. At inference always the latter.
  config.model.batch_source = "ground_truth"
  # What the dist_align term pulls towards the reference (Models 6-7): latent (the values of
  # a per-position map of the bottleneck), prediction (the predicted LV's intensities),
  # head (parameters regressed from the pooled bottleneck; the earlier reading) or none.
  config.model.align_source = "none"
  config.model.vae_latent = 128  # Model 3: latent size (mean and log-variance each).
  config.model.dist_hidden = 48  # Models 6-7: width of the small dense layers.
  config.model.flat_latent = 512  # Model 7: width of the dense latent (inject_via flat_latent).

  config.data = ml_collections.ConfigDict()
  config.data.source = "synthetic"  # synthetic, folder, camus or camus_tfds.
  config.data.root = ""  # Folder of a non-synthetic source.
  config.data.view = "2CH"  # CAMUS view to read.
  config.data.qualities = ("Good", "Medium", "Poor")  # Quality groups kept (unknown is kept too).
  config.data.keep_unknown_quality = True  # Keep frames of unknown quality; False for group runs.
  config.data.split = "paper"  # paper: reserved test frames per quality, rest 80/20; official.
  config.data.test_frames = ml_collections.ConfigDict(
      {"Good": 36, "Medium": 30, "Poor": 10, "Unknown": 0})  # Paper §3.4 test reservation.
  config.data.val_fraction = 0.2  # Share of the remaining patients used for validation.
  config.data.image_size = 96  # Resize to this (int or (rows, cols)); 0 keeps native size.
  config.data.native_shape = ()  # With image_size 0: pad/crop to this (rows, cols); () = pad.
  config.data.synthetic_patients = 150  # Patients of the synthetic set (2 frames each).
  config.data.synthetic_shape = (128, 128)  # Rendered size of synthetic frames.

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 8
  config.train.learning_rate = 1e-3  # Paper: 1e-5 (see :paper).
  config.train.optimizer = "adam"  # adam (Model 1) or adamw (Model 2).
  config.train.weight_decay = 0.0  # Decoupled weight decay (AdamW, eq. 8).
  config.train.max_epochs = 20  # Cap; the paper has none (early stopping ends its runs).
  config.train.schedule = "plateau"  # plateau (the paper), cosine or onecycle (per step).
  config.train.warmup_epochs = 0  # cosine: linear warm-up epochs.
  config.train.ema_decay = 0.0  # > 0: validate, checkpoint and predict a parameter EMA.
  config.train.plateau_patience = 10  # Halve the learning rate after this many bad epochs.
  config.train.plateau_factor = 0.5
  config.train.early_stop_patience = 30  # Stop after this many epochs without improvement.
  config.train.min_delta = 1e-3  # An improvement is a validation-Dice gain above this.
  config.train.steps_per_call = 1  # Steps fused into one call by lax.scan (>1 helps on GPU only).
  config.train.eval_batch_size = 16
  config.train.data_parallel = True  # >1 device: split each batch over all (divisible).
  config.train.compute_dtype = "float32"  # float32 or bfloat16 (parameters stay float32).

  config.loss = ml_collections.ConfigDict()
  # Registered loss terms (echokld.objectives.terms), summed with their weights: dice (eq. 7),
  # kld (Models 4-5, eq. 3-6), recon and vae_kl (Model 3), dist_align (Models 6-7); bce (pixel
  # cross-entropy, not the paper's: an extra for masks).
  config.loss.terms = ("dice",)
  config.loss.dice_eps = 1e-5  # Smoothing of eq. (7).
  config.loss.dice_reduction = "batch"  # batch: eq. (7) over the mini-batch; image: per image.
  # Not the paper's: weight of the optional `bce` term (pixel cross-entropy beside Dice).
  config.loss.bce_weight = 1.0
  config.loss.kld_weight = 0.1  # Models 4-7: weight of the distribution term (§3.3).
  config.loss.kld_estimator = "fit"  # kld term: fit (ML fit of loss.family, Model 4) or kde (5).
  # Parametric family of the kld fit (Model 4) and of Models 6-7's parameters: alpha
  # (scipy.stats.alpha, what the paper most likely fitted; docs/FIT_FAMILIES.md) or pearson3
  # (scipy.stats.pearson3, the paper's eq. 1-2).
  config.loss.family = "alpha"
  config.loss.kld_direction = "pred_gt"  # pred_gt: KL(P_pred || P_gt), eq. (3); or gt_pred.
  config.loss.kld_pooling = "batch"  # batch: one distribution per mini-batch; image: per image.
  # Pseudo output of Models 4-5 (objectives.intensity.soft_threshold, docs/MODELS.md): pixel
  # weights max(0, s - cut) / (1 - cut), s = sigmoid((p - 0.5) / T). T = 0.05: s goes from
  # 0.12 to 0.88 as p goes from 0.4 to 0.6. cut = 0.01: pixels the network calls background
  # (p < 0.27) weigh exactly 0, so the predicted region's support is not the whole image.
  config.loss.soft_threshold_temperature = 0.05
  config.loss.soft_threshold_cut = 0.01
  config.loss.kde_bandwidth = 0.0  # 0 = Scott's rule on the effective sample size.
  config.loss.num_bins = 256  # Intensity grid of the histograms (8-bit data).
  config.loss.vae_recon_weight = 0.1  # Model 3: L2 reconstruction weight.
  config.loss.vae_kl_weight = 0.1  # Model 3: KL(N(mu, sigma) || N(0, 1)) weight.

  # On-device augmentation (echokld.data.augment): off, as the paper trains without it.
  config.augment = ml_collections.ConfigDict()
  config.augment.enabled = False
  config.augment.rotation_deg = 10.0  # Rotation about the sector apex, +-degrees.
  config.augment.scale = 0.1  # Isotropic scale 1 +- this.
  config.augment.translate = 0.05  # Shift, +- this fraction of the frame height.
  config.augment.gamma = 0.3  # Intensity gamma exp(+- this).
  config.augment.contrast = 0.2  # Contrast about the mean, 1 +- this.
  config.augment.brightness = 0.05  # Added intensity, +- this.
  config.augment.speckle = 0.0  # Gamma-noise shape k (mean 1; larger = milder); 0 = off.
  config.augment.blur = 0.0  # Largest blend towards a 3x3 binomial blur; 0 = off.
  config.augment.flip = 0.0  # Probability of a left-right flip (see augment.py: off).
  config.augment.tta = "none"  # Test-time views in evaluation and predict: none, flip, affine.

  config.log = ml_collections.ConfigDict()
  config.log.progress = True  # A progress bar per epoch.
  config.log.tensorboard = True  # TensorBoard events when tensorboardX is installed.
  config.profile_steps = ""  # "a,b": write a jax.profiler trace of steps a..b to the workdir.

  if arg == "paper":
    apply_paper_protocol(config)
  elif arg == "cpu_study":
    apply_cpu_study_protocol(config)
  elif arg == "best":
    apply_best_recipe(config)
  elif arg:
    raise ValueError(f"unknown config argument {arg!r} "
                     "(expected '', 'paper', 'cpu_study' or 'best')")
  return config


def apply_paper_protocol(config: ml_collections.ConfigDict) -> None:
  """The paper's training protocol (§3.3) at native resolution."""
  config.data.image_size = 0
  config.train.batch_size = 2
  config.train.learning_rate = 1e-5
  config.train.max_epochs = 1000
  config.train.eval_batch_size = 4


def apply_cpu_study_protocol(config: ml_collections.ConfigDict) -> None:
  """The paper's design at CPU scale, trained until early stopping ends every run.

  96x96 frames and batch 4 (a quality group trains on 18-40 frames); Adam 1e-3 with the
  paper's plateau halving and early stopping at half its patience (5 and 15 epochs). The cap
  of 300 epochs is never the reason to stop (docs/study/README.md: the learning-rate probe and
  the patience-doubling check that chose these numbers).
  """
  config.data.image_size = 96
  config.train.batch_size = 4
  config.train.learning_rate = 1e-3
  config.train.plateau_patience = 5
  config.train.early_stop_patience = 15
  config.train.max_epochs = 300


def apply_best_recipe(config: ml_collections.ConfigDict) -> None:
  """The best-measured recipe at CPU scale (docs/RESULTS.md, "The recipe ablation").

  128x128 frames; on-device geometric augmentation only (rotation, scale and shift about the
  sector apex; no flip). Intensity, speckle, blur, cosine decay and EMA are left out: all
  together they measured worse, EMA alone no better (one seed each). The paper's plateau
  halving with patience 5, early stopping after 12 epochs without a gain, at most 60 epochs
  (about 35 min on 2 CPU cores for camus224's 800 frames).
  """
  config.data.image_size = 128
  config.train.plateau_patience = 5
  config.train.early_stop_patience = 12
  config.train.max_epochs = 60
  config.augment.enabled = True
  config.augment.gamma = 0.0
  config.augment.contrast = 0.0
  config.augment.brightness = 0.0
