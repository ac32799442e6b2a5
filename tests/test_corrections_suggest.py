"""Merge suggestions and the review queue: the math on synthetic arrays, then the API on
real faces."""

from __future__ import annotations

import numpy as np
import pytest

from services import suggestions
from tests import photos
from tests.conftest import MISSING
from tests.conftest import assert_error
from tests.conftest import upload


def _gallery(seed: int = 0, persons: int = 60) -> tuple[np.ndarray, list[str]]:
    """Persons of 1-4 faces around random centres, p000/p001 and p002/p003 near-duplicates."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(persons, 128)) * 0.09
    centres[1] = centres[0] + rng.normal(size=128) * 0.01
    centres[3] = centres[2] + rng.normal(size=128) * 0.015
    embeddings, labels = [], []
    for k, centre in enumerate(centres):
        for _ in range(rng.integers(1, 5)):
            embeddings.append(centre + rng.normal(size=128) * 0.01)
            labels.append(f"p{k:03d}")
    return np.array(embeddings), labels


def _all_pairs(persons: suggestions.Persons) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    left, right = np.triu_indices(len(persons.ids), k=1)
    distances = suggestions.linkage(persons, left, right)
    order = np.lexsort((right, left, distances))
    return left[order], right[order], distances[order]


def test_linkage_is_the_mean_face_distance():
    embeddings, labels = _gallery()
    persons = suggestions.group(embeddings, labels)
    a, b = persons.index_of("p000"), persons.index_of("p005")
    labels_arr = np.array(labels)
    x, y = embeddings[labels_arr == "p000"], embeddings[labels_arr == "p005"]
    expected = np.linalg.norm(x[:, None] - y[None], axis=2).mean()
    assert suggestions.linkage(persons, np.array([a]), np.array([b]))[0] == pytest.approx(expected)


def test_pairs_come_closest_first_and_match_measuring_every_pair():
    persons = suggestions.group(*_gallery())
    left, right, distances = suggestions.duplicate_pairs(persons, limit=15, max_distance=2.0)
    all_left, all_right, all_distances = _all_pairs(persons)
    assert np.all(np.diff(distances) >= 0)
    assert left.tolist() == all_left[:15].tolist() and right.tolist() == all_right[:15].tolist()
    assert np.allclose(distances, all_distances[:15])
    assert {persons.ids[left[0]], persons.ids[right[0]]} in ({"p000", "p001"}, {"p002", "p003"})


def test_limit_and_max_distance_are_honoured():
    persons = suggestions.group(*_gallery())
    _, _, distances = suggestions.duplicate_pairs(persons, limit=3, max_distance=2.0)
    assert len(distances) == 3
    left, right, distances = suggestions.duplicate_pairs(persons, limit=50, max_distance=0.5)
    names = {frozenset(persons.ids[[a, b]]) for a, b in zip(left, right, strict=True)}
    assert names == {frozenset({"p000", "p001"}), frozenset({"p002", "p003"})}
    assert np.all(distances <= 0.5)
    others, near = suggestions.closest_to(persons, persons.index_of("p000"), limit=5,
                                          max_distance=0.5)
    assert persons.ids[others].tolist() == ["p001"] and near[0] <= 0.5


def test_the_neighbours_of_one_person_match_measuring_them_all():
    persons = suggestions.group(*_gallery(seed=3))
    k = persons.index_of("p010")
    others, distances = suggestions.closest_to(persons, k, limit=7)
    everyone = np.delete(np.arange(len(persons.ids)), k)
    all_distances = suggestions.linkage(persons, np.full(len(everyone), k), everyone)
    order = np.argsort(all_distances, kind="stable")[:7]
    assert others.tolist() == everyone[order].tolist()
    assert np.allclose(distances, all_distances[order])


def test_excluded_pairs_are_never_proposed():
    persons = suggestions.group(*_gallery())
    excluded = {("p001", "p000")}  # either order
    left, right, _ = suggestions.duplicate_pairs(persons, limit=50, max_distance=2.0,
                                                 excluded_pairs=excluded)
    pairs = {frozenset(persons.ids[[a, b]]) for a, b in zip(left, right, strict=True)}
    assert frozenset({"p000", "p001"}) not in pairs and frozenset({"p002", "p003"}) in pairs
    others, _ = suggestions.closest_to(persons, persons.index_of("p000"), limit=100,
                                       excluded_pairs=excluded)
    assert "p001" not in persons.ids[others].tolist()


def test_bands_smaller_than_the_gallery_give_the_same_pairs(monkeypatch):
    persons = suggestions.group(*_gallery(seed=5))
    whole = suggestions.duplicate_pairs(persons, limit=20, max_distance=2.0)
    monkeypatch.setattr(suggestions, "BAND_CELLS", 7 * len(persons.ids))
    monkeypatch.setattr(suggestions, "PAIR_CHUNK", 5)
    banded = suggestions.duplicate_pairs(persons, limit=20, max_distance=2.0)
    assert [x.tolist() for x in whole[:2]] == [x.tolist() for x in banded[:2]]
    assert np.allclose(whole[2], banded[2])


def test_own_distances_find_the_outlier_and_leave_lone_faces_out():
    rng = np.random.default_rng(1)
    centre = rng.normal(size=128) * 0.09
    embeddings = np.array([centre + rng.normal(size=128) * 0.02 for _ in range(4)]
                          + [rng.normal(size=128) * 0.09, rng.normal(size=128) * 0.09])
    labels = ["a", "a", "a", "a", "a", "b"]  # row 4 is a stranger in "a"; "b" is alone
    distances = suggestions.own_distances(suggestions.group(embeddings, labels))
    assert np.argmax(np.nan_to_num(distances)) == 4 and np.isnan(distances[5])
    expected = np.linalg.norm(embeddings[:4] - embeddings[4], axis=1).mean()
    assert distances[4] == pytest.approx(expected)


def test_persons_sharing_a_photo_are_paired():
    pairs = suggestions.shared_image_pairs(["a", "b", "c", "a"], ["x", "x", "y", "z"])
    assert pairs == {("a", "b")}
    assert suggestions.shared_image_pairs([], []) == set()


# -- the API, on real faces ---------------------------------------------------------------

def test_a_person_split_in_two_is_the_others_top_suggestion(client):
    first = upload(client, photos.astronaut_jpeg())["faces"][0]
    second = upload(client, photos.mirrored(photos.astronaut_rgb()))["faces"][0]
    upload(client, photos.hopper_jpeg())
    assert first["person_id"] == second["person_id"]
    moved = client.put(f"/faces/{second['face_id']}/move-to-new").json["data"]
    answer = client.get(f"/persons/{first['person_id']}/suggestions?limit=5")
    assert answer.status_code == 200, answer.json
    top = answer.json["data"]["suggestions"][0]
    assert top["person_id"] == moved["new_person_id"]
    assert top["distance"] < 0.6 and top["confidence"] > 0.5
    pairs = client.get("/persons/suggestions?limit=10").json["data"]["pairs"]
    assert {pairs[0]["person_id"], pairs[0]["other_person_id"]} == {
        first["person_id"], moved["new_person_id"]}
    none = client.get("/persons/suggestions?max_distance=0.01").json["data"]["pairs"]
    assert none == []


def test_the_review_queue_lists_an_outlier_first(client):
    upload(client, photos.astronaut_jpeg())
    upload(client, photos.mirrored(photos.astronaut_rgb()))
    hopper = upload(client, photos.hopper_jpeg())["faces"][0]
    # A loose re-clustering puts Grace Hopper in with Eileen Collins, automatically.
    merged = client.post("/cluster/", json={"tolerance": 1.0,
                                                     "preserve_manual": False})
    assert merged.status_code == 200, merged.json
    faces = client.get("/faces/review").json["data"]["faces"]
    assert faces[0]["face_id"] == hopper["face_id"]
    assert faces[0]["reason"] == "far_from_person" and faces[0]["distance"] > 0.59
    assert faces[0]["person_face_count"] == 3
    page = client.get("/faces/review?limit=1&offset=1").json["data"]
    assert page["limit"] == 1 and len(page["faces"]) <= 1


def test_a_face_moved_by_hand_leaves_the_review_queue(client):
    face = upload(client, photos.hopper_jpeg())["faces"][0]
    listed = client.get("/faces/review").json["data"]["faces"]
    assert [f["reason"] for f in listed] == ["alone"] and listed[0]["distance"] is None
    client.put(f"/faces/{face['face_id']}/move-to-new")
    assert client.get("/faces/review").json["data"]["total"] == 0


@pytest.mark.parametrize("path", ["/persons/suggestions?limit=0", "/persons/suggestions?limit=x",
                                  f"/persons/{MISSING}/suggestions?limit=101",
                                  "/persons/suggestions?max_distance=-1",
                                  "/faces/review?limit=0", "/faces/review?offset=-1"])
def test_bad_parameters_are_400(client, path):
    assert_error(client.get(path), 400, "ValidationError")


def test_unknown_or_malformed_person_ids(client):
    assert_error(client.get(f"/persons/{MISSING}/suggestions"), 404, "DocumentNotFoundError")
    assert_error(client.get("/persons/nope/suggestions"), 400, "ValidationError")


def test_persons_marked_not_same_are_never_suggested(client):
    from tests.conftest import upload
    from tests.photos import astronaut_jpeg
    from tests.photos import mirrored

    first = upload(client, astronaut_jpeg())["faces"][0]
    second = upload(client, mirrored(astronaut_jpeg()), "b.jpg")["faces"][0]
    moved = client.put(f"/faces/{second['face_id']}/move-to-new", json={}).json["data"]
    a, b = first["person_id"], moved["new_person_id"]
    top = client.get(f"/persons/{a}/suggestions").json["data"]
    assert [s["person_id"] for s in top["suggestions"]][:1] == [b]
    assert client.post(f"/persons/{a}/not-same", json={"other_person_id": b}).status_code == 200
    after = client.get(f"/persons/{a}/suggestions").json["data"]
    assert b not in [s["person_id"] for s in after["suggestions"]]
    pairs = client.get("/persons/suggestions").json["data"]
    assert all({a, b} != {p["person_id"], p["other_person_id"]} for p in pairs["pairs"])
