"""Server-rendered SVG line charts of a VM's usage: no JavaScript, no CDN, fits the page's CSP."""

from xml.sax.saxutils import escape

from observability.series import GRAPHS, Usage

WIDTH, HEIGHT = 600, 180
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 24, 28
COLOURS = ("#2563eb", "#dc2626")
BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human(value: float, unit: str) -> str:
    if unit == "cores":
        return f"{value:.2f}" if value < 10 else f"{value:.0f}"
    for name in BINARY_UNITS:
        if abs(value) < 1024 or name == BINARY_UNITS[-1]:
            return f"{value:.1f} {name}/s" if name != "B" else f"{value:.0f} B/s"
        value /= 1024
    return str(value)


def _nice_ceiling(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 1.0
    while magnitude * 10 <= value:
        magnitude *= 10
    while magnitude > value:
        magnitude /= 10
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def render_graph(usage: Usage, graph: str) -> str:
    title, names = GRAPHS[graph]
    start, end = usage.start.timestamp(), usage.end.timestamp()
    span = max(end - start, 1.0)
    unit = usage.series[names[0]]["unit"]
    top_value = _nice_ceiling(max((point[1] for name in names for point in usage.series[name]["points"]),
                                  default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x_of(timestamp):
        return LEFT + (timestamp - start) / span * plot_w

    def y_of(value):
        return TOP + plot_h - min(value / top_value, 1.0) * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)} over {usage.range}">',
             f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>',
             f'<text x="{LEFT}" y="16" font-family="sans-serif" font-size="13" font-weight="bold">'
             f'{escape(title)} · last {usage.range}</text>']
    for fraction in (0, 0.5, 1):
        y = TOP + plot_h - fraction * plot_h
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{LEFT - 4}" y="{y + 4:.1f}" font-family="sans-serif" font-size="10" '
                     f'text-anchor="end">{escape(human(top_value * fraction, unit))}</text>')
    label = "-1 h" if usage.range == "1h" else "-24 h"
    parts.append(f'<text x="{LEFT}" y="{HEIGHT - 8}" font-family="sans-serif" font-size="10">{label}</text>')
    parts.append(f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 8}" font-family="sans-serif" font-size="10" '
                 'text-anchor="end">now</text>')
    drawn = False
    for index, name in enumerate(names):
        points = usage.series[name]["points"]
        colour = COLOURS[index % len(COLOURS)]
        legend_x = LEFT + 220 + index * 130
        parts.append(f'<text x="{legend_x}" y="16" font-family="sans-serif" font-size="11" fill="{colour}">'
                     f'{escape(name.replace("_", " "))}</text>')
        if len(points) >= 1:
            drawn = True
            coordinates = " ".join(f"{x_of(t):.1f},{y_of(v):.1f}" for t, v in points)
            parts.append(f'<polyline class="series" data-series="{name}" fill="none" stroke="{colour}" '
                         f'stroke-width="1.5" points="{coordinates}"/>')
    if not drawn:
        parts.append(f'<text x="{LEFT + plot_w / 2}" y="{TOP + plot_h / 2}" font-family="sans-serif" '
                     'font-size="12" text-anchor="middle" fill="#666">no samples yet</text>')
    parts.append("</svg>")
    return "\n".join(parts)
