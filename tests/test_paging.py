"""Paging through images and persons with ``limit`` and ``offset``.

Images page by their upload number (``seq``) rather than ``skip``; a deleted image leaves a gap
that every offset after it must step over, the newest image included.
"""

from __future__ import annotations

import pytest

from app import create_app
from tests import photos
from tests.conftest import BASE_CONFIG
from tests.conftest import upload
from tests.invariants import check_invariants


def faceless(n: int) -> list[bytes]:
    """``n`` distinct photos without a face: cheap to upload, and paging needs no faces."""
    return [photos.jpeg(photos.blank_rgb(), quality=60 + i) for i in range(n)]


def page_ids(client, query: str) -> tuple[list[str], int]:
    data = client.get(f"/images/?{query}").json["data"]
    return [i["_id"] for i in data["images"]], data["total"]


def assert_pages(client, newest_first: list[str]) -> None:
    """Every offset, one image a page, then pages of two, then the whole list at once."""
    total = len(newest_first)
    for offset in range(total + 1):
        assert page_ids(client, f"limit=1&offset={offset}") == (
            newest_first[offset:offset + 1], total), offset
    for offset in range(total):
        assert page_ids(client, f"limit=2&offset={offset}") == (
            newest_first[offset:offset + 2], total), offset
    assert page_ids(client, "limit=50") == (newest_first, total)


def test_pages_after_the_newest_image_is_deleted(client):
    ids = [upload(client, data, f"{i}.jpg")["image_id"] for i, data in enumerate(faceless(4))]
    newest_first = ids[::-1]
    assert_pages(client, newest_first)
    assert client.delete(f"/images/{newest_first[0]}").status_code == 200
    assert_pages(client, newest_first[1:])
    # The gap stays at the top: the new newest image deleted too.
    assert client.delete(f"/images/{newest_first[1]}").status_code == 200
    assert_pages(client, newest_first[2:])


def test_pages_after_an_upload_above_a_deleted_newest_image(client):
    first, second, third = faceless(3)
    a = upload(client, first)["image_id"]
    b = upload(client, second)["image_id"]
    assert client.delete(f"/images/{b}").status_code == 200
    c = upload(client, third)["image_id"]
    assert_pages(client, [c, a])


def test_pages_of_only_deleted_images_are_empty(client):
    gone = upload(client, faceless(1)[0])["image_id"]
    assert client.delete(f"/images/{gone}").status_code == 200
    assert page_ids(client, "limit=1&offset=0") == ([], 0)
    assert page_ids(client, "limit=1&offset=1") == ([], 0)


# -- persons -------------------------------------------------------------------------------

#: Names given in upload order; in name order, which ignores case: Alice, bob, Carol, Dana.
NAMES = ["Dana", "Alice", "Carol", "bob"]


@pytest.fixture
def four_persons(store):
    """Four persons of one face each: a zero tolerance never puts two faces together."""
    app = create_app({**BASE_CONFIG, "FACE_RECOGNITION_TOLERANCE": 0.0}, store=store,
                     environ={})
    client = app.test_client()
    sources = [photos.astronaut_jpeg(), photos.mirrored(photos.astronaut_rgb()),
               photos.hopper_jpeg(), photos.scaled(photos.hopper_rgb(), 0.7)]
    ids = {}
    for name, data in zip(NAMES, sources, strict=True):
        [face] = upload(client, data)["faces"]
        client.put(f"/persons/{face['person_id']}/rename", json={"name": name})
        ids[name] = face["person_id"]
    yield client, ids
    check_invariants(store)


def person_names(client, query: str) -> tuple[list[str], int]:
    data = client.get(f"/persons/?{query}").json["data"]
    return [p["name"] for p in data["persons"]], data["total"]


def test_persons_page_by_offset(four_persons):
    client, _ = four_persons
    ordered = sorted(NAMES, key=str.lower)
    for offset in range(5):
        assert person_names(client, f"sort=name&limit=1&offset={offset}") == (
            ordered[offset:offset + 1], 4), offset
        assert person_names(client, f"sort=name&limit=2&offset={offset}") == (
            ordered[offset:offset + 2], 4), offset
    descending = ordered[::-1]
    assert person_names(client, "sort=name&order=desc&limit=2&offset=1") == (
        descending[1:3], 4)


def test_persons_with_equal_counts_page_by_id(four_persons):
    # All four hold one face: face_count ties are broken by id, newest first.
    client, ids = four_persons
    newest_first = NAMES[::-1]
    assert sorted(ids.values(), reverse=True) == [ids[n] for n in newest_first]
    for offset in range(4):
        assert person_names(client, f"limit=1&offset={offset}") == (
            newest_first[offset:offset + 1], 4), offset


def test_person_search_pages_by_offset(four_persons):
    client, ids = four_persons
    client.put(f"/persons/{ids['Dana']}/rename", json={"name": "Bobby"})
    assert person_names(client, "q=bo&sort=name") == (["bob", "Bobby"], 2)
    assert person_names(client, "q=BO&sort=name&order=desc") == (["Bobby", "bob"], 2)
    assert person_names(client, "q=bo&sort=name&limit=1&offset=1") == (["Bobby"], 2)
    assert person_names(client, "q=bo&sort=name&offset=2") == ([], 2)
