"""Model 7: per-mini-batch distribution parameters injected into a dense latent.

Model 6 with the injection through a VAE-like dense latent over the flattened bottleneck
(the reading that matches Table 8's 38,088,420 parameters, docs/MODELS.md) and the injected
fit taken per mini-batch: of the ground-truth LV while training (`model.batch_source`, or of
the model's own prediction), of each image's own predicted LV at inference.
"""

from echokld.configs import rd_vae


def get_config(arg: str = ""):
  config = rd_vae.get_config(arg)
  config.model.name, config.model.display_name, config.model.paper_number = (
      "bd_vae", "BD-like-VAE", 7)
  config.model.dist_injection = "batch"
  config.model.inject_via = "flat_latent"
  config.model.batch_source = "ground_truth"  # Or prediction.
  return config
