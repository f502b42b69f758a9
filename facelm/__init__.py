"""facelm: BEGAN faces whose latent space is mapped to 49 facial landmarks."""

__version__ = "0.1.0"
