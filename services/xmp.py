"""XMP sidecars with Metadata Working Group face regions, which digiKam, darktable and
Lightroom read: one ``mwg-rs:Regions`` (a RegionInfo) per photo, one region per face.

A region's ``mwg-rs:Area`` is normalised to the image: ``stArea:x``/``y`` are the box's
centre and ``w``/``h`` its size, each divided by the image's width or height. Boxes
(``face_location``) are in the stored image's pixels, and the image document's ``width`` and
``height`` are that grid's size (:mod:`services.ingest`): both upright, after EXIF
orientation, so the regions are written for the picture as it is displayed, and
``mwg-rs:AppliedToDimensions`` says which size they were measured on.
"""

from __future__ import annotations

import typing as t
from pathlib import Path
from xml.sax.saxutils import escape

from services.storage import Store

Doc = dict[str, t.Any]

MIME_TYPE = "application/rdf+xml"
_ATTRIBUTE = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}

_HEAD = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:mwg-rs="http://www.metadataworkinggroup.com/schemas/regions/"
    xmlns:stDim="http://ns.adobe.com/xap/1.0/sType/Dimensions#"
    xmlns:stArea="http://ns.adobe.com/xmp/sType/Area#">
   <mwg-rs:Regions rdf:parseType="Resource">
    <mwg-rs:AppliedToDimensions stDim:w="{w}" stDim:h="{h}" stDim:unit="pixel"/>
    <mwg-rs:RegionList>
     <rdf:Bag>
"""
_REGION = """      <rdf:li>
       <rdf:Description{name} mwg-rs:Type="Face">
        <mwg-rs:Area stArea:x="{x}" stArea:y="{y}" stArea:w="{rw}" stArea:h="{rh}" \
stArea:unit="normalized"/>
       </rdf:Description>
      </rdf:li>
"""
_TAIL = """     </rdf:Bag>
    </mwg-rs:RegionList>
   </mwg-rs:Regions>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>
"""


def area(box: Doc, width: int, height: int) -> tuple[float, float, float, float]:
    """A ``{top, right, bottom, left}`` box as MWG's normalised (centre x, centre y, w, h)."""
    return ((box["left"] + box["right"]) / 2 / width, (box["top"] + box["bottom"]) / 2 / height,
            (box["right"] - box["left"]) / width, (box["bottom"] - box["top"]) / height)


def sidecar(image: Doc, faces: list[Doc], names: dict[str, str]) -> str:
    """The XMP packet of one image: ``faces`` are its face documents, ``names`` the display
    name of each person to name (a face of a person not in ``names`` gets a region without
    ``mwg-rs:Name``)."""
    width, height = int(image["width"]), int(image["height"])
    parts = [_HEAD.format(w=width, h=height)]
    for face in faces:
        x, y, w, h = area(face["face_location"], width, height)
        name = names.get(face["person_id"])
        parts.append(_REGION.format(
            name="" if name is None else f' mwg-rs:Name="{escape(name, _ATTRIBUTE)}"',
            x=_number(x), y=_number(y), rw=_number(w), rh=_number(h)))
    parts.append(_TAIL)
    return "".join(parts)


def _number(value: float) -> str:
    # Six decimals: a millionth of the image, under a pixel for any photo below 1,000,000 px
    # on a side.
    return f"{value:.6f}"


def _names(store: Store, person_ids: t.Iterable[str]) -> dict[str, str]:
    """Names users gave: an automatic "Person N" is a label of this gallery, and would
    become a stray keyword in a photo manager, so its regions stay unnamed."""
    names = {}
    for person_id in set(person_ids):
        person = store.find_person(person_id)
        if person is not None and person.get("named_by_user"):
            names[person_id] = person["name"]
    return names


def image_sidecar(store: Store, image_id: str) -> str:
    """The XMP sidecar of one ready image.

    :raise DocumentNotFoundError: no such image (404).
    """
    image = store.get_image(image_id)
    faces = store.faces_of_image(image["_id"])
    return sidecar(image, faces, _names(store, (f["person_id"] for f in faces)))


def write_sidecars(store: Store, directory: Path) -> int:
    """Write one sidecar per ready image into ``directory``; returns how many.

    Each is named ``<sha256>.xmp``: unique, and the export document's ``images`` list maps
    it to the photo's file name."""
    directory.mkdir(parents=True, exist_ok=True)
    written = 0
    for image in store.iter_ready_images({"sha256": 1, "width": 1, "height": 1}):
        faces = store.faces_of_image(image["_id"])
        text = sidecar(image, faces, _names(store, (f["person_id"] for f in faces)))
        (directory / f"{image['sha256']}.xmp").write_text(text, encoding="utf-8")
        written += 1
    return written
