"""Tiny counterparts of the paper's datasets, in each source's own row schema.

Every generator is `make(n, seed, split)` -> n rows, deterministic in (n, seed,
split), with structure a ~1M-parameter model can pick up: templated sentiment,
entailment, topic, paraphrase and choice items, short-context span questions,
small algebra, instructions and code. The schemas are the real ones (GSM8K,
the RFT jsonl, MetaMathQA and MATH, Alpaca and AlpacaEval, Evol-instruction and
HumanEval, the LLM-R collection, GLUE and SQuAD), so the same loaders, prompts
and scorers run on toy and real rows.
"""
from __future__ import annotations

import random

from .toy import ITEMS, NAMES, arithmetic_problems

POSITIVE = ["wonderful", "great", "moving", "brilliant", "charming", "funny", "beautiful", "clever"]
NEGATIVE = ["boring", "awful", "dull", "clumsy", "tedious", "weak", "messy", "bland"]
THINGS = ["film", "movie", "story", "plot", "cast", "ending", "script", "score"]
CITIES = ["Paris", "Rome", "Oslo", "Cairo", "Lima", "Tokyo", "Delhi", "Quito"]
JOBS = ["baker", "pilot", "doctor", "farmer", "singer", "teacher", "driver", "painter"]
TOPICS = {
    "World": ["election", "minister", "border", "embassy", "treaty", "parliament"],
    "Sports": ["match", "goal", "coach", "league", "season", "striker"],
    "Business": ["shares", "profit", "market", "merger", "bank", "revenue"],
    "Technology": ["software", "chip", "internet", "robot", "phone", "computer"],
}
LETTERS = "ABCD"


def _rng(seed: int, split: str) -> random.Random:
    return random.Random(f"{seed}:{split}")


# ---------------------------------------------------------------- math
def gsm8k(n: int, seed: int, split: str = "train") -> list[dict]:
    return arithmetic_problems(n, seed if split == "train" else seed + 7919)


def gsm8k_rft(n: int, seed: int, split: str = "train") -> list[dict]:
    """Train: the RFT jsonl schema (query, response); test: GSM8K's."""
    rows = gsm8k(n, seed, split)
    if split != "train":
        return rows
    return [{"query": r["question"], "response": r["answer"]} for r in rows]


def _equation(rng: random.Random) -> tuple[str, str, int]:
    a, x, b = rng.randint(2, 9), rng.randint(1, 12), rng.randint(1, 20)
    return f"{a}x + {b} = {a * x + b}", f"{a}x = {a * x}, so x = {x}.", x


def math(n: int, seed: int, split: str = "train") -> list[dict]:
    """Train: MetaMathQA's schema (query, response ending 'The answer is: X', type; a
    sixth of the rows typed GSM_* for the filter to drop); test: MATH's (problem,
    solution with \\boxed{}, level, type)."""
    rng = _rng(seed, "math-" + split)
    rows = []
    for _ in range(n):
        eq, work, x = _equation(rng)
        problem = f"Solve for $x$: ${eq}$."
        if split == "train":
            kind = "GSM_AnsAug" if rng.random() < 1 / 6 else rng.choice(["MATH_AnsAug", "MATH_Rephrased"])
            rows.append({"query": problem, "response": f"{work}\nThe answer is: {x}", "type": kind,
                         "original_question": problem})
        else:
            rows.append({"problem": problem, "solution": f"{work} $\\boxed{{{x}}}$",
                         "level": "Level 1", "type": "Algebra"})
    return rows


# ---------------------------------------------------------------- instructions and code
WORDS = ITEMS + THINGS + CITIES + JOBS + POSITIVE + NEGATIVE


def _instruction(rng: random.Random) -> tuple[str, str, str]:
    word = rng.choice(WORDS)
    kind = rng.randrange(6)
    if kind == 4:
        return "Count the letters of the word.", word, str(len(word))
    if kind == 5:
        return "Write the word backwards in capital letters.", word, word[::-1].upper()
    if kind == 0:
        return "Reverse the letters of the word.", word, word[::-1]
    if kind == 1:
        return "Write the word in capital letters.", word, word.upper()
    if kind == 2:
        n = rng.randint(2, 4)
        return f"Repeat the word {n} times.", word, " ".join([word] * n)
    name = rng.choice(NAMES)
    return "Greet the person by name.", name, f"Hello, {name}!"


def alpaca(n: int, seed: int, split: str = "train") -> list[dict]:
    """Train: Alpaca's schema (instruction, input, output, text); test: AlpacaEval's
    (instruction, output = the reference, generator, dataset)."""
    rng = _rng(seed, "alpaca-" + split)
    rows = []
    for _ in range(n):
        ins, inp, out = _instruction(rng)
        if split == "train":
            rows.append({"instruction": ins, "input": inp, "output": out,
                         "text": f"{ins}\n{inp}\n{out}"})
        else:
            rows.append({"instruction": f"{ins} The word: {inp}", "output": out,
                         "generator": "toy_reference", "dataset": "toy"})
    return rows


