"""Every operation killed after each of its database writes, then the gallery restarted and
repaired: nothing acknowledged is lost and no ghost is left (issue 13).

The kill is :class:`services.storage.WriteFault`: after write N every further write raises
:class:`~services.storage.SimulatedCrash`, in this process, so the same store (mongomock too)
is then opened by a new app as a restarted server would. One test kills a real process with
``os._exit`` on the embedded store and finds the same state. Photos are analysed once (dlib);
each crash point starts from a gallery seeded from those analyses.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import pytest

from app import create_app
from services import catalog
from services import corrections
from services import exchange
from services import face_edits
from services import ingest
from services import people
from services import people_import
from services import photos as images_api
from services import profiles
from services import recognition
from services import repair
from services import rollback
from services import storage
from services import upload
from services.context import Gallery
from services.storage import COLLECTIONS
from services.storage import SimulatedCrash
from services.storage import Store
from services.storage import WriteFault
from services.storage import open_store
from tests import photos
from tests.conftest import BASE_CONFIG
from tests.conftest import ROOT
from tests.conftest import make_store
from tests.invariants import check_invariants

Doc = dict[str, t.Any]
Seed = dict[str, Doc]

FULL = ("astronaut", "hopper", "group")


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Doc:
    store = make_store("mongomock", tmp_path_factory.mktemp("settings"))
    return dict(create_app(dict(BASE_CONFIG), store=store, environ={})
                .extensions["face_gallery"].settings)


@pytest.fixture(scope="module")
def analysed(settings: Doc) -> dict[str, ingest.Analysis]:
    """The three photos analysed once: astronaut, hopper, and both in one group photo."""
    options = ingest.AnalysisOptions.from_settings(settings)
    engine = ingest.engine_for(options)
    data = {"astronaut": photos.astronaut_jpeg(), "hopper": photos.hopper_jpeg(),
            "group": photos.group_photo()}
    return {name: ingest.analyse_photo(raw, options, engine) for name, raw in data.items()}


def store_photo(gallery: Gallery, analysis: ingest.Analysis, name: str) -> Doc:
    return upload.store_analysis(gallery, analysis, f"{name}.jpg", album="", section="",
                                 started=time.perf_counter(),
                                 generation=gallery.store.generation())


def seed(store: Store, settings: Doc, analysed: dict[str, ingest.Analysis],
         names: tuple[str, ...]) -> Seed:
    gallery = Gallery(settings, store=store)
    return {name: store_photo(gallery, analysed[name], name) for name in names}


def face_of(seed: Seed, photo: str, person_of: str) -> str:
    """The face in ``photo`` that belongs to the person of ``person_of``'s photo."""
    person = seed[person_of]["faces"][0]["person_id"]
    [face] = [f["face_id"] for f in seed[photo]["faces"] if f["person_id"] == person]
    return face


def person_of(seed: Seed, photo: str) -> str:
    return seed[photo]["faces"][0]["person_id"]


# -- the operations: (photos seeded, preparation, the operation, images it may remove) ------

Op = t.Callable[[Gallery, Seed, dict[str, ingest.Analysis]], t.Any]


def _upload(gallery: Gallery, seed: Seed, analysed: dict[str, ingest.Analysis]) -> t.Any:
    # One face lands in an existing person (astronaut), one makes a new person (hopper).
    return store_photo(gallery, analysed["group"], "group")


def _move(gallery: Gallery, seed: Seed, analysed: dict[str, ingest.Analysis]) -> t.Any:
    return people.move_face(gallery.store, seed["astronaut"]["faces"][0]["face_id"],
                            person_of(seed, "hopper"))


def _move_emptying(gallery: Gallery, seed: Seed, analysed: dict[str, ingest.Analysis]
                   ) -> t.Any:
    return people.move_face(gallery.store, seed["hopper"]["faces"][0]["face_id"],
                            person_of(seed, "astronaut"))


