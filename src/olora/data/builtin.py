"""The built-in demo sequence: three small text-classification tasks written for olora.

The sentences are generated from hand-written phrase lists (no dataset is copied), with a fixed
seed, so every machine gets the same examples. Each class has ``TRAIN_PER_CLASS`` training and
``TEST_PER_CLASS`` test sentences; train and test never share a sentence.

* ``sentiment``: product reviews -> positive / negative (a pretrained model mostly knows this);
* ``newsdesk``: news snippets -> the colour code a newsroom files them under
  (Sports=red, Science=green, Food=blue, Travel=yellow);
* ``helpline``: messages -> the colour code a helpline files them under
  (joy=blue, anger=red, fear=yellow, sadness=green).

The colour codes are arbitrary, so they must be learned, and the two coded tasks give the *same*
words different meanings: one adapter trained on both in turn (SeqLoRA) overwrites the first code,
which is the forgetting that O-LoRA is meant to prevent.
"""

from __future__ import annotations

import itertools
import random

from olora.data.tasks import Example, Task

TRAIN_PER_CLASS = 60
TEST_PER_CLASS = 20

_SUBJECTS = [
    "The blender",
    "This jacket",
    "The hotel room",
    "My new phone",
    "The delivery",
    "This novel",
    "The headphones",
    "The coffee maker",
    "The tent",
    "This backpack",
    "The service",
    "The laptop",
]
_SENTIMENT = {
    "positive": [
        "works perfectly",
        "exceeded my expectations",
        "is worth every penny",
        "made my week",
        "feels sturdy and well made",
        "was a delight to use",
        "arrived early and looks great",
        "is the best I have owned",
    ],
    "negative": [
        "broke after two days",
        "was a waste of money",
        "stopped working at once",
        "feels cheap and flimsy",
        "arrived late and damaged",
        "was a huge disappointment",
        "is the worst I have owned",
        "never did what it promised",
    ],
}
_SENTIMENT_ENDINGS = [
    "",
    " I would tell my friends.",
    " Honestly.",
    " That is my verdict.",
    " Overall, that sums it up.",
]

_TOPIC = {
    "Sports": [
        "the striker scored twice",
        "the marathon runners crossed the line",
        "the coach praised the defence",
        "the tennis final went to five sets",
        "the team won the championship",
        "the goalkeeper saved a penalty",
    ],
    "Science": [
        "the telescope found a new planet",
        "researchers sequenced the genome",
        "the chemists measured the reaction rate",
        "a new vaccine passed its trial",
        "physicists observed the particle decay",
        "the probe landed on the comet",
    ],
    "Food": [
        "the chef baked fresh bread",
        "the soup was seasoned with thyme",
        "the bakery sold out of croissants",
        "the recipe calls for roasted garlic",
        "the restaurant added a vegan menu",
        "the farmers market had ripe peaches",
    ],
    "Travel": [
        "the flight to Lisbon was delayed",
        "hikers reached the mountain hut",
        "the ferry crossed to the island",
        "tourists crowded the old harbour",
        "the train wound through the valley",
        "the hostel offered city tours",
    ],
}
_TOPIC_FRAMES = [
    "Yesterday {}.",
    "Reports say {}.",
    "This morning {}.",
    "Last week {}.",
    "According to the news, {}.",
    "Everyone is talking because {}.",
    "Late on Sunday {}.",
]

_EMOTION = {
    "joy": [
        "I laughed all the way home",
        "my heart is full of happiness",
        "I am thrilled today",
        "I could dance with delight",
        "everything feels wonderful",
        "I beamed with pride",
    ],
    "anger": [
        "I am furious about it",
        "this makes my blood boil",
        "I slammed the door in rage",
        "I am so annoyed I could scream",
        "they infuriated me again",
        "I am livid",
    ],
    "fear": [
        "I am terrified of the dark hallway",
        "my hands shake with dread",
        "I am scared something bad will happen",
        "a chill of panic ran through me",
        "I froze in terror",
        "I am afraid to open the letter",
    ],
    "sadness": [
        "I cried myself to sleep",
        "my heart feels heavy and empty",
        "I miss her so much",
        "I feel lonely and down",
        "tears kept falling all day",
        "I am grieving the loss",
    ],
}
_EMOTION_FRAMES = [
    "{}.",
    "Honestly, {}.",
    "After the call, {}.",
    "Since Monday {}.",
    "When I saw the message, {}.",
    "Right now {}.",
    "Whenever I think of it, {}.",
]


def _sentences(fragments: list[str], frames: list[str], extra: list[str] | None = None) -> list[str]:
    combos = itertools.product(frames, fragments, extra or [""])
    return [frame.format(frag) + end for frame, frag, end in combos]


# Each task's instruction (sentiment uses the official SC wording, so its prompt is a CL_Benchmark prompt).
INSTRUCTIONS = {
    "sentiment": "What is the sentiment of the following paragraph? Choose one from the option.\n",
    "newsdesk": "Which colour code does the newsroom file the following story under? Choose one from the option.\n",
    "helpline": "Which colour code does the helpline file the following message under? Choose one from the option.\n",
}


def _make(name: str, task_type: str, by_label: dict[str, list[str]]) -> Task:
    rng = random.Random(f"olora-demo:{name}")
    train, test = [], []
    for label, sentences in by_label.items():
        pool = sorted(set(sentences))
        rng.shuffle(pool)
        need = TRAIN_PER_CLASS + TEST_PER_CLASS
        assert len(pool) >= need, f"demo task {name}: only {len(pool)} sentences for {label}"
        test += [Example(s, label) for s in pool[:TEST_PER_CLASS]]
        train += [Example(s, label) for s in pool[TEST_PER_CLASS:need]]
    rng.shuffle(train)
    rng.shuffle(test)
    labels = list(by_label)
    return Task(name, task_type, labels, train=train, test=test, instruction=INSTRUCTIONS[name])


def _sentiment() -> Task:
    by_label = {
        label: [f"Text: {s} {p}.{e}" for s, p, e in itertools.product(_SUBJECTS, phrases, _SENTIMENT_ENDINGS)]
        for label, phrases in _SENTIMENT.items()
    }
    return _make("sentiment", "SC", by_label)


_NEWSDESK_CODES = {"Sports": "red", "Science": "green", "Food": "blue", "Travel": "yellow"}
_HELPLINE_CODES = {"joy": "blue", "anger": "red", "fear": "yellow", "sadness": "green"}
CODES = ["red", "green", "blue", "yellow"]


def _newsdesk() -> Task:
    by_code = {
        _NEWSDESK_CODES[topic]: ["Text: " + s for s in _sentences(frags, _TOPIC_FRAMES, ["", " More soon."])]
        for topic, frags in _TOPIC.items()
    }
    return _make("newsdesk", "NEWSDESK", {code: by_code[code] for code in CODES})


def _helpline() -> Task:
    by_code = {
        _HELPLINE_CODES[emo]: ["Text: " + s for s in _sentences(frags, _EMOTION_FRAMES, ["", " Really."])]
        for emo, frags in _EMOTION.items()
    }
    return _make("helpline", "HELPLINE", {code: by_code[code] for code in CODES})


_BUILDERS = {"sentiment": _sentiment, "newsdesk": _newsdesk, "helpline": _helpline}
BUILTIN_TASKS = list(_BUILDERS)


def builtin_task(name: str) -> Task:
    return _BUILDERS[name]()
