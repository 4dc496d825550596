"""Transparent huge pages for the large host buffers of XLA:CPU (glibc's malloc on Linux).

XLA:CPU allocates each call's temporary buffer with `malloc`: 3.9 GB for the model's forward and
backward pass at batch 8, 640 px. glibc serves a block that large from a fresh `mmap` and unmaps it
when freed, so every train step faults all of it back in, 4 KiB at a time: about 1.1 million page
faults, 1.5-1.9 s of kernel time per step on the 2-core CPU machine (0.8x the step time without).
glibc 2.35 and later can ask for transparent huge pages (2 MiB, `madvise(MADV_HUGEPAGE)`) on such
blocks, with the tunable `glibc.malloc.hugetlb=1`; the kernel honours it where its THP mode is
`madvise` (where it is `always`, it uses them anyway). Tunables are read when a process starts, so
a command that trains re-executes itself once with the tunable set (`reexec_with_huge_pages`).

A `GLIBC_TUNABLES` that already names `glibc.malloc.hugetlb` is left as it is:
`GLIBC_TUNABLES=glibc.malloc.hugetlb=0` runs a command without huge pages.
"""
import os
import sys

HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb"
_THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"
_MIN_GLIBC = (2, 35)


def thp_mode(path: str = _THP_MODE_FILE) -> str | None:
    """The kernel's transparent-huge-page mode ('always', 'madvise' or 'never'); None if unknown."""
    try:
        with open(path, encoding="ascii") as f:
            text = f.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else None


def glibc_version() -> tuple[int, ...] | None:
    """(major, minor) of the C library when it is glibc, else None."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
        return tuple(int(part) for part in version.split(".")[:2]) if name == "glibc" else None
    except (AttributeError, ValueError, OSError):
        return None


def _tunable_is_honoured() -> bool:
    """Whether the tunable would change this process's large blocks: Linux, glibc 2.35+, THP 'madvise'."""
    return (sys.platform.startswith("linux") and (glibc_version() or (0,)) >= _MIN_GLIBC
            and thp_mode() == "madvise")


def huge_pages_environment(environ: dict) -> dict | None:
    """`environ` with the huge-page tunable added, when setting it would change how this machine
    allocates; None when it would not (not glibc 2.35+ on Linux, THP mode not 'madvise', or the
    tunable already given either way)."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    if not _tunable_is_honoured() or HUGE_PAGES_TUNABLE in tunables:
        return None
    return {**environ, "GLIBC_TUNABLES": ":".join(filter(None, [tunables, f"{HUGE_PAGES_TUNABLE}=1"]))}


def huge_pages_enabled() -> bool:
    """Whether large `malloc` blocks of this process get transparent huge pages."""
    return thp_mode() == "always" or (_tunable_is_honoured()
                                      and f"{HUGE_PAGES_TUNABLE}=1" in os.environ.get("GLIBC_TUNABLES", ""))


def reexec_with_huge_pages() -> None:
    """Re-executes this process (same interpreter, same arguments) with the huge-page tunable set,
    where that changes anything (`huge_pages_environment`); otherwise returns at once. Call it first
    thing in a command's entry point, never from library code: the process is replaced."""
    environ = huge_pages_environment(dict(os.environ))
    if environ is None or not sys.executable:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environ)
