"""Checks every page must pass: each control a person fills or presses has a name a screen
reader can say (a <label for>, an enclosing <label>, aria-label, aria-labelledby or title;
buttons their text)."""

from __future__ import annotations

from html.parser import HTMLParser

_SILENT_INPUTS = {"hidden", "submit", "button", "image", "reset"}


class _Controls(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.label_for: set[str] = set()
        self.in_label = 0
        self.controls: list[tuple[str, dict[str, str], bool]] = []  # tag, attrs, inside a label
        self.button: dict[str, str] | None = None
        self.button_text = ""
        self.unnamed_buttons: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "label":
            self.in_label += 1
            if a.get("for"):
                self.label_for.add(a["for"])
        elif tag in ("select", "textarea") or (
                tag == "input" and a.get("type", "text") not in _SILENT_INPUTS):
            self.controls.append((tag, a, self.in_label > 0))
        elif tag == "input" and a.get("type") in ("submit", "button", "reset") and not (
                a.get("value") or a.get("aria-label")):
            self.unnamed_buttons.append(str(a))
        elif tag == "button":
            self.button, self.button_text = a, ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "label" and self.in_label:
            self.in_label -= 1
        elif tag == "button" and self.button is not None:
            if not (self.button_text.strip() or self.button.get("aria-label") or self.button.get("title")):
                self.unnamed_buttons.append(str(self.button))
            self.button = None

    def handle_data(self, data: str) -> None:
        if self.button is not None:
            self.button_text += data


def unlabelled(html: str) -> list[str]:
    """The controls of `html` without a name (empty: the page passes)."""
    p = _Controls()
    p.feed(html)
    missing = [f"<{tag} {attrs}>" for tag, attrs, inside in p.controls
               if not (inside or attrs.get("id") in p.label_for or attrs.get("aria-label")
                       or attrs.get("aria-labelledby") or attrs.get("title"))]
    return missing + [f"<button {b}>" for b in p.unnamed_buttons]
