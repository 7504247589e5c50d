"""Shared encoder + one decoder per identity: the classic face-swap autoencoder.

Training reconstructs A's faces through decoder A and B's through decoder B,
both from the one encoder. Because the encoder is shared, it has to describe
pose, expression and lighting in a code both decoders understand; feeding A's
code to decoder B then draws B's face with A's pose and expression: the swap.

The dense bottleneck matters: a purely convolutional autoencoder can copy
pixels through and never learn identity-free features, so the swap would
return the input face. Squeezing the whole face through `latent` numbers
forces the encoder to keep what the face does and drop who it is.

Shapes for resolution R and base width W (4 stride-2 stages, so the bottleneck
grid is R/16):

    encoder  3xR -> W -> 2W -> 4W -> 8W at R/16, flatten -> latent -> 8W x R/16 x R/16
    decoder  8W -> 4W -> 2W -> W -> W/2 (x2 each, pixel shuffle) -> RGB (sigmoid) + mask (sigmoid)
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

STAGES = 4  # stride-2 stages in the encoder and in each decoder


def _act() -> nn.Module:
    # LeakyReLU as in the original deepfakes/DFL models: no dead units in the
    # narrow bottleneck, where a dead channel is a lost piece of the code.
    return nn.LeakyReLU(0.1, inplace=True)


class Upscale(nn.Module):
    """conv to 4x the channels, then pixel shuffle: x2 resolution without transposed-conv checkerboards."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out * 4, 3, padding=1)
        self.act = _act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(F.pixel_shuffle(self.conv(x), 2))


class Residual(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.act = _act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.conv2(self.act(self.conv1(x))))


class Encoder(nn.Module):
    def __init__(self, resolution: int, width: int, latent: int):
        super().__init__()
        widths = [width * 2**i for i in range(STAGES)]  # W, 2W, 4W, 8W
        layers, c = [], 3
        for w in widths:
            layers += [nn.Conv2d(c, w, 5, stride=2, padding=2), _act()]
            c = w
        self.convs = nn.Sequential(*layers)
        self.grid = resolution // 2**STAGES
        self.channels = c
        self.to_latent = nn.Linear(c * self.grid * self.grid, latent)
        self.from_latent = nn.Linear(latent, c * self.grid * self.grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.convs(x - 0.5)  # images arrive in [0, 1]; centre them
        z = self.to_latent(h.flatten(1))
        return self.from_latent(z).view(-1, self.channels, self.grid, self.grid)


class Decoder(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        c = width * 2 ** (STAGES - 1)  # 8W, what the encoder hands over
        outs = [width * 4, width * 2, width, max(width // 2, 4)]
        blocks = []
        for i, w in enumerate(outs):
            blocks.append(Upscale(c, w))
            # Residual blocks at the coarse stages, where they are cheap and where
            # the face's structure is decided; the last stage only sharpens.
            if i < STAGES - 1:
                blocks.append(Residual(w))
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.to_rgb = nn.Conv2d(c, 3, 5, padding=2)
        self.to_mask = nn.Conv2d(c, 1, 5, padding=2)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.blocks(h)
        return torch.sigmoid(self.to_rgb(h)), torch.sigmoid(self.to_mask(h))


class FaceSwap(nn.Module):
    """encoder + decoder_a + decoder_b. forward() runs one training step's worth: A through A, B through B."""

    def __init__(self, resolution: int = 128, width: int = 64, latent: int = 512):
        super().__init__()
        if resolution % 2**STAGES or not 64 <= resolution <= 256:
            raise ValueError(f"resolution must be a multiple of {2**STAGES} between 64 and 256, not {resolution}")
        self.encoder = Encoder(resolution, width, latent)
        self.decoder_a = Decoder(width)
        self.decoder_b = Decoder(width)

    def forward(self, xa: torch.Tensor, xb: torch.Tensor):
        # One encoder pass over both identities: a bigger batch for the GPU, and
        # DDP sees every parameter used in the one forward it hooks.
        h = self.encoder(torch.cat([xa, xb]))
        ha, hb = h[: len(xa)], h[len(xa):]
        face_a, mask_a = self.decoder_a(ha)
        face_b, mask_b = self.decoder_b(hb)
        return face_a, mask_a, face_b, mask_b

    @torch.no_grad()
    def swap(self, x: torch.Tensor, to: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Faces `x` drawn by decoder `to` ('a' or 'b'): the same identity reconstructs, the other swaps."""
        return (self.decoder_a if to == "a" else self.decoder_b)(self.encoder(x))
