"""The Rank page's order being built, in display positions (0 = card A on screen): typing, moving, ties.

Pure state (no Streamlit), so every key's effect is unit-tested:
- typing letters places cards in the order typed: "C A D B" gives C > A > D > B, and
  "C A = D B" gives C > A = D > B (as `rlhf.ranking.parse_ranking` reads the same text); a
  letter typed after an arrow key (or after all K were typed) starts a new run, which clears
  the ties; cards not typed yet keep their relative order after the typed ones;
- ArrowLeft / ArrowRight move the focus along the order, ArrowUp / ArrowDown move the focused
  card one place up (better) or down;
- "=" while typing ties the next letter with the one before it; otherwise it ties the focused
  card with the one above it (pressed again, unties it);
- "0" toggles "all of these are bad";
- a card dragged to another place of the order strip (`drop`) lands where ↑ / ↓ would put it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf.ranking import Groups, format_ranking


@dataclass
class RankOrder:
    """Cards (display positions) best first, which of them are tied with the card above, the focus."""

    seq: list[int]
    tied: set[int] = field(default_factory=set)
    """Cards tied with the card just above them in `seq`."""
    focus: int = 0
    """Index into `seq` of the focused card."""
    typed: int = 0
    """Cards placed by the current typing run (0: the next letter starts a new run)."""
    pending_tie: bool = False
    """"=" pressed while typing: the next letter joins the group of the card typed before it."""
    all_bad: bool = False
    touched: bool = False
    """True once a key changed the order (the initial order is only the display order)."""

    @classmethod
    def initial(cls, k: int) -> "RankOrder":
        return cls(seq=list(range(k)))

    @classmethod
    def from_groups(cls, groups: Groups, all_bad: bool = False) -> "RankOrder":
        seq = [card for group in groups for card in group]
        tied = {card for group in groups for card in group[1:]}
        return cls(seq=seq, tied=tied, all_bad=all_bad, touched=True)

    # ------------------------------------------------------------------ keys

    def type_card(self, card: int) -> None:
        """A card letter: put `card` next in the typing run."""
        if not 0 <= card < len(self.seq):
            return
        if self.typed == 0 or self.typed >= len(self.seq):
            self.typed = 0
            self.tied.clear()
        current = self.seq.index(card)
        if current < self.typed:  # typed twice in one run: it stays where it was put
            self.focus = current
            return
        self.seq.insert(self.typed, self.seq.pop(current))
        self.tied.discard(card)
        if self.pending_tie:
            self.tied.add(card)
            self.pending_tie = False
        self.focus = self.typed
        self.typed += 1
        self.touched = True

    def end_run(self) -> None:
        """Any key but a letter or "=" ends the typing run."""
        self.typed = 0
        self.pending_tie = False

    def move_focus(self, step: int) -> None:
        self.end_run()
        self.focus = max(0, min(len(self.seq) - 1, self.focus + step))

    def move(self, step: int) -> None:
        """Move the focused card `step` places (-1: up, better); it leaves any tie."""
        self.end_run()
        target = self.focus + step
        if not 0 <= target < len(self.seq):
            return
        card = self.seq[self.focus]
        self.tied.discard(card)
        self.tied.discard(self.seq[target])
        self.seq[self.focus], self.seq[target] = self.seq[target], card
        self.focus = target
        self.touched = True

    def drop(self, card: int, place: int) -> None:
        """The mouse dragged `card` to index `place` of the order: the same as focusing it and
        pressing ↑ / ↓ until it is there, so a drag and the keys can never disagree (ties it
        passes are left as those presses leave them)."""
        if card not in self.seq or not 0 <= place < len(self.seq):
            return
        self.end_run()
        self.focus = self.seq.index(card)
        step = -1 if place < self.focus else 1
        while self.focus != place:
            self.move(step)

    def toggle_tie(self) -> None:
        """While typing: the next letter ties with the last one typed. Else: tie the focused card with
        the card above it (untie when already tied)."""
        if 0 < self.typed < len(self.seq):
            self.pending_tie = True
            return
        self.end_run()
        if self.focus == 0:
            return
        card = self.seq[self.focus]
        self.tied.symmetric_difference_update({card})
        self.touched = True

    def toggle_all_bad(self) -> None:
        self.all_bad = not self.all_bad

    # ------------------------------------------------------------------ reading

    def groups(self) -> Groups:
        out: list[list[int]] = []
        for index, card in enumerate(self.seq):
            if index > 0 and card in self.tied:
                out[-1].append(card)
            else:
                out.append([card])
        return tuple(tuple(sorted(g)) for g in out)

    def sentence(self) -> str:
        """The order as read aloud, in display letters: "C > A = D > B"."""
        # keep the typed order inside a tie (format_ranking sorts groups by card otherwise)
        parts, index = [], 0
        for group in self.groups():
            members = self.seq[index : index + len(group)]
            parts.append(" = ".join(format_ranking(((m,),)) for m in members))
            index += len(group)
        return " > ".join(parts)

    def place_of(self, card: int) -> int:
        """1-based place of `card` (tied cards share the place of the first of their group)."""
        place = 0
        for index, c in enumerate(self.seq):
            if index == 0 or c not in self.tied:
                place = index + 1
            if c == card:
                return place
        raise ValueError(card)
