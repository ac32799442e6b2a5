"""A person's own fields, set by hand: name, hidden, favorite, birth date and cover face.

None of these moves a face, and each change is one write to the person, so nothing else is
journalled. A cover is the exception: it is checked again after it is written (its face may
have left the person meanwhile) and then replaced, a second write; a kill between the two
leaves the intent, whose repair recounts the person and so gives it its best face back.
"""

from __future__ import annotations

import typing as t
from datetime import UTC
from datetime import date
from datetime import datetime
from datetime import timedelta

from errors import ValidationError
from services import bookkeeping
from services import people
from services import storage
from services.storage import Store

Doc = dict[str, t.Any]

PERSON_FIELDS = {"name", "hidden", "favorite", "birth_date", "cover_face_id"}
#: The easternmost time zone is UTC+14: a date that is today anywhere is not in the future.
_AHEAD_OF_UTC = timedelta(hours=14)


def update_person(store: Store, person_id: str, changes: Doc) -> Doc:
    """Set any of ``name`` (as rename), ``hidden``, ``favorite``, ``birth_date`` (an ISO date
    not in the future; None clears it) and ``cover_face_id`` (one of the person's faces, made
    its thumbnail; None goes back to the best face). Returns the person's summary.

    :raise ValidationError: an unknown field or a bad value (400).
    :raise DocumentNotFoundError: no such person (404).
    """
    unknown = sorted(set(changes) - PERSON_FIELDS)
    if unknown or not changes:
        raise ValidationError(f"Send some of {', '.join(sorted(PERSON_FIELDS))}",
                              details={"field": unknown[0] if unknown else None})
    person = store.get_person(person_id)
    fields: Doc = {}
    if "name" in changes:
        name = people.clean_person_name(changes["name"])
        fields.update(name=name, name_lc=name.lower(), named_by_user=True)
    for flag in ("hidden", "favorite"):
        if flag in changes:
            if not isinstance(changes[flag], bool):
                raise ValidationError(f"'{flag}' must be true or false", details={"field": flag})
            fields[flag] = changes[flag]
    if "birth_date" in changes:
        fields["birth_date"] = _birth_date(changes["birth_date"])
    cover = changes.get("cover_face_id")
    if cover is not None:
        cover = storage.check_id(cover, "cover_face_id")
        found = store.faces_with_ids([cover])
        if not found or found[0]["person_id"] != person["_id"]:
            raise ValidationError(f"Face {cover} is not one of this person's faces",
                                  details={"field": "cover_face_id", "face_id": cover})
        fields.update(thumbnail_face_id=cover, thumbnail_quality=bookkeeping.COVER_QUALITY)
    elif "cover_face_id" in changes:
        best = bookkeeping.best_face_of(store, person["_id"])
        fields.update(thumbnail_face_id=best["_id"] if best else "",
                      thumbnail_quality=bookkeeping.quality_of(best) if best else -1.0)
    fields["updated_at"] = storage.now()
    if cover is None:
        store.set_person_fields(person["_id"], fields)
    else:
        with bookkeeping.journal(store, "set_cover", persons=[person["_id"]], faces=[cover]):
            store.set_person_fields(person["_id"], fields)
            # A move that took the face away before this write saw the old thumbnail and
            # left it: the person gets its best face back, as if the face had left just after.
            moved = store.faces_with_ids([cover])
            if not moved or moved[0]["person_id"] != person["_id"]:
                bookkeeping.refresh_thumbnail(store, person["_id"])
    return people.person_summary(store.get_person(person["_id"]))


def _birth_date(value: t.Any) -> str | None:
    """An ISO date (``date`` or ``"YYYY-MM-DD"``) not in the future, as stored; None clears."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value)
        except ValueError:
            raise ValidationError("'birth_date' must be an ISO date such as 1990-05-17",
                                  details={"field": "birth_date"}) from None
    if isinstance(value, datetime):
        value = value.date()
    if not isinstance(value, date):
        raise ValidationError("'birth_date' must be an ISO date or null",
                              details={"field": "birth_date"})
    if value > (datetime.now(UTC) + _AHEAD_OF_UTC).date():
        raise ValidationError("'birth_date' must not be in the future",
                              details={"field": "birth_date", "birth_date": value.isoformat()})
    return value.isoformat()
