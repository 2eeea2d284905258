"""The line plots of docs/RESULTS.md, drawn with PIL only (the package does not depend on matplotlib)."""

from __future__ import annotations

import math
import os


def nice_ticks(low: float, high: float, target: int = 8) -> list[float]:
    """Round tick values (1, 2 or 5 x 10^k apart, about `target` of them) covering [low, high]."""
    if high - low < 1e-9:  # a flat curve (e.g. every seed equal): give it a unit of room so the axis has a span
        low, high = low - 0.5, high + 0.5
    raw = (high - low) / target
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first, last = math.floor(low / step), math.ceil(high / step)
    return [k * step for k in range(first, last + 1)]


def plot_curves(curves: dict[str, tuple[list[float], list[float], list[float], tuple[int, int, int], bool]],
                path: str, title: str, x_label: str = "epoch", y_label: str = "k-NN top-1 (%)",
                size: tuple[int, int] = (900, 560)) -> None:
    """Line plot: `curves[name] = (x, mean, std, rgb, dashed)`; a band of +-1 std is shaded around each mean."""
    from PIL import Image, ImageDraw

    width, height = size
    left, right, top, bottom = 70, 230, 40, 60
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image, "RGBA")
    xs = [x for c in curves.values() for x in c[0]]
    lows = [m - s for c in curves.values() for m, s in zip(c[1], c[2])]
    highs = [m + s for c in curves.values() for m, s in zip(c[1], c[2])]
    x0, x1 = min(xs), max(xs)
    # the y axis spans whole ticks, so that the bands never touch the frame; x spans the data
    y_ticks = nice_ticks(min(lows), max(highs), target=8)
    y0, y1 = y_ticks[0], y_ticks[-1]
    # every x value gets a tick when they are few (the epochs of an evaluation schedule), round ones otherwise
    x_values = sorted(set(xs))
    x_ticks = x_values if len(x_values) <= 25 else [t for t in nice_ticks(x0, x1, target=10) if x0 <= t <= x1]

    def px(x, y):
        return (left + (x - x0) / max(x1 - x0, 1e-9) * (width - left - right),
                height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom))

    for tick in y_ticks:
        _, y = px(x0, tick)
        draw.line([(left, y), (width - right, y)], fill=(225, 225, 225))
        draw.text((left - 40, y - 6), f"{tick:g}", fill="black")
    for tick in x_ticks:
        x, _ = px(tick, y0)
        draw.line([(x, height - bottom), (x, height - bottom + 5)], fill="black")
        draw.text((x - 6, height - bottom + 8), f"{tick:g}", fill="black")
    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    draw.text((left + (width - left - right) // 2 - 20, height - 25), x_label, fill="black")
    draw.text((8, top - 16), y_label, fill="black")
    draw.text((left, 4), title, fill="black")
    for index, (name, (x, mean, std, rgb, dashed)) in enumerate(curves.items()):
        band = [px(a, m + s) for a, m, s in zip(x, mean, std)] + [px(a, m - s) for a, m, s in reversed(list(zip(x, mean, std)))]
        if len(band) > 2:
            draw.polygon(band, fill=rgb + (40,))
        points = [px(a, m) for a, m in zip(x, mean)]
        for (ax, ay), (bx, by) in zip(points, points[1:]):
            if dashed:  # 8 dashes per segment
                for k in range(0, 8, 2):
                    draw.line([(ax + (bx - ax) * k / 8, ay + (by - ay) * k / 8),
                               (ax + (bx - ax) * (k + 1) / 8, ay + (by - ay) * (k + 1) / 8)], fill=rgb, width=3)
            else:
                draw.line([(ax, ay), (bx, by)], fill=rgb, width=3)
        if len(points) <= 40:  # markers on a dense curve would merge into a thick bead chain
            for ax, ay in points:
                draw.ellipse([ax - 3, ay - 3, ax + 3, ay + 3], fill=rgb)
        legend_y = top + 10 + 22 * index
        draw.line([(width - right + 12, legend_y + 6), (width - right + 42, legend_y + 6)], fill=rgb, width=3)
        if dashed:
            draw.line([(width - right + 22, legend_y + 6), (width - right + 30, legend_y + 6)], fill="white", width=3)
        draw.text((width - right + 48, legend_y), name, fill="black")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    image.save(path)
