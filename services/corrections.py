"""Corrections that stick: "not this person" (a rejection) and "not the same people".

A rejection is a pair (face, person): the face left that person by hand and no algorithm may
put it back. A not-same record is a pair of persons the user says are different people. Both
are kept in their own collections (:class:`~services.storage.Store`) and read by

* re-clustering (:func:`constraints_for`), where they enter the clustering as cannot-link
  pairs and the matching of clusters to persons as forbidden persons;
* upload (:func:`forbidden_for_new_faces`): a new face that nearly duplicates a rejected face
  (within :data:`TWIN_DISTANCE`) is not assigned to the persons that face was rejected from;
* merges (:func:`check_merge`): a merge that would put a face back into a person it was
  rejected from is refused (409, even with ``force``: forget the rejection first); one
  joining persons marked not-same needs ``force`` and then forgets that record.

A record names ids that are never reused: when its face or person is deleted it is deleted
too (:meth:`Store.delete_person`, :meth:`Store.delete_faces`); a merge, and a re-clustering
that empties a person, carry the records of the persons emptied over to the person that
receives (most of) their faces; a reset wipes them.
"""

from __future__ import annotations

import typing as t
from collections import defaultdict
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from errors import ConflictError
from errors import DocumentNotFoundError
from errors import ValidationError
from services import bookkeeping
from services import people
from services import storage
from services.storage import Store

if t.TYPE_CHECKING:  # pragma: no cover
    from services.face_index import FaceIndex

Doc = dict[str, t.Any]

#: A new face this close to a stored face is taken for a copy of the same picture (re-encoded,
#: scaled, mirrored) and inherits its rejections; two different photos of one person are
#: usually farther apart (0.3-0.5). Chosen, not yet measured on the dev set.
TWIN_DISTANCE = 0.25


# -- not this person ----------------------------------------------------------------------

def reject_face(store: Store, face_id: str, person_id: str | None = None) -> Doc:
    """Take a face out of its person into a new one, and never let it back into that person.

    :raise ValidationError: ``person_id`` is not the face's person (400).
    :raise DocumentNotFoundError: unknown face (404).
    :raise ConflictError: a re-clustering is running (409).
    """
    face = store.get_face(face_id)
    rejected = face["person_id"] if person_id is None else storage.check_id(person_id,
                                                                            "person_id")
    if rejected != face["person_id"]:
        raise ValidationError("The face is not in this person; only its own person can be "
                              "rejected", details={"face_id": face["_id"],
                                                   "person_id": rejected,
                                                   "current_person_id": face["person_id"]})
    bookkeeping.refuse_during_recluster(store)
    # Recorded before the move, so a moved face never lacks its record. The record and the
    # move (itself journalled) are several writes: a kill between them leaves this intent,
    # whose repair forgets a rejection whose face is still in the person (the request was
    # never acknowledged) and recounts the persons, a new one included.
    with bookkeeping.journal(store, "reject", faces=[face["_id"]], persons=[rejected]):
        store.add_rejection(face["_id"], rejected)
        moved = people.move_face_to_new(store, face["_id"])
    return {"face_id": face["_id"], "rejected_person_id": rejected,
            "new_person_id": moved["new_person_id"],
            "new_person_name": moved["new_person_name"],
            # An emptied person is deleted, and its records with it.
            "source_person_deleted": moved["source_person_deleted"],
            "rejected_from": store.rejections_of_face(face["_id"])}


def forget_rejection(store: Store, face_id: str, person_id: str | None = None) -> Doc:
    """Forget that a face is not ``person_id`` (every rejection of the face when None).

    :raise DocumentNotFoundError: unknown face, or no such rejection (404).
    """
    face = store.get_face(face_id)
    if person_id is None:
        persons = store.rejections_of_face(face["_id"])
    else:
        persons = [storage.check_id(person_id, "person_id")]
        if persons[0] not in store.rejections_of_face(face["_id"]):
            raise DocumentNotFoundError(
                f"Face {face['_id']} was not rejected from person {persons[0]}",
                details={"face_id": face["_id"], "person_id": persons[0]})
    # One write per record and nothing derived from them: a kill part way leaves some
    # forgotten and some not, each a state the user could have asked for, so no intent.
    for person in persons:
        store.remove_rejection(face["_id"], person)
    return {"face_id": face["_id"], "forgotten": persons,
            "rejected_from": store.rejections_of_face(face["_id"])}


def forget_on_move(store: Store, face_id: str, person_id: str) -> None:
    """A hand move into a person the face was rejected from is the user's latest word."""
    store.remove_rejection(face_id, person_id)


# -- not the same people ------------------------------------------------------------------

def mark_not_same(store: Store, person_id: str, other_id: str) -> Doc:
    """Record that two persons are different people.

    :raise ValidationError: a person and itself (400).
    :raise DocumentNotFoundError: either person unknown (404).
    """
    person, other = _pair(store, person_id, other_id)
    store.add_not_same(person, other)
    return {"person_id": person, "other_person_id": other,
            "not_same": store.not_same_of(person)}


