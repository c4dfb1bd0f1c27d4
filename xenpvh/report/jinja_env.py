"""The one Jinja environment of the report room, for every template in report/templates.

Every template there is an HTML page (report.html.j2: one run; plan_summary.html.j2: a
plan's nights), so the environment is made for HTML: autoescape on, an undefined name is an
error (never an empty cell), block tags leave no blank lines, and every printed value passes
through `xml_safe`: control characters a guest printed become visible escapes and a field is
cut at MAX_FIELD_CHARS, so hostile console text can neither break the page nor bloat it.  No
other text is made from templates: xl configs and libvirt XML are rendered by code
(xenpvh/render), which quotes per its own grammar, not HTML's.
"""

from __future__ import annotations

from functools import cache
from typing import Final

import jinja2

from xenpvh.report.sanitize import xml_safe

# The longest text one printed value may put on a page.
MAX_FIELD_CHARS: Final = 64 * 1024


def printable(value: object) -> object:
    """What a template prints for `value`: strings made XML-safe and bounded."""
    if isinstance(value, str):
        return xml_safe(value, MAX_FIELD_CHARS)
    return value


@cache
def template_environment() -> jinja2.Environment:
    """The environment every report template is loaded from (made once per process)."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("xenpvh.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=printable,
    )


__all__ = ["MAX_FIELD_CHARS", "printable", "template_environment"]
