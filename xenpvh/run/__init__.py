"""Boot runs: the Session (xenpvh.run.session) for every front end, one boot run as a state
machine (xenpvh.run.boot) and its parts.  Import from the modules themselves: this package
imports none of them, so no submodule's import comes back through it."""
