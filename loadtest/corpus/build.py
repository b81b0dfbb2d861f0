#!/usr/bin/env python3
"""Builds a corpus of real, human-written English prose wrapped in WordPress form payloads.

The corpus trains and measures the brotli shared dictionary on text people actually wrote (books,
FAQs, fiction dialogue, quotations), not generated words. Text comes from Debian packages, so a
build is reproducible from the package versions recorded in manifest.json.

    python3 loadtest/corpus/build.py [--out DIR] [--sample]

writes DIR/train.jsonl, DIR/heldout.jsonl, DIR/heldout_source.jsonl and DIR/manifest.json
(DIR defaults to target/corpus under the repository root). --sample also rewrites the small
committed sample in loadtest/corpus/sample/. Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import html
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SCHEMA = REPO / "schemas" / "submission-envelope.schema.json"
SAMPLE_DIR = HERE / "sample"

SEED = 20261204
# A document is held out iff the first 8 bytes of sha256(id), as an integer, mod 10000 fall
# below this. Fixed, so a document never moves between train and held-out as sources grow.
HELDOUT_PER_10000 = 2000
# This whole source never reaches train.jsonl or heldout.jsonl: it measures how the dictionary
# does on a style of writing it has not seen at all (conversational story dialogue).
HELDOUT_SOURCE = "endless-sky"
# Sources that are never trained on (see Source.trainable) give this share of their documents to
# heldout.jsonl, so it stays near its size goal.
MEASURE_ONLY_PER_10000 = 5000
# Only part of the held-out source is wrapped, to keep heldout_source.jsonl near its size goal.
HELDOUT_SOURCE_PER_10000 = 5000


class BuildError(Exception):
    """A failure with a message meant for the person running the build."""


# ----------------------------------------------------------------------------------------------
# Text clean-up and filters shared by all sources
# ----------------------------------------------------------------------------------------------

# Words that keep a passage out of the corpus: slurs and strong profanity (fortune files and the
# Jargon File have a little of both).
_BLOCKLIST = re.compile(
    r"\b(fuck\w*|shit\w*|cunt\w*|bitch\w*|nigg\w*|fag\w*|retard\w*|whore\w*|slut\w*|rap(e|ed|es|ist)|"
    r"kikes?|chinks?|spics?|dykes?|tranny|wetbacks?|gooks?|homos?|sex\w*|penis\w*|vagina\w*|"
    r"orgasm\w*|porn\w*|nazis?|hitler|suicide|abortion|lesbians?|gays?|negro\w*|midget\w*)\b",
    re.IGNORECASE,
)
# Characters the schema refuses in text (C0 controls except tab/LF/CR, DEL and C1).
_BAD_CHARS = re.compile(r"[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200b\u202f\u205f\u3000]+")


def clean(text: str) -> str:
    """One paragraph as plain text: entities decoded, spaces collapsed, NFC."""
    text = html.unescape(text)
    text = _BAD_CHARS.sub("", text)
    text = _SPACES.sub(" ", text.replace("\r", "").replace("\n", " "))
    return unicodedata.normalize("NFC", text.strip())


_END = re.compile(r"[.!?…][\"'”’)\]]*$")
# Tokens that look like code, paths or identifiers rather than words.
_CODEY = re.compile(
    r"[_=<>{}|\\#$@~^]|\(\)|::|->|^/|\w/\w.*/|^-{1,2}\w|\w\.\w+\.\w|\w\.[a-z]+\(|[a-z][A-Z]\w*\("
)
_ABBREV_DOTS = re.compile(r"^\(?([A-Za-z]\.){2,}[,;:)]*$")  # e.g. i.e. U.S.


def codey_ratio(words: list[str]) -> float:
    hits = sum(1 for w in words if _CODEY.search(w) and not _ABBREV_DOTS.match(w))
    return hits / max(1, len(words))


def is_prose(p: str, min_words: int = 6, need_end: bool = True) -> bool:
    """A paragraph of natural sentences: enough words, mostly letters, few code-like tokens,
    ends like a sentence, no blocklisted word, not shouting."""
    words = p.split()
    if len(words) < min_words:
        return False
    if not (p[0].isupper() or p[0].isdigit() or p[0] in "\"“‘'(¡¿"):  # a list item continuing a sentence
        return False
    if need_end and not _END.search(p):
        return False
    if p.endswith(":") or p.endswith(",") or p.endswith(";"):
        return False
    visible = [c for c in p if not c.isspace()]
    letters = [c for c in visible if c.isalpha()]
    if len(letters) < 0.75 * len(visible):
        return False
    if sum(1 for c in letters if c.isupper()) > 0.25 * len(letters):
        return False
    if codey_ratio(words) > 0.08:
        return False
    if "http://" in p or "https://" in p or "www." in p:
        return False
    return not _BLOCKLIST.search(p)


# Sentence ends: ., ! or ? (and any closing quotes or brackets) followed by a space and
# something that starts a sentence. Common abbreviations are not ends.
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*(?=\s+[\"'“‘(\[]?[A-Z0-9])")
_NOT_AN_END = re.compile(r"\b(Mr|Mrs|Ms|Dr|St|Jr|Sr|Prof|vs|etc|e\.g|i\.e|cf|No|Fig|Vol|approx|Inc|Ltd)\.$")


def sentences(text: str) -> list[str]:
    """Splits a paragraph into sentences, never inside a word."""
    out, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        if _NOT_AN_END.search(text[start : m.end()]):
            continue
        out.append(text[start : m.end()].strip())
        start = m.end()
    rest = text[start:].strip()
    if rest:
        out.append(rest)
    return out


# ----------------------------------------------------------------------------------------------
# Sources. Each extractor returns [(path, [section, ...])], a section being a list of paragraphs
# that belong together (one FAQ answer, one book section, one conversation, one fortune).
# ----------------------------------------------------------------------------------------------


@dataclass
class Source:
    name: str
    packages: list[str]
    paths: list[str]  # files or glob patterns, as recorded in the manifest
    license_name: str
    # A regular expression that must match in /usr/share/doc/<first package>/copyright; the match
    # is quoted in the manifest and README as the licence statement.
    license_evidence: str
    extract: Callable[[list[Path]], list[tuple[str, list[list[str]]]]]
    group_chars: int = 1200  # documents are up to this many characters of consecutive paragraphs
    # Fortune files are sorted alphabetically, so "consecutive" cookies would share first words:
    # messages take them in a fixed pseudo-random order instead.
    shuffle: bool = False
    exclude: tuple[str, ...] = ()  # file names left out of the globs
    # Whether dictionary training may use it. The dictionary ships inside our binaries, so only
    # text whose licence allows that without conditions on the binary (permissive or public
    # domain) is trained on; copyleft and verbatim-only sources are measured on, never trained on.
    trainable: bool = True

    def files(self) -> list[Path]:
        found: list[Path] = []
        for pattern in self.paths:
            p = Path(pattern)
            matches = sorted(Path(p.anchor).glob(str(p.relative_to(p.anchor)))) if any(c in pattern for c in "*?[") else [p]
            found.extend(m for m in matches if m.is_file() and m.name not in self.exclude)
        return found


FORTUNE_DIR = "/usr/share/games/fortunes"
# Fortune files left out: ascii-art; IRC logs and code (knghtbrd, debian, perl); verse
# (songs-poems); nonsense (zippy); pastiche and puzzles (tao, goedel, paradoxum, disclaimer,
# translate-me, pratchett); and humour about ethnicity, sex or drugs (ethnic, men-women, drugs).
# IRC lines are also dropped from the files kept (linux has some).
FORTUNE_FILES_MIN = ["fortunes", "literature", "riddles"]  # shipped by fortunes-min
FORTUNE_FILES = [
    "art", "computers", "cookie", "definitions", "education", "food", "humorists", "kids", "law",
    "linux", "linuxcookie", "love", "magic", "medicine", "miscellaneous", "news", "people", "pets",
    "platitudes", "politics", "science", "sports", "startrek", "wisdom", "work",
]


def _unwrap(lines: list[str]) -> str:
    """Joins hard-wrapped lines; keeps a line break after a short line (dialogue, lists)."""
    out = ""
    for line in lines:
        line = line.strip()
        if not out:
            out = line
        elif len(out.rsplit("\n", 1)[-1]) < 45:
            out += "\n" + line
        else:
            out += " " + line
    return out


def extract_fortunes(files: list[Path]) -> list[tuple[str, list[list[str]]]]:
    out = []
    for f in files:
        text = f.read_text(encoding="utf-8")
        sections = []
        for cookie in re.split(r"^%\n", text, flags=re.M):
            lines = cookie.rstrip("\n").split("\n")
            # The attribution ("-- Mark Twain, ...", possibly over several lines) ends a cookie.
            attribution = [
                i for i, l in enumerate(lines)
                if re.match(r"^\s*--\s*\S", l) or (i >= len(lines) - 2 and re.match(r"^\s*-\s+[A-Z]", l))
            ]
            lines = lines[: attribution[0]] if attribution else lines
            if lines:  # "... illustrated it.  -- John Keats" at the end of the last line
                lines[-1] = re.sub(r"\s+--?\s*[A-Z][^.!?\"]*$", "", lines[-1]) if re.search(r"\s{2}--?\s*[A-Z]", lines[-1]) else lines[-1]
            # Mostly-indented cookies are verse, tables or art.
            if not lines or sum(1 for l in lines if l[:1] in (" ", "\t")) > len(lines) / 3:
                continue
            if any(re.match(r"^\s*<\w+>", l) for l in lines):  # IRC log
                continue
            paras, cur = [], []
            for l in lines + [""]:
                if l.strip():
                    cur.append(l)
                elif cur:
                    paras.append(_unwrap(cur))
                    cur = []
            paras = [p for p in (unicodedata.normalize("NFC", _BAD_CHARS.sub("", _SPACES.sub(" ", p)).strip()) for p in paras) if p]
            body = " ".join(paras)
            if paras and is_prose(body, min_words=5, need_end=False) and all(is_prose(p, 1, False) for p in paras):
                sections.append(paras)
        out.append((str(f), sections))
    return out


class _HtmlBlocks(HTMLParser):
    """Collects paragraphs and headings from DocBook-generated HTML, skipping code, tables,
    navigation and URL boxes."""

    VOID = {"br", "img", "hr", "meta", "link", "input", "col", "area", "base", "wbr"}
    SKIP_TAGS = {"pre", "table", "script", "style", "head"}
    SKIP_CLASSES = {"url", "docnav", "navheader", "navfooter", "toc", "titlepage-sidebar", "screen",
                    "programlisting", "literallayout", "synopsis", "cmdsynopsis", "indexterm", "footnotes",
                    "legalnotice", "revhistory", "author", "authorgroup", "mediaobject", "figure", "example"}

    def __init__(self, para_classes: set[str], para_tags: set[str]) -> None:
        super().__init__(convert_charrefs=True)
        self.para_classes, self.para_tags = para_classes, para_tags
        self.stack: list[tuple[str, str | None]] = []  # (tag, role): role is skip, para, head or None
        self.buf: list[str] = []
        self.blocks: list[tuple[str, str]] = []  # ("p" | "h", text)

    def _role(self, tag: str, attrs: list[tuple[str, str | None]]) -> str | None:
        classes = set((dict(attrs).get("class") or "").split())
        if tag in self.SKIP_TAGS or classes & self.SKIP_CLASSES:
            return "skip"
        if re.fullmatch(r"h[1-4]", tag):
            return "head"
        if tag in self.para_tags or classes & self.para_classes:
            return "para"
        return None

    def _skipping(self) -> bool:
        return any(role == "skip" for _, role in self.stack)

    def _flush(self, kind: str) -> None:
        text = clean("".join(self.buf))
        self.buf = []
        if text:
            self.blocks.append((kind, text))

    def handle_starttag(self, tag, attrs):
        if tag in self.VOID:
            if tag == "br":
                self.buf.append(" ")
            return
        role = self._role(tag, attrs)
        if role in ("para", "head") and not self._skipping():
            # A paragraph nested in another ends the text collected so far.
            if any(r in ("para", "head") for _, r in self.stack):
                self._flush("p")
        self.stack.append((tag, role))

    def handle_endtag(self, tag):
        if tag in self.VOID or not any(t == tag for t, _ in self.stack):
            return
        while self.stack:
            t, role = self.stack.pop()
            if role in ("para", "head") and not self._skipping():
                self._flush("h" if role == "head" else "p")
            if t == tag:
                break

    def handle_data(self, data):
        if not self._skipping() and any(r in ("para", "head") for _, r in self.stack):
            self.buf.append(data)


def _html_sections(path: Path, para_classes: set[str], para_tags: set[str], keep_questions: bool) -> list[list[str]]:
    parser = _HtmlBlocks(para_classes, para_tags)
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    sections: list[list[str]] = [[]]
    for kind, text in parser.blocks:
        if kind == "h":
            sections.append([])
            # FAQ headings are questions people ask: keep them, without their number.
            q = re.sub(r"^(Chapter\s+)?[0-9.]+\s+", "", text)
            if keep_questions and q.endswith("?") and is_prose(q, 4):
                sections[-1].append(q)
        elif is_prose(text):
            sections[-1].append(text)
    return [s for s in sections if s and not (len(s) == 1 and s[0].endswith("?"))]


def extract_handbook(files: list[Path]):
    return [(str(f), _html_sections(f, {"para"}, set(), keep_questions=False)) for f in files]


# reStructuredText (the Python documentation's sources).
_ADORN = re.compile(r"^([=\-~^\"'*+#`:.])\1{2,}\s*$")
_BULLET = re.compile(r"^(\s*)([*+\-•]|#\.|\d+\.|\(?[a-z0-9]\))\s+")
_RST_SUBS = [
    (re.compile(r":(issue|gh|pep|rfc|bpo):`!?(\w+)`"), lambda m: {"issue": "bpo-", "bpo": "bpo-", "gh": "gh-", "pep": "PEP ", "rfc": "RFC "}[m.group(1)] + m.group(2)),
    (re.compile(r":[\w:.+-]+:`[~!]?([^`<]*?)\s*<[^>`]*>`"), r"\1"),  # :ref:`text <target>`
    (re.compile(r":[\w:.+-]+:`!?~(?:[\w.]*\.)?([^`.]+?)`"), r"\1"),  # :func:`~os.path.join` -> join
    (re.compile(r":[\w:.+-]+:`!?([^`]+?)`"), r"\1"),  # :func:`os.path.join` -> os.path.join
    (re.compile(r"``(.+?)``"), r"\1"),
    (re.compile(r"`([^`<]+?)\s*<[^>`]+>`__?"), r"\1"),
    (re.compile(r"`([^`]+)`__?"), r"\1"),
    (re.compile(r"`([^`]+)`"), r"\1"),
    (re.compile(r"(?<![\w*])\*\*(\S(?:.*?\S)?)\*\*(?![\w*])"), r"\1"),
    (re.compile(r"(?<![\w*])\*(\S(?:.*?\S)?)\*(?![\w*])"), r"\1"),
    (re.compile(r"\|(\w[\w ]*)\|"), r"\1"),
    (re.compile(r"\[#?\w*\]_"), ""),  # footnote references
    (re.compile(r"(?<![_\w])([A-Za-z]\w*?[A-Za-z0-9])_(?=[\s.,;:)]|$)"), r"\1"),
    (re.compile(r"\\ "), ""),
]


# Credits repeated after almost every item of the "What's New" documents: boilerplate, not prose.
_CREDIT = re.compile(r"\s*\((?:Contributed|Patch|Original patch|Suggested|Written|Implemented|Initial patch|Fixed)\b[^()]*(?:\([^()]*\)[^()]*)*\)\.?")


def rst_inline(text: str) -> str:
    for pattern, repl in _RST_SUBS:
        text = pattern.sub(repl, text)
    return _CREDIT.sub("", text)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def extract_rst(files: list[Path]):
    out = []
    for f in files:
        lines = f.read_text(encoding="utf-8").expandtabs(8).split("\n")
        sections: list[list[str]] = [[]]
        i, n, skip_above = 0, len(lines), None
        while i < n:
            line = lines[i]
            if skip_above is not None:  # inside a directive or literal block
                if not line.strip() or _indent(line) > skip_above:
                    i += 1
                    continue
                skip_above = None
            if not line.strip():
                i += 1
                continue
            if _ADORN.match(line) and i + 2 < n and _ADORN.match(lines[i + 2]):  # over- and underlined title
                sections.append([])
                i += 3
                continue
            if i + 1 < n and _ADORN.match(lines[i + 1]) and _indent(line) == 0 and len(lines[i + 1].strip()) >= len(line.strip()):
                title = clean(rst_inline(line))
                sections.append([title] if title.endswith("?") and is_prose(title, 4) else [])
                i += 2
                continue
            if line.lstrip().startswith(".. ") or line.strip() in ("::", ".."):
                skip_above = _indent(line)
                i += 1
                continue
            # A paragraph: lines up to a blank line, a new list item or a change of indentation.
            base = _indent(line)
            para = [line]
            i += 1
            while i < n and lines[i].strip() and not _BULLET.match(lines[i]) and _indent(lines[i]) >= base and not lines[i].lstrip().startswith(".. "):
                if _indent(lines[i]) > base and not _BULLET.match(line):
                    break
                para.append(lines[i])
                i += 1
            raw = " ".join(l.strip() for l in para)
            if raw.endswith("::"):
                skip_above = base  # the indented block after it is code
            # Code, tables, option and field lists.
            if any(l.lstrip().startswith((">>>", "...", "$ ", "+-", "|", ":")) for l in para):
                continue
            if any(re.search(r"\S {3,}\S", l.strip()) for l in para) or re.match(r"^\s*=+( +=+)+\s*$", line):
                continue
            text = clean(rst_inline(_BULLET.sub("", raw, count=1)))
            if is_prose(text):
                sections[-1].append(text)
        out.append((str(f), [s for s in sections if s and not (len(s) == 1 and s[0].endswith("?"))]))
    return out


def extract_jargon(files: list[Path]):
    """The Jargon File: the essay chapters, the glossary entries and the folklore appendices.
    Body text is indented three spaces; deeper indentation is an example or code."""
    out = []
    for f in files:
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            lines = fh.read().split("\n")
        sections: list[list[str]] = [[]]
        started = False
        para: list[str] = []

        def end_para() -> None:
            if para:
                text = clean(re.sub(r"\{([^}]*)\}", r"\1", " ".join(l.strip() for l in para)))
                # Etymology and usage notes in brackets ("[Sun Users' Group & elsewhere] n.") are not prose.
                if not re.fullmatch(r"\[[^\]]*\]\s*(\w+\.\s*)*", text) and is_prose(text):
                    sections[-1].append(text)
                para.clear()

        for line in lines:
            if re.match(r"^Chapter\s+1\.", line):  # the text after the table of contents
                started = True
            if not started:
                continue
            if not line.strip():
                end_para()
            elif not line.startswith(" ") or re.match(r"^   :[^:]+:", line):  # heading or new entry
                end_para()
                sections.append([])
            elif line.startswith("    "):  # example, code or table: drop the whole paragraph
                para.append("\x00")
            else:
                para.append(line)
            if "\x00" in para:
                para.clear()
        end_para()
        out.append((str(f), [s for s in sections if s]))
    return out


ESKY_DIR = "/usr/share/games/endless-sky/data"
# Placeholders the game fills in. Text with job-board placeholders (payment, cargo, dates...) is
# formulaic and dropped; names and places are filled in from these lists.
_ESKY_FILL = {
    "first": ["Alex", "Sam", "Jordan", "Robin", "Casey", "Morgan"],
    "last": ["Reyes", "Okafor", "Lindqvist", "Tanaka", "Moreau", "Kowalczyk"],
    "ship": ["Wayfarer", "Lucky Star", "Kestrel", "Morning Light"],
    "planet": ["New Boston", "Glory", "Rust", "Hope", "Valhalla", "Geminus"],
    "destination": ["New Boston", "Glory", "Rust", "Hope", "Valhalla", "Geminus"],
    "origin": ["Earth", "Luna", "New Tortuga", "Deep"],
    "system": ["Sol", "Rigel", "Vega", "Altair", "Kornephoros"],
    "npc": ["Aurora", "Brightwater", "Nightingale", "Osprey"],
}
_ESKY_TEXT = re.compile(r"^(\t*)(?:(?:description|spaceport|dialog)\s+)?`(.*)`\s*$")
_ESKY_DESC = re.compile(r'^(\t*)description\s+"(.{60,})"\s*$')


def extract_endless_sky(files: list[Path]):
    out = []
    for f in files:
        sections: list[list[str]] = [[]]
        choice_indent = None
        for line in f.read_text(encoding="utf-8").split("\n"):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            ind = len(line) - len(line.lstrip("\t"))
            if choice_indent is not None:
                if ind > choice_indent:  # a choice option or what it leads to: not narrative
                    continue
                choice_indent = None
            if line.strip() == "choice":
                choice_indent = ind
                sections.append([])
                continue
            m = _ESKY_TEXT.match(line) or _ESKY_DESC.match(line)
            if not m:
                if sections[-1]:
                    sections.append([])
                continue
            text = m.group(2).strip()
            if re.search(r"<(payment|cargo|commodity|bunks|passengers|tons|capacity|fare|stopovers|date|day)>", text):
                continue
            key = int(hashlib.sha256(f"{f.name}:{len(sections)}".encode()).hexdigest()[:8], 16)
            text = re.sub(r"<(\w+)>", lambda mm: _ESKY_FILL[mm.group(1)][key % len(_ESKY_FILL[mm.group(1)])] if mm.group(1) in _ESKY_FILL else mm.group(0), text)
            text = clean(text)
            if "<" not in text and is_prose(text, 4):
                sections[-1].append(text)
        out.append((str(f), [s for s in sections if s]))
    return out


SOURCES = [
    Source(
        "fortunes",
        ["fortunes", "fortunes-min"],
        [f"{FORTUNE_DIR}/{n}" for n in sorted(FORTUNE_FILES + FORTUNE_FILES_MIN)],
        "BSD-3-Clause (University of California, clause 3 deleted)",
        r"This program falls under the BSD copyright:\s+Copyright \(c\) 1991 The Regents of the University of California\.\s+All rights reserved\.",
        extract_fortunes,
        shuffle=True,
    ),
    Source(
        "debian-handbook",
        ["debian-handbook"],
        ["/usr/share/doc/debian-handbook/html/en-US/*.html"],
        "GPL-2.0+ or CC-BY-SA-3.0",
        r"Files: \*\nCopyright:[^\n]*(?:\n [^\n]*)*\nLicense: GPL-2\.0\+ or CC-BY-SA-3\.0",
        extract_handbook,
        trainable=False,
    ),
    Source(
        "python-docs",
        ["python3.11-doc"],
        [f"/usr/share/doc/python3.11/html/_sources/{d}/*.rst.txt" for d in ("tutorial", "faq", "howto", "whatsnew", "using", "installing", "distributing")],
        "PSF-2.0 (Python Software Foundation License Version 2)",
        r"PYTHON SOFTWARE FOUNDATION LICENSE VERSION 2",
        extract_rst,
        # HOWTOs about CPython's C internals: identifiers more than prose.
        exclude=("clinic.rst.txt", "cporting.rst.txt", "isolating-extensions.rst.txt", "instrumentation.rst.txt", "changelog.rst.txt"),
    ),
    Source(
        "endless-sky",
        ["endless-sky-data"],
        [f"{ESKY_DIR}/*.txt"],
        "GPL-3+",
        r"Files: \*\nCopyright:[^\n]*\nLicense: GPL-3\+",
        extract_endless_sky,
        trainable=False,
    ),
    Source(
        "jargon",
        ["jargon-text"],
        ["/usr/share/doc/jargon-text/jargon.txt.gz"],
        "Public domain",
        r"This document \(the Jargon File\) is in the public domain",
        extract_jargon,
    ),
]


# ----------------------------------------------------------------------------------------------
# Packages
# ----------------------------------------------------------------------------------------------


def ensure_installed(sources: list[Source]) -> None:
    """Installs the Debian packages whose files are missing, then checks every source has files."""
    missing = [s for s in sources if not s.files()]
    if missing:
        pkgs = [p for s in missing for p in s.packages]
        names = ", ".join(f"{s.name} ({' '.join(s.packages)})" for s in missing)
        print(f"installing Debian packages for {names}", file=sys.stderr)
        if shutil.which("apt-get") is None:
            raise BuildError(f"source files missing for {names} and apt-get is not available")
        cmd = ["apt-get", "install", "-y", "--no-install-recommends", *pkgs]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        if subprocess.run(cmd, env=env).returncode != 0:
            # A stale package list is the usual cause: refresh it once and retry.
            subprocess.run(["apt-get", "update"], env=env)
            if subprocess.run(cmd, env=env).returncode != 0:
                raise BuildError(f"could not install {' '.join(pkgs)} for {names} (`{' '.join(cmd)}` failed; run as root?)")
    for s in sources:
        if not s.files():
            raise BuildError(
                f"source {s.name}: no files at {', '.join(s.paths)} although {' '.join(s.packages)} is installed "
                "(is /usr/share/doc excluded by a dpkg path-exclude in /etc/dpkg/dpkg.cfg.d?)"
            )


def package_version(pkg: str) -> str:
    r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
    if r.returncode != 0 or not r.stdout:
        raise BuildError(f"dpkg-query cannot find the version of {pkg}: {r.stderr.strip()}")
    return r.stdout


def license_statement(s: Source) -> str:
    path = Path("/usr/share/doc") / s.packages[0] / "copyright"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise BuildError(f"source {s.name}: cannot read its licence in {path}: {e}") from e
    m = re.search(s.license_evidence, text)
    if not m:
        raise BuildError(f"source {s.name}: {path} no longer says what the build expects ({s.license_evidence!r}); check its licence")
    return re.sub(r"\s+", " ", m.group(0)).strip()


# ----------------------------------------------------------------------------------------------
# Documents and the split
# ----------------------------------------------------------------------------------------------


@dataclass
class Doc:
    id: str
    source: str
    text: str  # paragraphs separated by a blank line


def make_docs(s: Source, seen: set[str]) -> list[Doc]:
    """Cuts a source into documents. A paragraph already in `seen` (from this or an earlier source)
    is dropped: repeated boilerplate would flatter the dictionary and leak into the held-out set."""
    try:
        extracted = s.extract(s.files())
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise BuildError(f"source {s.name}: cannot read its text: {e}") from e
    docs = []
    for path, sections in extracted:
        index = 0
        for section in sections:
            unique = []
            for p in section:
                key = " ".join(p.lower().split())
                if key not in seen:
                    seen.add(key)
                    unique.append(p)
            section = unique
            group: list[str] = []
            for p in section + [None]:
                # Up to three consecutive paragraphs of at most group_chars in all.
                if group and (p is None or len(group) == 3 or sum(map(len, group)) + len(p) > s.group_chars):
                    docs.append(Doc(f"{s.name}:{path}:{index}", s.name, "\n\n".join(group)))
                    index += 1
                    group = []
                if p is not None:
                    group.append(p)
    if not docs:
        raise BuildError(f"source {s.name}: no prose extracted from {', '.join(s.paths)}")
    return docs


def bucket(doc_id: str) -> int:
    return int.from_bytes(hashlib.sha256(doc_id.encode("utf-8")).digest()[:8], "big") % 10000


# ----------------------------------------------------------------------------------------------
# Envelopes: who submits what, through which plugin, from where
# ----------------------------------------------------------------------------------------------

# (first names, last names) by culture; a person is mostly drawn from one group.
NAME_GROUPS = [
    (["Olivia", "James", "Amelia", "Oliver", "Isla", "Harry", "Sophie", "Jack", "Aoife", "Ciarán", "Siobhán", "Seán",
      "Niamh", "Eilidh", "Callum", "Rhys", "Carys", "Dafydd", "Grace", "Thomas"],
     ["Smith", "Jones", "Taylor", "Brown", "Davies", "Wright", "Evans", "Roberts", "O'Brien", "Ó Súilleabháin",
      "MacDonald", "McLaughlin", "Fitzgerald", "Murphy", "Kelly", "Hughes", "Lloyd", "Clarke", "Wood", "Campbell"]),
    (["Emma", "Michael", "Sarah", "David", "Jessica", "Christopher", "Ashley", "Matthew", "Jennifer", "Brandon",
      "Tyler", "Madison", "Noah", "Hannah"],
     ["Miller", "Anderson", "Johnson", "Williams", "Wilson", "Thompson", "Walker", "Robinson", "Jackson", "White", "Hall", "Green"]),
    (["José", "María", "Lucía", "Sofía", "Alejandro", "Martín", "Valentina", "Mateo", "Camila", "Andrés", "Ximena", "Santiago", "Isabella"],
     ["Hernández", "García", "López", "González", "Rodríguez", "Pérez", "Sánchez", "Muñoz", "Jiménez", "Álvarez", "Castillo", "Núñez", "Ibáñez", "Martínez"]),
    (["João", "Beatriz", "Gonçalo", "Inês", "Thiago", "Luíza", "Rafael"],
     ["Silva", "Santos", "Conceição", "Gonçalves", "Magalhães", "Araújo", "Ferreira"]),
    (["Chloé", "Léa", "Théo", "Zoé", "Élodie", "François", "Hélène", "Mathéo", "Noémie", "Renée", "André"],
     ["Lefèvre", "Dubois", "Moreau", "Lambert", "Girard", "Bérubé", "Gagné", "Côté", "Fournier"]),
    (["Jürgen", "Jörg", "Lukas", "Anja", "Sören", "Käthe", "Maximilian", "Leonie", "Daan", "Sanne", "Pieter"],
     ["Müller", "Schröder", "Weiß", "Groß", "Köhler", "Schäfer", "Hoffmann", "Becker", "Krüger", "van der Berg",
      "de Vries", "Jansen", "Bakker", "Van den Broeck", "Peeters"]),
    (["Ingrid", "Søren", "Åsa", "Lars", "Freja", "Mikael", "Sigrún", "Þóra", "Björn", "Aino"],
     ["Johansson", "Lindqvist", "Nyström", "Sørensen", "Jørgensen", "Østergaard", "Håkansson", "Virtanen", "Mäkinen", "Jónsdóttir"]),
    (["Aleksander", "Małgorzata", "Paweł", "Zofia", "Łukasz", "Agnieszka", "Jiří", "Tereza", "Zoltán", "Réka",
      "Ioana", "Bogdan", "Dragoș", "Milica", "Nikola", "Ana", "Dmytro", "Olena"],
     ["Kowalski", "Wiśniewski", "Wójcik", "Zieliński", "Dąbrowska", "Nowak", "Dvořák", "Novotná", "Procházka", "Horváth",
      "Szabó", "Nagy", "Popescu", "Ionescu", "Petrović", "Jovanović", "Kovačević", "Shevchenko", "Kovalenko", "Bondarenko"]),
    (["Dimitris", "Eleni", "Giorgos", "Alessandro", "Giulia", "Francesca", "Lorenzo", "Chiara"],
     ["Papadopoulos", "Georgiou", "Rossi", "Bianchi", "Esposito", "Romano", "Colombo", "Ricci"]),
    (["Mehmet", "Ayşe", "Emre", "Zeynep", "Oğuz", "Fatima", "Omar", "Layla", "Yusuf", "Nour", "Karim", "Darius", "Shirin", "Reza"],
     ["Yılmaz", "Kaya", "Demir", "Çelik", "Öztürk", "Haddad", "Khalil", "Al-Sayed", "Mansour", "Rahimi", "Hosseini", "Karimi"]),
    (["Priya", "Arjun", "Ananya", "Rohan", "Aditi", "Vikram", "Deepika", "Sanjay", "Kavya", "Rahul"],
     ["Sharma", "Patel", "Gupta", "Iyer", "Reddy", "Nair", "Chatterjee", "Banerjee", "Singh", "Khan"]),
    (["Wei", "Xiaoling", "Jun", "Mei", "Hao", "Yan"], ["Chen", "Wang", "Li", "Zhang", "Liu", "Huang"]),
    (["Yuki", "Haruto", "Sakura", "Ren", "Aiko", "Sōta"], ["Tanaka", "Suzuki", "Takahashi", "Watanabe", "Kobayashi", "Nakamura", "Hayashi"]),
    (["Ji-woo", "Min-jun", "Seo-yeon", "Hyun-woo"], ["Kim", "Park", "Choi", "Jeong"]),
    (["Thanh", "Linh", "Minh", "Huyền"], ["Nguyễn", "Nguyen", "Trần", "Phạm", "Lê"]),
    (["Chidi", "Ngozi", "Oluwaseun", "Adaeze", "Kwame", "Ama", "Wanjiru", "Kofi", "Abebe", "Tigist", "Thabo", "Lerato", "Sipho"],
     ["Okafor", "Adeyemi", "Nwosu", "Mensah", "Owusu", "Kamau", "Otieno", "Tesfaye", "Dlamini", "Mokoena"]),
    (["Aroha", "Tāne", "Mele", "Wiremu"], ["Ngata", "Te Rangi", "Fonoti", "Parata"]),
]
FIRST_NAMES = [n for firsts, _ in NAME_GROUPS for n in firsts]
LAST_NAMES = [n for _, lasts in NAME_GROUPS for n in lasts]
_ASCII_FOLD = str.maketrans({"ß": "ss", "ø": "o", "Ø": "O", "ł": "l", "Ł": "L", "đ": "d", "æ": "ae", "þ": "th", "Þ": "Th", "ı": "i", "œ": "oe"})


def ascii_fold(s: str) -> str:
    s = unicodedata.normalize("NFKD", s.translate(_ASCII_FOLD))
    return "".join(c for c in s if c.isascii() and (c.isalnum() or c in ".-_"))


FREE_MAIL = [
    "gmail.com", "gmail.com", "gmail.com", "gmail.com", "outlook.com", "hotmail.com", "hotmail.co.uk", "yahoo.com",
    "yahoo.co.uk", "icloud.com", "me.com", "proton.me", "protonmail.com", "gmx.de", "web.de", "t-online.de",
    "orange.fr", "free.fr", "laposte.net", "libero.it", "btinternet.com", "sky.com", "live.co.uk", "aol.com",
    "bigpond.com", "shaw.ca", "seznam.cz", "wp.pl", "outlook.es", "uol.com.br", "rediffmail.com", "live.nl",
]
# Businesses people write from (their own e-mail domain and company name).
COMPANIES = [
    ("Harbour & Finch Architects", "harbourfinch.co.uk"), ("Brightwater Logistics", "brightwaterlogistics.com"),
    ("Kestrel Analytics", "kestrel-analytics.io"), ("Oakridge Family Dental", "oakridgedental.com"),
    ("Nordlicht Reisen GmbH", "nordlicht-reisen.de"), ("Atelier Sablé", "ateliersable.fr"),
    ("Tidewater Brewing Co.", "tidewaterbrewing.com"), ("Greenleaf Accountants", "greenleaf-accountants.co.uk"),
    ("Pinecrest Property Management", "pinecrestpm.ca"), ("Studio Verde", "studioverde.it"),
    ("Bluegum Physio", "bluegumphysio.com.au"), ("Copperline Electrical", "copperline.co.nz"),
    ("Lumière Events", "lumiere-events.fr"), ("Van Dijk Installatietechniek", "vandijk-installatie.nl"),
    ("Sunrise Montessori", "sunrisemontessori.org"), ("Ironbark Engineering", "ironbarkeng.com.au"),
    ("Meridian Health Partners", "meridianhp.com"), ("Castle Street Bakery", "castlestreetbakery.ie"),
    ("Fjord Digital AS", "fjorddigital.no"), ("Okapi Software", "okapisoftware.co.za"),
    ("Hollis & Grant LLP", "hollisgrant.com"), ("Sakura Trading KK", "sakura-trading.jp"),
    ("Riverbend Veterinary Clinic", "riverbendvet.com"), ("Wildflower Weddings", "wildflowerweddings.co.uk"),
    ("Polar Bear Removals", "polarbearremovals.co.uk"), ("Quinta do Vale", "quintadovale.pt"),
    ("Maple & Stone Interiors", "maplestone.ca"), ("Praxis Dr. Weber", "praxis-weber.de"),
    ("Acorn Community Trust", "acorntrust.org.uk"), ("Nimbus Cloud Services", "nimbuscloud.io"),
    ("Bodega La Rioja Alta", "bodegariojaalta.es"), ("Skyline Roofing", "skylineroofing.us"),
    ("Tanaka Design Office", "tanaka-design.jp"), ("Kraków Language School", "krakowlanguage.pl"),
    ("Lakeside Physiotherapy", "lakesidephysio.ie"), ("Blue Fern Marketing", "bluefern.marketing"),
    ("Mensah & Co Solicitors", "mensahsolicitors.co.uk"), ("Coral Bay Resort", "coralbayresort.com.au"),
    ("Helix Biotech", "helixbio.com"), ("Saffron Kitchen", "saffronkitchen.in"),
]

# The sites that send payloads: domain, kind of business and the form plugin they use. The
# plugin decides how field names look.
SITES = [
    ("www.harbourfinch.co.uk", "architecture", "cf7"), ("brightwaterlogistics.com", "logistics", "gravity"),
    ("www.kestrel-analytics.io", "saas", "elementor"), ("oakridgedental.com", "clinic", "wpforms"),
    ("www.tidewaterbrewing.com", "shop", "wpforms"), ("greenleaf-accountants.co.uk", "accounting", "cf7"),
    ("www.studioverde.it", "agency", "fluent"), ("bluegumphysio.com.au", "clinic", "ninja"),
    ("www.lumiere-events.fr", "events", "cf7"), ("shop.castlestreetbakery.ie", "shop", "wpforms"),
    ("www.fjorddigital.no", "agency", "elementor"), ("okapisoftware.co.za", "saas", "formidable"),
    ("www.hollisgrant.com", "law", "gravity"), ("riverbendvet.com", "clinic", "cf7"),
    ("wildflowerweddings.co.uk", "events", "fluent"), ("www.polarbearremovals.co.uk", "logistics", "wpforms"),
    ("maplestone.ca", "agency", "cf7"), ("www.acorntrust.org.uk", "charity", "gravity"),
    ("nimbuscloud.io", "saas", "custom"), ("www.skylineroofing.us", "trades", "wpforms"),
    ("krakowlanguage.pl", "school", "cf7"), ("www.bluefern.marketing", "agency", "elementor"),
    ("coralbayresort.com.au", "hotel", "gravity"), ("www.helixbio.com", "saas", "custom"),
    ("saffronkitchen.in", "restaurant", "cf7"), ("www.northshoreyoga.com", "fitness", "fluent"),
    ("pixelandpine.studio", "agency", "cf7"), ("www.greenwaysolar.co.uk", "trades", "gravity"),
    ("www.thecyclehub.com.au", "shop", "wpforms"), ("blog.quietcoder.dev", "blog", "cf7"),
    ("www.meadowlarkhomes.com", "realestate", "gravity"), ("www.hearthandhomecandles.com", "shop", "fluent"),
    ("www.juniperlegal.ie", "law", "cf7"), ("www.ridgelinephoto.co.nz", "photography", "ninja"),
    ("www.stmaryscollege.edu.au", "school", "gravity"), ("www.fieldnotescoffee.com", "shop", "elementor"),
    ("www.apexhvac.ca", "trades", "formidable"), ("www.openbooks.org", "charity", "wpforms"),
    ("www.tallpinescabins.com", "hotel", "wpforms"), ("www.brisklabs.io", "saas", "elementor"),
    ("www.willowtreeclinic.co.uk", "clinic", "gravity"), ("www.copperpotcooking.com", "school", "cf7"),
    ("www.vantagepointhr.com", "consulting", "formidable"), ("www.mosaicmuseum.org", "charity", "fluent"),
    ("www.harborlightsmarina.com", "hotel", "ninja"), ("www.kitefinance.co.uk", "accounting", "elementor"),
]
PLUGINS = {
    "cf7": ("contact-form-7", ["5.9.8", "6.0.4", "6.0.6", "6.1"]),
    "wpforms": ("wpforms-lite", ["1.8.9.6", "1.9.2.1", "1.9.4.2", "1.9.6"]),
    "gravity": ("gravityforms", ["2.8.18", "2.9.1", "2.9.7"]),
    "elementor": ("elementor-pro", ["3.25.4", "3.28.2", "3.30.0"]),
    "fluent": ("fluentform", ["5.2.6", "6.0.2", "6.1.0"]),
    "ninja": ("ninja-forms", ["3.8.22", "3.10.1"]),
    "formidable": ("formidable", ["6.16", "6.19.1"]),
    "custom": ("form-bridge-wp", ["1.4.2", "1.5.0"]),
}

# Field labels per naming style; anything missing falls back to the canonical snake_case name.
LABELS = {
    "name": "Your Name", "first_name": "First Name", "last_name": "Last Name", "email": "Email Address",
    "phone": "Phone Number", "company": "Company", "subject": "Subject", "message": "Message",
    "website": "Website", "budget": "Budget", "services": "Services Needed", "timeline": "Timeline",
    "position": "Position", "cover_letter": "Cover Letter", "cv": "Upload your CV", "linkedin": "LinkedIn Profile",
    "order_number": "Order Number", "product": "Product", "priority": "Priority", "category": "Category",
    "consent": "Privacy Policy", "newsletter": "Subscribe to our newsletter", "address": "Address",
    "how_heard": "How did you hear about us?", "start_date": "Earliest Start Date", "salary": "Salary Expectations",
    "location": "Location", "interests": "Interests", "preferred_contact": "Preferred contact method",
    "right_to_work": "Do you have the right to work in this country?", "notice_period": "Notice Period",
    "description": "Describe the issue", "project_details": "Project Details",
}
CF7 = {
    "name": "your-name", "first_name": "your-first-name", "last_name": "your-last-name", "email": "your-email",
    "phone": "your-phone", "company": "your-company", "subject": "your-subject", "message": "your-message",
    "website": "your-website", "budget": "menu-budget", "services": "checkbox-services", "timeline": "menu-timeline",
    "position": "menu-position", "cover_letter": "textarea-cover-letter", "cv": "file-cv", "linkedin": "url-linkedin",
    "order_number": "text-order", "product": "menu-product", "priority": "radio-priority", "category": "menu-category",
    "consent": "acceptance-privacy", "newsletter": "checkbox-newsletter", "how_heard": "menu-how-heard",
    "start_date": "date-start", "salary": "text-salary", "interests": "checkbox-interests",
    "description": "your-message", "project_details": "your-message",
}


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(w.capitalize() for w in rest)


def field_key(style: str, site: str, key: str) -> str:
    if style == "cf7":
        return CF7.get(key, key.replace("_", "-"))
    if style in ("wpforms", "gravity"):
        return LABELS.get(key, key.replace("_", " ").capitalize())
    if style == "custom":
        return _camel(key)
    if style in ("elementor", "formidable") and key not in ("name", "email", "message", "phone"):
        # Builder-generated ids, stable per site and field.
        h = hashlib.sha256(f"{site}/{key}".encode()).hexdigest()
        return f"field_{h[:7]}" if style == "elementor" else f"{key}_{h[:5]}"
    if style == "ninja":
        n = int(hashlib.sha256(f"{site}/{key}".encode()).hexdigest()[:6], 16) % 900 + 100
        return f"{key}_{1716000000000 + n * 137}"
    return key


USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/141.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/139.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/141.0.0.0 Safari/537.36 Edg/141.0.0.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:144.0) Gecko/20100101 Firefox/144.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/141.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/26.0 Safari/605.1.15",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.6 Safari/605.1.15",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:143.0) Gecko/20100101 Firefox/143.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_6_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.6 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/26.0 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/141.0.7390.96 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPad; CPU OS 18_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.6 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/141.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/28.0 Chrome/130.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Android 15; Mobile; rv:144.0) Gecko/144.0 Firefox/144.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/140.0.0.0 Safari/537.36",
]
REFERRERS = [
    "https://www.google.com/", "https://www.google.com/", "https://www.google.co.uk/", "https://www.google.de/",
    "https://www.bing.com/", "https://duckduckgo.com/", "https://l.facebook.com/", "https://www.linkedin.com/",
    "https://t.co/", "android-app://com.google.android.gm/", "https://search.yahoo.com/", "https://www.instagram.com/",
    "https://news.ycombinator.com/", "https://www.reddit.com/", "https://chatgpt.com/", "https://www.ecosia.org/",
]
UTM = [
    "utm_source=google&utm_medium=cpc&utm_campaign={camp}",
    "utm_source=newsletter&utm_medium=email&utm_campaign={camp}",
    "utm_source=facebook&utm_medium=social&utm_campaign={camp}&fbclid={tok}",
    "utm_source=linkedin&utm_medium=social&utm_content={camp}",
    "gclid={tok}",
    "utm_source=bing&utm_medium=cpc&utm_term={term}",
    "ref=footer",
]
CAMPAIGNS = ["spring_sale_2026", "brand_search", "q2-leads", "webinar-followup", "autumn26", "retargeting", "black_friday", "launch", "local-seo", "summer-promo"]

PHONE_FORMATS = [  # '#' is a random digit, '%' one from 2 to 9
    "+44 7### ######", "07### ######", "020 7### ####", "+44 (0)161 ### ####", "(%##) %##-####", "+1 %##-%##-####",
    "%##-%##-####", "+1 (604) %##-####", "+49 30 ########", "+49 151 ########", "0171 #######", "+33 6 ## ## ## ##",
    "06 ## ## ## ##", "+34 6## ### ###", "+39 3## ### ####", "+31 6 ########", "+61 4## ### ###", "(02) 9### ####",
    "+91 9#### #####", "+55 11 9####-####", "090-####-####", "+48 5## ### ###", "+353 87 ### ####", "+27 82 ### ####",
    "+46 70-### ## ##", "+64 21 ### ####", "+351 91# ### ###", "+971 50 ### ####", "+65 9### ####", "+81 3-####-####",
]
CITIES = [
    ("London", "SE1 7PB", "GB"), ("Manchester", "M1 4BT", "GB"), ("Edinburgh", "EH3 9QN", "GB"), ("Dublin", "D02 X285", "IE"),
    ("Toronto", "M5V 2T6", "CA"), ("Vancouver", "V6B 1A1", "CA"), ("Austin", "78701", "US"), ("Portland", "97205", "US"),
    ("Chicago", "60614", "US"), ("Berlin", "10115", "DE"), ("München", "80331", "DE"), ("Lyon", "69002", "FR"),
    ("Amsterdam", "1017 CT", "NL"), ("Melbourne", "3000", "AU"), ("Brisbane", "4000", "AU"), ("Auckland", "1010", "NZ"),
    ("Cape Town", "8001", "ZA"), ("Lisboa", "1100-148", "PT"), ("Kraków", "31-008", "PL"), ("Bengaluru", "560001", "IN"),
]
STREETS = ["High Street", "Station Road", "Church Lane", "Main Street", "Oak Avenue", "Queen Street", "Maple Drive",
           "Hauptstraße", "Rue de la République", "Keizersgracht", "Calle Mayor", "King Street West", "Victoria Parade"]

KIND_BY_BUSINESS = {  # relative weights of contact, quote, job, support
    "shop": (3, 0, 1, 6), "saas": (3, 2, 2, 4), "agency": (3, 5, 2, 0), "architecture": (4, 5, 1, 0),
    "logistics": (3, 5, 1, 1), "clinic": (7, 0, 2, 1), "accounting": (5, 4, 1, 0), "events": (4, 6, 0, 0),
    "law": (7, 2, 1, 0), "charity": (7, 0, 3, 0), "trades": (3, 7, 1, 0), "school": (6, 1, 2, 1),
    "hotel": (6, 2, 1, 1), "restaurant": (7, 2, 1, 0), "fitness": (6, 1, 1, 2), "blog": (9, 0, 0, 1),
    "photography": (4, 6, 0, 0), "realestate": (6, 3, 1, 0), "consulting": (4, 5, 1, 0),
}
SERVICES = {
    "agency": ["Web design", "WordPress development", "SEO", "Branding", "Copywriting", "Social media", "Hosting & maintenance", "E-commerce"],
    "architecture": ["Extension", "Loft conversion", "New build", "Planning application", "Interior design", "Feasibility study"],
    "logistics": ["Pallet delivery", "Same-day courier", "Warehousing", "International freight", "House removal", "Storage"],
    "accounting": ["Bookkeeping", "Payroll", "Year-end accounts", "Tax return", "VAT", "Company formation"],
    "events": ["Wedding", "Corporate event", "Birthday party", "Venue styling", "Catering", "Photography"],
    "trades": ["Roof repair", "New installation", "Annual service", "Emergency call-out", "Solar panels", "Heat pump", "Inspection"],
    "saas": ["Enterprise plan", "Onboarding", "API access", "Data migration", "Custom integration", "Training"],
    "photography": ["Portraits", "Wedding", "Product photos", "Headshots", "Drone footage", "Event coverage"],
}
BUDGETS = {
    "£": ["Under £1,000", "£1,000 – £5,000", "£5,000 – £10,000", "£10,000+", "£2k-£4k"],
    "$": ["Under $1,500", "$2k–$5k", "$5,000 - $15,000", "$15,000 – $25,000", "$25k+"],
    "€": ["Under €2,000", "€2.000 – €5.000", "€5,000 – €10,000", "€10k+", "€3.000 – €8.000"],
    "": ["Not sure yet", "To be discussed", 5000, 12000, 2500, "Depends on the quote"],
}


def currency(site: str) -> str:
    if site.endswith((".uk",)):
        return "£"
    if site.endswith((".de", ".fr", ".it", ".no", ".pl", ".pt", ".ie", ".es", ".nl")):
        return "€"
    return "$"

TIMELINES = ["ASAP", "Within 2 weeks", "Within a month", "1–3 months", "3–6 months", "Next quarter", "Flexible", "Q3 2026", "Before Christmas", "No rush"]
POSITIONS = ["Senior Frontend Developer", "Office Manager", "Dental Nurse", "Marketing Coordinator", "Warehouse Operative",
             "Customer Success Manager", "Junior Accountant", "Graphic Designer", "Site Supervisor", "Receptionist (part-time)",
             "Data Analyst", "Chef de Partie", "Teaching Assistant", "Project Manager", "Volunteer Coordinator", "Sales Executive"]
PRODUCTS = ["Oak Bookshelf (Large)", "Pro Plan (annual)", "Gift card £50", "Starter Kit", "Ceramic Mug Set", "Wireless Doorbell",
            "Yoga Mat – Forest Green", "Soy Candle Trio", "Espresso Blend 1kg", "City Bike 54cm", "Team plan", "Premium subscription",
            "Replacement filter", "Hoodie – Navy, M", "Online course: Bookkeeping Basics", "Hiking Boots EU 42"]
SUBJECTS = ["General enquiry", "Question about your services", "Website enquiry", "Quick question", "Partnership opportunity",
            "Feedback", "Booking request", "Availability", "Request for information", "Follow-up", "Hello", "Pricing question",
            "Re: your article", "Media enquiry", "Complaint", "Thank you!", "Collaboration", "Opening hours"]
HOW_HEARD = ["Google", "Instagram", "Friend or colleague", "LinkedIn", "Facebook", "Word of mouth", "Saw your van", "Newsletter", "Other", "Podcast"]
SUPPORT_CATEGORIES = ["Billing", "Delivery", "Technical issue", "Returns", "Account", "Other", "Bug report", "Feature request"]
INTERESTS = ["News & updates", "Offers", "Events", "Product launches", "Blog posts", "Recipes", "Workshops", "Volunteering"]
CONSENT_TEXT = ["I agree to the privacy policy", "I consent to having this website store my submitted information so they can respond to my inquiry.",
                "Yes, I agree to the Terms & Conditions", "I have read and accept the Privacy Notice"]
BLOG_SLUGS = ["how-we-cut-our-energy-bill", "a-beginners-guide-to-sourdough", "ten-things-we-learned-in-2025", "why-your-website-is-slow",
              "planning-a-small-wedding", "choosing-the-right-accountant", "behind-the-scenes", "spring-update", "our-new-studio",
              "caring-for-older-dogs", "the-case-for-boring-technology", "what-to-expect-at-your-first-visit"]


def digits(rng: random.Random, fmt: str) -> str:
    return "".join(str(rng.randrange(10)) if c == "#" else str(rng.randrange(2, 10)) if c == "%" else c for c in fmt)


def token(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") for _ in range(n))


def ip_address(rng: random.Random) -> str:
    if rng.random() < 0.28:
        prefix = rng.choice(["2a02:c7c", "2a01:cb00", "2001:16b8", "2600:1700", "2603:8000", "2a00:23c5", "2001:8003", "2406:3400", "2a02:a46f"])
        return prefix + ":" + ":".join(f"{rng.randrange(65536):x}" for _ in range(6))
    first = rng.choice([2, 5, 31, 37, 46, 62, 77, 78, 81, 82, 84, 86, 88, 90, 92, 94, 95, 98, 99, 101, 104, 108, 109, 118, 124, 139, 151, 154, 176, 178, 185, 188, 193, 197, 212, 217])
    return f"{first}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def person(rng: random.Random) -> dict:
    firsts, lasts = rng.choice(NAME_GROUPS)
    first = rng.choice(firsts)
    last = rng.choice(lasts) if rng.random() < 0.85 else rng.choice(LAST_NAMES)  # mixed names are common too
    f, l = ascii_fold(first).lower(), ascii_fold(last.replace(" ", "").replace("'", "")).lower()
    company = rng.choice(COMPANIES) if rng.random() < 0.45 else None
    shape = rng.randrange(9)
    if company and rng.random() < 0.7:  # work address
        domain = company[1]
        local = [f"{f}.{l}", f"{f[0]}{l}", f, f"{f[0]}.{l}", f"{f[0]}{l[0]}", f"{f}{l[0]}"][shape % 6]
    else:
        domain = rng.choice(FREE_MAIL)
        local = [f"{f}.{l}", f"{f}{l}", f"{f}_{l}{rng.randrange(10, 99)}", f"{f[0]}{l}{rng.randrange(1, 999)}", f"{l}.{f}",
                 f"{f}.{l[0]}", f"{f}-{l}", f"{f}{rng.randrange(1970, 2006)}", f"{f}.{l}{rng.randrange(1, 9)}"][shape]
    name = f"{first} {last}"
    if rng.random() < 0.04:
        name = name.lower()  # people do type their names like this
    return {"first": first, "last": last, "name": name, "email": f"{local}@{domain}", "company": company[0] if company else None,
            "phone": digits(rng, rng.choice(PHONE_FORMATS))}


# ----------------------------------------------------------------------------------------------
# Payloads
# ----------------------------------------------------------------------------------------------

BANDS = [  # name, weight, lower bound, upper bound (bytes of compact JSON), or None for sign-ups
    ("signup", 5, 0, 1024),
    ("lt1k", 10, 500, 1024),
    ("1-2k", 35, 1024, 2048),
    ("2-4k", 35, 2048, 4096),
    ("4-16k", 15, 4096, 16384),
]


def band_of(size: int, kind: str) -> str:
    if kind == "newsletter":
        return "signup"
    if size < 1024:
        return "lt1k"
    if size < 2048:
        return "1-2k"
    if size < 4096:
        return "2-4k"
    if size < 16384:
        return "4-16k"
    return "16k+"


def dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def json_len(s: str) -> int:
    return len(json.dumps(s, ensure_ascii=False).encode("utf-8")) - 2


def submitted_at(rng: random.Random) -> str:
    # Spread over 2026, more on weekdays and working hours.
    day = rng.randrange(334)
    month_lengths = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30]
    month = 0
    while day >= month_lengths[month]:
        day -= month_lengths[month]
        month += 1
    hour = rng.choice([7, 8, 9, 9, 10, 10, 11, 11, 12, 13, 14, 14, 15, 15, 16, 17, 18, 19, 20, 21, 22, 23, 0, 2, 5])
    stamp = f"2026-{month + 1:02d}-{day + 1:02d}T{hour:02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}"
    return stamp + (f".{rng.randrange(1000):03d}Z" if rng.random() < 0.3 else "Z")


def page_meta(rng: random.Random, site: str, style: str, kind: str) -> dict:
    business = next(b for d, b, _ in SITES if d == site)
    paths = {
        "contact": ["/contact/", "/contact-us/", "/get-in-touch/", "/about/contact/", "/"],
        "quote": ["/get-a-quote/", "/request-a-quote/", "/services/", "/pricing/", "/book-a-consultation/"],
        "job": ["/careers/", "/jobs/apply/", "/join-the-team/", "/careers/open-positions/"],
        "support": ["/support/", "/help/contact-support/", "/my-account/support/", "/returns/", "/support/ticket/new/"],
        "newsletter": ["/", "/blog/", "/shop/", "/events/"],
    }[kind]
    path = rng.choice(paths)
    if kind == "newsletter" and rng.random() < 0.5:
        path = f"/blog/2026/{rng.randrange(1, 12):02d}/{rng.choice(BLOG_SLUGS)}/"
    if kind == "job" and rng.random() < 0.6:
        path = f"/careers/{re.sub(r'[^a-z0-9]+', '-', rng.choice(POSITIONS).lower()).strip('-')}/"
    url = f"https://{site}{path}"
    if rng.random() < 0.35:
        url += "?" + rng.choice(UTM).format(camp=rng.choice(CAMPAIGNS), tok=token(rng, rng.choice([22, 40, 91])), term=business)
    r = rng.random()
    referrer = rng.choice(REFERRERS) if r < 0.55 else (f"https://{site}/" if r < 0.8 else (None if r < 0.9 else ""))
    plugin, versions = PLUGINS[style]
    return {"page_url": url, "referrer": referrer, "user_agent": rng.choice(USER_AGENTS), "ip": ip_address(rng),
            "plugin": plugin, "plugin_version": rng.choice(versions)}


def consent_value(rng: random.Random, style: str):
    if style == "cf7":
        return "1"
    if style in ("wpforms", "gravity"):
        return [rng.choice(CONSENT_TEXT)]
    return rng.choice([True, "on", "yes", "1"])


def build_fields(rng: random.Random, site: str, style: str, kind: str, lean: bool) -> tuple[dict, str | None]:
    """The form fields without the free text; returns them and the key the free text goes in."""
    business = next(b for d, b, _ in SITES if d == site)
    p = person(rng)
    k = lambda key: field_key(style, site, key)  # noqa: E731
    fields: dict = {}
    opt = (lambda chance: not lean and rng.random() < chance)

    if kind == "newsletter":
        fields[k("email")] = p["email"]
        if rng.random() < 0.6:
            fields[k("first_name")] = p["first"]
        if rng.random() < 0.4:
            fields[k("interests")] = rng.sample(INTERESTS, rng.randint(1, 3))
        fields[k("consent")] = consent_value(rng, style)
        return fields, None

    if style == "fluent":
        fields["names"] = {"first_name": p["first"], "last_name": p["last"]}
    elif style in ("gravity", "custom") or (kind == "job" and rng.random() < 0.5):
        fields[k("first_name")], fields[k("last_name")] = p["first"], p["last"]
    else:
        fields[k("name")] = p["name"]
    fields[k("email")] = p["email"]
    if kind in ("job", "quote") or opt(0.5):
        fields[k("phone")] = p["phone"]

    if kind == "contact":
        if opt(0.6):
            fields[k("subject")] = rng.choice(SUBJECTS)
        if p["company"] and opt(0.5):
            fields[k("company")] = p["company"]
        if opt(0.2):
            fields[k("preferred_contact")] = rng.choice(["Email", "Phone", "WhatsApp", "Either"])
        text_key = "message"
    elif kind == "quote":
        if p["company"]:
            fields[k("company")] = p["company"]
        services = SERVICES.get(business, SERVICES["agency"])
        fields[k("services")] = rng.sample(services, rng.randint(1, min(4, len(services))))
        fields[k("budget")] = rng.choice(BUDGETS[currency(site)] if rng.random() < 0.8 else BUDGETS[""])
        fields[k("timeline")] = rng.choice(TIMELINES)
        if opt(0.4):
            fields[k("website")] = f"https://{rng.choice(COMPANIES)[1]}"
        if opt(0.35):
            city, postcode, country = rng.choice(CITIES)
            fields[k("address")] = {"street": f"{rng.randrange(1, 240)} {rng.choice(STREETS)}", "city": city, "postcode": postcode, "country": country}
        if opt(0.5):
            fields[k("how_heard")] = rng.choice(HOW_HEARD)
        text_key = "project_details"
    elif kind == "job":
        position = rng.choice(POSITIONS)
        fields[k("position")] = position
        slug = ascii_fold(f"{p['first']}-{p['last']}".replace(" ", "-"))
        fields[k("cv")] = f"https://{site.removeprefix('www.')}/wp-content/uploads/{'wpforms' if style == 'wpforms' else 'gravity_forms'}/{rng.randrange(1, 40)}-{token(rng, 12)}/CV_{slug}_2026.pdf"
        if opt(0.6):
            fields[k("linkedin")] = f"https://www.linkedin.com/in/{slug.lower()}-{rng.randrange(16**6):06x}/"
        if opt(0.5):
            fields[k("salary")] = rng.choice(["£38,000", "$95k", "€52.000", "Negotiable", "45000", "£14.50/hour", "In line with the advertised range"])
        if opt(0.5):
            fields[k("notice_period")] = rng.choice(["Immediately available", "1 month", "2 weeks", "3 months", "4 weeks"])
        if opt(0.4):
            fields[k("right_to_work")] = rng.choice(["Yes", "Yes", "No – I would need sponsorship"])
        if opt(0.3):
            fields[k("start_date")] = f"2026-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
        text_key = "cover_letter"
    else:  # support
        fields[k("order_number")] = rng.choice([f"#{rng.randrange(1000, 99999)}", f"WC-{rng.randrange(10000, 999999)}", f"ORD-2026-{rng.randrange(1, 99999):05d}", f"{rng.randrange(100, 999)}-{rng.randrange(1000000, 9999999)}"])
        fields[k("product")] = rng.choice(PRODUCTS)
        if opt(0.6):
            fields[k("category")] = rng.choice(SUPPORT_CATEGORIES)
        if opt(0.4):
            fields[k("priority")] = rng.choice(["Low", "Normal", "High", "Urgent"])
        text_key = "description"

    if opt(0.35):
        fields[k("newsletter")] = rng.choice([True, False, ["Yes, keep me updated"], "1"])
    if rng.random() < 0.7:
        fields[k("consent")] = consent_value(rng, style)
    if style in ("wpforms", "gravity") and opt(0.2):
        fields["hp_check"] = ""  # honeypot fields arrive empty
    return fields, k(text_key)


class Cursor:
    """Reads one source's documents in order. When a message ends inside a document, the rest of
    it (from the next whole sentence) starts the next message taken from this source."""

    def __init__(self, docs: list[Doc]) -> None:
        self.docs, self.pos = list(docs), 0
        self.remaining = sum(len(d.text) for d in docs)

    def peek(self) -> Doc | None:
        return self.docs[self.pos] if self.pos < len(self.docs) else None

    def advance(self) -> None:
        self.remaining -= len(self.docs[self.pos].text)
        self.pos += 1

    def replace(self, rest: str) -> None:
        doc = self.docs[self.pos]
        self.remaining -= len(doc.text) - len(rest)
        self.docs[self.pos] = Doc(doc.id, doc.source, rest)


def take_message(cur: Cursor, target: int, lo: int, hi: int, used: dict) -> str:
    """Consecutive documents until the message's JSON length reaches `target`; a document that
    does not fit is cut after a whole sentence (never inside a word). Below `lo` the message may
    grow up to `hi` to get there."""
    parts: list[str] = []
    size = 0

    def fits(add: int) -> bool:
        return size + add <= target or (size < lo and size + add <= hi)

    while size < target and (doc := cur.peek()) is not None:
        add = json_len(doc.text) + (4 if parts else 0)  # "\n\n" between documents
        if fits(add):
            parts.append(doc.text)
            size += add
            used[doc.id] = used.get(doc.id, 0) + len(doc.text.encode("utf-8"))
            cur.advance()
            continue
        if size >= lo:
            break
        # Whole sentences of this document, as many as fit; the rest goes back to the cursor.
        paras = [sentences(p) for p in doc.text.split("\n\n")]
        taken = ""
        pi = si = 0
        while pi < len(paras):
            s = paras[pi][si]
            glue = ("\n\n" if si == 0 else " ") if taken else ("\n\n" if parts else "")
            add = json_len(s) + json_len(glue)
            if not fits(add):
                break
            taken += glue + s
            size += add
            si += 1
            if si == len(paras[pi]):
                pi, si = pi + 1, 0
        rest = "\n\n".join([" ".join(paras[pi][si:])] + [" ".join(p) for p in paras[pi + 1 :]]) if pi < len(paras) else ""
        if not taken:
            cur.advance()  # one sentence longer than the whole band: skip the document
            continue
        parts.append(taken.removeprefix("\n\n"))
        used[doc.id] = used.get(doc.id, 0) + len(taken.encode("utf-8"))
        if rest:
            cur.replace(rest)
        else:
            cur.advance()
        break
    return "\n\n".join(parts)


def wrap(docs_by_source: dict[str, list[Doc]], rng: random.Random) -> tuple[list[str], list[str], dict]:
    """Wraps all the documents into payload lines; returns the lines, each line's form kind and
    the bytes of each document used."""
    cursors = {name: Cursor(docs) for name, docs in sorted(docs_by_source.items()) if docs}
    lines: list[str] = []
    kinds: list[str] = []
    used: dict[str, int] = {}
    band_names = [b[0] for b in BANDS]
    band_weights = [b[1] for b in BANDS]
    while any(c.peek() for c in cursors.values()):
        band = rng.choices(band_names, band_weights)[0]
        _, _, lo, hi = next(b for b in BANDS if b[0] == band)
        site, business, style = rng.choice(SITES)
        if band == "signup":
            kind = "newsletter"
        else:
            kind = rng.choices(["contact", "quote", "job", "support"], KIND_BY_BUSINESS[business])[0]
            if band == "lt1k":
                kind = "contact"
        fields, text_key = build_fields(rng, site, style, kind, lean=(band == "lt1k"))
        payload = {"fields": fields, "meta": page_meta(rng, site, style, kind), "submitted_at": submitted_at(rng)}
        if text_key is not None:
            payload["fields"][text_key] = ""
            base = len(dumps(payload).encode("utf-8"))
            if band == "lt1k" and base > 860:  # too many bytes of envelope for a short message
                payload["meta"]["page_url"] = payload["meta"]["page_url"].split("?")[0]
                base = len(dumps(payload).encode("utf-8"))
            if band == "4-16k":
                target = int(round(2 ** rng.uniform(12.05, 13.9)))  # log-uniform, most under 12 KiB
            else:
                target = rng.randrange(max(lo, base + 120), hi - 24) if max(lo, base + 120) < hi - 24 else hi - 24
            # Pick a source in proportion to the text it has left, so all run out together.
            live = [(n, c) for n, c in cursors.items() if c.peek()]
            name = rng.choices([n for n, _ in live], [c.remaining for _, c in live])[0]
            msg = take_message(cursors[name], target - base, max(lo - base, 60), hi - base - 1, used)
            if not msg:
                continue
            payload["fields"][text_key] = msg
        line = dumps(payload)
        lines.append(line)
        kinds.append(kind)
    return lines, kinds, used


# ----------------------------------------------------------------------------------------------
# Validation against the schema (the subset that payloads exercise), standard library only
# ----------------------------------------------------------------------------------------------


class Validator:
    def __init__(self, schema_path: Path) -> None:
        try:
            s = json.loads(schema_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise BuildError(f"cannot read the envelope schema {schema_path}: {e}") from e
        d = s["$defs"]
        self.text_re = re.compile(d["text"]["pattern"])
        self.text_max = d["text"]["maxLength"]
        self.name_re = re.compile(d["name"]["pattern"])
        self.name_max = d["name"]["maxLength"]
        self.leaf_items = d["leaf"]["anyOf"][1]["maxItems"]
        f = s["properties"]["fields"]
        self.fields_max = f["maxProperties"]
        self.nested_max = f["additionalProperties"]["anyOf"][1]["maxProperties"]
        self.meta_keys = set(s["properties"]["meta"]["properties"])
        self.meta_re = re.compile(d["meta_text"]["pattern"])
        self.meta_max = d["meta_text"]["maxLength"]
        self.at_re = re.compile(s["properties"]["submitted_at"]["pattern"])
        # The corpus holds the payload: the envelope less site and form_id, which the service
        # keeps apart from the compressed payload.
        self.top_keys = set(s["properties"]) - {"site", "form_id"}

    def _scalar(self, v, where: str) -> None:
        if isinstance(v, str):
            if len(v) > self.text_max or not self.text_re.fullmatch(v):
                raise BuildError(f"{where}: text too long or has control characters")
        elif not (v is None or isinstance(v, (bool, int, float))):
            raise BuildError(f"{where}: not a scalar")

    def _leaf(self, v, where: str) -> None:
        if isinstance(v, list):
            if len(v) > self.leaf_items:
                raise BuildError(f"{where}: too many items")
            for x in v:
                self._scalar(x, where)
        else:
            self._scalar(v, where)

    def _name(self, n: str, where: str) -> None:
        if not (1 <= len(n) <= self.name_max) or not self.name_re.fullmatch(n):
            raise BuildError(f"{where}: bad field name {n!r}")

    def check(self, p: dict, where: str) -> None:
        if not isinstance(p, dict) or set(p) - self.top_keys or "fields" not in p:
            raise BuildError(f"{where}: top-level keys {sorted(p)}")
        fields = p["fields"]
        if not isinstance(fields, dict) or len(fields) > self.fields_max:
            raise BuildError(f"{where}: fields must be an object of at most {self.fields_max}")
        for n, v in fields.items():
            self._name(n, where)
            if isinstance(v, dict):
                if len(v) > self.nested_max:
                    raise BuildError(f"{where}: {n} has too many keys")
                for n2, v2 in v.items():
                    self._name(n2, where)
                    self._leaf(v2, f"{where} {n}.{n2}")
            else:
                self._leaf(v, f"{where} {n}")
        meta = p.get("meta")
        if meta is not None:
            if not isinstance(meta, dict) or set(meta) - self.meta_keys:
                raise BuildError(f"{where}: meta keys {sorted(meta)}")
            for n, v in meta.items():
                if v is not None and (not isinstance(v, str) or len(v) > self.meta_max or not self.meta_re.fullmatch(v)):
                    raise BuildError(f"{where}: meta.{n} invalid")
        at = p.get("submitted_at")
        if at is not None and (not isinstance(at, str) or not self.at_re.fullmatch(at)):
            raise BuildError(f"{where}: submitted_at {at!r}")


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def write_jsonl(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def pick_sample(lines: list[str], kinds_of: list[str], rng: random.Random) -> list[str]:
    """About 60 payloads across the bands, under ~150 KB."""
    want = {"signup": 5, "lt1k": 8, "1-2k": 22, "2-4k": 20, "4-16k": 5}
    by_band: dict[str, list[int]] = {}
    for i, line in enumerate(lines):
        size = len(line.encode("utf-8"))
        if kinds_of[i] != "newsletter" and size > 8192:
            continue  # keep the committed sample small
        by_band.setdefault(band_of(size, kinds_of[i]), []).append(i)
    chosen: list[int] = []
    for band, n in want.items():
        pool = by_band.get(band, [])
        chosen.extend(rng.sample(pool, min(n, len(pool))))
    return [lines[i] for i in sorted(chosen)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "target" / "corpus", help="output folder (default: target/corpus)")
    ap.add_argument("--sample", action="store_true", help=f"also rewrite the committed sample in {SAMPLE_DIR.relative_to(REPO)}/")
    args = ap.parse_args(argv)
    t0 = time.monotonic()

    ensure_installed(SOURCES)
    validator = Validator(SCHEMA)
    versions = {p: package_version(p) for s in SOURCES for p in s.packages}

    train: dict[str, list[Doc]] = {}
    heldout: dict[str, list[Doc]] = {}
    heldout_src: dict[str, list[Doc]] = {}
    all_docs: dict[str, list[Doc]] = {}
    seen: set[str] = set()
    for s in SOURCES:
        docs = make_docs(s, seen)
        all_docs[s.name] = docs
        if s.shuffle:
            docs = sorted(docs, key=lambda d: hashlib.sha256(d.id.encode("utf-8")).digest())
        if s.name == HELDOUT_SOURCE:
            heldout_src[s.name] = [d for d in docs if bucket(d.id + "#source") < HELDOUT_SOURCE_PER_10000]
        elif not s.trainable:
            heldout[s.name] = [d for d in docs if bucket(d.id + "#measure") < MEASURE_ONLY_PER_10000]
        else:
            train[s.name] = [d for d in docs if bucket(d.id) >= HELDOUT_PER_10000]
            heldout[s.name] = [d for d in docs if bucket(d.id) < HELDOUT_PER_10000]

    # Each output file has its own generator, so changing one does not reshuffle the others.
    outputs = {}
    used_all: dict[str, int] = {}
    for fname, docs, seed in (("train.jsonl", train, SEED), ("heldout.jsonl", heldout, SEED + 1), ("heldout_source.jsonl", heldout_src, SEED + 2)):
        lines, kinds, used = wrap(docs, random.Random(seed))
        used_all.update(used)
        outputs[fname] = (lines, kinds)

    args.out.mkdir(parents=True, exist_ok=True)
    files_manifest = {}
    for fname, (lines, kinds) in outputs.items():
        for i, line in enumerate(lines):
            validator.check(json.loads(line), f"{fname}:{i + 1}")
        write_jsonl(args.out / fname, lines)
        files_manifest[fname] = {
            "payloads": len(lines),
            "bytes": sum(len(l.encode("utf-8")) + 1 for l in lines),
            "forms": {k: kinds.count(k) for k in sorted(set(kinds))},
            "bands": band_stats(lines, kinds),
        }

    sources_manifest = []
    for s in SOURCES:
        docs = all_docs[s.name]
        split = {"train": train.get(s.name, []), "heldout": heldout.get(s.name, []), "heldout_source": heldout_src.get(s.name, [])}
        sources_manifest.append({
            "name": s.name,
            "packages": [{"name": p, "version": versions[p]} for p in s.packages],
            "paths": s.paths,
            "excluded_files": list(s.exclude),
            "files": len({d.id.rsplit(":", 1)[0] for d in docs}),
            "license": s.license_name,
            "license_statement": license_statement(s),
            "license_file": f"/usr/share/doc/{s.packages[0]}/copyright",
            "documents": {k: len(v) for k, v in split.items()} | {"total": len(docs)},
            "text_bytes": {k: sum(len(d.text.encode("utf-8")) for d in v) for k, v in split.items()} | {"total": sum(len(d.text.encode("utf-8")) for d in docs)},
            "text_bytes_in_payloads": {k: sum(used_all.get(d.id, 0) for d in v) for k, v in split.items()},
        })
    manifest = {
        "purpose": "Real human-written English prose in WordPress form payloads, for training and measuring the brotli shared dictionary.",
        "seed": SEED,
        "split": {
            "rule": "a document is held out iff int.from_bytes(sha256(id)[:8], 'big') % 10000 < heldout_per_10000",
            "heldout_per_10000": HELDOUT_PER_10000,
            "document_id": "source:path:index",
            "heldout_source": HELDOUT_SOURCE,
            "heldout_source_rule": "documents of the held-out source whose bucket(id + '#source') < heldout_source_per_10000 are wrapped",
            "heldout_source_per_10000": HELDOUT_SOURCE_PER_10000,
        },
        "bands": {name: {"weight_percent": w, "from_bytes": lo, "below_bytes": hi} for name, w, lo, hi in BANDS},
        "serialisation": "one payload per line: json.dumps(obj, separators=(',', ':'), ensure_ascii=False, sort_keys=True)",
        "sources": sources_manifest,
        "files": files_manifest,
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    if args.sample:
        SAMPLE_DIR.mkdir(parents=True, exist_ok=True)
        for fname, seed in (("train.jsonl", SEED + 10), ("heldout.jsonl", SEED + 11)):
            lines, kinds = outputs[fname]
            picked = pick_sample(lines, kinds, random.Random(seed))
            for i, line in enumerate(picked):
                validator.check(json.loads(line), f"sample/{fname}:{i + 1}")
            write_jsonl(SAMPLE_DIR / fname, picked)

    report(manifest, args.out, time.monotonic() - t0, {f: o[0] for f, o in outputs.items()})
    return 0


def band_stats(lines: list[str], kinds: list[str]) -> dict:
    stats: dict[str, dict[str, int]] = {}
    for line, kind in zip(lines, kinds):
        size = len(line.encode("utf-8"))
        s = stats.setdefault(band_of(size, kind), {"payloads": 0, "bytes": 0})
        s["payloads"] += 1
        s["bytes"] += size
    order = [b[0] for b in BANDS] + ["16k+"]
    return {b: stats[b] for b in order if b in stats}


def report(manifest: dict, out: Path, seconds: float, outputs: dict[str, list[str]]) -> None:
    print(f"corpus written to {out} in {seconds:.1f} s")
    print(f"{'source':<16}{'version':<22}{'docs':>7}{'train KB':>10}{'held KB':>9}{'src KB':>8}")
    for s in manifest["sources"]:
        tb = s["text_bytes"]
        print(f"{s['name']:<16}{s['packages'][0]['version']:<22}{s['documents']['total']:>7}{tb['train'] / 1e3:>10.0f}{tb['heldout'] / 1e3:>9.0f}{tb['heldout_source'] / 1e3:>8.0f}")
    for fname, f in manifest["files"].items():
        n = f["payloads"]
        bands = "  ".join(f"{b} {v['payloads']} ({100 * v['payloads'] / n:.0f}%)" for b, v in f["bands"].items())
        print(f"{fname:<22}{n:>6} payloads {f['bytes'] / 1e6:6.2f} MB   {bands}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BuildError as e:
        print(f"build.py: error: {e}", file=sys.stderr)
        sys.exit(1)
