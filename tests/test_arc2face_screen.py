"""Screening of generated views on real LFW photos: detection, alignment, identity drift, replacement."""

import math
import sys

import numpy as np
import pytest

from facecloak.assets import asset
from facecloak.errors import BadOptionError
from facecloak.faces import AlignedFrame, align_largest_face, detect_largest_face, to_chw_float
from facecloak.imageio import read_image
from facecloak.models import ort_embedder
from facecloak.views import ViewRequest
from facecloak.views.arc2face import Arc2FaceConfig, Arc2FaceViews, view_seed
from facecloak.views.arc2face_identity import InsightFaceArcFace, OnnxArcFace, card_for_onnx, identity_encoder
from facecloak.views.arc2face_screen import ScreenConfig, ViewGenerationError, ViewScreen, collect_views
from .arc2face_tiny import build_tiny_model_dir

from .conftest import person_photos

FRAME = AlignedFrame(size=128, scale=1.1)  # any frame: views must come out aligned to the request's


@pytest.fixture(scope="module")
def identity():
    # FaceNet (CASIA) stands in for Arc2Face's ArcFace R100: a real 512-d recogniser, same code path.
    return OnnxArcFace.from_file(asset("models/facenet_casia_160.onnx"))


@pytest.fixture(scope="module")
def photos(lfw):
    same = [read_image(p) for p in person_photos(lfw, "Tony_Blair")[:5]]
    other = [read_image(p) for p in person_photos(lfw, "Serena_Williams")[:3]]
    return same, other


class ListSampler:
    """Stand-in for the diffusion sampler: candidate i is pool[i]; records every seed it was asked for."""

    def __init__(self, pool):
        self.pool = pool
        self.seeds = []

    def sample(self, id_embedding, seeds):
        assert id_embedding.shape == (512,) and abs(np.linalg.norm(id_embedding) - 1) < 1e-5
        start = len(self.seeds)
        self.seeds += list(seeds)
        return np.stack([self.pool[i % len(self.pool)] for i in range(start, start + len(seeds))])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model_dir(tmp_path_factory.mktemp("a2f"), asset("models/facenet_casia_160.onnx"))


def _generator(tiny, detector, identity, pool, **screen):
    sampler = ListSampler(pool)
    config = Arc2FaceConfig(tiny, screen=ScreenConfig(**screen), check_hashes=False)
    return Arc2FaceViews(config, detector, sampler=sampler, identity=identity), sampler


def _request(photo, detector, count, seed=5):
    return ViewRequest(photo, detect_largest_face(detector, photo), FRAME, count, seed)


def test_identity_card_is_read_from_the_graph():
    facenet = card_for_onnx(asset("models/facenet_casia_160.onnx"))
    assert (facenet.input_size, facenet.input_name, facenet.output_name) == (160, "input", "embedding")
    assert facenet.value_range == (0.0, 255.0)  # the graph normalises itself
    sface = card_for_onnx(asset("models/sface_112.onnx"))
    assert (sface.input_size, sface.embedding_dim, sface.value_range) == (112, 128, (0.0, 255.0))


def test_onnx_identity_matches_the_core_embedder(identity, photos, detector):
    photo = photos[0][0]
    aligned = align_largest_face(detector, photo, AlignedFrame(160))
    ours = identity.embed(photo, aligned.face.landmarks)
    core = ort_embedder("facenet")(to_chw_float(aligned.crop))[0]
    assert ours.shape == (512,) and np.dot(ours, core) > 0.9999


def test_insightface_loader_agrees_with_ours(photos, detector):
    """insightface's model_zoo + norm_crop (installed with --no-deps) and our ONNX path embed alike."""
    model = asset("models/sface_112.onnx")  # a 112 px ArcFace-style recogniser model_zoo accepts
    theirs, ours = InsightFaceArcFace(model), OnnxArcFace.from_file(model)
    assert theirs.dim == ours.dim == 128
    for photo in photos[0][:2] + photos[1][:1]:
        lms = detect_largest_face(detector, photo).landmarks
        assert float(theirs.embed(photo, lms) @ ours.embed(photo, lms)) > 0.999


