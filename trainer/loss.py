"""The loss: masked L1 + DSSIM on the face region, extra weight on eyes and mouth, plus the mask.

    loss = L1(face)  +  DSSIM(face)  +  L1(mask)

- Only the face region counts (the weight map is the derived face mask,
  warped like the face): the background around a crop differs from source to
  source and is not the decoder's job; the swap is blended through the mask.
- L1 gets colours and low frequencies right; DSSIM = (1 - SSIM) / 2 rewards
  matching local structure (pores, edges, teeth) that L1 alone blurs away.
- The weight map is 1 + eyes_mouth_weight over eyes and mouth: those few
  pixels carry most of what people notice (gaze, blinks, lip shapes).
- The mask head is trained to the derived mask, so at swap time the decoder
  also says where its face is.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

SSIM_WINDOW, SSIM_SIGMA = 11, 1.5  # the values of Wang et al. 2004
C1, C2 = 0.01**2, 0.03**2  # for images in [0, 1]


@functools.lru_cache(maxsize=8)
def _gaussian_window(size: int, sigma: float, device: str) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(3, 1, size, size).contiguous()


def ssim_map(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM of two [B,3,H,W] images in [0, 1], per channel, gaussian window; same size as the input."""
    w = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA, str(x.device))
    pad = SSIM_WINDOW // 2

    def blur(t):  # reflect padding: no dark frame around the image's statistics
        return F.conv2d(F.pad(t, [pad] * 4, mode="reflect"), w, groups=3)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    return ((2 * mx * my + C1) * (2 * sxy + C2)) / ((mx * mx + my * my + C1) * (sxx + syy + C2))


def weighted_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean of [B,C,H,W] values under a [B,1,H,W] weight map (per-pixel weights, channels averaged)."""
    return (values * weight).sum() / (weight.sum() * values.shape[1]).clamp_min(1e-8)


def face_loss(face: torch.Tensor, mask: torch.Tensor, target: torch.Tensor, target_mask: torch.Tensor,
              weight: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Loss of one decoder's output against its targets; returns (total, parts for logging)."""
    face, mask = face.float(), mask.float()  # autocast may hand us bf16; the loss is summed in fp32
    l1 = weighted_mean((face - target).abs(), weight)
    dssim = weighted_mean((1 - ssim_map(face, target)) / 2, weight)
    mask_l1 = (mask - target_mask).abs().mean()
    return l1 + dssim + mask_l1, {"l1": l1.detach(), "dssim": dssim.detach(), "mask": mask_l1.detach()}
