"""Grouping faces into persons, on synthetic encodings whose distances are known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from services import clustering

DIM = 128


def at(*offsets: tuple[int, float], base: int = 0, scale: float = 1.0) -> np.ndarray:
    """``scale`` along axis ``base`` plus (axis, length) offsets: distances by Pythagoras."""
    v = np.zeros(DIM, dtype=np.float32)
    v[base] = scale
    for axis, length in offsets:
        v[axis] += length
    return v


def stack(*vectors: np.ndarray) -> np.ndarray:
    return np.stack(vectors).astype(np.float32)


# -- pairwise_scores -------------------------------------------------------------------------

@pytest.mark.parametrize(("pred", "true", "expected"), [
    ([0, 0, 1, 1], [0, 0, 1, 1], (1.0, 1.0, 1.0)),
    ([7, 7, 3, 3], ["a", "a", "b", "b"], (1.0, 1.0, 1.0)),  # label names do not matter
    ([0, 0, 1, 1], [0, 0, 0, 1], (0.5, 1 / 3, 0.4)),  # 1 right pair of 2 claimed, of 3 true
    ([0, 0, 0, 0], [0, 0, 1, 1], (1 / 3, 1.0, 0.5)),  # all in one: every true pair found
    ([0, 1, 2, 3], [0, 0, 1, 1], (1.0, 0.0, 0.0)),  # all apart: nothing wrong, nothing found
    ([0, 1, 2], ["x", "y", "z"], (1.0, 1.0, 1.0)),
])
def test_pairwise_scores_known_cases(pred, true, expected):
    assert clustering.pairwise_scores(pred, true) == pytest.approx(expected)


def test_pairwise_scores_rejects_different_lengths():
    with pytest.raises(ValueError):
        clustering.pairwise_scores([0, 1], [0])


# -- assign_faces ----------------------------------------------------------------------------

GALLERY = stack(at(), at((1, 0.1)), at(base=5), at(base=5, scale=1.1))
PERSONS = ["a" * 24, "a" * 24, "b" * 24, "b" * 24]


def test_face_joins_the_person_it_is_closest_to_on_average():
    query = stack(at((2, 0.2)))  # 0.2 from the first face, sqrt(0.05) from the second
    [(person, distance)] = clustering.assign_faces(query, GALLERY, PERSONS, tolerance=0.58)
    assert person == "a" * 24
    assert distance == pytest.approx((0.2 + np.sqrt(0.05)) / 2)


def test_far_face_starts_a_new_person():
    query = stack(at(base=9))
    assert clustering.assign_faces(query, GALLERY, PERSONS, tolerance=0.58) == [(None, None)]


def test_empty_gallery_gives_new_persons():
    query = stack(at(), at(base=3))
    empty = np.zeros((0, DIM), dtype=np.float32)
    assert clustering.assign_faces(query, empty, [], tolerance=0.58) == [(None, None)] * 2


def test_near_one_face_but_far_from_the_person_starts_a_new_person():
    # Faces of one person along one axis at 0, 0.1, 0.2; the new face at 0.75 is 0.55 from
    # the nearest (the seed's rule would take it) but 0.65 from the person on average.
    gallery = stack(at((1, 0.0)), at((1, 0.1)), at((1, 0.2)))
    query = stack(at((1, 0.75)))
    assert clustering.assign_faces(query, gallery, ["p"] * 3, tolerance=0.58) == [(None, None)]
    [(person, _)] = clustering.assign_faces(query, gallery, ["p"] * 3, tolerance=0.66)
    assert person == "p"


def test_a_face_exactly_at_tolerance_joins_and_one_just_beyond_does_not():
    # Tolerance is inclusive (face_recognition's compare_faces is ``distance <= tolerance``).
    # The mean distance as assign_faces computes it (float64) becomes the tolerance itself.
    gallery = stack(at(), at((1, 0.1)))
    query = stack(at((2, 0.3), (3, 0.4)))
    [(person, mean)] = clustering.assign_faces(query, gallery, ["p", "p"], tolerance=1.0)
    assert person == "p" and 0.5 < mean < 0.52
    at_boundary = clustering.assign_faces(query, gallery, ["p", "p"], tolerance=mean)
    assert at_boundary == [("p", mean)]
    beyond = clustering.assign_faces(query, gallery, ["p", "p"],
                                     tolerance=float(np.nextafter(mean, 0.0)))
    assert beyond == [(None, None)]


def test_two_faces_of_one_photo_never_join_the_same_person():
    gallery = stack(at(), at((1, 0.6)))
    query = stack(at((2, 0.2), (3, 0.2)), at((2, 0.1)))  # both near "a"; the second nearer
    result = clustering.assign_faces(query, gallery, ["a", "b"], tolerance=0.58)
    assert result[1] == ("a", pytest.approx(0.1))
    # The first takes its next best person, within tolerance (0.283 from "a", 0.663 from "b").
    assert result[0] == (None, None)
    query = stack(at((1, 0.2), (2, 0.2)), at((2, 0.1)))  # now 0.447 from "b"
    result = clustering.assign_faces(query, gallery, ["a", "b"], tolerance=0.58)
    assert [p for p, _ in result] == ["b", "a"]


def test_forbidden_persons_are_skipped():
    query = stack(at((2, 0.1)))
    result = clustering.assign_faces(query, GALLERY, PERSONS, tolerance=0.58,
                                     forbidden=[{"a" * 24}])
    assert result == [(None, None)]
    with pytest.raises(ValueError):
        clustering.assign_faces(query, GALLERY, PERSONS, tolerance=0.58, forbidden=[])


def test_person_ids_may_be_a_list_or_an_array():
    query = stack(at((2, 0.2)), at(base=5, scale=1.05))
    as_list = clustering.assign_faces(query, GALLERY, PERSONS, tolerance=0.58)
    as_array = clustering.assign_faces(query, GALLERY, np.array(PERSONS), tolerance=0.58)
    assert as_list == as_array
    assert [p for p, _ in as_list] == ["a" * 24, "b" * 24]


# -- cluster_faces ---------------------------------------------------------------------------

def groups(sizes: list[int], spread: float = 0.2, gap: float = 1.5) -> np.ndarray:
    """Groups far apart (``gap`` along their own axis), faces ``spread`` off the centre."""
    faces = []
    for g, size in enumerate(sizes):
        for i in range(size):
            faces.append(at((20 + g * 10 + i, spread), base=g, scale=gap))
    return stack(*faces)


def distinct_images(n: int) -> list[str]:
    return [f"{i:024x}" for i in range(n)]


def test_separate_groups_get_labels_in_order_of_first_face():
    x = groups([3, 2, 4])
    order = [4, 0, 6, 1, 3, 2, 5, 7, 8]
    labels = clustering.cluster_faces(x[order], distinct_images(9))
    assert list(labels) == [0, 1, 2, 1, 0, 1, 2, 2, 2]


def test_empty_input_gives_no_labels():
    labels = clustering.cluster_faces(np.zeros((0, DIM), np.float32), [])
    assert labels.shape == (0,)


def test_faces_of_one_image_never_share_a_label():
    x = stack(at(), at((1, 0.01)), at((2, 0.1)))
    labels = clustering.cluster_faces(x, ["img1", "img1", "img2"])
    assert labels[0] != labels[1]
    assert labels[2] in (labels[0], labels[1])


def test_average_linkage_does_not_chain_look_alikes():
    # Two groups whose nearest faces are 0.58 apart but whose mean distance is above 0.6.
    left = [at((10 + i, 0.15)) for i in range(5)]
    right = [at((10 + i, 0.15), (1, 0.58)) for i in range(5)]
    labels = clustering.cluster_faces(stack(*left, *right), distinct_images(10), eps=0.6)
    assert len(set(labels[:5])) == len(set(labels[5:])) == 1
    assert labels[0] != labels[5]


def test_faces_fixed_to_one_person_stay_together():
    x = groups([3, 3])
    fixed = [None, "p", None, "p", None, None]  # one face in each group
    labels = clustering.cluster_faces(x, distinct_images(6), fixed=fixed)
    assert labels[1] == labels[3]


def test_faces_fixed_to_different_persons_never_merge():
    x = stack(at(), at((1, 0.05)), at((2, 0.05)))
    labels = clustering.cluster_faces(x, distinct_images(3), fixed=["p", "q", None])
    assert labels[0] != labels[1]
    assert labels[2] in (labels[0], labels[1])


def test_fixing_wins_over_the_same_image_rule():
    x = stack(at(), at(base=3))
    labels = clustering.cluster_faces(x, ["img", "img"], fixed=["p", "p"])
    assert labels[0] == labels[1]


def test_constraints_hold_on_random_data():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(15, DIM)) / 12
    x = (centres[rng.integers(0, 15, 300)] + rng.normal(size=(300, DIM)) * 0.03)
    images = rng.integers(0, 120, 300).astype(str)
    fixed = [None] * 300
    for i in rng.choice(300, 40, replace=False):
        fixed[i] = f"p{i % 5}"
    labels = clustering.cluster_faces(x.astype(np.float32), images, fixed=fixed)
    for label in set(labels):
        mine = np.flatnonzero(labels == label)
        assert len({fixed[i] for i in mine} - {None}) <= 1
        for image in set(images[mine]):
            shared = [i for i in mine if images[i] == image]
            # Only faces fixed to one person by the user may share an image and a label.
            assert len(shared) == 1 or all(fixed[i] is not None for i in shared)
    for person in {f for f in fixed if f is not None}:
        assert len({labels[i] for i, f in enumerate(fixed) if f == person}) == 1


def noisy_case() -> tuple[np.ndarray, list[str]]:
    # Four faces 0.495 apart make one group; a fifth is 0.55 from one of them but 0.69 from
    # the group on average, so average linkage leaves it alone.
    members = [at((10 + i, 0.35)) for i in range(4)]
    stray = at((10, 0.35), (20, 0.55))
    return stack(*members, stray), distinct_images(5)


def test_small_groups_stay_as_they_are_by_default():
    x, images = noisy_case()
    labels = clustering.cluster_faces(x, images, eps=0.6)
    assert labels[4] != labels[0] and len(set(labels[:4])) == 1


def test_noise_joins_the_group_of_its_nearest_face():
    x, images = noisy_case()
    labels = clustering.cluster_faces(x, images, eps=0.6, min_samples=2)
    assert len(set(labels)) == 1


def test_noise_does_not_join_a_group_holding_its_image():
    x, images = noisy_case()
    images[4] = images[2]
    labels = clustering.cluster_faces(x, images, eps=0.6, min_samples=2)
    assert labels[4] != labels[0]


def test_fixed_faces_are_never_noise():
    x, images = noisy_case()
    labels = clustering.cluster_faces(x, images, eps=0.6, min_samples=2,
                                      fixed=[None, None, None, None, "p"])
    assert labels[4] != labels[0]


def test_large_components_in_blocks_give_the_one_matrix_result(monkeypatch):
    # Six groups in a row: neighbours' nearest faces 0.58 apart (one radius component),
    # their mean distance above 0.6 (six persons). Faces shuffled, blocks of 7 faces.
    faces = [at((20 + i, 0.15), (1, 0.58 * g)) for g in range(6) for i in range(5)]
    truth = np.repeat(np.arange(6), 5)
    order = np.random.default_rng(0).permutation(30)
    x = stack(*faces)[order]
    images = distinct_images(30)
    fixed = [None] * 30
    fixed[int(np.flatnonzero(order == 0)[0])] = "p"  # one face of the first group and one of
    fixed[int(np.flatnonzero(order == 29)[0])] = "p"  # the last group fixed to one person
    whole = clustering.cluster_faces(x, images, eps=0.6, fixed=fixed)
    monkeypatch.setattr(clustering, "MAX_BLOCK", 7)
    blocked = clustering.cluster_faces(x, images, eps=0.6, fixed=fixed)
    assert clustering.pairwise_scores(blocked, whole)[2] == 1.0
    unfixed = clustering.cluster_faces(x, images, eps=0.6)
    assert clustering.pairwise_scores(unfixed, truth[order])[2] == 1.0


# -- match_clusters_to_persons -----------------------------------------------------------------

def test_clusters_keep_the_person_holding_most_of_their_faces():
    mapping, merged = clustering.match_clusters_to_persons(
        [0, 0, 0, 1, 1, 2], ["A", "A", "B", "B", "B", None])
    assert mapping == {0: "A", 1: "B", 2: None}
    assert merged == {0: [], 1: [], 2: []}


def test_each_old_person_is_used_once_and_ties_go_to_the_smaller_id():
    mapping, merged = clustering.match_clusters_to_persons([0, 0, 0, 0], ["B", "B", "A", "A"])
    assert mapping == {0: "A"}
    assert merged == {0: ["B"]}
    mapping, _ = clustering.match_clusters_to_persons([1, 1, 0, 0], ["A", "A", "A", "A"])
    assert mapping == {0: "A", 1: None}


def test_clusters_with_fixed_faces_keep_their_fixed_person():
    mapping, _ = clustering.match_clusters_to_persons(
        [0, 0, 1], ["A", "A", "A"], fixed=[None, None, "A"])
    assert mapping == {0: None, 1: "A"}
    with pytest.raises(ValueError):
        clustering.match_clusters_to_persons([0, 0], ["A", "B"], fixed=["A", "B"])


def test_face_distances_is_one_matrix_of_every_pair():
    known = np.stack([np.zeros(128), np.full(128, 0.1)])
    np.testing.assert_allclose(clustering.face_distances(known, np.zeros(128))[:, 0],
                               [0.0, np.sqrt(1.28)], rtol=1e-6)
    assert clustering.face_distances(np.empty((0, 128)), np.zeros(128)).shape == (0, 1)
    assert clustering.face_distances([], np.zeros((3, 128))).shape == (0, 3)
    assert clustering.face_distances(known, known, squared=True)[0, 1] == pytest.approx(1.28)


def test_face_distances_meets_its_documented_error():
    rng = np.random.default_rng(7)
    # dlib encodings have norms of 1.3-1.6; these have the same scale.
    a = rng.normal(0, 0.125, (300, 128))
    b = np.concatenate([a[:50] + rng.normal(0, 0.01, (50, 128)), rng.normal(0, 0.125, (50, 128))])
    exact = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=2)
    precise = clustering.face_distances(a, b)
    assert precise.dtype == np.float64 and np.abs(precise - exact).max() < 1e-7
    fast = clustering.face_distances(a.astype(np.float32), b, squared=True)
    assert fast.dtype == np.float32
    assert np.abs(fast - exact**2).max() < clustering.SQUARED_ERROR_F32
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    norms = np.einsum("ij,ij->i", a32, a32)
    np.testing.assert_array_equal(clustering.face_distances(a32, b32, a_norms=norms),
                                  clustering.face_distances(a32, b32))
