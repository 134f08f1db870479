"""Build the support-article question-answering set (SQuAD 2.0 JSON layout).

Each context is a short help-centre article about one product: four to six facts (warranty,
return window, battery life, shipping, support hours, where it is made, ...) written with one
of several sentence templates each, in a random order, with a distractor sentence. Questions
ask for the facts in several phrasings; the answer is the exact span with its character
offset. About one question in six asks for a fact the article does not state: the answer list
is empty (unanswerable), as in SQuAD 2.0. Deterministic: `python make_qa.py` rewrites
train.json and dev.json identically.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

PRODUCTS = [
    "Aria wireless earbuds",
    "Nimbus robot vacuum",
    "Volt e-bike",
    "Lumen desk lamp",
    "Pulse fitness tracker",
    "Brew Pro coffee maker",
    "Atlas hiking backpack",
    "Echo smart speaker",
    "Frost mini fridge",
    "Glide electric toothbrush",
    "Orbit drone",
    "Nova tablet",
    "Terra water filter",
    "Zen air purifier",
    "Spark portable charger",
    "Halo baby monitor",
    "Quill e-reader",
    "Drift kayak",
    "Ember space heater",
    "Tide washing machine",
]
CITIES = [
    "Lisbon",
    "Osaka",
    "Toronto",
    "Tallinn",
    "Austin",
    "Lyon",
    "Busan",
    "Krakow",
    "Porto",
    "Denver",
    "Bergen",
    "Leipzig",
]
DAYS = ["Monday to Friday", "every day of the week", "Monday to Saturday", "weekdays only"]
COLORS = [
    "black, white and sage green",
    "graphite and sand",
    "red, navy and silver",
    "matte black only",
    "ocean blue and coral",
]

# fact: (value maker, statement templates, question phrasings)
FACTS = {
    "warranty": (
        lambda r: f"{r.randint(1, 5)} years",
        [
            "The {p} comes with a warranty of {v}.",
            "Every {p} is covered by a {v} warranty.",
            "We guarantee the {p} for {v} against manufacturing defects.",
        ],
        [
            "How long is the warranty on the {p}?",
            "What warranty does the {p} have?",
            "For how long is the {p} guaranteed?",
        ],
    ),
    "returns": (
        lambda r: f"{r.choice([14, 30, 45, 60, 90])} days",
        [
            "You can return the {p} within {v} of delivery.",
            "Returns of the {p} are accepted for {v} after it arrives.",
            "If the {p} is not right for you, send it back within {v}.",
        ],
        [
            "How long do I have to return the {p}?",
            "What is the return window for the {p}?",
            "Within how many days can the {p} be returned?",
        ],
    ),
    "battery": (
        lambda r: f"{r.randint(4, 40)} hours",
        [
            "On a full charge the {p} runs for about {v}.",
            "The battery of the {p} lasts up to {v}.",
            "Expect roughly {v} of use from the {p} between charges.",
        ],
        [
            "How long does the battery of the {p} last?",
            "What is the battery life of the {p}?",
            "How many hours does the {p} run on one charge?",
        ],
    ),
    "shipping": (
        lambda r: r.choice(["free", "$4.99", "$9.50", "$12"]),
        [
            "Shipping for the {p} costs {v} within the country.",
            "Standard delivery of the {p} is {v}.",
            "We charge {v} to ship the {p}.",
        ],
        [
            "How much does shipping cost for the {p}?",
            "What does delivery of the {p} cost?",
            "What is the shipping fee for the {p}?",
        ],
    ),
    "hours": (
        lambda r: f"{r.choice([7, 8, 9])} am to {r.choice([5, 6, 8, 10])} pm, {r.choice(DAYS)}",
        [
            "Support for the {p} is available from {v}.",
            "Our {p} helpline answers from {v}.",
            "You can reach the {p} support team from {v}.",
        ],
        [
            "When can I reach support for the {p}?",
            "What are the support hours for the {p}?",
            "When is the {p} helpline open?",
        ],
    ),
    "made": (
        lambda r: r.choice(CITIES),
        [
            "The {p} is designed and assembled in {v}.",
            "Our factory in {v} builds every {p}.",
            "Each {p} is made in {v}.",
        ],
        [
            "Where is the {p} made?",
            "In which city is the {p} built?",
            "Where is the {p} assembled?",
        ],
    ),
    "colors": (
        lambda r: r.choice(COLORS),
        [
            "The {p} is sold in {v}.",
            "You can order the {p} in {v}.",
            "Colour options for the {p} are {v}.",
        ],
        [
            "What colours does the {p} come in?",
            "Which colours is the {p} available in?",
            "In what colours can I buy the {p}?",
        ],
    ),
}
DISTRACTORS = [
    "Thousands of customers have rated it five stars.",
    "Please keep your receipt for any claim.",
    "Register your device online to get product news.",
    "Our help centre has answers to the most common questions.",
]


def article(product: str, rng: random.Random) -> dict:
    names = rng.sample(list(FACTS), rng.randint(4, 6))
    sentences, values = [], {}
    for name in names:
        make, statements, _ = FACTS[name]
        values[name] = make(rng)
        sentences.append((name, rng.choice(statements).format(p=product, v=values[name])))
    sentences.insert(rng.randint(0, len(sentences)), (None, rng.choice(DISTRACTORS)))
    rng.shuffle(sentences)
    context, starts = "", {}
    for name, sentence in sentences:
        if context:
            context += " "
        if name is not None:
            starts[name] = len(context) + sentence.index(values[name])
        context += sentence
    questions = []
    for name in names:
        questions.append((name, [{"text": values[name], "answer_start": starts[name]}]))
    missing = [name for name in FACTS if name not in names]
    if missing and rng.random() < 0.9:
        questions.append((rng.choice(missing), []))
    return {"context": context, "questions": questions}


def build(count: int, seed: int, prefix: str) -> dict:
    rng = random.Random(seed)
    data = []
    for number in range(count):
        product = rng.choice(PRODUCTS)
        made = article(product, rng)
        qas = []
        for index, (name, answers) in enumerate(made["questions"]):
            question = rng.choice(FACTS[name][2]).format(p=product)
            qas.append(
                {
                    "id": f"{prefix}{number:03d}-{index}",
                    "question": question,
                    "answers": answers,
                    "is_impossible": not answers,
                }
            )
        data.append({"title": product, "paragraphs": [{"context": made["context"], "qas": qas}]})
    return {"version": "support-qa-1", "data": data}


def main() -> None:
    for split, count, seed in (("train", 120, 0), ("dev", 40, 1)):
        with open(HERE / f"{split}.json", "w", encoding="utf-8") as handle:
            json.dump(build(count, seed, split[0]), handle, ensure_ascii=False, indent=1)
            handle.write("\n")


if __name__ == "__main__":
    main()
