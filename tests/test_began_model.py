"""BEGAN models: the authors' architecture, shapes, z handling, init, save/load."""
import numpy as np
import pytest
import torch
from torch import nn

from facelm.models.began import (Discriminator, Generator, load_discriminator, load_generator,
                                 save_model)
from facelm.models.common import count_params
from facelm.checkpoint import load_weights
from facelm.tensors import sample_z

torch.set_num_threads(1)


@pytest.mark.parametrize("size, n_g, n_d", [(128, 637_251, 6_171_523), (64, 563_395, 3_909_443)])
def test_param_counts_match_authors_architecture(size, n_g, n_d):
    # counts of the authors' Lasagne models (64 wide, z = bottleneck = 64)
    G = _meta(Generator, size)
    D = _meta(Discriminator, size)
    assert count_params(G) == n_g
    assert count_params(D) == n_d


def _meta(cls, size):
    # build on the meta device: skips the (slow at 128 px) Glorot init of real tensors
    with torch.device("meta"):
        return cls(size=size, width=64, z_dim=64)


def test_discriminator_widens_by_width_per_pooling():
    D = _meta(Discriminator, 128)
    one_by_one = [m for m in D.encoder.modules()
                  if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert [m.out_channels for m in one_by_one] == [128, 192, 256, 320]
    assert D.encoder.fc.in_features == 8 * 8 * 320
    # the decoder of D and the generator share one architecture
    G = _meta(Generator, 128)
    shapes = [tuple(p.shape) for p in G.parameters()]
    assert [tuple(p.shape) for p in D.decoder.parameters()] == shapes


def test_layer_types_follow_the_paper():
    G = Generator(32, 8, 16)
    layers = list(G.body)
    # the last layer is the conv to RGB: no output activation
    assert isinstance(layers[-1], nn.Conv2d) and layers[-1].out_channels == 3
    assert sum(isinstance(m, nn.Upsample) and m.mode == "nearest" for m in layers) == 2  # 8 -> 32
    D = Discriminator(32, 8, 16)
    enc = list(D.encoder.body)
    for i, m in enumerate(enc):  # 1x1 convs are followed by pooling, never by an ELU
        if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1):
            assert isinstance(enc[i + 1], nn.AvgPool2d)
    assert sum(isinstance(m, nn.AvgPool2d) for m in enc) == 2


@pytest.mark.parametrize("size", [32, 64])
def test_output_shapes(size):
    G, D = Generator(size, 4, 8), Discriminator(size, 4, 8)
    z = sample_z(3, 8, seed=1)
    img = G(z)
    assert img.shape == (3, 3, size, size)
    assert D(img).shape == img.shape
    assert D.encoder(img).shape == (3, 8)


def test_z_handling():
    G = Generator(32, 4, 8)
    with pytest.raises(ValueError, match="z must have shape"):
        G(torch.zeros(2, 9))
    with pytest.raises(ValueError, match="z must have shape"):
        G(torch.zeros(8))
    with pytest.raises(ValueError, match="images must have shape"):
        Discriminator(32, 4, 8)(torch.zeros(1, 3, 64, 64))
    # z outside the uniform prior is not clamped by the model (inversion decides that)
    z = torch.full((1, 8), 3.0)
    assert not torch.allclose(G(z), G(z.clamp(-1, 1)))
    # a uniform z gives a finite image
    assert torch.isfinite(G(sample_z(4, 8, seed=0))).all()


def test_bad_constructor_args():
    with pytest.raises(ValueError, match="size"):
        Generator(48, 4, 8)
    with pytest.raises(ValueError, match="width"):
        Discriminator(32, 0, 8)


def test_glorot_init_seeded_and_zero_bias():
    a, b, c = Generator(32, 4, 8, seed=0), Generator(32, 4, 8, seed=0), Generator(32, 4, 8, seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.fc.weight, c.fc.weight)
    assert all(torch.count_nonzero(m.bias) == 0 for m in a.modules() if isinstance(m, nn.Conv2d))
    w = a.body[0].weight  # 3x3 conv 4 -> 4: Glorot bound sqrt(6 / (fan_in + fan_out))
    bound = (6 / (4 * 9 + 4 * 9)) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.8 * bound


