"""Old home of verdict.json's writer; the code is in verdict_doc (compat for old callers)."""

from xenpvh.report.compat import write_verdict_json

__all__ = ["write_verdict_json"]
