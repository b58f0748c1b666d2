"""OpenBSD-shaped trees and patches made inside the tests (no third-party text)."""

from __future__ import annotations

import os
from pathlib import Path

from mapelab.openbsd import refresh

REV_DATE = "2025/01/05 12:36:48"


def c_file(name: str, rev: str, nfuncs: int = 20, tag: bool = True) -> str:
    """A C file in OpenBSD style: an $OpenBSD$ tag and ``nfuncs`` small functions."""
    head = f"/*\t$OpenBSD: {name},v {rev} {REV_DATE} dev Exp $ */\n\n" if tag else "/* no tag */\n\n"
    body = "".join(
        f"int\nfunc{i}(int x)\n{{\n\tif (x > {i})\n\t\treturn ({i});\n\treturn (x);\n}}\n\n" for i in range(nfuncs)
    )
    return head + "#include <sys/types.h>\n\n" + body


MAN_PAGE = """.\\"\t$OpenBSD: pf.conf.5,v 1.600 2025/01/05 12:36:48 dev Exp $
.Dd $Mdocdate: January 5 2025 $
.Dt PF.CONF 5
.Os
.Sh NAME
.Nm pf.conf
.Nd packet filter configuration file
.Sh DESCRIPTION
The
.Nm
file configures the packet filter.
It is read at boot.
.Sh TRANSLATION
Translation rules rewrite addresses and ports.
"""

PARSE_Y = """/*\t$OpenBSD: parse.y,v 1.700 2025/01/05 12:36:48 dev Exp $\t*/

%{
#include <sys/types.h>
%}

%token\tNAT RDR
%%

grammar\t\t: /* empty */
\t\t| grammar rule
\t\t;

rule\t\t: NAT
\t\t| RDR
\t\t;
%%

int
lookup(char *s)
{
\treturn (0);
}
"""


def make_tree(root: Path) -> Path:
    """A small /usr/src-shaped tree: sys, sbin/pfctl, a man page, regress, and the usual top dirs."""
    files = {
        "sys/net/pfvar.h": c_file("pfvar.h", "1.540", 6),
        "sys/net/pf_lb.c": c_file("pf_lb.c", "1.76", 30),
        "sbin/pfctl/parse.y": PARSE_Y,
        "sbin/pfctl/pfctl_parser.c": c_file("pfctl_parser.c", "1.350", 12),
        "share/man/man5/pf.conf.5": MAN_PAGE,
        "regress/sbin/pfctl/Makefile": "#\t$OpenBSD: Makefile,v 1.237 2025/01/05 12:36:48 dev Exp $\n\nPFTESTS=1 2 3\n",
        "sbin/dhcp6leased/engine.c": c_file("engine.c", "1.30", 8),
        "usr.sbin/dhcp6leasectl/dhcp6leasectl.c": c_file("dhcp6leasectl.c", "1.10", 4),
        "lib/libc/Makefile": "# libc\n",
        "include/Makefile": "# includes\n",
        "usr.sbin/Makefile": "SUBDIR= dhcp6leasectl\n",
    }
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        os.utime(p, (1736080608, 1736080608))
    return root


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, count))


def diff_of(pristine: Path, edited: Path, files: list[str]) -> str:
    """A cvs-shaped patch between two test trees (our own refresh is the generator)."""
    return refresh.cvs_diff(pristine, edited, files)