def _move_to_new(gallery: Gallery, seed: Seed, analysed: dict[str, ingest.Analysis]) -> t.Any:
    return people.move_face_to_new(gallery.store, face_of(seed, "group", "hopper"))


def _merge(gallery: Gallery, seed: Seed, analysed: dict[str, ingest.Analysis]) -> t.Any:
    return people.merge_persons(gallery.store, person_of(seed, "astronaut"),
                                [person_of(seed, "hopper")])


def _delete(gallery: Gallery, seed: Seed, analysed: dict[str, ingest.Analysis]) -> t.Any:
    return images_api.delete_image(gallery.store, seed["hopper"]["image_id"])


def _split_hopper(store: Store, seed: Seed) -> None:
    # A hand-made split that re-clustering without preserve_manual joins back.
    people.move_face_to_new(store, seed["hopper"]["faces"][0]["face_id"])


def _recluster(gallery: Gallery, seed: Seed, analysed: dict[str, ingest.Analysis]) -> t.Any:
    return recognition.recluster(gallery, eps=gallery.settings["DBSCAN_EPS"], min_samples=1,
                                 preserve_manual=False)


def _reset(gallery: Gallery, seed: Seed, analysed: dict[str, ingest.Analysis]) -> t.Any:
    return catalog.reset(gallery.store)


# The corrections (issue 14): records of "not this person" and "not the same people", a
# confirmation, and a person's own fields.

def _reject(gallery: Gallery, seed: Seed, analysed: dict[str, ingest.Analysis]) -> t.Any:
    return corrections.reject_face(gallery.store, face_of(seed, "group", "astronaut"))


def _reject_emptying(gallery: Gallery, seed: Seed, analysed: dict[str, ingest.Analysis]
                     ) -> t.Any:
    # The person's only face: the person, and with it the record, goes.
    return corrections.reject_face(gallery.store, seed["hopper"]["faces"][0]["face_id"])


def _split_hopper_with_records(store: Store, seed: Seed) -> None:
    # Re-clustering empties one of hopper's two persons and passes its records on.
    split = people.move_face_to_new(store, seed["hopper"]["faces"][0]["face_id"])
    corrections.mark_not_same(store, split["new_person_id"], person_of(seed, "astronaut"))
    corrections.reject_face(store, face_of(seed, "group", "astronaut"))


def _rejected(store: Store, seed: Seed) -> None:
    corrections.reject_face(store, face_of(seed, "group", "astronaut"))


def _forget_rejection(gallery: Gallery, seed: Seed, analysed: dict[str, ingest.Analysis]
                      ) -> t.Any:
    return corrections.forget_rejection(gallery.store, face_of(seed, "group", "astronaut"))


def _not_same(gallery: Gallery, seed: Seed, analysed: dict[str, ingest.Analysis]) -> t.Any:
    return corrections.mark_not_same(gallery.store, person_of(seed, "astronaut"),
                                     person_of(seed, "hopper"))


def _marked_not_same(store: Store, seed: Seed) -> None:
    corrections.mark_not_same(store, person_of(seed, "astronaut"), person_of(seed, "hopper"))


def _forget_not_same(gallery: Gallery, seed: Seed, analysed: dict[str, ingest.Analysis]
                     ) -> t.Any:
    return corrections.forget_not_same(gallery.store, person_of(seed, "hopper"),
                                       person_of(seed, "astronaut"))


def _confirm(gallery: Gallery, seed: Seed, analysed: dict[str, ingest.Analysis]) -> t.Any:
    return people.confirm_face(gallery.store, face_of(seed, "group", "hopper"))


def _update_person(gallery: Gallery, seed: Seed, analysed: dict[str, ingest.Analysis]
                   ) -> t.Any:
    return profiles.update_person(gallery.store, person_of(seed, "astronaut"), {
        "name": "Eileen", "favorite": True, "birth_date": "1956-11-19",
        "cover_face_id": face_of(seed, "group", "astronaut")})


