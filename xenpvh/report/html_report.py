"""Old home of the HTML writer (Verdict, path, console lines); the code is in html_page."""

from xenpvh.report.compat import write_html

__all__ = ["write_html"]
