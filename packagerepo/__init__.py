"""The service core shared by every other package.

Holds what the API, the workers, the loader and the repository all need and
that belongs to none of them: the root exception and its subclasses
(``errors``), every Redis key and its TTL (``keys``), settings read from the
environment (``config``), the job record store (``jobs``), user accounts and
tokens (``accounts``) and the ``packagerepo`` command line (``cli``).

``errors``, ``keys`` and ``config`` import only the standard library, so the
loader may use them without breaking its own import rule.
"""