def _add_face(gallery: Gallery, seed: Seed, analysed: dict[str, ingest.Analysis]) -> t.Any:
    # A box drawn where the detector found nothing: a new face, placed by the upload's rule.
    done = seed["hopper"]
    side = min(done["width"], done["height"]) // 4
    top, left = done["height"] // 2, done["width"] // 2
    return face_edits.add_face(gallery, done["image_id"], {
        "top": top, "left": left, "bottom": top + side, "right": left + side})


def _delete_face(gallery: Gallery, seed: Seed, analysed: dict[str, ingest.Analysis]) -> t.Any:
    return face_edits.delete_face(gallery.store, face_of(seed, "group", "hopper"))


# Export and import (issue 16): a document that recreates a person with its id around faces
# now in another, renames one, and recreates a rejection and a not-same pair; and an upload
# that applies people data imported before it.

IMPORTED = "6570a1a1a1a1a1a1a1a1a1a1"


def _people_document(store: Store, seed: Seed) -> Doc:
    """The gallery's export with the astronaut's person under another id (so the import
    creates it and moves her faces there) and corrections naming it."""
    document = json.loads("".join(exchange.export_document(store, exported_at="")))
    astronaut, hopper = person_of(seed, "astronaut"), person_of(seed, "hopper")
    text = json.dumps(document).replace(astronaut, IMPORTED)
    document = json.loads(text)
    for person in document["persons"]:
        person["name"] = {IMPORTED: "Eileen", hopper: "Grace"}.get(person["id"], person["name"])
    hopper_in_group = next(f for f in document["faces"] if f["person_id"] == hopper
                           and f["image_sha256"] != document["faces"][0]["image_sha256"])
    document["rejections"] = [{"face": {k: hopper_in_group[k] for k in ("image_sha256", "box")},
                               "person_id": IMPORTED}]
    document["not_same"] = [{"person_id": IMPORTED, "other_person_id": hopper}]
    return document


def _import(gallery: Gallery, seed: Seed, analysed: dict[str, ingest.Analysis]) -> t.Any:
    return people_import.import_document(gallery.store, _people_document(gallery.store, seed))


def _upload_with_pending(gallery: Gallery, seed: Seed, analysed: dict[str, ingest.Analysis]
                         ) -> t.Any:
    # People data for the group photo, imported before it is uploaded: both its faces go to
    # a person the document recreates.
    group = analysed["group"]
    boxes = [dict(zip(("top", "right", "bottom", "left"), f.box, strict=True))
             for f in group.faces]
    person = {"id": IMPORTED, "name": "Eileen", "named_by_user": True, "hidden": False,
              "favorite": False, "birth_date": None, "cover_face": None}
    gallery.store.put_pending_import({
        "_id": group.sha256, "images": [], "persons": [person], "albums": [], "sections": [],
        "faces": [{"image_sha256": group.sha256, "box": boxes[0], "person_id": IMPORTED}],
        "rejections": [], "not_same": []})
    return store_photo(gallery, group, "group")
# Re-clustering runs (issue 16): a run to roll back, made by the same re-clustering as above.

#: DBSCAN_EPS's default, which the settings above hold (a preparation gets no settings).
EPS = 0.61


def _split_hopper_and_recluster(store: Store, seed: Seed) -> None:
    _split_hopper(store, seed)
    recognition.recluster_store(store, eps=EPS, min_samples=1, preserve_manual=False)


def _split_hopper_with_records_and_recluster(store: Store, seed: Seed) -> None:
    # The run deletes a person with records, passing them on; the rollback gives them back.
    _split_hopper_with_records(store, seed)
    recognition.recluster_store(store, eps=EPS, min_samples=1, preserve_manual=False)


def _rollback(gallery: Gallery, seed: Seed, analysed: dict[str, ingest.Analysis]) -> t.Any:
    return rollback.undo_run(gallery.store, gallery.store.latest_cluster_run()["number"])


#: Photos whose faces the operation itself changes: one face more or less is not a loss.
EDITED = {"add_face": ("hopper",), "delete_face": ("group",)}

