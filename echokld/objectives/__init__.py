"""What the models optimise: Dice, intensity-distribution terms, VAE terms, conditioning."""
