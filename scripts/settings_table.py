"""The table of every ENERLINK_* setting (name, default, meaning), from .env.example.

python scripts/settings_table.py            # print it
python scripts/settings_table.py --write    # replace it in docs/configuration.md
"""

from __future__ import annotations

import re
import sys
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


START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


def write(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    body = table((ROOT / ".env.example").read_text(encoding="utf-8"))
    doc.write_text(f"{head}{START}\n{body}\n{END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        write(ROOT / "docs" / "configuration.md")
    else:
        print(table((ROOT / ".env.example").read_text(encoding="utf-8")))
