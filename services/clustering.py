"""Group face encodings into persons: encodings in, person labels out.

Distances are Euclidean between dlib's 128-d encodings, as ``face_recognition.face_distance``
gives them. The encodings are the product's: 68-point landmarks (``services.faces.FaceEngine``,
= face_recognition's ``model="large"``), not face_recognition's default 5-point ones, which
put the same face 0.12 away on average (0.03-0.28). On them two photos of one person lie 0.45
apart on average (95th percentile 0.58), two people 0.86 (the closest pair 0.57). Figures are
pairwise F1 / precision (:func:`pairwise_scores`) from ``bench/assignment_rules.py`` on the
labelled dev set (110 photos, 131 faces, 30 people), decoded, resized and encoded as uploads
are: the canonical upload order, 5 shuffled orders, 30 random 60-photo subsets and random
13-person galleries, shuffled (30, plus 100 more in the fine grid: the held-back set's size).

Incremental assignment, :func:`assign_faces` (at upload, one photo at a time)
    A new face is compared with each person *as a whole*: its mean distance to all of the
    person's faces (average linkage between the face and the person). It joins the person with
    the smallest mean if that is <= ``tolerance``, else it starts a new person. The faces of one
    photo are assigned jointly, greedily by increasing distance (the Hungarian assignment chose
    the same in all 66 runs), so two never join one person. Default :data:`DEFAULT_TOLERANCE` =
    0.59, on the precision side of the plateau 0.585-0.605 (F1 >= 0.97 in every kind of run): F1
    0.986 canonical, 0.984 over shuffles, 0.973 over photo subsets, 0.976 / 0.979 over 30 / 100
    13-person galleries, precision >= 0.994 in each. Up to 0.58 precision is >= 0.999 but F1
    falls to 0.963-0.973 over subsets and galleries; at 0.60 precision is 0.988 over subsets,
    and at 0.61 two persons of the canonical order merge (F1 0.954). By gallery size (8, 13, 20,
    30 people) F1 stays 0.978-0.986, precision >= 0.998. The seed's rule (the person of the
    nearest face, <= 0.6) chains look-alikes: F1 0.956 and precision 0.940 canonical, precision
    0.952 over subsets; unlike on 5-point encodings its precision does not fall steadily with
    gallery size. On these encodings the nearest face at 0.565-0.57 scores higher (F1 0.986
    canonical, 0.993 shuffles, 0.976 subsets, 0.983 over 100 galleries, precision 1.000) but on
    a ledge: precision falls at 0.575 (0.985 over shuffles), and on 5-point encodings it never
    passes 0.942 canonical precision from 0.55 to 0.58 where the mean keeps >= 0.994; one near
    face suffices, so its risk grows with faces per person, which this set (<= 10) cannot show.
    Centroid tops out at 0.969 (canonical, 0.56) with precision falling to 0.979 at 30 people;
    the mean of the k nearest faces (k = 3, 5) is mixed against the plain mean (k = 3 at 0.58:
    F1 0.986 canonical, 0.991 shuffles, 0.966 subsets, 0.985 galleries).
    Misses (recall) are what re-clustering repairs.

Re-clustering, :func:`cluster_faces` (all faces at once)
    Average-linkage agglomerative clustering cut at ``eps``: two groups merge while the mean
    distance between their faces is <= ``eps`` (the rule above, between groups). Default
    :data:`DEFAULT_EPS` = 0.61, inside a flat top: F1 1.000 on the full set from 0.595 to 0.64
    (0.986 at 0.59), 1.000 over 30 and 100 13-person galleries from 0.595 to 0.63, >= 0.986
    over photo subsets from 0.595 to 0.63 with its best, 0.992 (precision 0.997), at 0.61;
    above 0.61 precision over subsets falls (0.989 at 0.62, 0.949 at 0.64). Never below the
    incremental result on the full set (canonical +0.014, every shuffle >= +0.006) nor on any
    of the 130 13-person galleries; lower in 1 of 30 photo subsets (-0.030), which keeps
    compreface_f's one face 0.590 from Leonard's in group_1.jpg, a pair the incremental order
    left apart; from 0.615 up, lower in 4-7 subsets.
    DBSCAN (single linkage) reaches 1.000 at eps 0.56 but falls to 0.960 at 0.58 and 0.907 at
    the seed's 0.60; chinese whispers 0.986 at 0.56, 0.960 at 0.58; HDBSCAN 0.988 / 0.977 at
    min_cluster_size 2 / 3 and 0.947 over photo subsets.
    Constraints are part of the linkage, not a repair afterwards: faces of one image never
    link, nor faces fixed to different persons (cannot-link); faces fixed to one person start
    as one group (must-link; if a user fixed two faces of one image to one person, that wins).
    Scale: two groups can average <= ``eps`` only if some pair of their faces is within
    ``eps``, so each component of the ``eps``-radius graph is clustered on its own with no
    loss; pairs are found in float32 row bands of 64 MB (50,000 synthetic faces: 3-9 s on 2
    shared cores, 250 MB; one 49,000-face component: 22 s, 500 MB). A component over
    :data:`MAX_BLOCK` faces is cut into graph-local blocks (reverse Cuthill-McKee order),
    fixed persons kept whole; each block makes only its surest merges (mean <= 0.8 ``eps``),
    then neighbouring groups merge by exact mean distance, smallest first, until no allowed
    pair is <= ``eps``. On the dev set, blocks of 5 to 40 faces give the one-matrix partition,
    with and without fixed faces.
    ``min_samples`` (default 1 = off): a group smaller than this and holding no fixed face is
    noise; each of its faces moves to the group of its nearest face within ``eps`` if that
    group is not noise and has no face of its image, else it stays. It helps only where
    ``eps`` is too tight (0.56: F1 0.958 -> 1.000) and costs precision at 0.61 (F1 1.000 ->
    0.985, precision 0.970).

Matching, :func:`match_clusters_to_persons`: each new group keeps the old person holding most
of its faces (greedy by overlap; ties to the smaller id, which for ObjectIds is the older
person), each old person at most once; groups with fixed faces keep their fixed person.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Collection
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy.cluster.hierarchy import fcluster
from scipy.cluster.hierarchy import linkage
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.sparse.csgraph import reverse_cuthill_mckee
from scipy.spatial.distance import pdist

__all__ = [
    "DEFAULT_EPS",
    "DEFAULT_MIN_SAMPLES",
    "DEFAULT_TOLERANCE",
    "MAX_BLOCK",
    "assign_faces",
    "cluster_faces",
    "match_clusters_to_persons",
    "pairwise_scores",
]

DEFAULT_TOLERANCE = 0.59
DEFAULT_EPS = 0.61
DEFAULT_MIN_SAMPLES = 1
#: Most faces clustered with one dense distance matrix (2,000 faces: 16 MB of distances).
MAX_BLOCK = 2000

Labels = npt.NDArray[np.intp]
# Stands for "cannot link" in scipy's linkage, which wants finite distances: one such pair
# lifts any mean inside a block of MAX_BLOCK faces above 1e12 / MAX_BLOCK**2 = 2.5e5.
_APART = 1e12
# Pairs within a radius are found with float32 products in row bands of at most this many
# cells (64 MB); the slack keeps pairs that float32 rounding puts just past the radius.
_BAND_CELLS = 1 << 24
_SLACK = 1e-4
# Inside a block a group may miss a better partner in the next block: blocks only make merges
# this sure (mean <= 0.8 eps) and leave the rest to the exact, global merge order.
_BLOCK_CUT = 0.8


def assign_faces(
    query: npt.ArrayLike,
    embeddings: npt.ArrayLike,
    person_ids: Sequence[str] | np.ndarray,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    forbidden: Sequence[Collection[str]] | None = None,
) -> list[tuple[str | None, float | None]]:
    """Choose a person per face of one photo: ``(person_id, mean distance)``, or ``(None, None)``.

    ``forbidden[j]`` lists the persons face ``j`` may not join. Pass ``person_ids`` as a numpy
    array when calling often: turning 100,000 Python strings into one costs ~8 ms.
    """
    q = np.atleast_2d(np.asarray(query, dtype=np.float64))
    result: list[tuple[str | None, float | None]] = [(None, None)] * len(q)
    stored = np.asarray(embeddings, dtype=np.float32)
    if len(q) == 0 or stored.size == 0:
        return result
    stored = stored.reshape(len(stored), -1)
    pids = np.asarray(person_ids)
    if len(pids) != len(stored):
        raise ValueError("person_ids needs one entry per stored face")
    if forbidden is not None and len(forbidden) != len(q):
        raise ValueError("forbidden needs one entry per query face")
    # A person's mean can be <= tolerance only if one of its faces is: only those count.
    near = _squared_distances(q.astype(np.float32), stored) <= (tolerance + _SLACK) ** 2
    candidates = np.flatnonzero(near.any(axis=0))
    if candidates.size == 0:
        return result
    persons = np.unique(pids[candidates])
    faces = np.flatnonzero(np.isin(pids, persons))
    code = np.searchsorted(persons, pids[faces])
    dist = np.sqrt(_squared_distances(q, stored[faces].astype(np.float64)))
    counts = np.bincount(code, minlength=len(persons))
    mean = np.stack([np.bincount(code, weights=row, minlength=len(persons)) for row in dist])
    mean /= counts
    for j, banned in enumerate(forbidden or ()):
        if banned:
            mean[j, np.isin(persons, list(banned))] = np.inf
    face_done = np.zeros(len(q), dtype=bool)
    person_done = np.zeros(len(persons), dtype=bool)
    for flat in np.argsort(mean, axis=None, kind="stable"):
        j, p = divmod(int(flat), len(persons))
        if mean[j, p] > tolerance:
            break
        if not face_done[j] and not person_done[p]:
            face_done[j] = person_done[p] = True
            result[j] = (str(persons[p]), float(mean[j, p]))
    return result


def cluster_faces(
    embeddings: npt.ArrayLike,
    image_ids: Sequence[str] | np.ndarray,
    *,
    eps: float = DEFAULT_EPS,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    fixed: Sequence[str | None] | None = None,
) -> Labels:
    """Group all faces into persons by constrained average linkage; labels 0..k-1 by first face.

    ``fixed[i]`` is the person the user fixed face ``i`` to, or None: faces fixed to one
    person share a label, faces fixed to different persons never do, nor faces of one image.
    """
    x = np.asarray(embeddings, dtype=np.float32)
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=np.intp)
    x = x.reshape(n, -1)
    image = np.unique(np.asarray(image_ids), return_inverse=True)[1].reshape(n)
    anchor = _anchor_codes(fixed, n)
    rows, cols, dist = _radius_pairs(x, eps)
    # Must-link: chain the faces of each fixed person, whatever their distance.
    fixed_faces = np.flatnonzero(anchor >= 0)
    fixed_faces = fixed_faces[np.argsort(anchor[fixed_faces], kind="stable")]
    same = anchor[fixed_faces[1:]] == anchor[fixed_faces[:-1]]
    a = np.concatenate([rows, fixed_faces[:-1][same]])
    b = np.concatenate([cols, fixed_faces[1:][same]])
    graph = csr_matrix((np.ones(2 * len(a)), (np.r_[a, b], np.r_[b, a])), shape=(n, n))
    n_comp, comp = connected_components(graph, directed=False)
    sizes = np.bincount(comp, minlength=n_comp)
    labels = np.full(n, -1, dtype=np.intp)
    alone = sizes[comp] == 1
    labels[alone] = np.arange(int(alone.sum()))
    next_label = int(alone.sum())
    order = np.argsort(comp, kind="stable")
    for members in np.split(order, np.cumsum(sizes)[:-1]):
        if len(members) < 2:
            continue
        if len(members) <= MAX_BLOCK:
            sub = _linkage_block(x[members], image[members], anchor[members], eps)
        else:
            sub = _cluster_large(x[members], image[members], anchor[members],
                                 graph[members][:, members], eps)
        labels[members] = sub + next_label
        next_label += int(sub.max()) + 1
    if min_samples > 1:
        labels = _absorb_small(labels, rows, cols, dist, image, anchor, min_samples, eps)
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    return np.argsort(np.argsort(first))[inverse.reshape(n)].astype(np.intp)


def match_clusters_to_persons(
    labels: npt.ArrayLike,
    current_person_ids: Sequence[str | None],
    fixed: Sequence[str | None] | None = None,
) -> tuple[dict[int, str | None], dict[int, list[str]]]:
    """Map each cluster to an old person id (None: a new person) and list the persons merged in.

    An old person that keeps no cluster is reported as merged into the cluster holding most
    of its faces (ties to the smaller label).
    """
    lab = [int(v) for v in np.asarray(labels).ravel()]
    if len(current_person_ids) != len(lab):
        raise ValueError("current_person_ids needs one entry per face")
    mapping: dict[int, str | None] = dict.fromkeys(sorted(set(lab)))
    used: set[str] = set()
    for label, person in zip(lab, [None] * len(lab) if fixed is None else fixed, strict=True):
        if person is None or mapping[label] == person:
            continue
        if mapping[label] is not None or person in used:
            raise ValueError(f"fixed person {person} is split or shares a cluster")
        mapping[label] = person
        used.add(person)
    pairs = zip(lab, current_person_ids, strict=True)
    overlap = Counter((label, p) for label, p in pairs if p is not None)
    for (label, person), _ in sorted(overlap.items(), key=lambda kv: (-kv[1], kv[0][1], kv[0][0])):
        if mapping[label] is None and person not in used:
            mapping[label] = person
            used.add(person)
    merged: dict[int, list[str]] = {label: [] for label in mapping}
    home: dict[str, tuple[int, int]] = {}
    for (label, person), count in overlap.items():
        if person not in used and (-count, label) < home.get(person, (1, 0)):
            home[person] = (-count, label)
    for person in sorted(home):
        merged[home[person][1]].append(person)
    return mapping, merged


def pairwise_scores(pred: npt.ArrayLike, true: npt.ArrayLike) -> tuple[float, float, float]:
    """Pairwise precision, recall and F1: a face pair is positive when it shares a label."""
    p = np.unique(np.asarray(pred), return_inverse=True)[1].ravel()
    t = np.unique(np.asarray(true), return_inverse=True)[1].ravel()
    if len(p) != len(t):
        raise ValueError("pred and true differ in length")
    if len(p) == 0:
        return 1.0, 1.0, 1.0

    def pairs(codes: np.ndarray) -> int:
        counts = np.bincount(codes)
        return int((counts * (counts - 1) // 2).sum())

    both = pairs(np.unique(p * (int(t.max()) + 1) + t, return_inverse=True)[1].ravel())
    predicted, actual = pairs(p), pairs(t)
    # No pair claimed means nothing claimed wrongly: precision 1 (and likewise recall).
    precision = both / predicted if predicted else 1.0
    recall = both / actual if actual else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of ``a`` and ``b`` (one matrix product)."""
    d2 = a @ b.T
    d2 *= -2
    d2 += np.einsum("ij,ij->i", a, a)[:, None]
    d2 += np.einsum("ij,ij->i", b, b)[None, :]
    return np.maximum(d2, 0, out=d2)


