"""A synthetic instruction language whose answer lengths behave like chat answers.

The language is made up: a word-level vocabulary (~260 words) and four kinds of task.

- yes/no: `is ITEM a CAT ?` -> `yes` or `no , it is a TRUECAT .` (length: the prompt's)
- count down: `count down from A` (A in 3..50) -> `A A-1 ... 0` (length: the prompt's)
- list: `list some CATS [briefly | in detail]`
  -> `here are N CATS : N item , N-1 item , ... , 1 item .` (length: N, sampled)
- story: `tell a [short | long] story about NAME`
  -> `NAME had N days . day N : NAME VERB the ADJ ITEM . ... day 1 : ... . the end .`
  (length: N, sampled)

In lists and stories the answer's length is set by N, which the writer of the answer (the
language's own generator for training data, the trained model when serving) *samples* and
writes early in the answer (answer token 3). The prompt fixes only the range of N. So part
of the output length is predictable from the prompt and part becomes visible only during
generation: the situation TRAIL's per-step probe exists for.

N is skewed to small values, N = lo + floor((hi - lo + 1)(1 - sqrt(U1 U2))), which gives a
long right tail of answer lengths. Everything counts *down* (list numbering, story days) so
that stopping is a local decision ("after item 1"); count-up designs were not learnable by a
tiny model in a few minutes (see docs/demo_model.md).

All randomness comes from an explicit `random.Random`, so a seed fixes every sample.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

# --------------------------------------------------------------------------- vocabulary

SPECIAL_TOKENS = ("<pad>", "<bos>", "<sep>", "<eos>", "<unk>")
NUMBERS = tuple(str(i) for i in range(100))

# plural (used in list prompts and answers) -> (singular, 12 items)
CATEGORIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "fruits": ("fruit", ("apple", "banana", "cherry", "grape", "lemon", "mango", "orange",
                         "peach", "pear", "plum", "melon", "kiwi")),
    "animals": ("animal", ("cat", "dog", "horse", "cow", "sheep", "goat", "lion", "tiger",
                           "bear", "wolf", "fox", "rabbit")),
    "colors": ("color", ("red", "blue", "green", "yellow", "purple", "pink", "brown", "black",
                         "white", "gray", "gold", "silver")),
    "tools": ("tool", ("hammer", "wrench", "drill", "axe", "shovel", "rake", "chisel", "pliers",
                       "ladder", "spade", "trowel", "clamp")),
    "cities": ("city", ("paris", "london", "tokyo", "rome", "berlin", "madrid", "cairo", "lima",
                        "oslo", "dublin", "vienna", "prague")),
    "drinks": ("drink", ("water", "tea", "coffee", "milk", "juice", "soda", "cocoa", "wine",
                         "beer", "cider", "lemonade", "smoothie")),
}
ADJECTIVES = ("big", "small", "old", "new", "tiny", "huge", "happy", "sad", "quiet", "loud",
              "bright", "dark", "soft", "hard", "warm", "cold", "fresh", "strange", "fancy",
              "clean", "dirty", "heavy", "fast", "slow")
NAMES = ("anna", "ben", "carl", "dora", "emma", "finn", "gina", "hugo", "iris", "jack")
VERBS = ("saw", "found", "bought", "made", "lost", "painted", "sold", "cooked")
FUNCTION_WORDS = ("is", "a", "it", "no", "yes", "here", "are", "some", "list", "count", "down",
                  "from", "tell", "story", "about", "short", "long", "briefly", "in", "detail",
                  "had", "days", "day", "the", "end", ",", ".", ":", "?")


def vocabulary() -> list[str]:
    """Every word of the language, specials first (index = token id)."""
    words = list(SPECIAL_TOKENS) + list(NUMBERS)
    for plural, (singular, items) in CATEGORIES.items():
        words += [plural, singular, *items]
    words += [*ADJECTIVES, *NAMES, *VERBS, *FUNCTION_WORDS]
    if len(set(words)) != len(words):  # a word in two roles would make parsing ambiguous
        dup = sorted({w for w in words if words.count(w) > 1})
        raise AssertionError(f"duplicate words in the vocabulary: {dup}")
    return words


ITEM_CATEGORY = {item: plural for plural, (_, items) in CATEGORIES.items() for item in items}
SINGULAR = {plural: singular for plural, (singular, _) in CATEGORIES.items()}
PLURAL = {singular: plural for plural, singular in SINGULAR.items()}
ALL_ITEMS = tuple(ITEM_CATEGORY)

# --------------------------------------------------------------------------- length ranges

# Range of N for `list some CATS` (plain); the qualifier reshapes it (list_range).
LIST_RANGE = {"fruits": (2, 10), "animals": (2, 12), "colors": (1, 8), "tools": (3, 14),
              "cities": (3, 16), "drinks": (2, 9)}
LIST_QUALIFIERS = ("briefly", "plain", "in detail")
# Days of a story. The prototype used 8-32 for long stories; 8-40 gives answers of up to
# 369 tokens, so the served lengths reach past 300 with a long right tail.
STORY_RANGE = {"short": (2, 6), "plain": (3, 12), "long": (8, 40)}
STORY_QUALIFIERS = tuple(STORY_RANGE)
COUNT_RANGE = (3, 50)

# Task mix when serving (evaluation) and when making training data. Yes/no questions are
# oversampled in training: they carry the category facts (72 items x 6 categories).
EVAL_MIX = {"yesno": 0.15, "count": 0.20, "list": 0.35, "story": 0.30}
TRAIN_MIX = {"yesno": 0.30, "count": 0.20, "list": 0.25, "story": 0.25}
KINDS = tuple(EVAL_MIX)


def list_range(category: str, qualifier: str) -> tuple[int, int]:
    """Range [lo, hi] of the number of items N in a list answer."""
    lo, hi = LIST_RANGE[category]
    if qualifier == "briefly":
        return 1, lo + 2
    if qualifier == "in detail":
        return hi // 2, 2 * hi
    return lo, hi


def sample_count(rng: random.Random, lo: int, hi: int) -> int:
    """N in [lo, hi], skewed to small values: lo + floor((hi-lo+1)(1 - sqrt(U1 U2)))."""
    n = lo + int((hi - lo + 1) * (1.0 - math.sqrt(rng.random() * rng.random())))
    return min(n, hi)  # U1 U2 == 0 (probability 2^-53) would give hi + 1


def count_pmf(lo: int, hi: int) -> dict[int, float]:
    """Exact distribution of sample_count(lo, hi)."""
    m = hi - lo + 1

    def tail(x: float) -> float:  # P(1 - sqrt(U1 U2) >= x) = (1-x)^2 (1 - 2 ln(1-x))
        return 0.0 if x >= 1.0 else (1.0 - x) ** 2 * (1.0 - 2.0 * math.log(1.0 - x))

    return {lo + k: tail(k / m) - tail((k + 1) / m) for k in range(m)}


# --------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class Prompt:
    """A prompt: its text and the parameters that shaped it."""

    text: str
    kind: str                      # "yesno" | "count" | "list" | "story"
    category: str | None = None    # plural; yesno: the category asked about
    item: str | None = None        # yesno
    qualifier: str | None = None   # list: briefly/plain/in detail; story: short/plain/long
    start: int | None = None       # count: counts down from here
    name: str | None = None        # story

    @property
    def truth(self) -> bool | None:
        """For yes/no prompts: whether the answer is yes."""
        return None if self.kind != "yesno" else ITEM_CATEGORY[self.item] == self.category

    def features(self) -> tuple:
        """Everything in the prompt that the answer's length distribution depends on."""
        if self.kind == "yesno":
            return ("yesno", self.truth)
        if self.kind == "count":
            return ("count", self.start)
        if self.kind == "list":
            return ("list", self.category, self.qualifier)
        return ("story", self.qualifier)

    def count_range(self) -> tuple[int, int] | None:
        """Range of the sampled N (lists and stories), None for the other kinds."""
        if self.kind == "list":
            return list_range(self.category, self.qualifier)
        if self.kind == "story":
            return STORY_RANGE[self.qualifier]
        return None


