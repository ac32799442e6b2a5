"""Which persons are probably one, and which faces probably sit in the wrong person:
embeddings and person labels in, ranked indices and distances out (numpy, and one sparse
product from scipy).

The distance between two persons is the project's linkage (``docs/recognition.md``): the
mean distance between their faces (average linkage, what re-clustering merges on). It is
exact, in float64, but computed only for candidates: the distance between two persons'
centroids is a lower bound of it (the mean of ``|a - b|`` is at least ``|mean(a - b)|``,
Jensen), so the persons nearest by centroid are measured first and the search stops once
no remaining centroid bound can beat the ``limit``-th pair found. Measurements:
``bench/suggestions.py`` and README.
"""

from __future__ import annotations

from collections.abc import Collection
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix

from services import clustering

__all__ = [
    "Persons",
    "closest_to",
    "duplicate_pairs",
    "group",
    "own_distances",
    "shared_image_pairs",
]

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.intp]
#: Face pairs measured per step (two gathered 128-d float64 matrices: 2 x 32 MB).
PAIR_CHUNK = 1 << 15
#: Centroid distances per row band (float32: 16 MB).
BAND_CELLS = 1 << 22
# A float32 centroid distance may read up to ~1.5e-3 too high near 0 (clustering.face_distances);
# bounds are lowered by this much so they stay lower bounds.
_SLACK = 2e-3


@dataclass(frozen=True)
class Persons:
    """Faces grouped by person: person ``k`` owns rows ``offsets[k]:offsets[k + 1]`` of
    ``embeddings`` (float64, sorted by person); ``rows`` maps them back to the input rows."""

    ids: npt.NDArray[np.str_]
    embeddings: Floats
    offsets: Ints
    rows: Ints
    centroids: Floats

    @property
    def sizes(self) -> Ints:
        return np.diff(self.offsets)

    def index_of(self, person_id: str) -> int | None:
        k = int(np.searchsorted(self.ids, person_id))
        return k if k < len(self.ids) and self.ids[k] == person_id else None


def group(embeddings: npt.ArrayLike, person_ids: npt.ArrayLike) -> Persons:
    """Group row-aligned ``embeddings`` ``(n, 128)`` and ``person_ids`` ``(n,)`` by person."""
    labels = np.asarray(person_ids).astype(str)
    vectors = np.asarray(embeddings, dtype=np.float64).reshape(-1, clustering.ENCODING_SIZE)
    if len(labels) != len(vectors):
        raise ValueError("embeddings and person_ids must have one row per face")
    ids, inverse = np.unique(labels, return_inverse=True)
    rows = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse, minlength=len(ids))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.intp)
    ordered = vectors[rows]
    # One sparse product (person x face indicator): at 100k faces 0.05 s where running sums
    # along the rows (np.cumsum, axis 0) took 0.9-1.2 s and np.add.reduceat 0.1 s.
    indicator = csr_matrix((np.ones(len(inverse)), (inverse, np.arange(len(inverse)))),
                           shape=(len(ids), len(inverse)))
    sums = np.asarray(indicator @ vectors).reshape(len(ids), vectors.shape[1])
    return Persons(ids, ordered, offsets, rows, sums / np.maximum(counts, 1)[:, None])


def _block_sums(persons: Persons, a_start: Ints, a_len: Ints, b_start: Ints,
                b_len: Ints) -> Floats:
    """Sum of the distances between rows ``a_start[k]:+a_len[k]`` and ``b_start[k]:+b_len[k]``
    for every block ``k``, over a flat index of all face pairs cut in chunks, so one huge
    person costs time but never more than :data:`PAIR_CHUNK` pairs of memory."""
    sizes = a_len.astype(np.int64) * b_len
    starts = np.concatenate([[0], np.cumsum(sizes)])
    total = int(starts[-1])
    sums = np.zeros(len(sizes))
    e = persons.embeddings
    for low in range(0, total, PAIR_CHUNK):
        flat = np.arange(low, min(low + PAIR_CHUNK, total), dtype=np.int64)
        block = np.searchsorted(starts, flat, side="right") - 1
        local = flat - starts[block]
        a = a_start[block] + local // b_len[block]
        b = b_start[block] + local % b_len[block]
        diff = e[a] - e[b]
        distances = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        sums += np.bincount(block, weights=distances, minlength=len(sizes))
    return sums


