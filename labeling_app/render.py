"""Outside text as safe HTML: one markdown parser, images turned into text, an allow-list sanitiser.

Prompts, model outputs and guidelines come from outside and may be written to attack the page
(issue 16: an escaped backtick or a fence opener that our own pattern escaping misread let a
remote image through, because Streamlit's markdown then parsed the text differently). So the
text is parsed exactly once, here, and nothing downstream parses it again:

1. markdown-it (CommonMark + tables + strikethrough) with raw HTML off, so `<img>` in the text is
   text, never a tag;
2. every image token becomes visible text (its alt text and its URL, not a link): nothing is
   loaded from a URL the text chose;
3. the HTML it renders passes nh3 (the ammonia sanitiser) with an allow-list of the tags
   markdown-it makes: no `src`, `srcset`, `style`, event handler or unknown tag survives, and a
   link keeps its `href` only for an absolute http(s) or mailto URL (no `data:`, no relative
   or protocol-relative `//host` one), opening in a new tab;
4. the result is wrapped in our own box (`dir="auto"` so right-to-left scripts read correctly,
   a capped height with its own scroll) and shown with `st.html`, which does no markdown and
   no LaTeX: `$` stays a dollar sign.

`safe_inline` is the other half: short outside strings (names, messages, excerpts) that pages
embed in Streamlit's own markdown. It escapes every character that could open markdown syntax
there (`[` for links and images, backticks for code spans, `<`, `$`, `\\`, the colon of
`://`), so the text shows as written and no image can form whatever surrounds it.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import nh3
from markdown_it import MarkdownIt
from markdown_it.token import Token

_PARSER = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable(["table", "strikethrough"])

BLOCK_TAGS = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "ul", "ol", "li", "pre", "table", "th", "td"})
"""Block tags markdown-it makes; each gets `dir="auto"` so a right-to-left paragraph reads right to left."""
ALLOWED_TAGS = BLOCK_TAGS | {"br", "hr", "code", "em", "strong", "s", "a", "thead", "tbody", "tr"}
"""Every tag markdown-it renders from CommonMark + tables + strikethrough, less `img` (images are text)."""
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}
LINK_PREFIXES = ("http://", "https://", "mailto:")
"""The only `href`s kept: absolute web and mail links (never `//host/x`, `data:` or a path into this app)."""

CHARS_PER_LINE = 70
"""About how many characters a line of a response box holds (half the page at 1440 px): for estimates."""
RESPONSE_LINES = 8
PROMPT_LINES = 4
"""About how many lines the capped boxes show at 1440x900. A text estimated longer gets "Show all"
(CSS cannot tell whether a box overflows; on a taller window the control may lift a cap not reached)."""

# Height caps follow the window: at 1440x900 the prompt, the pair, the choice row and Submit fit one
# screen (tests/browser/test_browser_render.py); taller windows show more of each text.
STYLE = """
.rlhf-box{border:1px solid color-mix(in srgb,currentColor 18%,transparent);border-radius:.5rem;padding:.5rem .75rem;margin:0}
.rlhf-head{display:flex;align-items:center;gap:.5rem;margin-bottom:.25rem;font-size:.95rem}
.rlhf-head .rlhf-model{font-family:"Source Code Pro",monospace;font-size:.8rem;opacity:.75}
.rlhf-expand{margin-left:auto;font-size:.8rem;opacity:.8}
.rlhf-prompt{position:relative}
.rlhf-prompt>.rlhf-expand{position:absolute;top:.5rem;right:.75rem;z-index:1}
.rlhf-expand summary{cursor:pointer;list-style:none;text-decoration:underline dotted}
.rlhf-expand summary::-webkit-details-marker{display:none}
.rlhf-expand .rlhf-less,.rlhf-expand[open] .rlhf-more{display:none}
.rlhf-expand[open] .rlhf-less{display:inline}
.rlhf-scroll{overflow:auto;overscroll-behavior:contain;overflow-wrap:anywhere}
.rlhf-response .rlhf-scroll{max-height:clamp(12rem,100vh - 43rem,40rem)}
.rlhf-prompt .rlhf-scroll{max-height:clamp(6rem,25vh - 6rem,16rem)}
.rlhf-box:has(.rlhf-expand[open]) .rlhf-scroll{max-height:none}
.rlhf-role{font-size:.75rem;font-weight:600;text-transform:uppercase;letter-spacing:.04em;opacity:.65;margin:.4rem 0 .1rem}
.rlhf-role:first-child{margin-top:0}
.rlhf-md p,.rlhf-md ul,.rlhf-md ol,.rlhf-md pre,.rlhf-md blockquote,.rlhf-md table{margin:0 0 .6rem}
.rlhf-md>:last-child{margin-bottom:0}
.rlhf-md h1,.rlhf-md h2,.rlhf-md h3,.rlhf-md h4,.rlhf-md h5,.rlhf-md h6{font-size:1.05rem;font-weight:600;margin:.6rem 0 .3rem;padding:0}
.rlhf-md h1{font-size:1.25rem}.rlhf-md h2{font-size:1.15rem}
.rlhf-md code{font-family:"Source Code Pro",monospace;font-size:.85em;background:color-mix(in srgb,currentColor 8%,transparent);border-radius:.25rem;padding:.05em .25em}
.rlhf-md pre{background:color-mix(in srgb,currentColor 6%,transparent);border-radius:.4rem;padding:.5rem .75rem;overflow-x:auto;white-space:pre}
.rlhf-md pre code{background:none;padding:0;font-size:.85rem}
.rlhf-md blockquote{border-inline-start:3px solid color-mix(in srgb,currentColor 25%,transparent);padding-inline-start:.75rem;opacity:.9}
.rlhf-md table{border-collapse:collapse}
.rlhf-md th,.rlhf-md td{border:1px solid color-mix(in srgb,currentColor 18%,transparent);padding:.2rem .5rem}
.rlhf-md ul,.rlhf-md ol{padding-inline-start:1.5rem}
"""


# ---------------------------------------------------------------------------- markdown → HTML


def _image_as_text(image: Token) -> Token:
    """An image token as a text token: its alt text and URL are shown, nothing is loaded."""
    alt = image.content.strip()
    url = image.attrGet("src") or ""
    text = Token("text", "", 0)
    text.content = "[image" + (f": {alt}" if alt else "") + (f" · {url}" if url else "") + "]"
    return text


def _without_images(tokens: Iterable[Token]) -> None:
    """Replace every image token (at any depth: inside links, emphasis, table cells) by text, in place."""
    for token in tokens:
        if token.children:
            token.children = [_image_as_text(child) if child.type == "image" else child for child in token.children]
            _without_images(token.children)


def _keep_href(element: str, attribute: str, value: str) -> str | None:
    """nh3's attribute filter: a link's `href` survives only with a `LINK_PREFIXES` scheme."""
    if element == "a" and attribute == "href":
        return value if value.lower().startswith(LINK_PREFIXES) else None
    return value


def sanitise_html(markup: str) -> str:
    """`markup` reduced to the tags markdown-it makes: no tag or attribute outside the allow-list survives."""
    return nh3.clean(
        markup,
        tags=set(ALLOWED_TAGS),
        clean_content_tags={"script", "style"},
        attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
        attribute_filter=_keep_href,
        url_schemes={"http", "https", "mailto"},
        url_relative="deny",
        strip_comments=True,
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}, **{tag: {"dir": "auto"} for tag in BLOCK_TAGS}},
    )


@functools.lru_cache(maxsize=128)
def markdown_to_html(text: str) -> str:
    """`text` parsed as markdown (raw HTML stays text, images become text), rendered and sanitised.

    Cached: the annotation pages redraw the same texts on every key press (a 20,000-character
    response costs about 5 ms to parse and sanitise)."""
    if not text:
        return ""
    tokens = _PARSER.parse(text)
    _without_images(tokens)
    return sanitise_html(_PARSER.renderer.render(tokens, _PARSER.options, {}))


# ---------------------------------------------------------------------------------- boxes


def estimated_lines(text: str) -> int:
    """About how many lines `text` takes in a response box (each source line wraps at `CHARS_PER_LINE`)."""
    return sum(max(1, -(-len(line) // CHARS_PER_LINE)) for line in (text or "").split("\n"))


_EXPAND = '<details class="rlhf-expand"><summary><span class="rlhf-more">Show all</span><span class="rlhf-less">Show less</span></summary></details>'


@dataclass(frozen=True)
class Turn:
    """One turn of a prompt: who speaks (shown in text) and what they say (markdown)."""

    role: str
    text: str


def response_box(heading: str, model_name: str | None, text: str) -> str:
    """A response as one HTML fragment: heading, model name, expand control when long, the text in its own scroll box."""
    label = html.escape(heading)
    model = f'<span class="rlhf-model">{html.escape(model_name)}</span>' if model_name else ""
    head = f'<div class="rlhf-head"><strong>{label}</strong>{model}{_EXPAND if estimated_lines(text) > RESPONSE_LINES else ""}</div>'
    body = markdown_to_html(text or "")
    scroll = f'<div class="rlhf-scroll rlhf-md" dir="auto" tabindex="0" role="region" aria-label="{label}">{body}</div>'
    return f'<style>{STYLE}</style><section class="rlhf-box rlhf-response">{head}{scroll}</section>'


def prompt_box(turns: Sequence[Turn]) -> str:
    """A prompt as one HTML fragment: each turn's role named in text above it, all in one capped scroll box."""
    parts = []
    for turn in turns:
        parts.append(f'<div class="rlhf-role" dir="auto">{html.escape(turn.role)}</div>')
        parts.append(f'<div class="rlhf-md" dir="auto">{markdown_to_html(turn.text or "")}</div>')
    # Each turn's role name takes a line too. The control floats in the box's corner, beside the
    # first role's name: no extra line of height.
    expand = _EXPAND if sum(1 + estimated_lines(turn.text) for turn in turns) > PROMPT_LINES else ""
    scroll = f'<div class="rlhf-scroll" tabindex="0" role="region" aria-label="Prompt">{"".join(parts)}</div>'
    return f'<style>{STYLE}</style><section class="rlhf-box rlhf-prompt">{expand}{scroll}</section>'


def markdown_box(text: str) -> str:
    """Free-standing outside markdown (guidelines): sanitised, `dir="auto"`, no height cap."""
    return f'<style>{STYLE}</style><div class="rlhf-md" dir="auto">{markdown_to_html(text)}</div>'


# ------------------------------------------------------------------------ inline markdown


_INLINE_SYNTAX = re.compile(r"([\\`\[<$]|:(?=//))")


def safe_inline(text: str) -> str:
    """`text` escaped for Streamlit's markdown: shown as written, no link, image, code span, tag or LaTeX.

    Every `[` (links, images, Streamlit's `:red[...]`), backtick, `<`, `$` and backslash is
    backslash-escaped (CommonMark escapes any ASCII punctuation), so no syntax can open anywhere
    in it: there are no code spans whose contents would need to be left alone. So is the colon
    of `://`: an autolinked `https://...` would swallow the escapes after it and show them.
    `]` is left as it is: without an opening `[` it is plain text, and callers that embed the
    result in a `:color[...]` directive escape it themselves.
    """
    return _INLINE_SYNTAX.sub(r"\\\1", text or "")