def make_rng(seed: int) -> random.Random:
    """The random stream every sampler here takes (seeded, independent of global state)."""
    return random.Random(seed)


def _choose_kind(rng: random.Random, mix: dict[str, float]) -> str:
    u, acc = rng.random(), 0.0
    for kind, w in mix.items():
        acc += w
        if u < acc:
            return kind
    return kind


def sample_prompt(rng: random.Random, mix: dict[str, float] | None = None) -> Prompt:
    """Draw one prompt from the task mix (the evaluation mix by default)."""
    kind = _choose_kind(rng, EVAL_MIX if mix is None else mix)
    if kind == "yesno":
        item = rng.choice(ALL_ITEMS)
        if rng.random() < 0.5:
            category = ITEM_CATEGORY[item]
        else:
            category = rng.choice([c for c in CATEGORIES if c != ITEM_CATEGORY[item]])
        return Prompt(f"is {item} a {SINGULAR[category]} ?", kind, category=category, item=item)
    if kind == "count":
        start = rng.randint(*COUNT_RANGE)
        return Prompt(f"count down from {start}", kind, start=start)
    if kind == "list":
        category = rng.choice(tuple(CATEGORIES))
        qualifier = rng.choice(LIST_QUALIFIERS)
        suffix = "" if qualifier == "plain" else " " + qualifier
        return Prompt(f"list some {category}{suffix}", kind, category=category,
                      qualifier=qualifier)
    name = rng.choice(NAMES)
    qualifier = rng.choice(STORY_QUALIFIERS)
    adj = "" if qualifier == "plain" else qualifier + " "
    return Prompt(f"tell a {adj}story about {name}", kind, qualifier=qualifier, name=name)


