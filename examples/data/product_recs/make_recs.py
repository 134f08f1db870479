"""Build the product-recommendation ranking set: customer profiles and candidate products.

A profile says, in its own words, what a customer is into, who it is for and what they spend
("Weekend trail runner shopping for her teenage son, happy to pay for quality"); a product
text describes an item with its price ("Lightweight trail shoes with a grippy sole, $89").
The words of a profile and of its products differ (a profile never names the product), so a
ranker must learn which interests and which items go together.

Relevance of a product for a profile: 2 = its interest, its audience and its budget; 1 = its
interest but the wrong audience or price; 0 = another interest. Every query has ten
candidates: three of its interest (at least one relevance 2, hard negatives among them) and
seven of other interests, shuffled. Deterministic: `python make_recs.py` rewrites train.csv
and dev.csv identically.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

# interest: (ways a customer describes it, products of it)
INTERESTS: dict[str, tuple[list[str], list[str]]] = {
    "running": (
        [
            "trail runner",
            "training for a half marathon",
            "jogs every morning",
            "just took up running",
        ],
        [
            "trail shoes with a grippy sole",
            "reflective running vest",
            "GPS sports watch",
            "moisture-wicking running socks",
            "hydration belt with two bottles",
        ],
    ),
    "camping": (
        [
            "spends weekends camping",
            "sleeps under the stars whenever possible",
            "plans a week in the backcountry",
            "loves campfires and tents",
        ],
        [
            "two-person dome tent",
            "down sleeping bag rated to -5 C",
            "compact camping stove",
            "folding camp chair",
            "headlamp with red-light mode",
        ],
    ),
    "cooking": (
        [
            "cooks dinner from scratch every night",
            "is learning to bake bread",
            "loves trying new recipes",
            "hosts big family meals",
        ],
        [
            "cast-iron skillet",
            "chef's knife with a walnut handle",
            "stand mixer",
            "set of nonstick saucepans",
            "digital kitchen scale",
        ],
    ),
    "coffee": (
        [
            "can't start the day without an espresso",
            "is a pour-over enthusiast",
            "roasts beans at home",
            "wants cafe drinks at home",
        ],
        [
            "burr coffee grinder",
            "gooseneck pour-over kettle",
            "espresso machine with a steam wand",
            "insulated travel mug",
            "bag of single-origin beans",
        ],
    ),
    "gaming": (
        [
            "plays video games after work",
            "streams games online",
            "is into competitive shooters",
            "collects retro consoles",
        ],
        [
            "mechanical gaming keyboard",
            "wireless headset with a boom mic",
            "high-refresh monitor",
            "ergonomic gaming mouse",
            "controller charging dock",
        ],
    ),
    "gardening": (
        [
            "grows tomatoes on the balcony",
            "spends Sundays in the garden",
            "started a vegetable patch",
            "loves houseplants",
        ],
        [
            "set of pruning shears",
            "raised garden bed kit",
            "self-watering planter",
            "organic potting soil",
            "kneeling pad with tool pockets",
        ],
    ),
    "reading": (
        [
            "reads a novel a week",
            "is in two book clubs",
            "reads in bed every night",
            "loves crime fiction",
        ],
        [
            "e-reader with a warm light",
            "clip-on book light",
            "hardcover mystery box set",
            "leather bookmark set",
            "reading pillow with armrests",
        ],
    ),
    "pets": (
        [
            "just adopted a puppy",
            "has two cats at home",
            "walks the dog twice a day",
            "fosters rescue animals",
        ],
        [
            "chew-proof dog toy",
            "cat scratching tower",
            "no-pull dog harness",
            "automatic pet feeder",
            "washable pet bed",
        ],
    ),
    "music": (
        [
            "is learning the guitar",
            "plays piano in a band",
            "produces music at home",
            "sings in a choir",
        ],
        [
            "clip-on guitar tuner",
            "studio headphones",
            "USB audio interface",
            "digital piano with weighted keys",
            "sheet music stand",
        ],
    ),
    "yoga": (
        [
            "does yoga before work",
            "goes to pilates twice a week",
            "is into meditation",
            "stretches every evening",
        ],
        [
            "non-slip yoga mat",
            "cork yoga blocks",
            "meditation cushion",
            "resistance band set",
            "foam roller",
        ],
    ),
    "cycling": (
        [
            "commutes by bike",
            "rides long distances on weekends",
            "just bought a road bike",
            "does mountain biking",
        ],
        [
            "bike helmet with MIPS",
            "LED bike light set",
            "padded cycling shorts",
            "mini bike pump",
            "heavy-duty bike lock",
        ],
    ),
    "photography": (
        [
            "shoots landscapes on film",
            "is learning portrait photography",
            "takes travel photos",
            "vlogs on weekends",
        ],
        [
            "travel tripod",
            "camera backpack",
            "prime lens 50 mm",
            "pack of memory cards",
            "lens cleaning kit",
        ],
    ),
}
AUDIENCES = {  # who it is for: (profile words, product words)
    "kids": (
        ["for a ten-year-old", "for the kids", "for a young child"],
        ["for kids", "kids' size", "child-safe"],
    ),
    "adults": (
        ["for themself", "for a grown-up friend", "for their partner"],
        ["adult size", "for adults", "full size"],
    ),
}
BUDGETS = {  # (profile words, price range in dollars)
    "low": (
        ["on a tight budget", "wants something cheap", "spending as little as possible"],
        (8, 35),
    ),
    "high": (
        ["happy to pay for quality", "wants the premium version", "budget is no issue"],
        (120, 400),
    ),
}


def product(interest: str, audience: str, budget: str, rng: random.Random) -> str:
    name = rng.choice(INTERESTS[interest][1])
    low, high = BUDGETS[budget][1]
    words = rng.choice(AUDIENCES[audience][1])
    return f"{name[0].upper()}{name[1:]}, {words}, ${rng.randint(low, high)}"


def profile(interest: str, audience: str, budget: str, rng: random.Random) -> str:
    return (
        f"Customer who {rng.choice(INTERESTS[interest][0])}, shopping "
        f"{rng.choice(AUDIENCES[audience][0])}, {rng.choice(BUDGETS[budget][0])}"
    )


def queries(count: int, seed: int, prefix: str) -> list[tuple[str, str, str, int]]:
    rng = random.Random(seed)
    rows = []
    for number in range(count):
        interest = rng.choice(list(INTERESTS))
        audience, budget = rng.choice(list(AUDIENCES)), rng.choice(list(BUDGETS))
        other_audience = next(a for a in AUDIENCES if a != audience)
        other_budget = next(b for b in BUDGETS if b != budget)
        wrong = rng.choice([(other_audience, budget), (audience, other_budget)])
        candidates = [(product(interest, audience, budget, rng), 2)]
        candidates.append((product(interest, *wrong, rng), 1))
        third = rng.choice([(audience, budget), wrong])
        candidates.append((product(interest, *third, rng), 2 if third == (audience, budget) else 1))
        others = rng.sample([i for i in INTERESTS if i != interest], 7)
        for other in others:  # other interests, sometimes with the right audience and budget
            candidates.append(
                (product(other, rng.choice(list(AUDIENCES)), rng.choice(list(BUDGETS)), rng), 0)
            )
        rng.shuffle(candidates)
        query = profile(interest, audience, budget, rng)
        rows += [(f"{prefix}{number:04d}", query, text, rel) for text, rel in candidates]
    return rows


def main() -> None:
    for split, count, seed in (("train", 300, 0), ("dev", 80, 1)):
        with open(HERE / f"{split}.csv", "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["query_id", "profile", "product", "relevance"])
            writer.writerows(queries(count, seed, f"{split[0]}"))


if __name__ == "__main__":
    main()
