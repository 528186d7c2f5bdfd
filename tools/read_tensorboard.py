#!/usr/bin/env python3
"""Print the scalars of a TensorBoard run directory as TensorBoard's own reader loads them.

Usage: python3 tools/read_tensorboard.py DIR

DIR is a run directory (the event files `dpo train --report-to tensorboard` writes, in
``<output>/runs/<date>_<host>/`` by default). Each scalar is one line ``tag step value``, tags in
sorted order, each tag's events in the order the reader keeps them; ``value`` is Python's repr of
the stored float32. Loaded with ``EventAccumulator`` keeping every scalar (no reservoir sampling)
and purging what a ``SessionLog.START`` orphans, as TensorBoard does. Needs the ``tensorboard``
package (``make deps`` installs it into ``.cache/tensorboard``; run with
``PYTHONPATH=.cache/tensorboard``). Used by Tests/cli/run.sh as an independent check of
swift-dpo's event files.

Exit status 0 on success, 1 if DIR is not a directory or holds no event file; an ImportError if
tensorboard is missing.
"""
import os
import sys

from tensorboard.backend.event_processing import event_accumulator


def main():
    if len(sys.argv) != 2:
        print(__doc__.splitlines()[2], file=sys.stderr)
        return 2
    directory = sys.argv[1]
    if not os.path.isdir(directory) or not any("tfevents" in n for n in os.listdir(directory)):
        print(f"read_tensorboard: no event file in '{directory}'", file=sys.stderr)
        return 1
    acc = event_accumulator.EventAccumulator(directory, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    for tag in sorted(acc.Tags()[event_accumulator.SCALARS]):
        for e in acc.Scalars(tag):
            print(f"{tag} {e.step} {e.value!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
