"""The visible text of an HTML page (or an EPUB's XHTML chapter), with its block structure as newlines."""

from __future__ import annotations

import re
from html.parser import HTMLParser

__all__ = ["html_to_text"]


class _HTMLText(HTMLParser):
    """Collect the visible text of an HTML page with its block structure as newlines."""

    SKIP = {"script", "style", "noscript", "template", "svg"}
    HEAD_ONLY = {"head", "title", "meta", "link", "base", "style", "script", "noscript", "template"}
    PARAGRAPH = {
        "p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "table", "ul", "ol", "dl",
        "section", "article", "header", "footer", "nav", "aside", "main", "figure", "form",
        "address", "details", "fieldset", "hr",
    }
    LINE = {"br", "div", "li", "tr", "dt", "dd", "caption", "figcaption", "summary", "option", "legend"}
    CELL = {"td", "th"}
    # Whitespace inside <pre> is kept: it stands in as control characters (NUL cannot occur in
    # a file we read, \x01/\x02 practically never do) while the rest of the text is tidied.
    PRE_PROTECT = str.maketrans({"\n": "\x00", " ": "\x01", "\t": "\x02"})
    PRE_RESTORE = str.maketrans({"\x00": "\n", "\x01": " ", "\x02": "\t"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self.h1_parts: list[str] = []
        self.skip_depth = 0
        self.in_head = False
        self.in_title = False
        self.h1_state = 0  # 0: not seen, 1: inside the first <h1>, 2: done
        self.pre_depth = 0
        self.pending = 0  # newlines owed before the next text: 1 after a line, 2 after a block

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "head":
            self.in_head = True
        elif tag == "body" or (self.in_head and tag not in self.HEAD_ONLY):
            self.in_head = False  # the head ended without </head>
        if tag in self.SKIP:
            self.skip_depth += 1
        elif tag == "title" and not self.skip_depth and not self.title_parts:
            self.in_title = True
        elif tag == "h1" and self.h1_state == 0:
            self.h1_state = 1
        if tag == "pre":
            self.pre_depth += 1
        self._break(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "head":
            self.in_head = False
        elif tag in self.SKIP:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif tag == "title":
            self.in_title = False
        elif tag == "h1" and self.h1_state == 1:
            self.h1_state = 2
        if tag == "pre":
            self.pre_depth = max(0, self.pre_depth - 1)
        if tag in self.CELL and not self.pending and self.parts and not self.parts[-1].endswith(" "):
            self.parts.append(" ")
        self._break(tag)

    def _break(self, tag: str) -> None:
        if tag in self.PARAGRAPH:
            self.pending = max(self.pending, 2)
        elif tag in self.LINE:
            self.pending = max(self.pending, 1)

    def _emit(self, text: str) -> None:
        if self.pending and self.parts:
            self.parts.append("\n" * self.pending)
        self.pending = 0
        self.parts.append(text)

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title_parts.append(data)
            return
        if self.skip_depth or self.in_head:
            return
        if self.h1_state == 1:
            self.h1_parts.append(data)
        if self.pre_depth:
            self._emit(data.replace("\r\n", "\n").translate(self.PRE_PROTECT))
            return
        collapsed = re.sub(r"\s+", " ", data)
        after_space = not self.parts or self.parts[-1].endswith((" ", "\n"))
        if collapsed.strip():
            if after_space and not self.pending:
                collapsed = collapsed.lstrip(" ")
            self._emit(collapsed)
        elif collapsed and not self.pending and not after_space:
            self.parts.append(" ")

    def text(self) -> str:
        text = "".join(self.parts)
        text = re.sub(r"[ \t]*\n[ \t]*", "\n", text)
        return text.strip().translate(self.PRE_RESTORE)

    def title(self) -> str:
        for parts in (self.title_parts, self.h1_parts):
            title = re.sub(r"\s+", " ", "".join(parts)).strip()
            if title:
                return title
        return ""


def html_to_text(html: str) -> tuple[str, str]:
    """Return ``(title, text)`` of an HTML page: the <title> (else the first <h1>) and the
    visible text with entities unescaped, script/style/head dropped and blocks on new lines."""
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    return parser.title(), parser.text()