def parse_prompt(text: str) -> Prompt:
    """The Prompt a text came from; ValueError if it is not a prompt of the language."""
    w = text.split()
    try:
        if len(w) == 5 and w[0] == "is" and w[2] == "a" and w[4] == "?" \
                and w[1] in ITEM_CATEGORY and w[3] in PLURAL:
            return Prompt(text, "yesno", category=PLURAL[w[3]], item=w[1])
        if len(w) == 4 and w[:3] == ["count", "down", "from"] \
                and COUNT_RANGE[0] <= int(w[3]) <= COUNT_RANGE[1] and w[3] in NUMBERS:
            return Prompt(text, "count", start=int(w[3]))
        if len(w) >= 3 and w[:2] == ["list", "some"] and w[2] in CATEGORIES:
            qualifier = " ".join(w[3:])
            if qualifier in ("", "briefly", "in detail"):
                return Prompt(text, "list", category=w[2], qualifier=qualifier or "plain")
        if len(w) in (5, 6) and w[:2] == ["tell", "a"] and w[-3:-1] == ["story", "about"] \
                and w[-1] in NAMES:
            qualifier = w[2] if len(w) == 6 else "plain"
            if qualifier in ("short", "long", "plain") and (len(w) == 5) == (qualifier == "plain"):
                return Prompt(text, "story", qualifier=qualifier, name=w[-1])
    except ValueError:
        pass
    raise ValueError(f"not a prompt of the demo language: {text!r}")


# --------------------------------------------------------------------------- answers


def sample_answer(prompt: Prompt, rng: random.Random) -> str:
    """The language's own answer to a prompt (what the demo model is trained to write)."""
    if prompt.kind == "yesno":
        if prompt.truth:
            return "yes"
        return f"no , it is a {SINGULAR[ITEM_CATEGORY[prompt.item]]} ."
    if prompt.kind == "count":
        return " ".join(str(k) for k in range(prompt.start, -1, -1))
    n = sample_count(rng, *prompt.count_range())
    if prompt.kind == "list":
        items = CATEGORIES[prompt.category][1]
        parts = [f"here are {n} {prompt.category} :"]
        parts += [f"{k} {rng.choice(items)} " + ("," if k > 1 else ".") for k in range(n, 0, -1)]
        return " ".join(parts)
    name = prompt.name
    parts = [f"{name} had {n} days ."]
    parts += [f"day {k} : {name} {rng.choice(VERBS)} the {rng.choice(ADJECTIVES)} "
              f"{rng.choice(ALL_ITEMS)} ." for k in range(n, 0, -1)]
    parts.append("the end .")
    return " ".join(parts)


