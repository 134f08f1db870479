"""Build the Chinese product-review sentiment example (CSV: text,label).

Reviews of a made-up electronics shop's products in simplified Chinese: a product, one or two
aspects (sound, battery, delivery, build, service) and what the customer thought of them;
positive, neutral or negative. Some reviews mix a good and a bad aspect and are labelled by the
overall verdict that ends them. Deterministic: `python make_reviews.py` rewrites train.csv and
dev.csv identically.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
PRODUCTS = ["耳机", "手机", "充电器", "平板", "音箱", "手环", "键盘", "鼠标"]
ASPECTS = ["音质", "续航", "物流", "做工", "客服", "屏幕", "包装", "手感"]
GOOD = ["很好", "非常满意", "超出预期", "物超所值", "特别清晰", "很扎实", "回复很快", "送货很快"]
BAD = ["太差了", "很失望", "用了两天就坏了", "完全不行", "又慢又差", "做工粗糙", "客服不理人"]
FAIR = ["一般", "还行", "中规中矩", "马马虎虎", "没什么特别的", "和描述差不多"]
VERDICT = {
    "positive": ["推荐购买！", "会回购的。", "五星好评。", "值得入手。"],
    "negative": ["不推荐。", "已经申请退货了。", "差评。", "再也不买了。"],
    "neutral": ["凑合用吧。", "看个人需要。", "价格还算合理。", "不好不坏。"],
}
OPENINGS = ["这款{p}", "买的{p}", "刚收到{p}，", "{p}用了一周，", "给家人买的{p}，"]


def review(rng: random.Random, label: str) -> str:
    product = rng.choice(PRODUCTS)
    first, second = rng.sample(ASPECTS, 2)
    opening = rng.choice(OPENINGS).format(p=product)
    words = {"positive": GOOD, "negative": BAD, "neutral": FAIR}[label]
    text = f"{opening}{first}{rng.choice(words)}"
    if rng.random() < 0.4:  # a second aspect, sometimes the opposite of the verdict
        other = rng.choice([BAD, GOOD, FAIR]) if rng.random() < 0.3 else words
        text += f"，{second}{rng.choice(other)}"
    return f"{text}，{rng.choice(VERDICT[label])}"


def build(count: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    labels = ["positive"] * (count * 2 // 5) + ["negative"] * (count * 2 // 5)
    labels += ["neutral"] * (count - len(labels))
    rng.shuffle(labels)
    return [(review(rng, label), label) for label in labels]


def main() -> None:
    for name, count, seed in (("train", 300, 7), ("dev", 80, 8)):
        with (HERE / f"{name}.csv").open("w", encoding="utf-8", newline="") as stream:
            writer = csv.writer(stream, lineterminator="\n")
            writer.writerow(["text", "label"])
            writer.writerows(build(count, seed))


if __name__ == "__main__":
    main()
