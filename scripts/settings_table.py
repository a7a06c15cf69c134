"""Print the README's table of every ENERLINK_* setting from .env.example (name, default, meaning)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_LINE = re.compile(r"^(#\s*)?(ENERLINK_[A-Z0-9_]+)=(.*?)\s+#\s+(.*)$")


def rows(text: str) -> list[tuple[str, str, str]]:
    out = []
    for line in text.splitlines():
        match = _LINE.match(line)
        if match:
            name, value, meaning = match.group(2), match.group(3).strip().strip('"'), match.group(4).strip()
            out.append((name, "unset" if match.group(1) else value or "empty", meaning))
    return out


def table(text: str) -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| `{n}` | `{d}` | {m.replace('|', '/')} |" for n, d, m in rows(text)]
    return "\n".join(lines)


if __name__ == "__main__":
    print(table((ROOT / ".env.example").read_text(encoding="utf-8")))
