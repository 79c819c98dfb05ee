"""``clean_caption``: the caption cleaning of the released pipeline (``clean_caption=True``), stdlib only.

diffusers' ``AllegroPipeline._clean_caption`` (copied from DeepFloyd IF) needs bs4 and ftfy, and
silently skips cleaning when either is missing. This port needs neither and always cleans. It
keeps every regex step of the reference in order (URLs, @handles, CJK ranges, dashes and quotes,
IP addresses, ids, filenames, shop phrases, punctuation runs, whitespace, lowercasing) and runs
the pass twice, as the pipeline does. It differs in two places:

- HTML: BeautifulSoup's ``.text`` is replaced by dropping ``<...>`` tags with a regex and then
  unescaping entities; comments, ``<script>`` bodies and malformed markup may come out differently.
- ``ftfy.fix_text`` (mojibake repair) is not run; only Unicode NFC normalisation, its last step,
  is. Captions written by a captioning model or a person hold no mojibake, so the result is the
  same for them (tests/models/test_text.py compares against the reference with bs4/ftfy stubbed).

Note: with ``clean_caption=False`` the pipeline still lower-cases and strips every prompt.
"""

from __future__ import annotations

import html
import re
import unicodedata
import urllib.parse as ul

_URL_PATTERNS = [
    re.compile(r"\b((?:https?:(?:\/{1,3}|[a-zA-Z0-9%])|[a-zA-Z0-9.\-]+[.](?:com|co|ru|net|org|edu|gov|it)[\w/-]*\b\/?(?!@)))"),
    re.compile(r"\b((?:www:(?:\/{1,3}|[a-zA-Z0-9%])|[a-zA-Z0-9.\-]+[.](?:com|co|ru|net|org|edu|gov|it)[\w/-]*\b\/?(?!@)))"),
]
_TAG = re.compile(r"<[^<>]*>")
# CJK strokes, katakana extensions, enclosed CJK, CJK compatibility, ideographs (ext. A), hexagrams.
_CJK = re.compile(r"[\u31c0-\u31ef\u31f0-\u31ff\u3200-\u32ff\u3300-\u33ff\u3400-\u4dbf\u4dc0-\u4dff\u4e00-\u9fff]+")
_DASHES = re.compile(r"[\u002D\u058A\u05BE\u1400\u1806\u2010-\u2015\u2E17\u2E1A\u2E3A\u2E3B\u2E40\u301C\u3030"
                     r"\u30A0\uFE31\uFE32\uFE58\uFE63\uFF0D]+")
_BAD_PUNCT = re.compile(r"[" + "#®•©™&@·º½¾¿¡§~" + r"\)\(\]\[\}\{\|" + "\\" + r"\/\*]{1,}")
_SEPARATORS = re.compile(r"(?:\-|\_)")

# (pattern, replacement) applied in order after the HTML step; the reference's order matters
# (e.g. filenames go before punctuation runs), so it is kept exactly.
_AFTER_HTML = [
    (r"@[\w\d]+\b", ""),  # @nickname
    (_CJK, ""),
    (_DASHES, "-"),
    (r"[`´«»“”¨]", '"'),
    (r"[‘’]", "'"),
    (r"&quot;?", ""),
    (r"&amp", ""),
    (r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}", " "),  # IP addresses
    (r"\d:\d\d\s+$", ""),  # article ids
    (r"\\n", " "),  # a literal backslash-n
    (r"#\d{1,3}\b", ""),
    (r"#\d{5,}\b", ""),
    (r"\b\d{6,}\b", ""),
    (r"[\S]+\.(?:png|jpg|jpeg|bmp|webp|eps|pdf|apk|mp4)", ""),  # filenames
    (r"[\"\']{2,}", r'"'),
    (r"[\.]{2,}", r" "),
    (_BAD_PUNCT, r" "),  # ***SALE***, #tag
    (r"\s+\.\s+", r" "),
]
_AFTER_UNESCAPE = [
    (r"\b[a-zA-Z]{1,3}\d{3,15}\b", ""),  # jc6640
    (r"\b[a-zA-Z]+\d+[a-zA-Z]+\b", ""),  # jc6640vc
    (r"\b\d+[a-zA-Z]+\d+\b", ""),  # 6640vc231
    (r"(worldwide\s+)?(free\s+)?shipping", ""),
    (r"(free\s)?download(\sfree)?", ""),
    (r"\bclick\b\s(?:for|on)\s\w+", ""),
    (r"\b(?:png|jpg|jpeg|bmp|webp|eps|pdf|apk|mp4)(\simage[s]?)?", ""),
    (r"\bpage\s+\d+\b", ""),
    (r"\b\d*[a-zA-Z]+\d+[a-zA-Z]+\d+[a-zA-Z\d]*\b", r" "),  # j2d1a2a...
    (r"\b\d+\.?\d*[xх×]\d+\.?\d*\b", ""),  # sizes like 1920x1080
    (r"\b\s+\:\s+", r": "),
    (r"(\D[,\./])\b", r"\1 "),
    (r"\s+", " "),
]
_EDGES = [
    (r"^[\"\']([\w\W]+)[\"\']$", r"\1"),  # surrounding quotes
    (r"^[\'\_,\-\:;]", r""),
    (r"[\'\_,\-\:\-\+]$", r""),
    (r"^\.\S+$", ""),
]


def _apply(text: str, rules) -> str:
    for pattern, replacement in rules:
        text = re.sub(pattern, replacement, text)
    return text


def _clean_once(caption: str) -> str:
    caption = ul.unquote_plus(str(caption)).strip().lower()
    caption = caption.replace("<person>", "person")
    for pattern in _URL_PATTERNS:
        caption = pattern.sub("", caption)
    caption = html.unescape(_TAG.sub("", caption))  # BeautifulSoup(caption).text in the reference
    caption = _apply(caption, _AFTER_HTML)
    if len(_SEPARATORS.findall(caption)) > 3:  # this-is-my-cute-cat / this_is_my_cute_cat
        caption = _SEPARATORS.sub(" ", caption)
    caption = unicodedata.normalize("NFC", caption)  # ftfy.fix_text in the reference (see above)
    caption = html.unescape(html.unescape(caption))
    caption = _apply(caption, _AFTER_UNESCAPE)
    return _apply(caption, _EDGES).strip()


def clean_caption(caption: str) -> str:
    """A caption as the released pipeline feeds it to T5 with ``clean_caption=True`` (two passes)."""
    if not isinstance(caption, str):
        raise TypeError(f"clean_caption takes a str, got {type(caption).__name__}: {caption!r}")
    return _clean_once(_clean_once(caption))