OPERATIONS: dict[str, tuple[tuple[str, ...], t.Callable[[Store, Seed], None] | None, Op,
                            tuple[str, ...]]] = {
    "upload": (("astronaut",), None, _upload, ()),
    "move": (FULL, None, _move, ()),
    "move_emptying_source": (("astronaut", "hopper"), None, _move_emptying, ()),
    "move_to_new": (FULL, None, _move_to_new, ()),
    "merge": (("astronaut", "hopper"), None, _merge, ()),
    "delete_image": (FULL, None, _delete, ("hopper",)),
    "recluster": (FULL, _split_hopper, _recluster, ()),
    "reset": (FULL, None, _reset, FULL),
    "recluster_passing_records_on": (FULL, _split_hopper_with_records, _recluster, ()),
    "reject": (FULL, None, _reject, ()),
    "reject_emptying_person": (("astronaut", "hopper"), None, _reject_emptying, ()),
    "forget_rejection": (FULL, _rejected, _forget_rejection, ()),
    "not_same": (FULL, None, _not_same, ()),
    "forget_not_same": (FULL, _marked_not_same, _forget_not_same, ()),
    "confirm": (FULL, None, _confirm, ()),
    "update_person": (FULL, None, _update_person, ()),
    "add_face": (FULL, None, _add_face, ()),
    "delete_face": (FULL, None, _delete_face, ()),
    "import": (FULL, None, _import, ()),
    "upload_with_pending_import": (("astronaut", "hopper"), None, _upload_with_pending, ()),
    "rollback": (FULL, _split_hopper_and_recluster, _rollback, ()),
    "rollback_giving_records_back": (FULL, _split_hopper_with_records_and_recluster, _rollback,
                                     ()),
}


# -- what must hold after a crash, a restart and repair ------------------------------------

def check_after_repair(store: Store, settings: Doc, seed: Seed, may_lose: tuple[str, ...],
                       other_worker: Gallery, edited: tuple[str, ...] = ()) -> None:
    check_invariants(store)
    assert store.reset_mark() is None, "a killed reset's mark was left"
    # Bytes written before the documents naming them, or left when those went, are swept.
    left = store.unreferenced_blobs(storage.now() + dt.timedelta(seconds=1))
    assert not left, f"stored bytes nothing names: {left}"
    # Nothing acknowledged is missing: every seeded photo the operation does not remove is
    # there with all its faces (a reset removes all of them or none).
    present = {name for name, done in seed.items() if store.find_image(done["image_id"])}
    kept = set(seed) - set(may_lose)
    assert kept <= present, f"acknowledged photos lost: {kept - present}"
    if may_lose == FULL:
        assert present in (set(), set(seed)), f"a reset half done: {present}"
    for name in present:
        image = store.find_image(seed[name]["image_id"])
        assert image["status"] == "ready"
        faces = {f["_id"] for f in store.faces_of_image(image["_id"])}
        seeded = {f["face_id"] for f in seed[name]["faces"]}
        if name in edited:
            assert len(faces ^ seeded) <= 1, f"faces of {name}: more than the edit changed"
        else:
            assert faces == seeded, f"faces of {name} lost"
    # A restarted server lists no ghost: each person has faces and a thumbnail that loads.
    client = create_app(dict(BASE_CONFIG), store=store, environ={}).test_client()
    listed = client.get("/persons/?limit=500").json["data"]["persons"]
    assert len(listed) == store.count("persons")
    for person in listed:
        assert person["face_count"] == store.count_faces_of_person(person["_id"]) > 0
        assert client.get(f"/persons/{person['_id']}/thumbnail").status_code == 200
    # A worker that ran through the crash searches only faces and persons that exist.
    _, face_ids, person_ids, _ = other_worker.sync_index().snapshot()
    for face_id, person_id in zip(face_ids.tolist(), person_ids.tolist(), strict=True):
        face = store.get_face(face_id)
        assert face["person_id"] == person_id, f"index has face {face_id} in a stale person"
        assert store.find_person(person_id) is not None, f"index names ghost {person_id}"


