"""Helpers shared by the test suite (fixtures are in ``tests/conftest.py``).

- :mod:`.values`: sample names, hashes, trace contexts, definitions and
  identities.
- :mod:`.wire`: the protobuf codec, v1 frames and an independent identity
  probe.
- :mod:`.procfs`: the ``/proc`` reader (process state, children,
  descriptors, threads, environment).
- :mod:`.leftovers`: the "nothing left behind" check (no stray process,
  zombie, descriptor, socket file or log file).
- :mod:`.waits`: polling with a hang guard.
- :mod:`.launch`: backends to launch, the private tree they live in, and
  launches that are always cleaned up.
- :mod:`.hostile`, :mod:`.router`, :mod:`.soak`: what the hostile-environment,
  router and soak suites add.
"""
