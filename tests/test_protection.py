"""The cloak works on real data: masks from photo 1 protect held-out photos 2..10; random noise does not."""

import cv2
import numpy as np
import pytest

from facecloak.apply import apply_mask
from facecloak.enroll import Enroller, EnrollConfig
from facecloak.faces import AlignedFrame, align_largest_face, to_chw_float
from facecloak.imageio import read_image
from facecloak.mask import Mask
from facecloak.models import get_card, ort_embedder

from .conftest import PEOPLE, person_photos

pytestmark = pytest.mark.slow


def _jpeg(rgb, quality=90):
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


def test_mask_from_one_photo_protects_held_out_photos(lfw, detector):
    enroller = Enroller(detector=detector)
    embed = ort_embedder("sface")
    threshold = get_card("sface").match_threshold
    frame = AlignedFrame()

    def sim(a, b):  # the attacker re-detects and re-aligns every photo itself
        ea, eb = (embed(to_chw_float(align_largest_face(detector, x, frame).crop))[0] for x in (a, b))
        return float(ea @ eb)

    cloaked_sims, noise_sims = [], []
    rng = np.random.default_rng(0)
    for person in PEOPLE:
        photos = [read_image(p) for p in person_photos(lfw, person)]
        mask = enroller.enroll(photos[0], EnrollConfig(surrogates=("sface",))).mask
        levels = np.abs(mask.delta).max()
        noise = Mask(rng.uniform(-1, 1, mask.delta.shape).astype(np.float32) * levels, mask.frame, mask.models)
        for held_out in photos[1:]:
            cloaked_sims.append(sim(photos[0], _jpeg(apply_mask(held_out, mask, detector))))
            noise_sims.append(sim(photos[0], _jpeg(apply_mask(held_out, noise, detector))))
    cloaked_sims, noise_sims = np.array(cloaked_sims), np.array(noise_sims)
    assert np.median(cloaked_sims) < threshold - 0.1, cloaked_sims
    assert np.mean(cloaked_sims < threshold) >= 0.8
    assert np.mean(noise_sims >= threshold) >= 0.8  # the same budget of random noise does not protect
