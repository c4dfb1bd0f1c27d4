"""Old home of the JUnit writer (Verdict, suite, case); the code is in junit_xml."""

from xenpvh.report.compat import render_junit, write_junit

__all__ = ["render_junit", "write_junit"]
