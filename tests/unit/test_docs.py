"""The documentation's pointers lead somewhere: every relative link of README.md and docs/*.md
names a file that exists (and, with a #fragment, a heading of that page), every page of docs/ is
reachable from the README, and the example files the pages show are the files shipped.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^\s*```")
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[(?:[^\]\n]|\n)*?\]\(([^()\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def prose(text: str) -> str:
    """The page without its fenced code blocks (links and headings live outside them)."""
    kept, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        kept.append("" if fenced else line)
    return "\n".join(kept)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces as hyphens."""
    text = heading.replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    for line in prose(page.read_text(encoding="utf-8")).splitlines():
        if match := _HEADING.match(line):
            base = slug(match.group(2))
            name, number = base, 0
            while name in found:  # GitHub numbers repeated headings
                number += 1
                name = f"{base}-{number}"
            found.add(name)
    return found


def links(page: Path) -> list[str]:
    text = _CODE_SPAN.sub("", prose(page.read_text(encoding="utf-8")))
    return [target for target in _LINK.findall(text) if not re.match(r"[a-z]+:", target)]


def resolve(page: Path, target: str) -> tuple[Path, str]:
    path, _, fragment = target.partition("#")
    return ((page.parent / path).resolve() if path else page), fragment


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_names_an_existing_file_and_heading(page: Path) -> None:
    broken = []
    for target in links(page):
        path, fragment = resolve(page, target)
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif fragment and path.suffix == ".md" and fragment not in anchors(path):
            broken.append(f"{target}: no heading #{fragment} in {path.name}")
    assert broken == [], f"{page.relative_to(ROOT)}: {broken}"


def test_the_link_check_sees_links_and_headings() -> None:
    # A check that finds nothing would pass on any page: it must read what the pages hold.
    readme = ROOT / "README.md"
    assert "docs/allowlist.md" in links(readme)
    assert "why-chime-egress-run-not-mitmdump--s" in anchors(ROOT / "docs" / "deploy.md")
    assert slug("4. Help a user: the check page") == "4-help-a-user-the-check-page"
    assert resolve(readme, "docs/cli.md#run") == (ROOT / "docs" / "cli.md", "run")


def test_every_docs_page_is_reachable_from_the_readme() -> None:
    seen, todo = set(), [ROOT / "README.md"]
    while todo:
        page = todo.pop()
        if page in seen:
            continue
        seen.add(page)
        for target in links(page):
            path, _ = resolve(page, target)
            if path.suffix == ".md" and path.exists():
                todo.append(path)
    orphans = sorted(str(p.relative_to(ROOT)) for p in PAGES if p not in seen)
    assert orphans == [], f"no link leads to {orphans}"


def test_the_roll_out_example_shown_is_the_example_file() -> None:
    # docs/allowlist.md shows docs/examples/pilot.yaml whole; docs/cli.md runs the file.
    page = (ROOT / "docs" / "allowlist.md").read_text(encoding="utf-8")
    shipped = (ROOT / "docs" / "examples" / "pilot.yaml").read_text(encoding="utf-8")
    assert shipped in re.findall(r"```yaml\n(.*?)```", page, re.DOTALL)


def test_the_architecture_page_lists_every_module_in_its_wing() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    tree = page[page.index("```\nsrc/chime_egress/") : page.index("\n```\n", page.index("```\n"))]
    listed: set[str] = set()
    wing = ""
    for line in tree.splitlines()[1:]:
        if header := re.match(r"  (\w+)/", line):
            wing = header.group(1) + "/"
        # File names, not paths to elsewhere (`addon/chime_csp.py`, `proxy/launcher.py`).
        names = re.findall(r"(?<![\w/.-])[\w.]+\.(?:py|json)\b", line)
        listed.update(wing + name for name in names)
    package = ROOT / "src" / "chime_egress"
    files = {
        str(path.relative_to(package))
        for path in [*package.rglob("*.py"), *package.rglob("*.json")]
    }
    modules = {name for name in files if Path(name).name not in ("__init__.py", "__main__.py")}
    assert sorted(modules - listed) == [], "docs/architecture.md does not list these"
    assert sorted(listed - files) == [], "docs/architecture.md lists modules that do not exist"
