"""HTML files: the main text, without scripts, styles, navigation or other page furniture.

The main text is the page's <main> or role="main" element, else its only <article>, else <body>. Inside
it, headings start sections that record their heading path, and block elements become paragraphs.
"""

import re

from bs4 import BeautifulSoup, NavigableString, Tag
from bs4.element import Comment, Declaration, Doctype, ProcessingInstruction

from ingestion.loaders.base import ParsedDocument, ParseOptions, Section, join_sections
from ingestion.normalize import decode

# Elements whose text no reader sees, or page furniture repeated on every page of a site.
_DROPPED = ["script", "style", "noscript", "template", "svg", "canvas", "iframe", "object", "head", "nav",
            "header", "footer", "aside", "form", "button", "select", "dialog"]
# Class or id words that mark boilerplate blocks in common site templates.
_BOILERPLATE = re.compile(r"(^|[-_ ])(cookie|banner|breadcrumb|sidebar|menu|navbar|share|social|advert|ads|"
                          r"newsletter|subscribe|related|comments?)($|[-_ ])", re.IGNORECASE)
_BLOCKS = {"p", "div", "section", "article", "main", "li", "ul", "ol", "dl", "dt", "dd", "table", "tr",
           "blockquote", "pre", "figure", "figcaption", "address", "details", "summary", "hr", "br"}
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_IGNORED_STRINGS = (Comment, Declaration, Doctype, ProcessingInstruction)


def load_html(data: bytes, *, source: str, options: ParseOptions) -> list[ParsedDocument]:
    text, encoding = decode(data)
    soup = BeautifulSoup(text, "lxml")
    title_tag = soup.find("title")
    title = title_tag.get_text(" ", strip=True) if title_tag else ""

    for tag in soup.find_all(_DROPPED):
        tag.decompose()
    for tag in soup.find_all(_is_boilerplate):
        tag.decompose()
    root = _main_element(soup)

    sections = _sections(root) if root is not None else []
    if not title:
        first = next((section.metadata["heading_path"] for section in sections if section.metadata["heading_path"]),
                     None)
        title = first[0] if first else ""
    return [ParsedDocument(text=join_sections(sections), title=title, sections=sections,
                           metadata={"source": source, "encoding": encoding})]


def _is_boilerplate(tag: Tag) -> bool:
    if tag.name in ("html", "body", "main", "article") or tag.attrs is None:
        return False
    # A wrapper such as <div class="content has-sidebar"> around the page's main text is not boilerplate.
    if tag.find(["main", "article", "h1"]) is not None:
        return False
    words = " ".join([*tag.get("class", []), tag.get("id", "") or ""])
    return tag.get("role") in ("navigation", "banner", "contentinfo", "complementary") or bool(
        words and _BOILERPLATE.search(words))


def _main_element(soup: BeautifulSoup) -> Tag | None:
    main = soup.find("main") or soup.find(attrs={"role": "main"})
    if main is not None:
        return main
    articles = soup.find_all("article")
    if len(articles) == 1:
        return articles[0]
    return soup.body or soup


def _sections(root: Tag) -> list[Section]:
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    parts: list[str] = []

    def close_section() -> None:
        body = "".join(parts).strip()
        if body:
            sections.append(Section(body, {"heading_path": [heading for _, heading in path]}))
        parts.clear()

    def walk(node: Tag) -> None:
        for child in node.children:
            if isinstance(child, NavigableString):
                if not isinstance(child, _IGNORED_STRINGS):
                    parts.append(str(child))
                continue
            if not isinstance(child, Tag):
                continue
            level = _HEADINGS.get(child.name)
            if level is not None:
                close_section()
                heading = child.get_text(" ", strip=True)
                while path and path[-1][0] >= level:
                    path.pop()
                if heading:
                    path.append((level, heading))
                    parts.append(heading + "\n\n")
                continue
            block = child.name in _BLOCKS
            if block:
                parts.append("\n\n" if child.name not in ("br", "li", "tr", "dt", "dd") else "\n")
            if child.name in ("td", "th"):
                parts.append(" ")
            walk(child)
            if block:
                parts.append("\n\n" if child.name not in ("br", "li", "tr", "dt", "dd") else "\n")

    walk(root)
    close_section()
    return sections
