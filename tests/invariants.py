"""The gallery's invariants, checked against the raw collections."""

from __future__ import annotations

from collections import defaultdict

from services.storage import Store


def check_invariants(store: Store) -> None:
    """Raise AssertionError naming the first broken invariant.

    Every face's person and image exist; a person's stored counts equal the faces and distinct
    images that point at it; an image's face_count equals its faces; no person is empty; two
    faces of one image never share a person; no two images share a number; no upload's
    write lease is left; a person's thumbnail is a face that exists (or none yet: the best is
    then shown); no operation's intent is left (each ends its own, repair those of the
    dead); corrections name faces and persons that exist, and no face is in a person it
    was rejected from.
    """
    db = store.db
    persons = {p["_id"]: p for p in db.persons.find({})}
    images = {i["_id"]: i for i in db.images.find({}, {"face_count": 1, "status": 1,
                                                         "seq": 1})}
    seqs = [i.get("seq") for i in images.values()]
    assert len(seqs) == len(set(seqs)), "two images share one seq number"
    assert not list(db.upload_leases.find({})), "an upload lease was left behind"
    left = [i.get("op") for i in db.intents.find({})]
    assert not left, f"intents left behind: {left}"
    faces = list(db.faces.find({}, {"person_id": 1, "image_id": 1, "is_manual_assignment": 1}))
    faces_by_person: dict[str, list[dict]] = defaultdict(list)
    faces_by_image: dict[str, list[dict]] = defaultdict(list)
    for face in faces:
        assert face["person_id"] in persons, f"face {face['_id']} points at a missing person"
        assert face["image_id"] in images, f"face {face['_id']} points at a missing image"
        faces_by_person[face["person_id"]].append(face)
        faces_by_image[face["image_id"]].append(face)
    face_ids = {f["_id"] for f in faces}
    for person_id, person in persons.items():
        own = faces_by_person.get(person_id, [])
        assert own, f"person {person_id} has no faces"
        assert person.get("face_count") == len(own), (
            f"person {person_id} face_count {person.get('face_count')} != {len(own)}")
        image_ids = {f["image_id"] for f in own}
        assert person.get("image_count") == len(image_ids), (
            f"person {person_id} image_count {person.get('image_count')} != {len(image_ids)}")
        thumbnail = person.get("thumbnail_face_id", "")
        # Resolvable, not necessarily its own: two merges racing for one face may leave it
        # with the person it went to last (it loads; the next change of that person fixes it).
        assert thumbnail == "" or thumbnail in face_ids, (
            f"person {person_id} thumbnail {thumbnail} is no face")
        manual = sum(1 for f in own if f.get("is_manual_assignment"))
        assert person.get("manual_face_count", 0) == manual, (
            f"person {person_id} manual_face_count {person.get('manual_face_count')} != {manual}")
    for image_id, image in images.items():
        assert image.get("status") == "ready", f"image {image_id} left in {image.get('status')}"
        own = faces_by_image.get(image_id, [])
        assert image.get("face_count") == len(own), (
            f"image {image_id} face_count {image.get('face_count')} != {len(own)}")
        person_ids = [f["person_id"] for f in own]
        assert len(person_ids) == len(set(person_ids)), f"image {image_id}: two faces, one person"
    where = {f["_id"]: f["person_id"] for f in faces}
    for record in db.rejections.find({}):
        assert record["face_id"] in where, f"rejection names missing face {record['face_id']}"
        assert record["person_id"] in persons, (
            f"rejection names missing person {record['person_id']}")
        assert where[record["face_id"]] != record["person_id"], (
            f"face {record['face_id']} is in the person it was rejected from")
    for record in db.not_same.find({}):
        assert record["a"] in persons and record["b"] in persons, (
            f"not-same names a missing person: {record['a']}, {record['b']}")
    # People data imported for a photo waits only while the photo is not here: its upload
    # applies it (issue 16, services/people_import.py).
    shas = {i.get("sha256") for i in db.images.find({}, {"sha256": 1})}
    waiting = [d["_id"] for d in db.pending_imports.find({}, {"_id": 1}) if d["_id"] in shas]
    assert not waiting, f"imported people data still waits for photos here: {waiting}"
    _check_runs(store)
    blob_ids = {b["_id"] for b in db.image_blobs.find({}, {"_id": 1})}
    assert blob_ids == set(images), "image blobs and images differ"
    crop_ids = {c["_id"] for c in db.face_crops.find({}, {"_id": 1})}
    assert crop_ids == {f["_id"] for f in faces}, "face crops and faces differ"
    # Every blob document's bytes are where it says (each store lists what it holds).
    held = {kind: {key for key, _ in store.blob_backend(kind).keys()}
            for kind in store.blob_kinds()}
    for kind, keys in store.named_blob_keys().items():
        missing = keys - held.get(kind, keys if kind == "inline" else set())
        assert not missing, f"blob documents name bytes missing from {kind}: {sorted(missing)}"
    _check_provenance(store)


# -- provenance (issue 16) ------------------------------------------------------------------

#: services.people.ASSIGNED_VIA; kinds a face's assigned_via may name.
_VIAS = {"upload", "move", "merge", "confirm", "drawn", "import", "recluster", "rollback"}
#: Kinds that are always the user's hand.
_BY_HAND = {"move", "confirm", "drawn"}


def _check_provenance(store: Store) -> None:
    """Every face says how it got its person in words the API knows, and a hand's kind of
    assignment is manual."""
    for face in store.db.faces.find({}, {"assigned_via": 1, "assigned_by": 1,
                                         "is_manual_assignment": 1}):
        via = face.get("assigned_via")
        if via is None:
            continue  # stored before provenance: read as upload or move
        assert via in _VIAS, f"face {face['_id']} assigned_via {via!r}"
        if via in _BY_HAND:
            assert face.get("is_manual_assignment") and face.get("assigned_by") == "manual", (
                f"face {face['_id']} assigned_via {via} but not manual")


def _check_runs(store: Store) -> None:
    """Re-clustering runs (issue 16): none left running (repair marks a killed one
    interrupted), a run's records belong to a run, and a rollback names a run it undid."""
    db = store.db
    runs = {r["number"]: r for r in db.cluster_runs.find({})}
    for number, run in runs.items():
        assert run["status"] in ("done", "interrupted"), f"run {number} left {run['status']}"
        if run["kind"] == "rollback":
            undone = runs.get(run["rollback_of"])
            assert undone is not None, f"rollback {number} of missing run {run['rollback_of']}"
            if run["status"] == "done":
                assert undone.get("rolled_back_by") == number, (
                    f"run {undone['number']} does not name its rollback {number}")
    for name in ("cluster_run_moves", "cluster_run_persons"):
        for doc in db[name].find({}, {"run": 1}):
            assert doc["run"] in runs, f"{name} {doc['_id']} of missing run {doc['run']}"
