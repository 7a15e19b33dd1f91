"""The shipped sample benchmark: ten procedurally drawn 256² scenes, two per category.

Reproduce ``r3d/assets/bench_edit`` with ``python -m r3d.edit.sample_data r3d/assets/bench_edit``.
The drawings are simple (flat shapes) so the folder stays small; the last record carries its image
inline as base64 to exercise that input form.
"""

from __future__ import annotations

import base64
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw

from r3d.core.io import atomic_write, atomic_write_text

SIZE = 256
Draw = ImageDraw.ImageDraw


def _canvas(sky: str = "#9ecbff", ground: str = "#7fbf6a", horizon: int = 170) -> tuple[Image.Image, Draw]:
    image = Image.new("RGB", (SIZE, SIZE), sky)
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, horizon, SIZE, SIZE], fill=ground)
    return image, draw


def _person(draw: Draw, x: int, y: int, colour: str, arm: str = "down") -> None:
    """A stick figure standing with its feet at (x, y)."""
    draw.ellipse([x - 10, y - 92, x + 10, y - 72], fill="#f1c27d", outline="black")
    draw.line([x, y - 72, x, y - 35], fill=colour, width=6)
    draw.line([x, y - 35, x - 12, y], fill="black", width=4)
    draw.line([x, y - 35, x + 12, y], fill="black", width=4)
    if arm == "down":
        draw.line([x, y - 62, x - 16, y - 40], fill=colour, width=4)
        draw.line([x, y - 62, x + 16, y - 40], fill=colour, width=4)
    else:
        draw.line([x, y - 62, x - 16, y - 40], fill=colour, width=4)
        draw.line([x, y - 62, x + 26, y - 58], fill=colour, width=4)


def ball_on_shelf() -> Image.Image:
    image, draw = _canvas(sky="#efe6d8", ground="#c9b79c", horizon=200)
    draw.rectangle([60, 120, 200, 132], fill="#8b5a2b", outline="black")
    draw.line([80, 132, 80, 200], fill="#5c3a1b", width=6)
    draw.line([180, 132, 180, 200], fill="#5c3a1b", width=6)
    draw.ellipse([110, 80, 150, 120], fill="#d62728", outline="black")
    return image


def glass_of_water() -> Image.Image:
    image, draw = _canvas(sky="#f4f4f4", ground="#b08d57", horizon=190)
    draw.rectangle([100, 80, 156, 190], outline="#555555", width=3)
    draw.rectangle([103, 120, 153, 187], fill="#6baed6")
    return image


def house_in_summer() -> Image.Image:
    image, draw = _canvas()
    draw.ellipse([190, 20, 230, 60], fill="#ffd92f")
    draw.rectangle([70, 110, 170, 180], fill="#e6a06b", outline="black")
    draw.polygon([(60, 110), (120, 60), (180, 110)], fill="#a0522d", outline="black")
    draw.rectangle([110, 145, 130, 180], fill="#6b4226")
    return image


def tree_in_sun() -> Image.Image:
    image, draw = _canvas()
    draw.ellipse([20, 20, 60, 60], fill="#ffd92f")
    draw.rectangle([120, 120, 136, 180], fill="#7b4a26")
    draw.ellipse([88, 60, 168, 130], fill="#2ca02c", outline="#1b6e1b")
    return image


def two_people_apart() -> Image.Image:
    image, draw = _canvas(sky="#dfe9f3", ground="#cccccc", horizon=200)
    _person(draw, 70, 210, "#1f77b4")
    _person(draw, 186, 210, "#ff7f0e")
    return image


def person_with_cake() -> Image.Image:
    image, draw = _canvas(sky="#f7e8d0", ground="#c49a6c", horizon=190)
    _person(draw, 70, 220, "#9467bd", arm="out")
    draw.rectangle([110, 150, 230, 160], fill="#8c564b")
    draw.rectangle([145, 120, 195, 150], fill="#ffffff", outline="#e377c2", width=3)
    for x in (155, 170, 185):
        draw.line([x, 108, x, 120], fill="#17becf", width=3)
        draw.ellipse([x - 3, 101, x + 3, 109], fill="#ff9900")
    return image


