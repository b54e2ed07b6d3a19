"""Splitting text into words: shared by the stages, so a change here reruns them."""

import re


def words(text: str, min_length: int) -> list[str]:
    return [w for w in re.findall(r"[a-z']+", text.lower()) if len(w) >= min_length]
