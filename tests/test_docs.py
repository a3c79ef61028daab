"""The documentation: the README and the mkdocs site in docs/.

The site builds with ``mkdocs build --strict`` (a broken link, a page missing from the nav or an
API name mkdocstrings cannot resolve fails it); every ``python -m dse ...`` command the README or
a page shows exists (its sub-command path answers ``--help`` with exit code 0); the README stays
at most 300 lines; and every relative link of the README and the pages points at a file that
exists (and, into a page, at a heading that exists).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dse.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 300

COMMAND = re.compile(r"python -m dse\b([^`|\n]*)")
WORD = re.compile(r"[a-z][a-z0-9_-]*")
FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
HELP_TIMEOUT_S = 120


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def _env() -> dict[str, str]:
    # Material for MkDocs prints an end-of-life banner unless told not to; it is no warning
    return {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}


def _prose(text: str) -> str:
    """The text outside fenced code blocks and inline code (where a link is markup)."""
    kept, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            kept.append(INLINE_CODE.sub("", line))
    return "\n".join(kept)


def _anchors(page: Path) -> set[str]:
    """The ids mkdocs gives the page's headings (Python-Markdown's toc slugify)."""
    from markdown.extensions.toc import slugify

    ids, fenced = set(), False
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and (heading := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)):
            text = re.sub(r"[`*_]", "", re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.group(1)))
            ids.add(slugify(text, "-"))
    return ids


def _documented_commands() -> dict[tuple[str, ...], list[str]]:
    """Every sub-command path shown as ``python -m dse WORDS ...`` (at most two words: a command
    and its sub-command; the words stop at the first argument that is not a plain lower-case
    word), with where it was shown."""
    found: dict[tuple[str, ...], list[str]] = {}
    for page in _pages():
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            for match in COMMAND.finditer(line):
                words = []
                for token in match.group(1).split():
                    token = token.rstrip("),.;:")  # a command quoted in a sentence or comment
                    if not WORD.fullmatch(token) or len(words) == 2:
                        break
                    words.append(token)
                found.setdefault(tuple(words), []).append(f"{page.relative_to(ROOT)}:{number}")
    return found


def _help(words: tuple[str, ...]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dse", *words, "--help"], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=HELP_TIMEOUT_S)


def test_the_site_builds_strictly(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                           "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (
        "mkdocs build --strict failed (mkdocs-material and mkdocstrings[python] come with the "
        f"dev extra: pip install -e '.[dev]'):\n{done.stdout}\n{done.stderr}")
    site = tmp_path / "site"
    for page in sorted(DOCS.rglob("*.md")):  # use_directory_urls: false, so page.md -> page.html
        built = site / page.relative_to(DOCS).with_suffix(".html")
        assert built.is_file(), f"{page.relative_to(ROOT)} was not built ({built} missing)"
    api = (site / "api.html").read_text(encoding="utf-8")
    for name in ("dse.load_study", "dse.Study", "dse.compare", "dse.run_study",
                 "circuits.product_table.ProductTable", "circuits.library.MultiplierLibrary"):
        assert f'id="{name}"' in api, f"the API page documents no {name}"


def test_every_documented_command_exists():
    documented = _documented_commands()
    # the README's table alone names 18 command paths; the pages repeat and extend them
    assert len(documented) >= 18, sorted(documented)
    assert sum(len(where) for where in documented.values()) >= 60

    top = _help(())
    assert top.returncode == 0, top.stderr
    commands = re.search(r"\{([a-z,-]+)\}", top.stdout).group(1).split(",")
    assert len(commands) >= 14, commands
    readme = {words[0] for words, where in documented.items() if words
              and any(w.startswith("README.md:") for w in where)}
    missing = sorted(set(commands) - readme)
    assert not missing, f"commands of `dse --help` the README's table does not show: {missing}"

    # the sub-commands' help in this process (the module entry itself ran above): each exits 0
    failed = []
    for words in sorted(words for words in documented if words):
        try:
            with contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()) as err:
                main([*words, "--help"])
            code = 0
        except SystemExit as stop:
            code = stop.code
        if code != 0:
            failed.append(f"python -m dse {' '.join(words)} --help: exit {code} "
                          f"(shown at {', '.join(documented[words][:3])})\n{err.getvalue().strip()}")
    assert not failed, "\n".join(failed)


def test_the_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert 50 <= len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move the detail into a "
        "page of docs/")


def test_every_relative_link_resolves():
    checked, broken = 0, []
    for page in _pages():
        for target in LINK.findall(_prose(page.read_text(encoding="utf-8"))):
            if SCHEME.match(target) or target.startswith("#"):
                continue
            checked += 1
            path, _, anchor = target.partition("#")
            path = path.split("?", 1)[0]
            if path.startswith("/"):
                broken.append(f"{page.relative_to(ROOT)}: {target} (an absolute path)")
                continue
            resolved = (page.parent / path).resolve()
            if not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    # the README links every page and a figure; the pages link figures and each other
    assert checked >= 40, f"only {checked} relative links found"
    assert not broken, "broken links:\n" + "\n".join(broken)


@pytest.mark.parametrize("png", sorted(p.name for p in DOCS.glob("*.png")))
def test_every_figure_is_shown(png):
    shown = "\n".join(p.read_text(encoding="utf-8") for p in _pages())
    assert png in shown, f"docs/{png} is shown on no page"
