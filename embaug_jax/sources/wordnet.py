"""Debian's wordnet-base: one item per synset, labelled by its lexicographer file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from embaug_jax.sources.items import SourceData, split_names
from embaug_jax.sources.sampling import finish
from embaug_jax.util import UserError, check_input

# WordNet's lexicographer files, indexed by the 2-digit lex_filenum of data.* lines (the standard
# table of lexnames(5WN); Debian's wordnet-base ships no lexnames file).
WORDNET_LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
)
_WORDNET_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}


_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")


def parse_wordnet_line(line: str, pos: str) -> tuple[str, str, list[str], str]:
    """One data.* line -> (synset id "n.00001740", lexname, lemma words, gloss)."""
    head, _, gloss = line.partition("| ")
    fields = head.split()
    offset, lex_filenum, w_cnt = fields[0], int(fields[1]), int(fields[3], 16)
    words = [_ADJ_MARKER.sub("", fields[4 + 2 * i]).replace("_", " ") for i in range(w_cnt)]
    return f"{pos}.{offset}", WORDNET_LEXNAMES[lex_filenum], words, gloss.strip()


def load_wordnet(src: Any) -> SourceData:
    """One item per WordNet synset: text fields "lemmas" and "gloss", label = lexicographer file.

    Knobs: `root` (default /usr/share/wordnet), `pos` ("n", "v", "a", "r" or several,
    comma-separated; default "n"), plus the shared sampling knobs. "lemmas" are the synset's
    words (underscores -> spaces) joined with ", "; "gloss" is the definition with its examples.
    """
    root = Path(str(src.root))
    pos_list = split_names(src.pos)
    bad = [p for p in pos_list if p not in _WORDNET_FILES]
    if bad:
        raise UserError(f"config.source.pos={bad} is not a WordNet part of speech; use any of "
                        f"{list(_WORDNET_FILES)} (n=noun, v=verb, a=adjective, r=adverb).")
    ids, lemmas, glosses, labels = [], [], [], []
    for pos in pos_list:
        path = root / f"data.{_WORDNET_FILES[pos]}"
        check_input(path, "a WordNet data file",
                    missing=f"WordNet is not installed: {path} is missing. Install it with "
                            "`sudo apt-get install wordnet-base` (or point config.source.root at "
                            "a folder holding data.noun / data.verb / data.adj / data.adv).")
        with open(path, encoding="utf-8", errors="strict") as f:
            for lineno, line in enumerate(f, 1):
                if line.startswith("  "):  # the licence header
                    continue
                try:
                    synset, lexname, words, gloss = parse_wordnet_line(line, pos)
                except (IndexError, ValueError) as e:
                    raise UserError(f"{path}: line {lineno} is not a WordNet data line ({e}).")
                ids.append(synset)
                lemmas.append(", ".join(words))
                glosses.append(gloss)
                labels.append(lexname)
    present = set(labels)
    data = SourceData(ids=ids, labels=labels,
                      class_names=[c for c in WORDNET_LEXNAMES if c in present],
                      texts={"lemmas": lemmas, "gloss": glosses}, images={},
                      info={"kind": "wordnet", "root": str(root), "pos": pos_list})
    return finish(data, src)