def linkage(persons: Persons, left: Ints, right: Ints) -> Floats:
    """Average-linkage distance between persons ``left[k]`` and ``right[k]`` (float64)."""
    sizes = persons.sizes
    sums = _block_sums(persons, persons.offsets[left], sizes[left], persons.offsets[right],
                       sizes[right])
    return sums / (sizes[left] * sizes[right])


def _pair_keys(persons: Persons, pairs: Iterable[tuple[str, str]]) -> npt.NDArray[np.int64]:
    """Unordered person pairs as ``min * n + max`` over person indices; unknown ids dropped."""
    n = len(persons.ids)
    keys = []
    for a, b in pairs:
        i, j = persons.index_of(a), persons.index_of(b)
        if i is not None and j is not None:
            keys.append(min(i, j) * n + max(i, j))
    return np.array(sorted(set(keys)), dtype=np.int64)


def _best_first(persons: Persons, left: Ints, right: Ints, bounds: Floats, *, limit: int,
                radius: float, best: tuple[Ints, Ints, Floats]) -> tuple[Ints, Ints, Floats]:
    """Merge into ``best`` the ``limit`` closest of these candidate pairs, measuring them in
    order of their lower ``bounds`` and stopping when no bound can beat the worst kept."""
    keep = bounds <= radius
    left, right, bounds = left[keep], right[keep], bounds[keep]
    batch = max(8 * limit, 64)
    while len(bounds):
        # The full sort of a crowded band would cost more than the pairs measured from it.
        take = np.argpartition(bounds, batch)[:batch] if len(bounds) > batch else slice(None)
        distances = linkage(persons, left[take], right[take])
        best = _top(best, (left[take], right[take], distances), limit)
        if len(best[2]) == limit:
            radius = min(radius, float(best[2][-1]))
        rest = np.ones(len(bounds), dtype=bool)
        rest[take] = False
        rest &= bounds <= radius
        left, right, bounds = left[rest], right[rest], bounds[rest]
    return best


def _top(best: tuple[Ints, Ints, Floats], more: tuple[Ints, Ints, Floats], limit: int,
         ) -> tuple[Ints, Ints, Floats]:
    left, right, distances = (np.concatenate([x, y]) for x, y in zip(best, more, strict=True))
    # Ties go to the lower person indices, so one gallery always gives one order.
    order = np.lexsort((right, left, distances))[:limit]
    return left[order], right[order], distances[order]


def _empty() -> tuple[Ints, Ints, Floats]:
    return np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0)


def closest_to(persons: Persons, k: int, *, limit: int, max_distance: float = np.inf,
               excluded_pairs: Collection[tuple[str, str]] = ()) -> tuple[Ints, Floats]:
    """The ``limit`` persons nearest person ``k`` by average linkage, within
    ``max_distance``, closest first: (person indices, distances).

    ``excluded_pairs`` (person id pairs, either order) are never proposed: pairs a user
    marked as different people, or persons sharing a photo.
    """
    bounds = clustering.face_distances(persons.centroids, persons.centroids[k:k + 1])[:, 0]
    bounds = np.maximum(bounds.astype(np.float64) - _SLACK, 0.0)
    others = np.flatnonzero(np.arange(len(bounds)) != k)
    n = len(persons.ids)
    keys = np.minimum(others, k).astype(np.int64) * n + np.maximum(others, k)
    others = others[~np.isin(keys, _pair_keys(persons, excluded_pairs))]
    mine = np.full(len(others), k, dtype=np.intp)
    _, right, distances = _best_first(persons, mine, others, bounds[others], limit=limit,
                                      radius=max_distance, best=_empty())
    keep = distances <= max_distance
    return right[keep], distances[keep]