_FUNCS = [
    ("add", "a, b", "Return the sum of a and b.", "return a + b", [((1, 2), 3), ((5, 7), 12)]),
    ("sub", "a, b", "Return a minus b.", "return a - b", [((5, 2), 3), ((1, 4), -3)]),
    ("double", "x", "Return x times two.", "return 2 * x", [((3,), 6), ((0,), 0)]),
    ("square", "x", "Return x squared.", "return x * x", [((3,), 9), ((-2,), 4)]),
    ("first", "xs", "Return the first element of the list xs.", "return xs[0]", [(([4, 5],), 4)]),
    ("last", "xs", "Return the last element of the list xs.", "return xs[-1]", [(([4, 5],), 5)]),
    ("maximum", "a, b", "Return the larger of a and b.", "return max(a, b)", [((2, 9), 9)]),
    ("is_even", "x", "Return True if x is even.", "return x % 2 == 0", [((4,), True), ((3,), False)]),
]


def code(n: int, seed: int, split: str = "train") -> list[dict]:
    """Train: Evol-instruction's schema (instruction, output); test: HumanEval's
    (task_id, prompt, canonical_solution, test, entry_point)."""
    rng = _rng(seed, "code-" + split)
    rows = []
    for i in range(n):
        name, args, doc, body, cases = rng.choice(_FUNCS)
        suffix = rng.randint(0, 99)
        fname = f"{name}_{suffix}"
        if split == "train":
            rows.append({"instruction": f"Write a Python function {fname}({args}). {doc}",
                         "output": f"def {fname}({args}):\n    {body}\n"})
        else:
            prompt = f'def {fname}({args}):\n    """{doc}"""\n'
            checks = "\n".join(f"    assert candidate{tuple(a)!r} == {b!r}".replace(",)", ")")
                               for a, b in cases)
            rows.append({"task_id": f"Toy/{i}", "prompt": prompt, "canonical_solution": f"    {body}\n",
                         "test": f"def check(candidate):\n{checks}\n", "entry_point": fname})
    return rows


# ---------------------------------------------------------------- LLM-R instruction-formatted tasks
def _llmr(task_name: str, split: str, i: int, query: str, answers: list[str],
          options: list[str] | None = None) -> dict:
    return {"query_id": f"{task_name}_{split}_{i}", "query": query, "answers": answers,
            "options": options if options is not None else [""], "task_name": task_name}


def _review(rng: random.Random) -> tuple[str, int]:
    good = rng.random() < 0.5
    word = rng.choice(POSITIVE if good else NEGATIVE)
    det = rng.choice(["the", "this", "that", "our"])
    adv = rng.choice(["", "very ", "really ", "quite ", "so "])
    return f"{det} {rng.choice(THINGS)} is {adv}{word}", int(good)


def sst2(n: int, seed: int, split: str = "train") -> list[dict]:
    rng = _rng(seed, "sst2-" + split)
    out = []
    for i in range(n):
        text, label = _review(rng)
        out.append(_llmr("sst2", split, i, f'Review: "{text}" Is this movie review sentence '
                         f"negative or positive?", [["Negative", "Positive"][label]]))
    return out


def _nli(rng: random.Random) -> tuple[str, str, int]:
    """premise, hypothesis, label (0 entailment, 1 neutral, 2 contradiction)."""
    name, city, job = rng.choice(NAMES), rng.choice(CITIES), rng.choice(JOBS)
    premise = f"{name} is a {job} who lives in {city}."
    label = rng.randrange(3)
    if label == 0:
        hyp = rng.choice([f"{name} lives in {city}.", f"{name} is a {job}."])
    elif label == 1:
        hyp = f"{name} likes {rng.choice(ITEMS)}."
    else:
        other = rng.choice([c for c in CITIES if c != city])
        hyp = f"{name} lives in {other}."
    return premise, hyp, label


def mnli(n: int, seed: int, split: str = "train") -> list[dict]:
    rng = _rng(seed, "mnli-" + split)
    name = "mnli" if split == "train" else "mnli_m"
    out = []
    for i in range(n):
        p, h, label = _nli(rng)
        out.append(_llmr(name, split, i, f'Premise: "{p}" Hypothesis: "{h}" Does the premise '
                         f"entail the hypothesis? Yes, No, or Maybe?", [["Yes", "Maybe", "No"][label]]))
    return out


