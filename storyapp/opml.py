"""OPML, the list of feeds that feed readers import and export (OPML 2.0, opml.org/spec2).

Reading takes every outline with an `xmlUrl`, however deeply folders nest them; writing gives
one flat list of `type="rss"` outlines with the feed's title and site.
"""

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from email.utils import format_datetime

from storyapp.models import Feed


class OpmlError(ValueError):
    """A document that is not OPML; the message says why."""


def read(data: bytes) -> list[str]:
    """The feed URLs an OPML document lists, in document order (titles are read from the
    feeds themselves when they are added)."""
    # expat (2.4.1 and later, as Python bundles) refuses entity expansion bombs by itself;
    # OPML has no DTD to need, and ElementTree fetches no external entity.
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise OpmlError(f"not an OPML file: {exc}") from None
    if root.tag != "opml" or root.find("body") is None:
        raise OpmlError(f"not an OPML file: the document is <{root.tag}>, not <opml> with a <body>")
    urls = (outline.get("xmlUrl") for outline in root.find("body").iter("outline"))
    return [url.strip() for url in urls if url and url.strip()]


def write(feeds: list[Feed], now: datetime | None = None) -> bytes:
    root = ET.Element("opml", version="2.0")
    head = ET.SubElement(root, "head")
    ET.SubElement(head, "title").text = "storyapp feeds"
    ET.SubElement(head, "dateCreated").text = format_datetime(now or datetime.now(UTC), True)
    body = ET.SubElement(root, "body")
    for feed in feeds:
        attributes = {"type": "rss", "text": feed.title or feed.url}
        if feed.title:
            attributes["title"] = feed.title
        attributes["xmlUrl"] = feed.url
        if feed.site_url:
            attributes["htmlUrl"] = feed.site_url
        ET.SubElement(body, "outline", attributes)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
