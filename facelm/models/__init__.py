"""Models: BEGAN generator/discriminator, L-Gen, the CNN landmark detector."""
