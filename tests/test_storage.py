"""``Store`` itself, on every backend, with documents built by hand: no photos, no dlib.

The documents have the shape ``services/upload.py`` and ``bookkeeping.new_person_doc`` give
them, reduced to the fields each query reads.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from errors import DocumentNotFoundError
from errors import ValidationError
from services import bookkeeping
from services import face_index
from services import recognition
from services import storage
from services.storage import Store
from tests import photos

# -- documents as the services write them ------------------------------------------------


def add_image(store: Store, *, status: str = "ready", album_id: str = "",
              sha256: str = "") -> dict:
    """An image (and its blob) numbered from the ``images`` counter, as an upload writes it."""
    moment = storage.now()
    image_id = storage.new_id()
    doc = {
        "_id": image_id, "seq": store.next_seq("images"), "status": status,
        "filename": f"{image_id}.jpg", "mime_type": "image/jpeg", "sha256": sha256,
        "width": 8, "height": 8, "album_id": album_id, "section_id": "", "face_count": 0,
        "photo_date": moment, "created_at": moment, "updated_at": moment,
    }
    store.insert_image(doc, {"_id": image_id, "mime_type": "image/jpeg",
                             "original_image_base64": "data:image/jpeg;base64,"})
    return doc


def add_person(store: Store, name: str | None = None, *, face_count: int = 1,
               thumbnail_quality: float = -1.0) -> dict:
    doc = bookkeeping.new_person_doc(store, face_count=face_count, name=name,
                                     thumbnail_quality=thumbnail_quality)
    store.insert_persons([doc])
    return doc


def add_face(store: Store, image: dict, person_id: str, *, left: int = 0,
             quality: float = 0.5) -> dict:
    face_id = storage.new_id()
    moment = storage.now()
    doc = {
        "_id": face_id, "seq": store.next_seq("faces"), "image_id": image["_id"],
        "image_seq": image["seq"], "person_id": person_id,
        "embedding": storage.embedding_to_bytes(np.zeros(128)),
        "face_location": {"top": 0, "right": left + 4, "bottom": 4, "left": left},
        "quality_score": quality, "is_manual_assignment": False, "assigned_by": "auto",
        "created_at": moment, "updated_at": moment,
    }
    store.insert_faces([doc], [{"_id": face_id, "mime_type": "image/jpeg",
                                "cropped_face_base64": "data:image/jpeg;base64,"}])
    return doc


def newest_ids(store: Store, limit: int, offset: int) -> list[str]:
    page, _ = store.images_newest(limit, offset)
    return [doc["_id"] for doc in page]


# -- sequences ------------------------------------------------------------------------------


def test_next_seq_reserves_ranges(store):
    assert store.counter("images") == 0
    assert store.next_seq("images") == 1
    assert store.next_seq("images", 5) == 6  # 2..6 are the caller's
    assert store.counter("images") == 6
    assert store.next_seq("faces") == 1  # counters are independent
    assert store.counter("images") == 6 and store.counter("faces") == 1
    assert store.counter("never-used") == 0


# -- image paging -----------------------------------------------------------------------


def test_images_newest_pages_every_offset_across_gaps(store):
    images = [add_image(store) for _ in range(12)]
    for gone in (images[2], images[7], images[8]):
        store.delete_image_docs(gone)  # deletes record their numbers as gaps
    failed = store.next_seq("images")  # an upload that failed after taking its number
    store.record_image_gap(storage.new_id(), failed)
    images.append(add_image(store))
    store.delete_image_docs(images[-1])  # the newest image deleted: its number is the top
    live = [doc["_id"] for doc in reversed(images[:-1])
            if doc not in (images[2], images[7], images[8])]

    assert store.images_newest(50, 0)[1] == len(live) == 9
    for limit in (1, 2, 3, 5, 50):
        for offset in range(len(live) + 2):
            assert newest_ids(store, limit, offset) == live[offset:offset + limit], (
                limit, offset)


def test_images_newest_skips_images_not_ready(store):
    ready = add_image(store)
    add_image(store, status="pending")
    older = add_image(store)
    store.set_image_fields(older["_id"], {"status": "deleting"})
    page, total = store.images_newest(10, 0)
    assert [doc["_id"] for doc in page] == [ready["_id"]] and total == 1
    assert store.images_newest(0, 0) == ([], 1)


@pytest.mark.parametrize("status", ["pending", "deleting"])
def test_images_newest_pages_exactly_while_an_image_is_not_ready(store, status):
    """An upload in flight (or a delete under way) holds a number above ready images."""
    images = [add_image(store) for _ in range(3)]
    busy = add_image(store, status=status)
    images.append(add_image(store))
    newest_first = [doc["_id"] for doc in reversed(images)]
    for offset in range(5):
        assert newest_ids(store, 1, offset) == newest_first[offset:offset + 1], offset
        assert newest_ids(store, 2, offset) == newest_first[offset:offset + 2], offset
    store.set_image_fields(busy["_id"], {"status": "ready"})
    assert newest_ids(store, 10, 0)[1] == busy["_id"]


def test_recording_a_gap_twice_counts_it_once(store):
    first, second = add_image(store), add_image(store)
    store.delete_image_docs(second)
    store.record_image_gap(second["_id"], second["seq"])
    assert store.count("image_gaps") == 1
    assert newest_ids(store, 5, 0) == [first["_id"]]


def test_images_page_filters_and_pages_newest_first(store):
    album = storage.new_id()
    filed = [add_image(store, album_id=album) for _ in range(4)]
    add_image(store)  # another album's
    add_image(store, album_id=album, status="pending")
    page, total = store.images_page({"album_id": album}, 2, 1)
    assert total == 4
    assert [doc["_id"] for doc in page] == [filed[2]["_id"], filed[1]["_id"]]
    assert store.images_page({"album_id": album}, 2, 4) == ([], 4)


def test_fill_image_gaps_records_numbers_no_image_holds(store):
    first = add_image(store)
    store.next_seq("images", 3)  # uploads killed between taking a number and writing
    last = add_image(store)
    assert store.fill_image_gaps() == 0  # the newest numbers may still be in flight
    assert store.fill_image_gaps(in_flight=2) == 2  # numbers 2 and 3, not 4
    assert store.fill_image_gaps(in_flight=0) == 1
    assert store.fill_image_gaps(in_flight=0) == 0  # nothing left to find
    assert newest_ids(store, 1, 0) == [last["_id"]]
    assert newest_ids(store, 1, 1) == [first["_id"]]


# -- locks ----------------------------------------------------------------------------------


def test_a_lock_has_one_holder_and_only_it_releases(store):
    assert store.lock_holder("recluster") is None
    assert store.acquire_lock("recluster", "worker-a", 60)
    assert not store.acquire_lock("recluster", "worker-b", 60)
    assert store.lock_holder("recluster") == "worker-a"
    store.release_lock("recluster", "worker-b")
    assert store.lock_holder("recluster") == "worker-a"
    store.release_lock("recluster", "worker-a")
    assert store.lock_holder("recluster") is None
    assert store.acquire_lock("recluster", "worker-b", 60)


def test_an_expired_lock_is_taken_over(store):
    assert store.acquire_lock("person:x", "crashed", 0)
    assert store.acquire_lock("other", "alive", 60)
    time.sleep(0.01)  # older than its ttl of 0 s
    assert store.lock_holder("person:x") is None
    assert store.acquire_lock("person:x", "next", 60)
    assert store.lock_holder("person:x") == "next"
    store.release_lock("person:x", "crashed")  # the crashed holder's release is too late
    assert store.lock_holder("person:x") == "next"
    assert store.lock_holder("other") == "alive"


# -- hash claims ---------------------------------------------------------------------------


def test_a_hash_is_claimed_once_and_released_by_its_owner(store):
    owner, other = storage.new_id(), storage.new_id()
    assert store.hash_claim("ab" * 32) is None
    assert store.claim_hash("ab" * 32, owner, "host:1")
    assert not store.claim_hash("ab" * 32, other, "host:2")
    claim = store.hash_claim("ab" * 32)
    assert (claim["image_id"], claim["claimant"]) == (owner, "host:1")
    assert (storage.now() - claim["claimed_at"]).total_seconds() < 60
    store.release_hash("ab" * 32, other)
    assert store.hash_claim("ab" * 32)["image_id"] == owner
    store.release_hash("ab" * 32, owner)
    assert store.hash_claim("ab" * 32) is None
    assert store.claim_hash("ab" * 32, other, "host:2")


def test_deleting_an_image_releases_its_hash(store):
    image = add_image(store, sha256="cd" * 32)
    assert store.claim_hash("cd" * 32, image["_id"], "host:1")
    store.delete_image_docs(image)
    assert store.hash_claim("cd" * 32) is None
    assert store.find_image(image["_id"]) is None
    with pytest.raises(DocumentNotFoundError):
        store.get_image_blob(image["_id"])


# -- faces and reassignments -------------------------------------------------------------


def test_reassign_face_returns_the_face_as_it_was(store):
    image = add_image(store)
    before, after = add_person(store), add_person(store)
    face = add_face(store, image, before["_id"])
    old = store.reassign_face(face["_id"], after["_id"])
    assert old["person_id"] == before["_id"] and old["is_manual_assignment"] is False
    moved = store.get_face(face["_id"])
    assert moved["person_id"] == after["_id"]
    assert (moved["is_manual_assignment"], moved["assigned_by"]) == (True, "manual")
    assert "embedding" not in moved
    assert store.reassign_face(storage.new_id(), after["_id"]) is None


def test_set_face_person_says_who_assigned(store):
    image = add_image(store)
    person = add_person(store)
    face = add_face(store, image, "")
    store.set_face_person(face["_id"], person["_id"], manual=False)
    auto = store.get_face(face["_id"])
    assert (auto["person_id"], auto["assigned_by"], auto["is_manual_assignment"]) == (
        person["_id"], "auto", False)
    store.set_face_person(face["_id"], person["_id"], manual=True)
    assert store.get_face(face["_id"])["assigned_by"] == "manual"


def test_move_all_faces_moves_one_persons_faces(store):
    source, target, bystander = add_person(store), add_person(store), add_person(store)
    image = add_image(store)
    moved = [add_face(store, image, source["_id"], left=i) for i in range(3)]
    add_face(store, image, bystander["_id"], left=9)
    assert store.move_all_faces(source["_id"], target["_id"]) == 3
    assert store.count_faces_of_person(source["_id"]) == 0
    assert {f["_id"] for f in store.faces_of_person(target["_id"])} == {f["_id"] for f in moved}
    assert store.count_faces_of_person(bystander["_id"]) == 1
    assert store.move_all_faces(source["_id"], target["_id"]) == 0


def test_faces_of_image_are_left_to_right_and_deleted_once(store):
    image = add_image(store)
    person = add_person(store)
    right, left = add_face(store, image, person["_id"], left=50), add_face(
        store, image, person["_id"], left=5)
    assert [f["_id"] for f in store.faces_of_image(image["_id"])] == [left["_id"], right["_id"]]
    assert store.get_face(left["_id"], with_embedding=True)["embedding"]
    deleted = store.delete_faces([left["_id"], right["_id"]])
    assert {f["_id"] for f in deleted} == {left["_id"], right["_id"]}
    assert store.delete_faces([left["_id"]]) == []  # a second delete counts nothing
    with pytest.raises(DocumentNotFoundError):
        store.get_face_crop(left["_id"])


# -- persons --------------------------------------------------------------------------------


def test_inserting_an_existing_id_is_a_duplicate_key_error(store):
    person = add_person(store, "First")
    twin = {**person, "name": "Second", "name_lc": "second"}
    with pytest.raises(storage.DuplicateKeyError):
        store.insert_persons([twin])
    assert store.get_person(person["_id"])["name"] == "First"
    album = {"_id": storage.new_id(), "name": "A", "created_at": storage.now()}
    store.insert_album(album)
    with pytest.raises(storage.DuplicateKeyError):
        store.insert_album(dict(album))
    assert store.count("albums") == 1


def test_adjust_person_counts_says_whether_the_person_exists(store):
    person = add_person(store, face_count=2)
    assert store.adjust_person_counts(person["_id"], 1, -1, manual=1)
    counted = store.get_person(person["_id"])
    assert (counted["face_count"], counted["image_count"], counted["manual_face_count"]) == (
        3, 1, 1)
    assert store.adjust_person_counts(storage.new_id(), 1, 1) is False
    assert store.count("persons") == 1  # no upsert


def test_offer_thumbnail_only_raises_quality(store):
    person = add_person(store, thumbnail_quality=0.5)
    good, worse, better = storage.new_id(), storage.new_id(), storage.new_id()
    store.set_person_fields(person["_id"], {"thumbnail_face_id": good})
    store.offer_thumbnail(person["_id"], worse, 0.3)
    store.offer_thumbnail(person["_id"], worse, 0.5)  # a tie keeps the current one
    kept = store.get_person(person["_id"])
    assert (kept["thumbnail_face_id"], kept["thumbnail_quality"]) == (good, 0.5)
    store.offer_thumbnail(person["_id"], better, 0.9)
    raised = store.get_person(person["_id"])
    assert (raised["thumbnail_face_id"], raised["thumbnail_quality"]) == (better, 0.9)


def test_persons_page_sorts_offsets_and_filters_by_prefix(store):
    for name, faces in [("bob", 3), ("Alice", 1), ("albert", 5), ("Carol (c)", 2)]:
        add_person(store, name, face_count=faces)

    def names(**options):
        query = {"name_prefix": "", "sort": "name", "descending": False, "limit": 10,
                 "offset": 0, **options}
        page, total = store.persons_page(**query)
        return [p["name"] for p in page], total

    assert names() == (["albert", "Alice", "bob", "Carol (c)"], 4)  # case does not sort
    assert names(descending=True, limit=2) == (["Carol (c)", "bob"], 4)
    assert names(offset=3) == (["Carol (c)"], 4)
    assert names(sort="face_count", descending=True) == (
        ["albert", "bob", "Carol (c)", "Alice"], 4)
    assert names(name_prefix="AL") == (["albert", "Alice"], 2)
    assert names(name_prefix="carol (") == (["Carol (c)"], 1)  # regex characters are literal
    assert names(name_prefix=".") == ([], 0)


def test_set_person_fields_returns_the_old_document(store):
    person = add_person(store, "Old")
    before = store.set_person_fields(person["_id"], {"name": "New", "name_lc": "new"})
    assert before["name"] == "Old" and store.get_person(person["_id"])["name"] == "New"
    with pytest.raises(DocumentNotFoundError):
        store.set_person_fields(storage.new_id(), {"name": "x"})
    with pytest.raises(ValidationError):
        store.set_person_fields("nope", {"name": "x"})


# -- ids ----------------------------------------------------------------------------------


def test_check_id_accepts_24_hex_in_any_case():
    assert storage.check_id("5F0C0C0C0C0C0C0C0C0C0C0C") == "5f0c0c0c0c0c0c0c0c0c0c0c"
    fresh = storage.new_id()
    assert storage.check_id(fresh) == fresh


@pytest.mark.parametrize("value", [
    "", "5f0c", "5f0c0c0c0c0c0c0c0c0c0c0g", "5f0c0c0c0c0c0c0c0c0c0c0c0",
    " 5f0c0c0c0c0c0c0c0c0c0c0c", "5f0c0c0c0c0c0c0c0c0c0c0c\n", None, 5,
    ["5f0c0c0c0c0c0c0c0c0c0c0c"],
])
def test_check_id_rejects_everything_else(value):
    with pytest.raises(ValidationError) as raised:
        storage.check_id(value, "person_id")
    assert raised.value.details == {"field": "person_id"}


def test_getters_tell_a_bad_id_from_an_unknown_one(store):
    with pytest.raises(ValidationError):
        store.get_person("not-an-id")
    with pytest.raises(DocumentNotFoundError):
        store.get_person(storage.new_id())
    pending = add_image(store, status="pending")
    with pytest.raises(DocumentNotFoundError):
        store.get_image(pending["_id"])
    assert store.get_image(pending["_id"], ready_only=False)["status"] == "pending"


# -- change log, epoch and reset -----------------------------------------------------------


def test_new_epoch_clears_the_change_log(store):
    assert store.epoch() == ""
    store.log_face_changes([("f1", "p1"), ("f2", "")])
    store.log_face_changes([])
    logged = store.counter("face_changes")
    assert logged == 2
    assert [(c["seq"], c["face_id"], c["person_id"]) for c in
            store.face_changes_since(0, logged)] == [(1, "f1", "p1"), (2, "f2", "")]
    token = store.new_epoch()
    assert store.epoch() == token
    assert store.face_changes_since(0, logged) == [] and store.count("face_changes") == 0
    store.log_face_changes([("f3", "p3")])  # numbering goes on past the cleared entries
    assert [c["seq"] for c in store.face_changes_since(logged, logged + 1)] == [3]
    assert store.new_epoch() != token


def test_reset_empties_every_collection(store):
    image = add_image(store, sha256="ef" * 32)
    person = add_person(store)
    add_face(store, image, person["_id"])
    store.claim_hash("ef" * 32, image["_id"], "host:1")
    store.acquire_lock("recluster", "worker", 60)
    store.log_face_changes([("f1", person["_id"])])
    removed = store.reset()
    assert set(removed) == set(storage.COLLECTIONS)
    assert (removed["images"], removed["image_blobs"], removed["faces"], removed["persons"],
            removed["image_hashes"], removed["locks"], removed["face_changes"]) == (
        1, 1, 1, 1, 1, 1, 1)
    assert all(store.count(name) == 0 for name in storage.COLLECTIONS if name != "counters")
    assert store.lock_holder("recluster") is None and store.counter("face_changes") == 0
    # Image numbers go on from where they were, above the floor paging starts from.
    assert store.counter("images") == store.seq_floor() == image["seq"]
    generation = store.generation()
    assert store.reset() == dict.fromkeys(storage.COLLECTIONS, 0)
    assert store.generation() == generation + 1


# -- what reaches the driver ----------------------------------------------------------------

#: Module-level projections the services pass to Store queries.
SHARED_PROJECTIONS = [
    (storage, "_FACE_LIGHT"), (bookkeeping, "_COUNT_FIELDS"), (face_index, "_FACE_FIELDS"),
    (recognition, "_CLUSTER_FIELDS"),
]


def test_queries_leave_shared_projections_as_they_were(store):
    """mongomock adds ``_id`` to a projection it is given: a shared one would then differ in
    every later query, on MongoDB too."""
    before = {name: dict(getattr(module, name)) for module, name in SHARED_PROJECTIONS}
    image = add_image(store)
    person = add_person(store)
    face = add_face(store, image, person["_id"])

    assert "embedding" not in store.get_face(face["_id"])
    assert len(store.faces_of_image(image["_id"])) == 1
    assert len(store.faces_of_images([image["_id"]])[image["_id"]]) == 1
    assert len(store.faces_of_person(person["_id"])) == 1
    assert len(store.faces_of_person(person["_id"], projection=bookkeeping._COUNT_FIELDS)) == 1
    assert len(list(store.iter_faces({}, face_index._FACE_FIELDS))) == 1
    assert len(store.faces_in_seq_range(0, face["seq"], recognition._CLUSTER_FIELDS)) == 1
    assert len(store.faces_with_seqs([face["seq"]], face_index._FACE_FIELDS)) == 1

    after = {name: dict(getattr(module, name)) for module, name in SHARED_PROJECTIONS}
    assert after == before


def test_queries_leave_the_callers_dicts_as_they_were(store):
    person = add_person(store)
    face = add_face(store, add_image(store), person["_id"])
    query, projection = {"person_id": person["_id"]}, {"person_id": 1}
    assert [f["_id"] for f in store.iter_faces(query, projection)] == [face["_id"]]
    assert [p["_id"] for p in store.iter_persons(projection)] == [person["_id"]]
    assert store.count("faces", query) == 1
    assert query == {"person_id": person["_id"]} and projection == {"person_id": 1}


def test_data_uri_round_trip():
    """The inline store's form: bytes back exactly, line breaks a client added ignored."""
    data = photos.astronaut_jpeg()
    uri = storage.data_uri(data, "image/jpeg")
    assert uri.startswith("data:image/jpeg;base64,/9j/")
    assert storage.data_uri_bytes(uri) == data
    assert storage.data_uri_bytes(uri[:40] + "\n" + uri[40:]) == data
