#!/usr/bin/python3
"""Replaces (or appends) one '## <title>' section of bench/RESULTS.md with the contents of a file.
Usage: record.py "<title prefix>" SECTION.md"""
import os
import sys

title, section_path = sys.argv[1], sys.argv[2]
results = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
section = open(section_path).read().rstrip() + "\n"
text = open(results).read() if os.path.exists(results) else "# Benchmark results\n"
lines = text.splitlines(keepends=True)
out, skipping, replaced = [], False, False
for line in lines:
    if line.startswith("## "):
        skipping = line[3:].startswith(title)
        if skipping and not replaced:
            out.append(section + "\n")
            replaced = True
            continue
    if not skipping:
        out.append(line)
if not replaced:
    if out and not out[-1].endswith("\n\n"):
        out.append("\n")
    out.append(section)
open(results, "w").write("".join(out))