def lit_candle() -> Image.Image:
    image, draw = _canvas(sky="#2b2b3a", ground="#4a3b2a", horizon=200)
    draw.rectangle([112, 90, 144, 200], fill="#fdf6e3", outline="#bbbbbb")
    draw.line([128, 76, 128, 90], fill="black", width=2)
    draw.ellipse([120, 52, 136, 80], fill="#ffb000")
    return image


def ice_on_plate() -> Image.Image:
    image, draw = _canvas(sky="#bfe3ff", ground="#d9c7a7", horizon=150)
    draw.ellipse([20, 15, 60, 55], fill="#ffd92f")
    draw.ellipse([70, 170, 186, 206], fill="#ffffff", outline="#999999")
    draw.rectangle([108, 150, 148, 188], fill="#d6f0ff", outline="#7fb7d9", width=2)
    return image


def three_cups() -> Image.Image:
    image, draw = _canvas(sky="#fafafa", ground="#d8cbb5", horizon=170)
    for x, colour in ((40, "#d62728"), (110, "#2ca02c"), (180, "#1f77b4")):
        draw.rectangle([x, 120, x + 40, 170], fill=colour, outline="black")
        draw.arc([x + 32, 130, x + 52, 155], -90, 90, fill="black", width=3)
    return image


def squares_and_circle() -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE), "#ffffff")
    draw = ImageDraw.Draw(image)
    draw.rectangle([20, 60, 100, 140], fill="#9467bd", outline="black")
    draw.rectangle([130, 90, 170, 130], fill="#9467bd", outline="black")
    draw.ellipse([190, 150, 240, 200], fill="#ff7f0e", outline="black")
    return image


# (id, category, instruction, description, drawing)
SAMPLES: list[tuple[str, str, str, str, Callable[[], Image.Image]]] = [
    ("physics-ball-shelf", "physics", "Remove the shelf from under the red ball and show where the ball is a moment later.",
     "A red ball rests on a wooden shelf in a beige room.", ball_on_shelf),
    ("environment-house-winter", "environment", "Make it a snowy winter night.",
     "A small house with a brown roof on a green lawn under a sunny blue sky.", house_in_summer),
    ("social-handshake", "social", "Make the two people walk up to each other and shake hands.",
     "Two people stand far apart in a grey courtyard.", two_people_apart),
    ("causal-candle-hours", "causal", "Show the candle after it has burned for three hours.",
     "A tall white candle with a lit flame in a dark room.", lit_candle),
    ("referential-middle-cup", "referential", "Change the colour of the middle cup to yellow.",
     "Three cups in a row on a table: red, green and blue from left to right.", three_cups),
    ("physics-tilted-glass", "physics", "Tilt the glass 30 degrees to the right without spilling.",
     "A glass half full of water stands on a wooden table.", glass_of_water),
    ("environment-tree-rain", "environment", "Turn the scene into a rainy autumn afternoon.",
     "A green tree on a lawn on a sunny day.", tree_in_sun),
    ("social-birthday-guests", "social", "Add two guests who are singing to the person with the birthday cake.",
     "A person stands beside a table with a birthday cake with three lit candles.", person_with_cake),
    ("causal-ice-sun", "causal", "Show the plate after the ice cube has lain in the hot sun for an hour.",
     "An ice cube on a white plate outdoors in bright sunshine.", ice_on_plate),
    ("referential-larger-square", "referential", "Remove the larger of the two purple squares.",
     "A large purple square, a small purple square and an orange circle on white.", squares_and_circle),
]  # fmt: skip


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def write_sample_benchmark(out_dir: str | Path) -> Path:
    """Draw the images and write ``samples.jsonl`` into ``out_dir``; returns the JSONL path."""
    out_dir = Path(out_dir)
    lines = []
    for k, (sample_id, category, instruction, description, draw) in enumerate(SAMPLES):
        data = _png(draw())
        if k == len(SAMPLES) - 1:
            image = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        else:
            image = f"images/{sample_id}.png"
            atomic_write(out_dir / image, lambda p, d=data: p.write_bytes(d))
        record = {
            "id": sample_id,
            "category": category,
            "instruction": instruction,
            "description": description,
            "image": image,
        }
        lines.append(json.dumps(record))
    return atomic_write_text(out_dir / "samples.jsonl", "\n".join(lines) + "\n")


if __name__ == "__main__":
    print(write_sample_benchmark(sys.argv[1] if len(sys.argv) > 1 else "r3d/assets/bench_edit"))
