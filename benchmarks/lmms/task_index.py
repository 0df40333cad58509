"""The lmms-eval task names this installation knows, read cheaply from its task YAML files.

lmms-eval's own ``TaskManager`` parses every task YAML (about 1,900 files in 0.7.3) and takes 12-13 s on
this project's 2-core machine; checking ``--vqa-tasks`` before any model loads needs only the names, so
:func:`known_tasks` scans the same files for their ``task:``, ``group:`` and ``tag:`` keys (a string,
a flow list or a block list; a file takes the tags of the file it ``include:``s, and its task name too
when it has none of its own), in 0.2-0.6 s. On lmms-eval 0.7.3 it finds every one of
``TaskManager().all_tasks`` (1,985 names) and no other.
"""
from __future__ import annotations

import difflib
import os
import re
from functools import lru_cache
from pathlib import Path

_KEY = re.compile(r"""^['"]?(task|group|tag|include)['"]?[ \t]*:[ \t]*(.*?)[ \t]*(?:#.*)?$""")
_ITEM = re.compile(r"^[ \t]+-[ \t]*(\S.*?)[ \t]*$")


def _unquote(text: str) -> str:
    return text.strip().strip("'\"")


def _scan(path: Path) -> tuple[dict[str, set[str]], str]:
    """(key -> the names a YAML file declares under it: task, group, tag; the file it includes or '')."""
    names: dict[str, set[str]] = {"task": set(), "group": set(), "tag": set()}
    include = ""
    listing = ""  # the key whose block list is being read
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            found = _KEY.match(line)
            if found:
                key, value = found.group(1), found.group(2)
                listing = "" if value else key
                if key == "include":
                    include = _unquote(value)
                elif value.startswith("["):
                    names[key].update(_unquote(part) for part in value.strip("[]").split(",") if _unquote(part))
                elif value and not value.startswith("!"):
                    names[key].add(_unquote(value))
                continue
            item = _ITEM.match(line) if listing else None
            if item is None:
                listing = ""
            elif listing != "include" and ":" not in item.group(1):  # a group's list may hold task tables: not names
                names[listing].add(_unquote(item.group(1)))
    return names, include


@lru_cache(maxsize=1)
def known_tasks() -> frozenset[str]:
    """Every task, group and tag name of the installed lmms-eval (empty when it is not installed)."""
    try:
        import lmms_eval
    except ImportError:
        return frozenset()
    root = Path(lmms_eval.__file__).parent / "tasks"
    names: set[str] = set()
    for folder, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".yaml"):
                continue
            path = Path(folder) / name
            declared, include = _scan(path)
            if include and (path.parent / include).is_file():  # what the file does not say itself comes from its template
                template = _scan(path.parent / include)[0]
                declared["tag"] |= template["tag"]
                if not declared["task"] and not declared["group"]:
                    declared["task"] = template["task"]
            names.update(*declared.values())
    return frozenset(names)


def unknown_tasks_problem(tasks: tuple[str, ...], own: tuple[str, ...]) -> str:
    """'' when every task is one of ``own`` (the project's local tasks) or known to lmms-eval, else the
    problem naming the unknown ones with the closest known names."""
    asked = [task for task in tasks if task not in own]
    known = known_tasks() if asked else frozenset()  # the scan only when a task is not the project's own
    if not known:  # nothing to look up, or no lmms-eval to ask (its run will say)
        return ""
    unknown = [task for task in asked if task not in known]
    if not unknown:
        return ""
    close = sorted({match for task in unknown for match in difflib.get_close_matches(task, [*known, *own], n=3, cutoff=0.75)})
    hint = f" (close: {', '.join(close)})" if close else ""
    return (f"unknown lmms-eval task(s) {', '.join(unknown)}{hint}; pass task names of lmms-eval "
            f"(python -m lmms_eval --tasks list) or {', '.join(own)} (the offline shapes-world tasks)")
