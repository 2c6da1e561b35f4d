"""The research crew's corpus, made-up facts about made-up places, and a seeded question generator with a difficulty
knob.

    from dataset import CORPUS, LEVELS, Difficulty, make_tasks, record

    record("Velmora")  # "Velmora: capital Dranholt; founder Ilsa Marrow; founded 1712; export copper; ..."
    tasks = make_tasks(100, difficulty=3, seed=0)
    tasks[0].input  # {"question": "What is the capital of Umbridge?", "entity": "Umbridge",
                    #  "field": "capital", "answer": "Kestle"}

:data:`CORPUS` holds the facts: for each of 24 invented places, six fields (its capital, founder, year of
founding, main export, river and animal). The names are made up, so a model cannot know them and must look them up:
the research crew's ``lookup`` tool returns an entity's :func:`record`, one line with all six facts. A task is an
``agl.Task`` whose input is ``{"question", "entity", "field", "answer"}``: a question about one field of one
entity, and the value asked for (the other five are in the record too, and a good answer leaves them out).

The difficulty is in the question: which fields it may ask about (the first ``fields`` of :data:`FIELDS`) and how
it is worded: a share ``paraphrase`` of the questions ask without the record's key word ("Who established
Velmora?" for ``founder``, "In which year did Velmora come into being?" for ``founded``), which a small model must
map onto the record. The same arguments give the same tasks; more tasks extend the list rather than reshuffle it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import agentlightning as agl

__all__ = ["CORPUS", "DEFAULT_LEVEL", "FIELDS", "LEVELS", "QUESTIONS", "Difficulty", "make_tasks", "record"]

#: The fields of a record, in the order :func:`record` writes them.
FIELDS = ("capital", "founder", "founded", "export", "river", "animal")

#: The bundled corpus: invented places and invented facts about them (the values of :data:`FIELDS`, in order).
CORPUS: dict[str, tuple[str, str, str, str, str, str]] = {
    "Velmora": ("Dranholt", "Ilsa Marrow", "1712", "copper", "Isk", "lynx"),
    "Osterlund": ("Kelvane", "Tomas Brevik", "1588", "salt", "Pell", "heron"),
    "Quorin": ("Mardesh", "Anya Solberg", "1803", "wool", "Tavi", "otter"),
    "Brastow": ("Ellumin", "Gerrit Vane", "1654", "amber", "Orrin", "badger"),
    "Calderra": ("Sunmere", "Lio Hartwell", "1741", "tea", "Vessa", "falcon"),
    "Drennick": ("Voskar", "Maren Oakes", "1699", "glass", "Lune", "stag"),
    "Eskaly": ("Tarnholm", "Iven Crane", "1827", "silk", "Rask", "kite"),
    "Fenwarrow": ("Oldric", "Sela Dunmore", "1560", "tin", "Amber Run", "wolf"),
    "Galvetch": ("Prenn", "Odo Kessling", "1775", "timber", "Mirel", "boar"),
    "Harrowmere": ("Lisk", "Una Farrant", "1622", "wine", "Coldwater", "swan"),
    "Istrel": ("Breccan", "Paol Verin", "1736", "cotton", "Dune", "fox"),
    "Jorvath": ("Amsel", "Kira Holt", "1691", "iron", "Sallow", "eagle"),
    "Kelloway": ("Fennick", "Rolf Aster", "1859", "coffee", "Brisk", "hare"),
    "Lunmarsh": ("Gesso", "Ada Pellow", "1603", "marble", "Tolle", "owl"),
    "Morvane": ("Quill", "Bram Ostler", "1768", "silver", "Yarrow", "seal"),
    "Nethercot": ("Rushby", "Edda Voll", "1645", "honey", "Grey Ford", "bear"),
    "Orlanth": ("Zevin", "Cass Mirren", "1794", "linen", "Wend", "moose"),
    "Pelgrave": ("Hollin", "Dov Eastry", "1577", "pepper", "Stell", "raven"),
    "Quarrendon": ("Ivel", "Nia Thorne", "1812", "paper", "Corran", "beaver"),
    "Rosskey": ("Wexley", "Jon Albery", "1683", "cheese", "Ebb", "goat"),
    "Sorrowby": ("Caddon", "Yuli Marsh", "1729", "rice", "Linnet", "ibis"),
    "Tamberlay": ("Ostry", "Hal Pennick", "1661", "gold", "Sedge", "bison"),
    "Umbridge": ("Kestle", "Ona Fairley", "1846", "leather", "Cray", "mink"),
    "Vantry": ("Jessup", "Ilo Dray", "1617", "coal", "Marrow", "lark"),
}

#: How questions ask for each field: the first wording uses the record's key word, the others do not.
QUESTIONS: dict[str, tuple[str, ...]] = {
    "capital": ("What is the capital of {entity}?", "Which city is the seat of government of {entity}?"),
    "founder": ("Who is the founder of {entity}?", "Who established {entity}?"),
    "founded": ("In what year was {entity} founded?", "In which year did {entity} come into being?"),
    "export": ("What is the main export of {entity}?", "What does {entity} sell most to other lands?"),
    "river": ("Which river flows through {entity}?", "What is the name of the water that runs through {entity}?"),
    "animal": ("What is the national animal of {entity}?", "Which creature is the emblem of {entity}?"),
}


def record(entity: str) -> str:
    """``entity``'s line of the corpus, all six facts: ``"Velmora: capital Dranholt; founder Ilsa Marrow; ..."``.
    Raises ``KeyError`` for a name not in :data:`CORPUS` (exact spelling)."""
    values = CORPUS[entity]
    return f"{entity}: " + "; ".join(f"{field} {value}" for field, value in zip(FIELDS, values, strict=True)) + "."


@dataclass(frozen=True)
class Difficulty:
    """What makes a question hard.

    Attributes:
        fields: how many of :data:`FIELDS` questions ask about, from the first (``2``: capital and founder only).
        paraphrase: the share of questions worded without the record's key word ("Who established Velmora?").
    """

    fields: int = 2
    paraphrase: float = 0.0

    def __post_init__(self) -> None:
        if not 1 <= self.fields <= len(FIELDS):
            raise ValueError(f"fields must be between 1 and {len(FIELDS)}, not {self.fields}.")
        if not 0 <= self.paraphrase <= 1:
            raise ValueError(f"paraphrase is a share of the questions, between 0 and 1, not {self.paraphrase}.")

    def __str__(self) -> str:
        wording = {0.0: "key words", 1.0: "paraphrased"}.get(self.paraphrase, f"paraphrased {self.paraphrase:.0%}")
        return f"{self.fields} of {len(FIELDS)} fields, {wording}"


#: Named settings, roughly easiest to hardest for a small model (README.md has the measured rates).
LEVELS: dict[int, Difficulty] = {
    1: Difficulty(fields=2, paraphrase=0.0),
    2: Difficulty(fields=6, paraphrase=0.0),
    3: Difficulty(fields=6, paraphrase=0.5),
    4: Difficulty(fields=6, paraphrase=1.0),
}

#: The level the README's runs use (README.md has the measured rates).
DEFAULT_LEVEL = 3


def make_tasks(n: int, difficulty: int | Difficulty = DEFAULT_LEVEL, seed: int = 0) -> list[agl.Task]:
    """``n`` questions at ``difficulty`` (a level of :data:`LEVELS` or a :class:`Difficulty`), drawn from ``seed``."""
    if isinstance(difficulty, int):
        if difficulty not in LEVELS:
            raise ValueError(f"No difficulty level {difficulty}; the levels are {sorted(LEVELS)}.")
        level: int | str = difficulty
        difficulty = LEVELS[difficulty]
    else:
        level = "custom"
    rng = random.Random(f"research_crew/{difficulty!r}/{seed}")
    entities = sorted(CORPUS)
    tasks = []
    for index in range(n):
        entity = rng.choice(entities)
        field = rng.choice(FIELDS[: difficulty.fields])
        wordings = QUESTIONS[field]
        question = rng.choice(wordings[1:]) if rng.random() < difficulty.paraphrase else wordings[0]
        answer = CORPUS[entity][FIELDS.index(field)]
        tasks.append(
            agl.Task(
                id=f"research-{level}-{seed}-{index}",
                input={"question": question.format(entity=entity), "entity": entity, "field": field, "answer": answer},
            )
        )
    return tasks
