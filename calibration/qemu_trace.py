"""QEMU's migration trace events, read back: the windows, the checks and the pause.

``scripts/qemu-trace-migration`` runs calibration cases with these trace events on (QEMU's
``log`` trace backend: with libvirt's ``-msg timestamp=on`` each event is a line
``TID@SECONDS.USEC:EVENT ARGS`` in the domain's log) and decodes them with
:func:`parse` and :func:`decode`. Events (QEMU 10.0 migration/migration.c, ram.c):

* ``migrate_transferred``: end of a bandwidth window (>= 100 ms): bytes sent, its
  length (ms), bandwidth (bytes/ms) and the new ``threshold_size`` (``max_size``) =
  bandwidth x downtime limit;
* ``migrate_pending_estimate``: every check (each pass of the migration thread's loop):
  the dirty-bitmap count, compared with the threshold in force;
* ``migrate_pending_exact``: only when the estimate is below the threshold: after a
  bitmap sync;
* ``migration_thread_low_pending``: the pause (exact below the threshold);
* ``migration_bitmap_sync_start/_end`` (dirty pages after each sync),
  ``migration_completion_vm_stop``, ``migrate_set_state``.

A guest of 512 MiB paused 142 ms after its migration went active (lines of a real trace,
``docs/guest-ram-layout.md``):

>>> lines = [
...     "15228@1796436705.683989:migrate_set_state new state active",
...     "15228@1796436705.783004:migrate_transferred transferred 145047661 time_spent 100 "
...     "bandwidth 1450476 switchover_bw 0 max_size 435142983",
...     "15228@1796436705.824910:migrate_pending_estimate estimate pending size 264773632 "
...     "(pre = 264773632 post=0)",
...     "15228@1796436705.826150:migrate_pending_exact exact pending size 267325440 "
...     "(pre = 267325440 post=0)",
...     "15228@1796436705.826160:migration_thread_low_pending 267325440",
... ]
>>> rows, key = decode(parse(lines))
>>> print(chr(10).join(rows))
     0.0 state active
    99.0 window  sent  138.33 MiB in  100 ms = 1383.3 MiB/s -> threshold 414.98 MiB
   140.9 check   estimate  252.51 MiB vs threshold 414.98 MiB
   142.2 check   EXACT  254.94 MiB vs threshold 414.98 MiB
   142.2 PAUSE   pending  254.94 MiB < threshold 414.98 MiB
>>> key["windows"], key["checks"], key["pause_ms"], key["pause_pending"]
(1, 1, 142.2, 267325440)
"""

from __future__ import annotations

import re

EVENTS = (
    "migrate_transferred", "migrate_pending_estimate", "migrate_pending_exact",
    "migration_thread_low_pending", "migration_bitmap_sync_start",
    "migration_bitmap_sync_end", "migration_completion_vm_stop", "migrate_set_state",
)
LINE = re.compile(r"(\d+)@(\d+\.\d+):(\w+) ?(.*)")
MiB = 2**20


def parse(lines: list[str]) -> list[tuple[float, str, dict[str, int]]]:
    """Trace lines -> (time, event, numeric fields)."""
    out = []
    for line in lines:
        m = LINE.search(line)
        if not m or m.group(3) not in EVENTS:
            continue
        args = m.group(4)
        nums = dict((k, int(v)) for k, v in re.findall(r"(\w+)[ =]+(-?\d+)", args))
        if m.group(3) == "migrate_set_state":
            nums = {}
            args_state = args.split()[-1]
            out.append((float(m.group(2)), f"state {args_state}", nums))
            continue
        if m.group(3) == "migration_thread_low_pending":
            nums = {"pending": int(args)}
        out.append((float(m.group(2)), m.group(3), nums))
    return out


def decode(events: list[tuple[float, str, dict[str, int]]]) -> tuple[list[str], dict]:
    """A readable timeline (times in ms from the migration's start) and the key figures."""
    t0 = next((t for t, e, _ in events if e == "state active"), events[0][0] if events else 0)
    threshold = 0
    rows: list[str] = []
    key: dict = {"windows": 0, "checks": 0, "exact_checks": 0}
    for t, e, n in events:
        ms = (t - t0) * 1000
        if e == "migrate_transferred":
            threshold = n["max_size"]
            key["windows"] += 1
            rows.append(f"{ms:8.1f} window  sent {n['transferred'] / MiB:7.2f} MiB in "
                        f"{n['time_spent']:4d} ms = {n['bandwidth'] * 1000 / MiB:6.1f} MiB/s"
                        f" -> threshold {threshold / MiB:6.2f} MiB")
        elif e == "migrate_pending_estimate":
            key["checks"] += 1
            est = n["size"]
            key["last_estimate"] = est
            if est < 2 * threshold or est < 64 * MiB:
                rows.append(f"{ms:8.1f} check   estimate {est / MiB:7.2f} MiB vs threshold "
                            f"{threshold / MiB:6.2f} MiB")
        elif e == "migrate_pending_exact":
            key["exact_checks"] += 1
            rows.append(f"{ms:8.1f} check   EXACT {n['size'] / MiB:7.2f} MiB vs threshold "
                        f"{threshold / MiB:6.2f} MiB")
            key.setdefault("exact", []).append((round(ms, 1), n["size"], threshold))
        elif e == "migration_thread_low_pending":
            key["pause_ms"] = round(ms, 1)
            key["pause_pending"] = n["pending"]
            key["pause_threshold"] = threshold
            rows.append(f"{ms:8.1f} PAUSE   pending {n['pending'] / MiB:7.2f} MiB < threshold "
                        f"{threshold / MiB:6.2f} MiB")
        elif e == "migration_bitmap_sync_end":
            rows.append(f"{ms:8.1f} sync    dirty pages {n['dirty_pages']} "
                        f"({n['dirty_pages'] * 4096 / MiB:.2f} MiB)")
        elif e == "migration_bitmap_sync_start":
            rows.append(f"{ms:8.1f} sync    start")
        elif e == "migration_completion_vm_stop":
            rows.append(f"{ms:8.1f} vm stopped (ret {n.get('ret')})")
        else:
            rows.append(f"{ms:8.1f} {e}")
    return rows, key
