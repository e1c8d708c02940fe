"""Command line: ``python -m bench report ...``, ``compare ...``, ``ab ...`` and ``bisect ...``.

``report`` and ``compare`` read pytest-benchmark JSON files and import no TensorFlow; ``ab``
and ``bisect`` start worker processes that do.
"""

from __future__ import annotations

import sys

USAGE = """usage: python -m bench {report,compare,ab,bisect} ...

  report   RESULTS.json [MORE.json ...] --out DIR   tables (markdown, CSV) and plots
  compare  BASELINE.json CURRENT.json [--threshold 10%] [--normalize]   cross-run check
  ab       [--base REV|DIR] [--head REV|DIR] [-k EXPR]   interleaved A/B regression check
  bisect   GOOD BAD [-k EXPR] [bench ab options]   the commit(s) that made it slower

'python -m bench COMMAND --help' for a command's options."""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "report":
        from bench.report.cli import main as run  # lazy: pandas and scipy, for one command
    elif command == "compare":
        from bench.report.compare_cli import main as run  # lazy: pandas and scipy, for one command
    elif command == "ab":
        from bench.ab.cli import main as run  # lazy: pandas and scipy, for one command
    elif command == "bisect":
        from bench.ab.bisect_cli import main as run  # lazy: pandas and scipy, for one command
    else:
        print(f"error: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return run(rest)


if __name__ == "__main__":
    sys.exit(main())
