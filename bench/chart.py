"""A hand-written SVG bar chart (no plotting dependency): req/s ratio to no filter."""

from __future__ import annotations

from html import escape


def ratio_chart(rows: list[dict], title: str) -> str:
    """Horizontal bars, one per config, with reference lines at 1.0 (no filter) and 0.9
    (the cached-path target)."""
    bar_h, gap, left, right, top = 22, 8, 330, 110, 48
    width = 960
    plot_w = width - left - right
    vmax = max([1.0] + [r["ratio"] or 0 for r in rows]) * 1.05
    height = top + len(rows) * (bar_h + gap) + 40

    def x(v: float) -> float:
        return left + plot_w * v / vmax

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">'
           f'{escape(title)}</text>',
           f'<text x="{width / 2}" y="40" text-anchor="middle" fill="#555">requests/s relative to Envoy '
           f'without filters (median of rounds; higher is better)</text>']
    for i, r in enumerate(rows):
        y = top + i * (bar_h + gap)
        name = r["config"]
        color = ("#888888" if name == "baseline" else "#4c78a8" if name.startswith("native")
                 else "#f58518" if "cold" in name else "#54a24b")
        ratio = r["ratio"] or 0
        out.append(f'<text x="{left - 8}" y="{y + bar_h * 0.7}" text-anchor="end">{escape(name)}</text>')
        out.append(f'<rect x="{left}" y="{y}" width="{max(1.0, x(ratio) - left):.1f}" height="{bar_h}" '
                   f'fill="{color}"><title>{escape(r["label"])}: {r["rps"]:,} req/s</title></rect>')
        out.append(f'<text x="{x(ratio) + 6:.1f}" y="{y + bar_h * 0.7}">{ratio:.2f} '
                   f'({r["rps"]:,}/s)</text>')
    bottom = top + len(rows) * (bar_h + gap)
    for v, label, dash in ((1.0, "1.0 = no filter", ""), (0.9, "0.9 target", ' stroke-dasharray="4 3"')):
        out.append(f'<line x1="{x(v):.1f}" y1="{top - 6}" x2="{x(v):.1f}" y2="{bottom}" stroke="#333"{dash}/>')
        out.append(f'<text x="{x(v):.1f}" y="{bottom + 16}" text-anchor="middle" fill="#333">{label}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
