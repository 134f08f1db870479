"""Build the support-assistant conversations (chat `messages` JSONL).

Customers of a made-up electronics shop ask about orders, refunds, passwords, shipping, product
colours and opening hours; the agent's answers follow the shop's policies with the details of
each case (order numbers, dates, amounts). A third of the conversations have a follow-up turn,
a quarter start with the shop's system prompt. Deterministic: `python make_chat.py` rewrites
train.jsonl and dev.jsonl identically.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SYSTEM = "You are the support assistant of Volt Electronics. Answer briefly and politely."
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
PRODUCTS = ["Aria earbuds", "Nimbus vacuum", "Nova tablet", "Pulse tracker", "Echo speaker"]
COLOURS = {
    "Aria earbuds": "black and white",
    "Nimbus vacuum": "grey",
    "Nova tablet": "silver and graphite",
    "Pulse tracker": "black, sage and coral",
    "Echo speaker": "charcoal and sand",
}


def order(rng: random.Random) -> tuple[list[str], str, tuple[str, str]]:
    number, day = rng.randint(1000, 9999), rng.choice(DAYS)
    asks = [
        f"Where is my order #{number}?",
        f"Has order {number} shipped yet?",
        f"My order #{number} has not arrived, can you check?",
    ]
    answer = f"Order #{number} left our warehouse and will arrive on {day}."
    follow = (
        "Can I change the delivery address?",
        "Yes: until it ships, change the address under My orders, or reply with the new one.",
    )
    return asks, answer, follow


def refund(rng: random.Random) -> tuple[list[str], str, tuple[str, str]]:
    amount = rng.choice([19, 49, 89, 129, 249])
    asks = [
        f"I returned an item worth ${amount}, when do I get my money back?",
        f"Where is my refund of ${amount}?",
        f"How long does a ${amount} refund take?",
    ]
    answer = f"Your refund of ${amount} is on its way and reaches your card within 5 business days."
    follow = ("Will I get an email?", "Yes, we email you as soon as the refund is sent.")
    return asks, answer, follow


def password(rng: random.Random) -> tuple[list[str], str, tuple[str, str]]:
    asks = [
        "I forgot my password.",
        "How do I reset my password?",
        "I cannot log in to my account.",
    ]
    answer = "Click Forgot password on the sign-in page and follow the link we email you."
    follow = (
        "The email did not come.",
        "Please check your spam folder; the link is valid for an hour.",
    )
    return asks, answer, follow


def shipping(rng: random.Random) -> tuple[list[str], str, tuple[str, str]]:
    asks = ["How much is shipping?", "Do you ship for free?", "What does delivery cost?"]
    answer = "Shipping is free above $50; below that it costs $4.99."
    follow = ("How fast is it?", "Standard delivery takes 2 to 4 business days.")
    return asks, answer, follow


def colours(rng: random.Random) -> tuple[list[str], str, tuple[str, str]]:
    product = rng.choice(PRODUCTS)
    asks = [
        f"Which colours does the {product} come in?",
        f"Is the {product} available in other colours?",
    ]
    answer = f"The {product} comes in {COLOURS[product]}."
    follow = ("Is it in stock?", f"Yes, every colour of the {product} is in stock today.")
    return asks, answer, follow


def hours(rng: random.Random) -> tuple[list[str], str, tuple[str, str]]:
    asks = [
        "When is your support open?",
        "What are your opening hours?",
        "Can I call you on Sunday?",
    ]
    answer = "Our support answers from 8 am to 8 pm, Monday to Saturday."
    follow = ("And by chat?", "The chat is open at the same hours.")
    return asks, answer, follow


TOPICS = [order, refund, password, shipping, colours, hours]


def conversation(rng: random.Random) -> dict:
    asks, answer, follow = rng.choice(TOPICS)(rng)
    messages = [{"role": "system", "content": SYSTEM}] if rng.random() < 0.25 else []
    messages += [
        {"role": "user", "content": rng.choice(asks)},
        {"role": "assistant", "content": answer},
    ]
    if rng.random() < 1 / 3:
        messages += [
            {"role": "user", "content": follow[0]},
            {"role": "assistant", "content": follow[1]},
        ]
    return {"messages": messages}


def main() -> None:
    for split, count, seed in (("train", 240, 0), ("dev", 60, 1)):
        rng = random.Random(seed)
        with open(HERE / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            for _ in range(count):
                handle.write(json.dumps(conversation(rng), ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