def forget_not_same(store: Store, person_id: str, other_id: str) -> Doc:
    """Forget that two persons are different people.

    :raise DocumentNotFoundError: either person unknown, or nothing recorded (404).
    """
    person, other = _pair(store, person_id, other_id)
    if not store.remove_not_same(person, other):
        raise DocumentNotFoundError(
            f"Persons {person} and {other} are not marked as different people",
            details={"person_id": person, "other_person_id": other})
    return {"person_id": person, "other_person_id": other,
            "not_same": store.not_same_of(person)}


def _pair(store: Store, person_id: str, other_id: str) -> tuple[str, str]:
    # Looked up first, as a merge into itself: an unknown id is a 404 whatever it pairs with.
    person = store.get_person(person_id)["_id"]
    other = store.get_person(storage.check_id(other_id, "other_person_id"))["_id"]
    if person == other:
        raise ValidationError("A person cannot be different from itself",
                              details={"field": "other_person_id"})
    return person, other


# -- what the algorithms and merges must honour -------------------------------------------

def constraints_for(store: Store, faces: list[Doc]
                    ) -> tuple[list[tuple[list[int], list[int]]], list[set[str]]]:
    """Cannot-link groups of face indices, and the persons each face may not join.

    ``faces`` are the documents being re-clustered (``_id`` and ``person_id``). A face
    rejected from P is kept apart from every face now in P, and may not become P; the faces
    of two persons marked not-same are kept apart from each other.
    """
    position = {f["_id"]: i for i, f in enumerate(faces)}
    members: dict[str, list[int]] = defaultdict(list)
    for i, face in enumerate(faces):
        members[face["person_id"]].append(i)
    cannot_link: list[tuple[list[int], list[int]]] = []
    forbidden: list[set[str]] = [set() for _ in faces]
    for face_id, person_id in store.all_rejections():
        i = position.get(face_id)
        if i is None:
            continue  # uploaded or deleted since the faces were read
        forbidden[i].add(person_id)
        if members.get(person_id):
            cannot_link.append(([i], members[person_id]))
    for a, b in store.all_not_same():
        in_a, in_b = members.get(a, []), members.get(b, [])
        for i in in_a:
            forbidden[i].add(b)
        for i in in_b:
            forbidden[i].add(a)
        if in_a and in_b:
            cannot_link.append((in_a, in_b))
    return cannot_link, forbidden


def forbidden_for_new_faces(store: Store, index: FaceIndex,
                            encodings: Iterable[npt.ArrayLike]) -> list[set[str]] | None:
    """Per new face, the persons it may not join: those its nearly identical stored face
    (its nearest within :data:`TWIN_DISTANCE`) was rejected from. None when nothing was."""
    if not store.count("rejections"):
        return None
    forbidden: list[set[str]] = []
    for encoding in encodings:
        twin = index.nearest(np.asarray(encoding), TWIN_DISTANCE, limit=1)
        forbidden.append(set(store.rejections_of_face(twin[0][0])) if twin else set())
    return forbidden


def check_merge(store: Store, person_ids: list[str], *, force: bool) -> list[tuple[str, str]]:
    """Refuse a merge of ``person_ids`` that the corrections forbid; returns the not-same
    pairs ``force`` overrides (the merge forgets them).

    :raise ConflictError: a face of one of them was rejected from another (always), or two
        of them are marked not-same and ``force`` is off (409).
    """
    group = set(person_ids)
    for person_id in person_ids:
        for face_id in store.rejections_from_person(person_id):
            face = next(iter(store.faces_with_ids([face_id])), None)
            if face is not None and face["person_id"] in group:
                raise ConflictError(
                    f"Face {face_id} was rejected from person {person_id}; forget the "
                    "rejection (DELETE /faces/{id}/reject) or move the face before merging",
                    details={"face_id": face_id, "person_id": person_id})
    pairs = sorted({tuple(sorted((p, o))) for p in person_ids for o in store.not_same_of(p)
                    if o in group})
    if pairs and not force:
        a, b = pairs[0]
        raise ConflictError(f"Persons {a} and {b} are marked as different people; merge "
                            "with force=true to override", details={"person_ids": [a, b]})
    return [(a, b) for a, b in pairs]


def pass_on(store: Store, person_id: str, heir_id: str) -> None:
    """Give ``heir_id`` the records of a person re-clustering is about to delete because
    most of its faces went to the heir, as a merge would; a record the heir cannot hold (its
    face is in the heir now, or the heir is the other person) is dropped with the person."""
    for face_id in store.rejections_from_person(person_id):
        face = next(iter(store.faces_with_ids([face_id])), None)
        if face is not None and face["person_id"] != heir_id:
            store.add_rejection(face_id, heir_id)
    for other in store.not_same_of(person_id):
        if other != heir_id:
            store.add_not_same(heir_id, other)


def carry_over(store: Store, target_id: str, source_ids: list[str],
               overridden: list[tuple[str, str]]) -> None:
    """Give the merge's target the records of the persons merged into it, before those are
    deleted (their deletion deletes their records); forget the pairs ``force`` overrode."""
    for a, b in overridden:
        store.remove_not_same(a, b)
    group = {target_id, *source_ids}
    for source in source_ids:
        for face_id in store.rejections_from_person(source):
            store.add_rejection(face_id, target_id)
        for other in store.not_same_of(source):
            if other not in group:
                store.add_not_same(target_id, other)
