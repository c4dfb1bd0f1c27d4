"""Kept for the report modules' imports: the atomic writer lives in xenpvh.util.fs."""

from xenpvh.util.fs import atomic_write_text as atomic_write_text
