import numpy as np
import torch

from facecloak.faces import AlignedFrame, align_largest_face, detect_largest_face, to_chw_float
from facecloak.models import get_card, ort_embedder
from facecloak.views import AugmentViews, ViewRequest


def _request(selfie, detector, seed, count=8):
    return ViewRequest(selfie, detect_largest_face(detector, selfie), AlignedFrame(), count, seed)


def test_views_are_seeded_and_diverse(selfie, detector):
    gen = AugmentViews()
    a = gen.generate(_request(selfie, detector, 1))
    b = gen.generate(_request(selfie, detector, 1))
    c = gen.generate(_request(selfie, detector, 2))
    assert a.shape == (8, 3, 112, 112) and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    pairwise = [np.abs(a[i] - a[j]).mean() for i in range(8) for j in range(i + 1, 8)]
    assert min(pairwise) > 0.01  # no two views are the same picture


def test_first_view_is_the_clean_alignment(selfie, detector):
    views = AugmentViews().generate(_request(selfie, detector, 0, count=2))
    clean = to_chw_float(align_largest_face(detector, selfie, AlignedFrame()).crop)[0]
    assert np.abs(views[0] - clean).max() < 1e-6


def test_views_keep_the_identity(selfie, detector):
    views = AugmentViews().generate(_request(selfie, detector, 3, count=12))
    emb = ort_embedder("sface")(views)
    sims = emb[1:] @ emb[0]
    assert np.mean(sims >= get_card("sface").match_threshold) >= 0.9