def crash_at(store: Store, after: int | None, run: t.Callable[[], t.Any]) -> int:
    """Run with a kill after write ``after`` (None: count only); returns the writes made."""
    fault = WriteFault(after)
    store.arm_fault(fault)
    try:
        if after is None:
            run()
        else:
            with pytest.raises(SimulatedCrash):
                run()
    finally:
        store.disarm_fault()
    return fault.writes


@pytest.mark.parametrize("backend", ["mongomock", "embedded"])
@pytest.mark.parametrize("name", list(OPERATIONS))
def test_a_kill_after_any_write_is_repaired(name, backend, settings, analysed, tmp_path):
    names, prepare, operation, may_lose = OPERATIONS[name]
    seeded = make_store(backend, tmp_path / "seed")
    done = seed(seeded, settings, analysed, names)
    if prepare is not None:
        prepare(seeded, done)

    def fresh(label: str) -> tuple[Store, Gallery]:
        store = clone(seeded, tmp_path / "seed", tmp_path / label)
        return store, Gallery(settings, store=store)

    store, gallery = fresh("count")
    writes = crash_at(store, None, lambda: operation(gallery, done, analysed))
    check_invariants(store)
    store.close()
    assert writes > 0  # one record written or removed is a whole correction
    for after in range(1, writes + 1):
        store, gallery = fresh(f"n{after}")
        other_worker = Gallery(settings, store=store)
        other_worker.sync_index()
        crash_at(store, after, lambda: operation(gallery, done, analysed))  # noqa: B023 - run now
        # Restarted: a new process repairs at once (the dead one's intents are not waited for).
        report = repair.run(store, stale_after_seconds=0, blob_grace_seconds=0)
        try:
            check_after_repair(store, settings, done, may_lose, other_worker,
                               EDITED.get(name, ()))
        except AssertionError as err:
            raise AssertionError(f"{name}: killed after write {after} of {writes}; "
                                 f"repair did {report}: {err}") from err
        store.close()
    seeded.close()


def clone(seeded: Store, seeded_at: Path, path: Path) -> Store:
    """A copy of a seeded store: seeding again costs more than copying."""
    if seeded.backend == "embedded":
        shutil.copytree(seeded_at, path)
        store = open_store("", "face_gallery_test", str(path / "data"))
    else:
        store = open_store("mongomock://", "face_gallery_test", "")
        for collection in (*COLLECTIONS, "gallery", "intents", "blobs.files", "blobs.chunks"):
            docs = list(seeded.db[collection].find({}))
            if docs:
                store.db[collection].insert_many(docs)
    store.ensure_indexes()
    return store


def assignment(store: Store) -> Doc:
    """Each face's person and manual flag; each person's name and counts; the records."""
    faces = {f["_id"]: (f["person_id"], bool(f.get("is_manual_assignment")))
             for f in store.iter_faces({}, {"person_id": 1, "is_manual_assignment": 1})}
    persons = {p["_id"]: (p["name"], p["face_count"], p["image_count"],
                          p.get("manual_face_count", 0)) for p in store.iter_persons()}
    return {"faces": faces, "persons": persons, "rejections": sorted(store.all_rejections()),
            "not_same": sorted(store.all_not_same())}