def agnews(n: int, seed: int, split: str = "train") -> list[dict]:
    rng = _rng(seed, "agnews-" + split)
    labels = list(TOPICS)
    out = []
    for i in range(n):
        topic = rng.choice(labels)
        a, b = rng.sample(TOPICS[topic], 2)
        text = f"News about the {a} and the {b} in {rng.choice(CITIES)}."
        out.append(_llmr("ag_news", split, i, f'"{text}" What is this text about? World, Sports, '
                         f"Business, or Technology?", [topic]))
    return out


SYNONYMS = [("big", "large"), ("quick", "fast"), ("happy", "glad"), ("small", "little"),
            ("begin", "start"), ("buy", "purchase")]


def mrpc(n: int, seed: int, split: str = "train") -> list[dict]:
    rng = _rng(seed, "mrpc-" + split)
    out = []
    for i in range(n):
        name = rng.choice(NAMES)
        a, b = rng.choice(SYNONYMS)
        s1 = f"{name} saw a {a} {rng.choice(ITEMS[:4])} in {rng.choice(CITIES)}."
        same = rng.random() < 0.5
        s2 = s1.replace(f" {a} ", f" {b} ") if same else f"{rng.choice(NAMES)} sold a {a} car."
        out.append(_llmr("mrpc", split, i, f"Here are two sentences: {s1} {s2} Do they have the "
                         f"same meaning?", [["No", "Yes"][same]]))
    return out


def hellaswag(n: int, seed: int, split: str = "train") -> list[dict]:
    rng = _rng(seed, "hellaswag-" + split)
    out = []
    for i in range(n):
        name, job = rng.choice(NAMES), rng.choice(JOBS)
        right = {"baker": "bakes bread.", "pilot": "flies the plane.", "doctor": "helps the patient.",
                 "farmer": "feeds the cows.", "singer": "sings a song.", "teacher": "teaches the class.",
                 "driver": "drives the bus.", "painter": "paints the wall."}
        wrong = [v for k, v in right.items() if k != job]
        options = [right[job]] + rng.sample(wrong, 3)
        rng.shuffle(options)
        answer = LETTERS[options.index(right[job])]
        when = rng.choice(["In the morning", "On Monday", "After lunch", "Every day", "Today",
                           "At noon", "In the evening"])
        out.append(_llmr("hellaswag", split, i, f"What happens next in this paragraph? {name} is a "
                         f"{job}. {when} {name}", [answer], options))
    return out


def winogrande(n: int, seed: int, split: str = "train") -> list[dict]:
    rng = _rng(seed, "winogrande-" + split)
    out = []
    for i in range(n):
        a, b = rng.sample(NAMES, 2)
        tall = rng.random() < 0.5
        thing = rng.choice(["the top shelf", "the high window", "the tall cupboard",
                            "the ceiling lamp", "the roof"])
        context = f"{a} is {'taller' if tall else 'shorter'} than {b}, so {thing} was reached by"
        options = [f"{a}.", f"{b}."]
        answer = "A" if tall else "B"
        out.append(_llmr("winogrande", split, i, f"How does the sentence end? {context}", [answer],
                         options))
    return out


def _story(rng: random.Random) -> tuple[str, str, str, int]:
    """context, question, answer, answer_start."""
    people = rng.sample(NAMES, 3)
    cities = rng.sample(CITIES, 3)
    context = " ".join(f"{p} lives in {c}." for p, c in zip(people, cities))
    k = rng.randrange(3)
    question = f"Where does {people[k]} live?"
    start = context.index(f"{people[k]} lives in ") + len(f"{people[k]} lives in ")
    return context, question, cities[k], start


def squad(n: int, seed: int, split: str = "train") -> list[dict]:
    rng = _rng(seed, "squad-" + split)
    out = []
    for i in range(n):
        context, question, answer, _ = _story(rng)
        out.append(_llmr("squad_v1", split, i, f"Article: {context} Question: {question}", [answer]))
    return out


# ---------------------------------------------------------------- encoders (GLUE, SQuAD v1.1)
def glue_sst2(n: int, seed: int, split: str = "train") -> list[dict]:
    rng = _rng(seed, "glue_sst2-" + split)
    return [{"sentence": t, "label": lab, "idx": i} for i, (t, lab) in
            enumerate(_review(rng) for _ in range(n))]


def glue_mnli(n: int, seed: int, split: str = "train") -> list[dict]:
    rng = _rng(seed, "glue_mnli-" + split)
    return [{"premise": p, "hypothesis": h, "label": lab, "idx": i} for i, (p, h, lab) in
            enumerate(_nli(rng) for _ in range(n))]


def squad_v1(n: int, seed: int, split: str = "train") -> list[dict]:
    rng = _rng(seed, "squad_v1-" + split)
    out = []
    for i in range(n):
        context, question, answer, start = _story(rng)
        out.append({"id": f"toy{split}{i:06d}", "title": "Toy_towns", "context": context,
                    "question": question, "answers": {"text": [answer], "answer_start": [start]}})
    return out
