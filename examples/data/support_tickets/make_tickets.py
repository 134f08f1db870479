"""Build the support-ticket summaries (JSONL: `ticket`, `summary`).

Each ticket is a customer's e-mail to a made-up electronics shop (greeting, the problem with its
details, sometimes an aside, a request, a sign-off); its summary is the one-line title an agent
gives it in the queue, naming the problem, the product and the key detail (order number, amount,
date). Deterministic: `python make_tickets.py` rewrites train.jsonl and dev.jsonl identically.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
PRODUCTS = ["Aria earbuds", "Nimbus vacuum", "Nova tablet", "Pulse tracker", "Echo speaker"]
NAMES = ["Dana", "Lee", "Priya", "Tom", "Sofia", "Ken", "Maria", "Ali", "Jo", "Sam"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
GREETINGS = ["Hello,", "Hi there,", "Dear Volt support,", "Good morning,", "Hi,"]
SIGNOFFS = ["Thanks,", "Best regards,", "Cheers,", "Thank you,", "Kind regards,"]
ASIDES = [
    "I have been a customer for years and never had a problem before.",
    "I already tried the help pages but found nothing.",
    "My partner says I should have written sooner.",
    "This is the second time I write about it.",
    "",
    "",
]


def late(rng: random.Random, product: str) -> tuple[str, str]:
    number, day = rng.randint(1000, 9999), rng.choice(DAYS)
    problem = rng.choice(
        [
            f"I ordered the {product} (order #{number}) and it was supposed to arrive on {day}, "
            "but nothing has come yet.",
            f"My order #{number} for the {product} still has not arrived although the tracking "
            f"page promised delivery on {day}.",
        ]
    )
    ask = rng.choice(["Can you tell me where it is?", "Please check what happened."])
    return f"{problem} {ask}", f"Late delivery of order #{number} ({product})"


def refund(rng: random.Random, product: str) -> tuple[str, str]:
    amount = rng.choice([19, 49, 89, 129, 249])
    problem = rng.choice(
        [
            f"I sent back the {product} two weeks ago and the ${amount} refund is still not on my "
            "card.",
            f"You confirmed my return of the {product}, but I have not received the ${amount} yet.",
        ]
    )
    ask = rng.choice(["When will I get my money?", "Please send the refund."])
    return f"{problem} {ask}", f"Refund of ${amount} not received for returned {product}"


def broken(rng: random.Random, product: str) -> tuple[str, str]:
    part = rng.choice(["the battery", "the charger", "the screen", "the power button"])
    weeks = rng.randint(2, 9)
    problem = rng.choice(
        [
            f"After only {weeks} weeks {part} of my {product} stopped working.",
            f"My {product} is {weeks} weeks old and {part} is already broken.",
        ]
    )
    ask = rng.choice(["Is this covered by the warranty?", "I would like a repair or a new one."])
    title = f"Faulty {part.removeprefix('the ')} on {product} after {weeks} weeks"
    return f"{problem} {ask}", title


def wrong(rng: random.Random, product: str) -> tuple[str, str]:
    other = rng.choice([p for p in PRODUCTS if p != product])
    number = rng.randint(1000, 9999)
    problem = rng.choice(
        [
            f"I ordered the {product} but the box of order #{number} contained the {other}.",
            f"Order #{number} arrived today, but instead of the {product} you sent me the {other}.",
        ]
    )
    ask = rng.choice(["How do I swap it?", "Please send the right item."])
    return f"{problem} {ask}", f"Wrong item in order #{number}: {other} instead of {product}"


def ticket(rng: random.Random) -> dict[str, str]:
    product = rng.choice(PRODUCTS)
    body, summary = rng.choice([late, refund, broken, wrong])(rng, product)
    aside = rng.choice(ASIDES)
    parts = [rng.choice(GREETINGS), body, aside, rng.choice(SIGNOFFS), rng.choice(NAMES)]
    return {"ticket": " ".join(p for p in parts if p), "summary": summary}


def main() -> None:
    rng = random.Random(7)
    for name, count in (("train", 400), ("dev", 80)):
        rows = [ticket(rng) for _ in range(count)]
        text = "".join(json.dumps(row) + "\n" for row in rows)
        (HERE / f"{name}.jsonl").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
