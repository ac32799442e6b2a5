"""Filters of ``GET /images/``: by section (alone and with its album), and by person together
with photo dates or an album; newest upload first, paged with ``limit`` and ``offset``."""

from __future__ import annotations

import datetime as dt

from tests import photos
from tests.conftest import MISSING
from tests.conftest import assert_error
from tests.conftest import create
from tests.conftest import upload


def listed(client, query: str) -> tuple[list[str], int]:
    response = client.get(f"/images/?{query}")
    assert response.status_code == 200, response.json
    data = response.json["data"]
    return [i["_id"] for i in data["images"]], data["total"]


def faceless(n: int) -> list[bytes]:
    """``n`` distinct photos without a face: cheap to upload, and filing needs no faces."""
    return [photos.jpeg(photos.blank_rgb(), quality=60 + i) for i in range(n)]


# -- sections ------------------------------------------------------------------------------

def test_section_filter(client):
    album = create(client, "/albums/", name="Trip")["_id"]
    day1 = create(client, "/sections/", name="Day 1", album_id=album)["_id"]
    day2 = create(client, "/sections/", name="Day 2", album_id=album)["_id"]
    loose = create(client, "/sections/", name="Loose")["_id"]
    data = iter(faceless(6))
    a = upload(client, next(data), section_id=day1)["image_id"]
    b = upload(client, next(data), section_id=day1)["image_id"]
    c = upload(client, next(data), section_id=day2)["image_id"]
    d = upload(client, next(data), section_id=loose)["image_id"]
    e = upload(client, next(data))["image_id"]
    f = upload(client, next(data), album_id=album)["image_id"]

    assert listed(client, f"section_id={day1}") == ([b, a], 2)
    assert listed(client, f"section_id={day1}&limit=1&offset=1") == ([a], 2)
    assert listed(client, f"section_id={day1}&offset=2") == ([], 2)
    assert listed(client, f"section_id={day2}") == ([c], 1)
    assert listed(client, f"section_id={loose}") == ([d], 1)
    assert listed(client, f"section_id={day1.upper()}") == ([b, a], 2)
    # With its album: the section's images; with another album's section: none.
    assert listed(client, f"album_id={album}") == ([f, c, b, a], 4)
    assert listed(client, f"album_id={album}&section_id={day2}") == ([c], 1)
    assert listed(client, f"album_id={album}&section_id={loose}") == ([], 0)
    assert listed(client, "") == ([f, e, d, c, b, a], 6)

    # Refiling and deleting change what the filter shows.
    client.put(f"/images/{a}", json={"section_id": day2})
    assert listed(client, f"section_id={day1}") == ([b], 1)
    assert listed(client, f"section_id={day2}") == ([c, a], 2)
    client.delete(f"/images/{c}")
    assert listed(client, f"section_id={day2}") == ([a], 1)
    client.delete(f"/sections/{day2}")
    assert_error(client.get(f"/images/?section_id={day2}"), 404, "DocumentNotFoundError")
    assert_error(client.get(f"/images/?section_id={MISSING}"), 404, "DocumentNotFoundError")
    assert_error(client.get("/images/?section_id=day-1"), 400, "ValidationError")


# -- persons with dates and albums ---------------------------------------------------------

def dated(src: photos.Source, taken_at: dt.datetime) -> bytes:
    return photos.with_exif(photos.rgb(src), taken_at=taken_at)


def test_person_and_date_filters(client):
    summer = upload(client, dated(photos.astronaut_rgb(), dt.datetime(2019, 7, 4, 12, 30)))
    winter = upload(client, dated(photos.image(photos.mirrored(photos.astronaut_rgb())),
                                  dt.datetime(2021, 1, 15, 10, 0)))
    undated = upload(client, photos.scaled(photos.astronaut_rgb(), 0.8))  # dated by its upload
    grace = upload(client, dated(photos.hopper_rgb(), dt.datetime(2019, 7, 4, 9, 0)))
    eileen = summer["faces"][0]["person_id"]
    assert winter["faces"][0]["person_id"] == undated["faces"][0]["person_id"] == eileen
    s, w, u, g = (r["image_id"] for r in (summer, winter, undated, grace))
    person = f"person_id={eileen}"

    assert listed(client, person) == ([u, w, s], 3)
    assert listed(client, f"{person}&date_from=2019-07-01&date_to=2019-07-31") == ([s], 1)
    assert listed(client, "date_from=2019-07-01&date_to=2019-07-31") == ([g, s], 2)
    assert listed(client, f"{person}&date_from=2020-01-01") == ([u, w], 2)
    assert listed(client, f"{person}&date_to=2021-01-15") == ([w, s], 2)  # the whole day
    assert listed(client, f"{person}&date_to=2021-01-14") == ([s], 1)
    # Both bounds are inclusive, to the second.
    assert listed(client, f"{person}&date_from=2021-01-15T10:00:00") == ([u, w], 2)
    assert listed(client, f"{person}&date_from=2021-01-15T10:00:01") == ([u], 1)
    assert listed(client, f"{person}&date_to=2021-01-15T10:00:00") == ([w, s], 2)
    assert listed(client, f"{person}&date_to=2021-01-15T09:59:59") == ([s], 1)
    # Pages count the matching images only.
    assert listed(client, f"{person}&date_to=2021-12-31&limit=1") == ([w], 2)
    assert listed(client, f"{person}&date_to=2021-12-31&limit=1&offset=1") == ([s], 2)
    assert listed(client, f"{person}&date_to=2021-12-31&offset=2") == ([], 2)
    assert listed(client, f"{person}&date_from=2100-01-01") == ([], 0)
    assert listed(client, f"person_id={grace['faces'][0]['person_id']}&date_to=2019-12-31") \
        == ([g], 1)
    # An inverted range holds nothing: an empty page, not an error (a schema cannot say so).
    assert listed(client, f"{person}&date_from=2021-01-02&date_to=2021-01-01") == ([], 0)


def test_person_and_album_filters(client):
    album = create(client, "/albums/", name="Space")["_id"]
    section = create(client, "/sections/", name="Launch", album_id=album)["_id"]
    first = upload(client, photos.astronaut_jpeg(), album_id=album)
    second = upload(client, photos.mirrored(photos.astronaut_rgb()), section_id=section)
    third = upload(client, photos.scaled(photos.astronaut_rgb(), 0.8))
    grace = upload(client, photos.hopper_jpeg(), album_id=album)
    eileen = first["faces"][0]["person_id"]
    f, s, t = first["image_id"], second["image_id"], third["image_id"]

    assert listed(client, f"person_id={eileen}") == ([t, s, f], 3)
    assert listed(client, f"person_id={eileen}&album_id={album}") == ([s, f], 2)
    assert listed(client, f"person_id={eileen}&album_id={album}&limit=1&offset=1") == ([f], 2)
    assert listed(client, f"person_id={eileen}&section_id={section}") == ([s], 1)
    assert listed(client, f"person_id={grace['faces'][0]['person_id']}&section_id={section}") \
        == ([], 0)
    # A face moved to another person takes its image out of this person's list.
    client.put(f"/faces/{second['faces'][0]['face_id']}/move-to-new")
    assert listed(client, f"person_id={eileen}&album_id={album}") == ([f], 1)
