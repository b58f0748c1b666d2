"""OpenBSD sources, patch series and tech@ submissions.

The pieces, each in a module named for what it does:

- :mod:`.series`      series files (``patches/*.toml``): which patches, pinned how, for which release
- :mod:`.fetch`       downloads into the cache, verified by sha256 before use
- :mod:`.signify`     mapelab's own Ed25519 check of ``SHA256.sig`` against pinned keys (``keys/``)
- :mod:`.sources`     OpenBSD src/sys in ``/usr/src`` shape: release tarballs, a git mirror or a local dir
- :mod:`.unidiff`     a unified-diff parser (our own, so reports never depend on GNU patch's output)
- :mod:`.apply`       apply a patch to a tree with a per-hunk report (clean / offset / fuzz / failed)
- :mod:`.refresh`     regenerate a patch from an edited tree in ``cvs diff -uNp`` shape
- :mod:`.components`  touched files → the smallest correct rebuild plan (``data/pfvar_consumers.toml``)
- :mod:`.style`       style(9) checks on added C lines; :mod:`.mandoc` ``mandoc -Tlint`` on man pages
- :mod:`.submission`  one plain-text tech@ mail per topic, with the checks a reviewer runs first
- :mod:`.ceconf`      what an OpenBSD MAP-E CE configures (commands, pf anchor, files) -- pure
- :mod:`.natports`    the source ports pf can hand out (the port set minus OpenBSD's reserved ports)
- :mod:`.outputs`     parsers for ifconfig, netstat -rn, pfctl -sr/-ss/-si, dhcp6leasectl -l

Nothing here imports :mod:`mapelab.tasks`; the tasks call in, never the other way.
"""