def test_insightface_absence_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "insightface", None)
    monkeypatch.setitem(sys.modules, "insightface.model_zoo", None)
    with pytest.raises(BadOptionError, match="pip install --no-deps insightface"):
        InsightFaceArcFace(asset("models/sface_112.onnx"))
    with pytest.raises(BadOptionError, match="unknown identity backend"):
        identity_encoder("dlib", asset("models/sface_112.onnx"))


def test_screen_accepts_same_person_and_rejects_drift_and_blank(identity, photos, detector):
    same, other = photos
    screen = ViewScreen(detector, identity, FRAME, ScreenConfig(min_identity_cosine=0.4))
    source = identity.embed(same[0], detect_largest_face(detector, same[0]).landmarks)
    ok = screen(same[1], source)
    assert ok.reason == "ok" and ok.cosine > 0.4
    expected = to_chw_float(align_largest_face(detector, same[1], FRAME).crop)[0]
    assert ok.view.shape == (3, 128, 128) and np.array_equal(ok.view, expected)
    drift = screen(other[0], source)
    assert drift.reason == "identity_drift" and drift.view is None and drift.cosine < 0.4
    blank = screen(np.full((250, 250, 3), 127, np.uint8), source)
    assert blank.reason == "no_face" and math.isnan(blank.cosine)


def test_failed_candidates_are_replaced_by_new_seeds(tiny, identity, photos, detector):
    same, other = photos
    blank = np.zeros_like(same[0])
    pool = [other[0], same[1], blank, same[2], other[1], same[3], same[4]]
    gen, sampler = _generator(tiny, detector, identity, pool)
    views = gen.generate(_request(same[0], detector, count=4))
    assert views.shape == (4, 3, 128, 128) and views.dtype == np.float32
    assert 0.0 <= views.min() and views.max() <= 1.0
    wanted = [to_chw_float(align_largest_face(detector, p, FRAME).crop)[0] for p in (same[1], same[2], same[3], same[4])]
    assert all(np.array_equal(v, w) for v, w in zip(views, wanted))
    # 4 first, then 2 replacements for the 3 failures... until 4 pass: candidates 0..6, seeds per index.
    assert sampler.seeds == [view_seed(5, i) for i in range(7)]


def test_all_views_failing_is_a_clear_bounded_error(tiny, identity, photos, detector):
    same, other = photos
    gen, sampler = _generator(tiny, detector, identity, [other[0], np.zeros_like(same[0])], candidates_per_view=2.5)
    with pytest.raises(ViewGenerationError, match=r"only 0 of 3 synthetic views passed after 8 candidates "
                       r"\(4 without a detectable face, 4 with identity drift; best identity cosine") as err:
        gen.generate(_request(same[0], detector, count=3))
    assert err.value.reason == "VIEWS_FAILED"
    assert len(sampler.seeds) == 8  # ceil(3 * 2.5): bounded


def test_collect_views_stops_at_count_and_zero_count_is_refused(tiny, identity, photos, detector):
    same, _ = photos
    views, tally = collect_views(lambda idx: [same[1]] * len(idx), ViewScreen(detector, identity, FRAME, ScreenConfig()),
                                 identity.embed(same[0], detect_largest_face(detector, same[0]).landmarks), 2, 6)
    assert views.shape == (2, 3, 128, 128) and tally == {"ok": 2}
    gen, _ = _generator(tiny, detector, identity, same)
    with pytest.raises(BadOptionError, match="at least 1"):
        gen.generate(_request(same[0], detector, count=0))


def test_view_seeds_are_stable_and_distinct():
    seeds = [view_seed(s, i) for s in (0, 1) for i in range(50)]
    assert len(set(seeds)) == 100 and all(0 <= s < 2**63 for s in seeds)
    assert view_seed(1, 3) == view_seed(1, 3)