def duplicate_pairs(persons: Persons, *, limit: int, max_distance: float,
                    excluded_pairs: Collection[tuple[str, str]] = (),
                    ) -> tuple[Ints, Ints, Floats]:
    """The ``limit`` closest pairs of persons by average linkage within ``max_distance``,
    closest first: (left indices, right indices, distances), left < right.

    Centroid distances are computed in row bands of :data:`BAND_CELLS`, so memory stays
    bounded at any gallery size; ``excluded_pairs`` as in :func:`closest_to`.
    """
    n = len(persons.ids)
    excluded = _pair_keys(persons, excluded_pairs)
    centroids = persons.centroids.astype(np.float32)
    band = max(1, BAND_CELLS // max(n, 1))
    best, radius = _empty(), max_distance
    for low in range(0, n, band):
        high = min(low + band, n)
        # Only the columns right of the band's first row: each pair once, half the work;
        # squared, so the square root is paid by the candidates alone.
        squared = clustering.face_distances(centroids[low:high], centroids[low:], squared=True)
        rows, cols = np.nonzero(squared <= (radius + _SLACK) ** 2)
        found = np.sqrt(np.maximum(squared[rows, cols], 0.0)).astype(np.float64) - _SLACK
        rows, cols = rows + low, cols + low
        upper = cols > rows
        rows, cols, found = rows[upper], cols[upper], found[upper]
        if len(excluded):
            fresh = ~np.isin(rows.astype(np.int64) * n + cols, excluded)
            rows, cols, found = rows[fresh], cols[fresh], found[fresh]
        best = _best_first(persons, rows.astype(np.intp), cols.astype(np.intp), found,
                           limit=limit, radius=radius, best=best)
        if len(best[2]) == limit:
            radius = min(radius, float(best[2][-1]))
    keep = best[2] <= max_distance
    return best[0][keep], best[1][keep], best[2][keep]


def naive_pairs(persons: Persons, *, limit: int, max_distance: float) -> tuple[Ints, Ints, Floats]:
    """Every pair measured by average linkage, no bounds: the benchmark's baseline."""
    left, right = np.triu_indices(len(persons.ids), k=1)
    distances = linkage(persons, left.astype(np.intp), right.astype(np.intp))
    keep = distances <= max_distance
    return _top(_empty(), (left[keep], right[keep], distances[keep]), limit)


def own_distances(persons: Persons) -> Floats:
    """Each face's mean distance to the other faces of its person, in the input's row order
    (NaN for a face alone in its person): what assignment would compare with its tolerance
    if the face arrived now."""
    sizes = persons.sizes
    owner = np.repeat(np.arange(len(sizes)), sizes)
    rows = np.arange(len(owner), dtype=np.intp)
    # Each face against its whole person, itself included (distance 0), hence n - 1 below.
    sums = _block_sums(persons, rows, np.ones(len(rows), np.intp), persons.offsets[owner],
                       sizes[owner])
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(sizes[owner] > 1, sums / (sizes[owner] - 1), np.nan)
    result = np.empty(len(mean))
    result[persons.rows] = mean
    return result


def shared_image_pairs(person_ids: npt.ArrayLike, image_ids: npt.ArrayLike
                       ) -> set[tuple[str, str]]:
    """Pairs of persons with faces in one photo: never one person (a merge would refuse)."""
    people = np.asarray(person_ids).astype(str)
    images = np.asarray(image_ids).astype(str)
    if not len(images):
        return set()
    order = np.argsort(images, kind="stable")
    images, people = images[order], people[order]
    starts = np.flatnonzero(np.r_[True, images[1:] != images[:-1]])
    pairs: set[tuple[str, str]] = set()
    for start, end in zip(starts, [*starts[1:], len(images)], strict=True):
        if end - start > 1:  # only group photos cost a loop
            found = sorted({str(x) for x in people[start:end]})
            pairs.update((a, b) for i, a in enumerate(found) for b in found[i + 1:])
    return pairs