def _anchor_codes(fixed: Sequence[str | None] | None, n: int) -> Labels:
    """Integer code of each face's fixed person, -1 where none."""
    if fixed is None:
        return np.full(n, -1, dtype=np.intp)
    if len(fixed) != n:
        raise ValueError("fixed needs one entry per face")
    table: dict[str, int] = {}
    codes = [-1 if f is None else table.setdefault(f, len(table)) for f in fixed]
    return np.asarray(codes, dtype=np.intp)


def _radius_pairs(x: np.ndarray, radius: float) -> tuple[Labels, Labels, np.ndarray]:
    """Face pairs ``i < j`` within ``radius`` and their distances, in bounded row bands."""
    n = len(x)
    band = max(1, _BAND_CELLS // n)
    limit = (radius + _SLACK) ** 2
    sq = np.einsum("ij,ij->i", x, x)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for start in range(0, n, band):
        # |a|^2 + |b|^2 - 2ab <= limit, with |a|^2 moved to the right: two passes, not four.
        part = x[start:start + band] @ x[start:].T
        part *= -2
        part += sq[None, start:]
        rhs = limit - sq[start:start + band]
        flat = np.flatnonzero(part <= rhs[:, None])
        i, j = np.divmod(flat, n - start)
        keep = j > i  # the band's columns start at its first row: j > i is the upper triangle
        i, j = i[keep], j[keep]
        d2 = part[i, j] + sq[start + i]
        found.append((i + start, j + start, np.sqrt(np.maximum(d2, 0))))
    rows, cols, dist = (np.concatenate(parts) for parts in zip(*found, strict=True))
    return rows.astype(np.intp), cols.astype(np.intp), dist


def _linkage_block(x: np.ndarray, image: Labels, anchor: Labels, eps: float) -> Labels:
    """Exact constrained average linkage of a few thousand faces at most; labels from 0."""
    d = pdist(x.astype(np.float64))
    i, j = np.triu_indices(len(x), 1)  # pdist's pair order
    both_fixed = (anchor[i] >= 0) & (anchor[j] >= 0)
    d[(image[i] == image[j]) | (both_fixed & (anchor[i] != anchor[j]))] = _APART
    d[both_fixed & (anchor[i] == anchor[j])] = 0.0  # after _APART: fixed wins over same image
    return (fcluster(linkage(d, "average"), eps, criterion="distance") - 1).astype(np.intp)


def _cluster_large(
    x: np.ndarray, image: Labels, anchor: Labels, graph: csr_matrix, eps: float
) -> Labels:
    """Average linkage of a component too large for one matrix: exact blocks, then merges."""
    # Each fixed person starts as one group, as its zero distances make it in one matrix;
    # the other faces are cut into graph-local blocks.
    _, init = np.unique(anchor, return_inverse=True)
    init = init.reshape(len(x)).astype(np.intp)
    offset = int(init.max()) + 1
    order = reverse_cuthill_mckee(csr_matrix(graph), symmetric_mode=True)
    order = order[anchor[order] < 0]
    for block in np.array_split(order, -(-len(order) // MAX_BLOCK)) if len(order) else []:
        if len(block) == 1:
            sub = np.zeros(1, dtype=np.intp)
        else:
            sub = _linkage_block(x[block], image[block], anchor[block], eps * _BLOCK_CUT)
        init[block] = sub + offset
        offset += int(sub.max()) + 1
    rows, cols = graph.nonzero()
    return _merge_groups(x.astype(np.float64), image, anchor, init, rows, cols, eps)


def _merge_groups(
    x: np.ndarray, image: Labels, anchor: Labels, init: Labels,
    rows: np.ndarray, cols: np.ndarray, eps: float,
) -> Labels:
    """Merge neighbouring groups by exact mean distance until no allowed pair is <= eps."""
    ids, counts = np.unique(init, return_counts=True)
    by_group = np.split(np.argsort(init, kind="stable"), np.cumsum(counts)[:-1])
    members = dict(zip(ids.tolist(), by_group, strict=True))
    images = {g: set(image[m].tolist()) for g, m in members.items()}
    anchors = {g: set(anchor[m].tolist()) - {-1} for g, m in members.items()}
    sums: dict[int, dict[int, float]] = {g: {} for g in members}
    version = dict.fromkeys(members, 0)
    heap: list[tuple[float, int, int, int, int]] = []

    def cross(a: int, b: int) -> float:
        xa, xb = x[members[a]], x[members[b]]
        step = max(1, _BAND_CELLS // len(xb))
        return sum(float(np.sqrt(_squared_distances(xa[s:s + step], xb)).sum())
                   for s in range(0, len(xa), step))

    def offer(a: int, b: int) -> None:
        if images[a] & images[b] or (anchors[a] and anchors[b] and anchors[a] != anchors[b]):
            return
        mean = sums[a][b] / (len(members[a]) * len(members[b]))
        if mean <= eps:
            heapq.heappush(heap, (mean, a, b, version[a], version[b]))

    def merge(a: int, b: int) -> None:
        for c in (set(sums[a]) | set(sums[b])) - {a, b}:
            total = sums[a].pop(c, None)
            total = cross(a, c) if total is None else total
            other = sums[b].pop(c, None)
            total += cross(b, c) if other is None else other
            sums[c].pop(b, None)
            sums[a][c] = sums[c][a] = total
        sums[a].pop(b, None)
        del sums[b], version[b]
        members[a] = np.concatenate([members[a], members.pop(b)])
        images[a] |= images.pop(b)
        anchors[a] |= anchors.pop(b)
        version[a] += 1
        for c in sums[a]:
            offer(a, c)

    ga, gb = init[rows], init[cols]
    for a, b in set(zip(np.minimum(ga, gb).tolist(), np.maximum(ga, gb).tolist(), strict=True)):
        if a != b:
            sums[a][b] = sums[b][a] = cross(a, b)
            offer(a, b)
    while heap:
        _, a, b, va, vb = heapq.heappop(heap)
        if version.get(a) == va and version.get(b) == vb:
            merge(a, b)
    labels = np.empty(len(x), dtype=np.intp)
    for label, m in enumerate(members.values()):
        labels[m] = label
    return labels


def _absorb_small(
    labels: Labels, rows: Labels, cols: Labels, dist: np.ndarray,
    image: Labels, anchor: Labels, min_samples: int, eps: float,
) -> Labels:
    """Move faces of groups below ``min_samples`` (no fixed face) to their nearest face's group."""
    labels = labels.copy()
    sizes = np.bincount(labels)
    small = sizes < min_samples
    small[labels[anchor >= 0]] = False
    if not small.any():
        return labels
    a, b, d = np.r_[rows, cols], np.r_[cols, rows], np.r_[dist, dist]
    keep = small[labels[a]] & ~small[labels[b]] & (d <= eps)
    a, b, d = a[keep], b[keep], d[keep]
    taken: dict[int, set[int]] = {}
    in_target = np.isin(labels, labels[b])
    for label, img in zip(labels[in_target].tolist(), image[in_target].tolist(), strict=True):
        taken.setdefault(label, set()).add(img)
    moved: set[int] = set()
    for k in np.lexsort((d, a)).tolist():
        face, target = int(a[k]), int(labels[b[k]])
        if face in moved:
            continue
        if image[face] not in taken[target]:
            taken[target].add(int(image[face]))
            labels[face] = target
            moved.add(face)
    return labels