@pytest.mark.parametrize("backend", ["mongomock", "embedded"])
@pytest.mark.parametrize("prepare", [_split_hopper, _split_hopper_with_records])
def test_a_killed_rollback_ends_in_the_assignment_before_the_run(backend, prepare, settings,
                                                                  analysed, tmp_path):
    """Killed after any write, then repaired: the rollback is finished by repair, or (killed
    before its record was whole) re-issued and finished; either way every face, person and
    record is exactly as before the run."""
    seeded = make_store(backend, tmp_path / "seed")
    done = seed(seeded, settings, analysed, FULL)
    prepare(seeded, done)
    before = assignment(seeded)
    number = recognition.recluster_store(seeded, eps=EPS, min_samples=1,
                                         preserve_manual=False)["run_number"]
    assert assignment(seeded) != before

    store = clone(seeded, tmp_path / "seed", tmp_path / "count")
    writes = crash_at(store, None, lambda: rollback.undo_run(store, number))
    assert assignment(store) == before
    store.close()
    for after in range(1, writes + 1):
        store = clone(seeded, tmp_path / "seed", tmp_path / f"n{after}")
        crash_at(store, after, lambda: rollback.undo_run(store, number))  # noqa: B023 - run now
        repair.run(store, stale_after_seconds=0)
        reissued = store.find_cluster_run(number)["rolled_back_by"] is None
        if reissued and store.lock_holder("recluster") is not None:
            # Killed between taking the lock and journalling: nothing names the lock, which
            # is free once its ttl passes (as a re-clustering killed there leaves it).
            store.db.locks.delete_many({})
        if reissued:
            rollback.undo_run(store, number)
        try:
            assert assignment(store) == before
            check_invariants(store)
        except AssertionError as err:
            raise AssertionError(f"killed after write {after} of {writes} (re-issued: "
                                 f"{reissued}): {err}") from err
        store.close()
    seeded.close()


# -- a real kill ----------------------------------------------------------------------------

_KILL_SCRIPT = """
import os, sys
from services import people
from services import people_import
from services.storage import WriteFault, open_store
store = open_store("", "face_gallery_test", sys.argv[1])
store.arm_fault(WriteFault(int(sys.argv[2]), die=lambda n: os._exit(70)))
people.move_face_to_new(store, sys.argv[3])
"""


def summary(store: Store, seed: Seed) -> Doc:
    """The state a kill left, without the ids chosen at random (the new person's)."""
    known = {f["person_id"] for done in seed.values() for f in done["faces"]}
    persons = sorted((p["_id"] in known, p["face_count"], p["image_count"],
                      p.get("manual_face_count", 0)) for p in store.iter_persons())
    faces = {f["_id"]: f["person_id"] if f["person_id"] in known else "new"
             for f in store.iter_faces({}, {"person_id": 1})}
    return {"persons": persons, "faces": faces,
            "intents": sorted(i["op"] for i in store.open_intents()),
            "counts": {c: store.count(c) for c in ("face_changes", "locks", "images")}}


@pytest.mark.parametrize("after", [3, 7])
def test_a_real_kill_leaves_what_the_simulated_one_does(after, settings, analysed, tmp_path):
    """Write 3 of a move to a new person is the person, 7 the first counter after the face:
    the tester's two kills. A process killed there leaves the state the in-process crash
    leaves, and repair, seeing its process gone, needs no waiting."""
    store = make_store("embedded", tmp_path / "seed")
    done = seed(store, settings, analysed, FULL)
    store.close()
    for copy in ("simulated", "real"):
        shutil.copytree(tmp_path / "seed", tmp_path / copy)
    face_id = face_of(done, "group", "hopper")

    simulated = open_store("", "face_gallery_test", str(tmp_path / "simulated" / "data"))
    crash_at(simulated, after, lambda: people.move_face_to_new(simulated, face_id))

    killed = subprocess.run(
        [sys.executable, "-c", _KILL_SCRIPT, str(tmp_path / "real" / "data"), str(after),
         face_id], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=120)
    assert killed.returncode == 70, killed.stderr
    real = open_store("", "face_gallery_test", str(tmp_path / "real" / "data"))
    assert summary(real, done) == summary(simulated, done)
    assert summary(real, done)["intents"] == ["move_to_new"]

    # Its owner is gone: the default threshold does not hold the repair back.
    assert repair.run(real)["intents_finished"]
    other = Gallery(settings, store=real)
    check_after_repair(real, settings, done, (), other)
    real.close()
    simulated.close()
