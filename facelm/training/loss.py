"""The BEGAN objective (Berthelot et al. 2017; paper section II) as one small callable.

    loss = BEGANLoss(params.began)                     # gamma, lambda_k, eta; k starts at k0
    objective, L_real, L_fake, _ = loss(G, D, x, z)    # the authors' joint step
    objective.backward(); opt_G.step(); opt_D.step()
    M = loss.update(L_real, L_fake)                    # k_{t+1}; convergence measure M

With auto-encoder loss L(v) = mean |v - D(v)|^eta:

- ``L_D = L(x) - k_t * L(G(z_D))``, ``L_G = L(G(z_G))``;
- ``k_{t+1} = clip(k_t + lambda_k * (gamma * L(x) - L(G(z_G))), 0, 1)``;
- convergence ``M = L(x) + |gamma * L(x) - L(G(z_G))|``;
- with ``recon_weight`` w > 0 (Che et al. 2017's mode regulariser, not in BEGAN): G's loss
  gains ``w * mean |x - G(z_x)|``, z_x = tanh(E(x)) from an encoder E trained on the same
  term, so that G must be able to draw every training face somewhere in z (``recon_pool``
  p > 1: both average-pooled p x p first).

``eta``: BEGAN's authors and the facelm paper's own code use eta = 1 (pixel-mean L1);
the paper's text writes eta = 2. The mean runs over pixels and channels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.parallel import DistributedDataParallel as DDP

from facelm.config import BEGANParams

__all__ = ["BEGANLoss"]


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the incoming gradient by ``scale`` (a tensor)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(scale)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (scale,) = ctx.saved_tensors
        return grad * scale, None


class BEGANLoss:
    """BEGAN's losses, its k_t controller and its convergence measure M.

    Holds ``gamma``, ``lambda_k``, ``eta`` from ``cfg`` and the state ``k`` (a 0-d float32
    tensor on ``device``, starting at ``cfg.k0``; checkpoint it with the models).
    """

    def __init__(self, cfg: BEGANParams, device: str | torch.device = "cpu"):
        self.gamma, self.lambda_k, self.eta = float(cfg.gamma), float(cfg.lambda_k), float(cfg.eta)
        self.recon_weight, self.recon_pool = float(cfg.recon_weight), int(cfg.recon_pool)
        self.k = torch.tensor(float(cfg.k0), device=device)

    def recon(self, v: torch.Tensor, v_rec: torch.Tensor) -> torch.Tensor:
        """L(v) given v and D(v), in float32 even under bf16 autocast."""
        d = (v.float() - v_rec.float()).abs()
        return (d if self.eta == 1.0 else d.pow(self.eta)).mean()

    def update_k(self, k: torch.Tensor, L_real: torch.Tensor, L_fake: torch.Tensor
                 ) -> torch.Tensor:
        """k_{t+1} from k_t, clipped to [0, 1] (stays on the device: no host sync)."""
        return (k + self.lambda_k * (self.gamma * L_real - L_fake)).clamp(0.0, 1.0)

    def convergence(self, L_real: torch.Tensor, L_fake: torch.Tensor) -> torch.Tensor:
        """M = L(x) + |gamma * L(x) - L(G(z))|."""
        return L_real + (self.gamma * L_real - L_fake).abs()

    def update(self, L_real: torch.Tensor, L_fake: torch.Tensor) -> torch.Tensor:
        """Advance :attr:`k` by one step and return that step's M (pass the values averaged
        over DDP ranks, so that k stays equal everywhere)."""
        self.k = self.update_k(self.k, L_real, L_fake)
        return self.convergence(L_real, L_fake)

    def draw(self, G: nn.Module, z: torch.Tensor, x: torch.Tensor, z_x: torch.Tensor | None
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(G(z), w * mean |x - G(z_x)|)`` in one pass of G (one DDP forward per step);
        the second is None when ``z_x`` is (the regulariser is off). ``z_x`` may code only the
        first faces of ``x`` (``began.recon_batch``): they are the ones compared."""
        if z_x is None:
            return G(z), None
        x = x[:z_x.shape[0]]
        out = G(torch.cat([z, z_x]))
        fake, x_rec = out[:z.shape[0]], out[z.shape[0]:]
        diff = x.float() - x_rec.float()
        if self.recon_pool > 1:
            diff = F.avg_pool2d(diff, self.recon_pool)
        return fake, self.recon_weight * diff.abs().mean()

    def __call__(self, G: nn.Module, D: nn.Module, x: torch.Tensor, z: torch.Tensor,
                 z_x: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The authors' joint step: one G(z), D on real and fake, z_D = z_G.

        Returns ``(objective, L_real, L_fake, L_recon)``; ``L_D = L_real - k * L_fake`` and
        ``L_G = L_fake (+ L_recon)``. One ``objective.backward()`` leaves dL_D/dtheta_D in D's
        ``.grad`` and dL_G/dtheta_G in G's ``.grad``, as two backward passes over the
        authors' graph would, at the cost of one: D's pass on the fake batch uses its
        parameters through an identity whose gradient is scaled by -k, so theta_D
        receives dL(x) - k dL(G(z)) while G, upstream of D's *input*, receives the
        unscaled dL(G(z)). G and D may be DDP-wrapped. ``z_x``: E's codes of ``x`` when
        ``recon_weight`` is on (L_recon = w * mean |x - G(z_x)|, also E's loss), else None.
        """
        fake, L_recon = self.draw(G, z, x, z_x)
        L_real = self.recon(x, D(x))
        D_inner = D.module if isinstance(D, DDP) else D
        scale = (-self.k).detach().to(torch.float32)
        params = {n: _ScaleGrad.apply(p, scale) for n, p in D_inner.named_parameters()}
        L_fake = self.recon(fake, functional_call(D_inner, params, (fake,)))
        objective = L_real + L_fake if L_recon is None else L_real + L_fake + L_recon
        return objective, L_real, L_fake, L_recon

    def d_loss(self, D: nn.Module, x: torch.Tensor, fake: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(L_D, L_real, L_fake)`` with ``fake`` detached; one D pass on both batches
        (the "alternate" update)."""
        n = x.shape[0]
        rec = D(torch.cat([x, fake.detach()]))
        L_real, L_fake = self.recon(x, rec[:n]), self.recon(fake, rec[n:])
        return L_real - self.k * L_fake, L_real, L_fake

    def g_loss(self, D: nn.Module, fake: torch.Tensor) -> torch.Tensor:
        """L_G = L(G(z)); backpropagate it to G's parameters only."""
        return self.recon(fake, D(fake))