def test_save_load_round_trip(tmp_path):
    G, D = Generator(32, 4, 8, seed=3), Discriminator(32, 4, 8, seed=4)
    save_model(tmp_path / "g.safetensors", G, {"step": 7})
    save_model(tmp_path / "d.safetensors", D)
    G2 = load_generator(tmp_path / "g.safetensors", "cpu")
    D2 = load_discriminator(tmp_path / "d.safetensors", "cpu")
    assert (G2.size, G2.width, G2.z_dim) == (32, 4, 8)
    z = sample_z(5, 8, seed=2)
    with torch.no_grad():
        assert torch.equal(G(z), G2(z))
        x = G(z)
        assert torch.equal(D(x), D2(x))
    _, meta = load_weights(tmp_path / "g.safetensors")
    assert meta["kind"] == "Generator" and meta["step"] == 7 and meta["width"] == 4
    with pytest.raises(ValueError, match="Discriminator"):
        load_discriminator(tmp_path / "g.safetensors")
    with pytest.raises(FileNotFoundError):
        load_generator(tmp_path / "missing.safetensors")


class _Wrapper(nn.Module):  # stands in for DistributedDataParallel's `.module`
    def __init__(self, m):
        super().__init__()
        self.module = m


def test_save_unwraps_wrappers_and_channels_last_weights(tmp_path):
    G = Generator(32, 4, 8).to(memory_format=torch.channels_last)
    save_model(tmp_path / "g.safetensors", _Wrapper(G))
    G2 = load_generator(tmp_path / "g.safetensors")
    assert all(torch.equal(p, q) for p, q in zip(G.parameters(), G2.parameters()))
    assert np.all([k.startswith(("fc.", "body.")) for k in G2.state_dict()])


def test_equal_weights_give_equal_files_across_processes(tmp_path):
    """safetensors metadata order varies between processes; ours must not (DVC hashes files)."""
    import subprocess
    import sys

    code = ("import sys; from facelm.models.began import Generator, save_model; "
            "save_model(sys.argv[1], Generator(size=32, width=4, z_dim=64, seed=0), {'step': 7, 'role': 'best', 'M': 0.5})")
    for name in ("a", "b", "c"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / f"{name}.safetensors")], check=True)
    data = {(tmp_path / f"{n}.safetensors").read_bytes() for n in "abc"}
    assert len(data) == 1


def test_skip_connections_feed_h0_to_every_block_and_round_trip(tmp_path):
    """BEGAN's skip option: each block's first conv reads 2w channels (x and upsampled h0);
    off, the architecture and its saved metadata are the authors' exactly."""
    import torch

    from facelm.models.began import Discriminator, Generator, load_generator, save_model
    from facelm.models.common import count_params

    plain, skip = Generator(32, 8, 16, seed=0), Generator(32, 8, 16, seed=0, skip=True)
    assert "skip" not in plain.config() and skip.config()["skip"] is True
    # 3 blocks (8, 16, 32 px), each first conv 3x3 from 2w instead of w: 3 * 9 * 8 * 8 more weights
    assert count_params(skip) - count_params(plain) == 3 * 9 * 8 * 8
    z = torch.rand(4, 16) * 2 - 1
    assert skip(z).shape == (4, 3, 32, 32)
    # h0 really reaches the last block: zeroing its half of the last block's input changes G(z)
    with torch.no_grad():
        before = skip(z)
        skip.blocks[-1][0].weight[:, 8:] = 0
        assert not torch.allclose(before, skip(z))
    save_model(tmp_path / "g.safetensors", skip)
    again = load_generator(tmp_path / "g.safetensors")
    assert again.skip and torch.equal(again(z), skip(z))
    assert Discriminator(32, 8, 16, skip=True)(torch.zeros(2, 3, 32, 32)).shape == (2, 3, 32, 32)


def test_paper_profile_builds_the_authors_architecture():
    """configs/paper-celeba.yaml keeps the authors' G and D exactly (no skip connections)."""
    from pathlib import Path

    import yaml

    from facelm.config import Params, deep_merge, parse_params
    from facelm.models.common import count_params

    root = Path(__file__).resolve().parents[1]
    paper = parse_params(deep_merge(Params().to_dict(),
                                    yaml.safe_load((root / "configs" / "paper-celeba.yaml").read_text())))
    b = paper.began
    assert paper.image_size == 128 and not b.skip
    assert count_params(Generator(128, b.width, b.z_dim, skip=b.skip)) == 637_251
    assert count_params(Discriminator(128, b.width, b.z_dim, skip=b.skip)) == 6_171_523