def answer_length(prompt: Prompt, n: int | None = None) -> int:
    """Answer length in tokens, EOS included, for a given N (lists and stories)."""
    if prompt.kind == "yesno":
        return 2 if prompt.truth else 8
    if prompt.kind == "count":
        return prompt.start + 2
    if prompt.kind == "list":
        return 6 + 3 * n          # "here are N CATS :" + N x "k item ," + EOS
    return 9 + 9 * n              # "NAME had N days ." + N x 9 + "the end ." + EOS


def length_distribution(prompt: Prompt) -> dict[int, float]:
    """Exact distribution of the answer length (tokens incl. EOS) given only the prompt."""
    rng = prompt.count_range()
    if rng is None:
        return {answer_length(prompt): 1.0}
    return {answer_length(prompt, n): p for n, p in count_pmf(*rng).items()}


def conditional_length_mean(prompt: Prompt) -> float:
    """E[length | prompt] under the language (the oracle prompt-only mean)."""
    return sum(length * p for length, p in length_distribution(prompt).items())


def conditional_length_var(prompt: Prompt) -> float:
    """Var[length | prompt] under the language."""
    mu = conditional_length_mean(prompt)
    return sum((length - mu) ** 2 * p for length, p in length_distribution(prompt).items())


def conditional_length_median(prompt: Prompt) -> float:
    """Median length given the prompt (the MAE-optimal oracle prompt-only predictor)."""
    acc = 0.0
    for length, p in sorted(length_distribution(prompt).items()):
        acc += p
        if acc >= 0.5 - 1e-12:
            return float(length)
    return float(max(length_distribution(prompt)))


# --------------------------------------------------------------------------- checking


@dataclass(frozen=True)
class AnswerCheck:
    """How an answer measures up: its shape, its facts, and the N it chose."""

    grammatical: bool   # has the shape the grammar prescribes (counts consistent, EOS-free)
    well_formed: bool   # grammatical and right: facts, category, N within the prompt's range
    n: int | None = None


def check_answer(prompt: Prompt, answer: str) -> AnswerCheck:
    """Parse an answer (without EOS) against the grammar of its prompt's kind."""
    w = answer.split()
    bad = AnswerCheck(False, False)
    if prompt.kind == "yesno":
        if w == ["yes"]:
            return AnswerCheck(True, bool(prompt.truth))
        if len(w) == 7 and w[:5] == ["no", ",", "it", "is", "a"] and w[6] == "." \
                and w[5] in PLURAL:
            return AnswerCheck(True, not prompt.truth
                               and PLURAL[w[5]] == ITEM_CATEGORY[prompt.item])
        return bad
    if prompt.kind == "count":
        ok = w == [str(k) for k in range(prompt.start, -1, -1)]
        return AnswerCheck(ok, ok)
    n = _number(w[2]) if len(w) > 2 else None
    if n is None or n < 1:
        return bad
    lo, hi = prompt.count_range()
    if prompt.kind == "list":
        cat = w[3] if len(w) > 3 else None
        if len(w) != 5 + 3 * n or w[:2] != ["here", "are"] or cat not in CATEGORIES \
                or w[4] != ":":
            return bad
        items = w[5:]
        ok_items = True
        for j, k in enumerate(range(n, 0, -1)):
            num, item, punct = items[3 * j:3 * j + 3]
            if num != str(k) or item not in ITEM_CATEGORY or punct != ("," if k > 1 else "."):
                return bad
            ok_items &= ITEM_CATEGORY[item] == cat
        return AnswerCheck(True, ok_items and cat == prompt.category and lo <= n <= hi, n)
    name = w[0]
    if len(w) != 8 + 9 * n or w[1:5] != ["had", str(n), "days", "."] or name not in NAMES \
            or w[-3:] != ["the", "end", "."]:
        return bad
    for j, k in enumerate(range(n, 0, -1)):
        d = w[5 + 9 * j:5 + 9 * j + 9]
        if d[:4] != ["day", str(k), ":", name] or d[4] not in VERBS or d[5] != "the" \
                or d[6] not in ADJECTIVES or d[7] not in ITEM_CATEGORY or d[8] != ".":
            return bad
    return AnswerCheck(True, name == prompt.name and lo <= n <= hi, n)


def _number(word: str) -> int | None:
    return int(word) if word in NUMBERS else None
