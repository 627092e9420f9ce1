import numpy as np
import pytest

from facecloak.anchors import AnchorGallery, build_gallery, list_images, select_anchors
from facecloak.cli import main
from facecloak.errors import BadOptionError
from facecloak.faces import AlignedFrame, align_largest_face, to_chw_float
from facecloak.models import get_card, ort_embedder

from .conftest import PEOPLE, person_photos


def _unit(v):
    return (np.asarray(v, dtype=np.float32) / np.linalg.norm(v)).astype(np.float32)


def test_near_and_far_on_a_hand_made_gallery():
    names = ("self_twin", "close", "middle", "opposite")
    emb = np.stack([_unit([1, 0.01, 0]), _unit([1, 0.9, 0]), _unit([0, 1, 0]), _unit([-1, 0.1, 0])])
    gallery = AnchorGallery(names, {"m": emb})
    chosen = select_anchors(gallery, "m", np.array([1.0, 0, 0]), self_threshold=0.95)
    assert (chosen.near_name, chosen.far_name) == ("close", "opposite")
    excluded = select_anchors(gallery, "m", np.array([1.0, 0, 0]), 0.95, exclude=frozenset({"close"}))
    assert excluded.near_name == "middle"


def test_gallery_too_small_or_wrong_model():
    gallery = AnchorGallery(("a", "b"), {"m": np.stack([_unit([1, 0]), _unit([0, 1])])})
    with pytest.raises(BadOptionError, match="fewer than two"):
        select_anchors(gallery, "m", np.array([1.0, 0.0]), 0.5)
    with pytest.raises(BadOptionError, match="no embeddings"):
        select_anchors(gallery, "other", np.array([1.0, 0.0]), 0.5)


def test_the_user_is_never_an_anchor_in_a_real_gallery(tmp_path, lfw, detector):
    for person in PEOPLE:  # a gallery that contains the user's OTHER photos
        (tmp_path / person).mkdir()
        for p in person_photos(lfw, person)[1:3]:
            (tmp_path / person / p.name).symlink_to(p)
    gallery = build_gallery(list_images(tmp_path), tmp_path, ("sface",))
    assert gallery.names == tuple(sorted(PEOPLE))
    user_photo = person_photos(lfw, "Tony_Blair")[0]
    from facecloak.imageio import read_image

    user = ort_embedder("sface")(to_chw_float(align_largest_face(detector, read_image(user_photo), AlignedFrame()).crop))[0]
    chosen = select_anchors(gallery, "sface", user, get_card("sface").match_threshold)
    assert "Tony_Blair" not in (chosen.near_name, chosen.far_name)


def test_gallery_build_command(tmp_path, lfw, capsys):
    src = tmp_path / "faces"
    src.mkdir()
    for person in PEOPLE[:3]:
        (src / f"{person}_0001.jpg").symlink_to(person_photos(lfw, person)[0])
    out = tmp_path / "g.npz"
    assert main(["gallery", "build", str(src), "-o", str(out), "--models", "sface"]) == 0
    loaded = AnchorGallery.load(out)
    assert loaded.names == tuple(sorted(PEOPLE[:3])) and loaded.embeddings["sface"].shape == (3, 128)
    assert np.allclose(np.linalg.norm(loaded.embeddings["sface"], axis=1), 1.0, atol=1e-5)
    assert main(["gallery", "build", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_parallel_builders_of_the_cached_gallery_never_share_a_temp_file(tmp_path, monkeypatch):
    """Server workers / eval shards building the same cached gallery at once: each gets a whole, loadable file."""
    import threading

    from facecloak.anchors import gallery as gallery_module

    monkeypatch.setenv("FACECLOAK_CACHE", str(tmp_path))
    builders = 4
    together = threading.Barrier(builders)
    rng = np.random.default_rng(0)
    made = AnchorGallery(tuple(f"id{i}" for i in range(2000)), {"sface": rng.standard_normal((2000, 512)).astype(np.float32)})

    def build(*args, **kwargs):
        together.wait(30)  # every builder reaches the write at the same moment
        return made

    monkeypatch.setattr(gallery_module, "build_gallery", build)
    errors = []

    def run():
        try:
            gallery_module.default_gallery(("sface",))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(builders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    (cached,) = tmp_path.iterdir()  # no temp file left behind
    loaded = AnchorGallery.load(cached)
    assert loaded.names == made.names and np.array_equal(loaded.embeddings["sface"], made.embeddings["sface"])
