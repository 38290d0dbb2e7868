"""Temporal smoothing of masks: less flicker where nothing moves, no lag where something does.

A saliency model sees each frame alone, so codec noise and small changes make the mask's soft values
flicker from frame to frame. ``Smoother`` keeps a running average of the model-sized mask, but only where
the new mask is close to it: per pixel, the weight of the past falls linearly from ``strength`` (no change)
to 0 (a change of ``band`` levels or more, 0..255), after a 3x3 box blur of the change so one noisy pixel
does not open the gate. A moving edge changes the mask by far more than ``band``, so it passes at once
(no trail); flicker is a few levels, so it is averaged away. It works at the model's size (320x320, about
0.3 ms a frame), before the mask is resized to the frame, and needs no optical flow.

The settings and the default were chosen by measuring clips whose truth is known
(``python -m benchmarks.video --smoothing ENGINE``; docs/video.md): SOD objects moving over panning
backgrounds, a SOD-trained U²-NetP. Against no smoothing, "medium" (the default) cut the mask's
frame-to-frame change where the truth is still to 0.74x, moved the masks on moving edges by 5 levels
and raised their error against the truth by 0.1 level (of 107); "high" reached 0.69x for 7 levels, and a
plain running average of the same strength without the band 0.68x for 17 levels of lag (+1.8 error).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Setting:
    """``strength``: the weight of the past where the mask did not change (0 = off); ``band``: the change
    (0..255) at which the past gets no weight at all."""

    strength: float
    band: float


SETTINGS: dict[str, Setting] = {
    "off": Setting(0.0, 1.0),
    "low": Setting(0.7, 32.0),
    "medium": Setting(0.85, 48.0),  # the default (VideoOptions.smooth): see the module docstring
    "high": Setting(0.9, 64.0),
}


class Smoother:
    """Feed model-sized uint8 masks in display order (``step``); get the steadied mask back (uint8, same size).
    With the "off" setting the mask comes back unchanged, so a frame's mask is ``Remover.mask(frame)``."""

    def __init__(self, setting: Setting | str) -> None:
        self.setting = SETTINGS[setting] if isinstance(setting, str) else setting
        self.state: np.ndarray | None = None

    def step(self, mask: np.ndarray) -> np.ndarray:
        strength, band = self.setting.strength, self.setting.band
        if strength <= 0:
            return mask
        current = mask.astype(np.float32)
        if self.state is None or self.state.shape != current.shape:
            self.state = current
            return mask
        change = cv2.blur(cv2.absdiff(current, self.state), (3, 3))
        weight = np.clip(1.0 - change * np.float32(1.0 / band), 0.0, 1.0) * np.float32(strength)
        self.state = current + weight * (self.state - current)
        return np.clip(self.state + np.float32(0.5), 0, 255).astype(np.uint8)

    def reset(self) -> None:
        """Forget the past (e.g. at a cut, or when frames are skipped by a step)."""
        self.state = None
