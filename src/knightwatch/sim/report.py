"""`ReplayReport`: a replay's results as a terminal summary, a JSON file and an HTML page.

Loss figures are always after the exit model (see `knightwatch.sim.exit`);
the "marked" P&L is shown only to make the pitfall visible.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import msgspec
from rich.table import Table
from rich.text import Text

from knightwatch.sim.layers import GOVERNANCE, REGISTRY, runtime_layers
from knightwatch.sim.replay import ReplayResult
from knightwatch.sim.scenario import Record

TOLERANCE = 0.25
"""The report's band: a figure further than this from the SEC record is flagged."""
CONTROL_LAYERS = ("supervisor", "kill_switch")
"""Layers whose every action gets its own plot marker (they are few and each one matters)."""

# (label, result field, record field, format)
RECORD_FIGURES: tuple[tuple[str, str, str, str], ...] = (
    ("executions", "executions", "executions", "int"),
    ("stocks traded", "symbols_traded", "symbols", "int"),
    ("shares", "shares", "shares", "int"),
    ("net long, stocks", "net_long_symbols", "net_long_symbols", "int"),
    ("net short, stocks", "net_short_symbols", "net_short_symbols", "int"),
    ("loss after exit", "loss_usd", "loss_usd", "usd"),
    ("stocks moved > 5%", "symbols_moved_over_5pct", "symbols_moved_over_5pct", "int"),
    ("net long, $", "net_long_usd", "net_long_usd", "usd"),
    ("net short, $", "net_short_usd", "net_short_usd", "usd"),
)
# The figures the replay is calibrated to: each must land within TOLERANCE of the record.
CHECKED = frozenset(RECORD_FIGURES[i][0] for i in range(7))

CLAIMED: dict[str, float] = {
    "executions": 0.03,
    "stocks traded": 0.03,
    "shares": 0.03,
    "net long, stocks": 0.03,
    "net short, stocks": 0.03,
    "stocks moved > 5%": 0.03,
    "loss after exit": 0.04,
    "net long, $": 0.08,
    "net short, $": 0.08,
}
"""What the README claims for the unguarded knight-2012 replay: each figure within this
fraction of the SEC record (a test holds the replay to it; the run is deterministic)."""


def fmt(value: float | None, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "usd":
        a = abs(value)
        if a >= 1e9:
            return f"${value / 1e9:,.2f}B"
        if a >= 1e6:
            return f"${value / 1e6:,.1f}M"
        return f"${value:,.0f}"
    return f"{int(value):,}"


def halt_text(r: ReplayResult) -> str:
    if r.automatic_halt_s is None:
        return "-"
    return f"{r.automatic_halt_s:,.3f} s"


def contained_text(r: ReplayResult) -> str:
    """`contained_after_s` is 0.0 when nothing ran away: that is not "contained at the
    open" (an unguarded run whose harm was not an overfill read as stopped at 0.000 s)."""
    if r.contained_after_s is None:
        return f"never (still running at the {r.simulated_s:g}s stop)"
    if r.runaway_from_s is None:
        return "no runaway"
    return f"{r.contained_after_s:,.3f} s"


def longest_text(r: ReplayResult) -> str:
    """How long the worst node ran away, from its own first runaway execution."""
    if r.longest_runaway_s is None:
        return "never stopped"
    if r.runaway_from_s is None:
        return "no runaway"
    return f"{r.longest_runaway_s:,.3f} s"


def parents_text(r: ReplayResult) -> str:
    text = f"{r.parents_completed:,} of {r.parents:,}"
    if r.parents_resting:
        text += f" ({r.parents_resting:,} resting for RPI liquidity)"
    return text


def guards_label(r: ReplayResult) -> str:
    """`all`, `runtime` (every layer but the deploy-time ones) or the layers by name."""
    names = set(r.guards)
    if names == set(REGISTRY):
        return "all"
    if names == {layer.name for layer in runtime_layers()}:
        return "runtime (all but " + ", ".join(GOVERNANCE) + ")"
    return ",".join(r.guards)


def resume_text(r: ReplayResult) -> str:
    """What followed the person's resume (`timeline.resume_after_s`): the ramp's trip, or
    how long the fleet traded at full limits before the next halt, and the orders out."""
    s = r.resume
    if s is None:
        return "-"
    if s.outcome == "ramp refused":
        return f"refused: {s.reason}"
    how = s.outcome
    if s.outcome in ("ramp tripped", "ramping") and s.stage is not None:
        how += f" at stage {s.stage + 1}"
    if s.halted_after_s is None:
        return f"{how}; trading until the stop, {s.orders_until_halt:,} orders"
    return (
        f"{how}; halted {s.halted_after_s:,.3f} s later ({s.halted_by}), "
        f"{s.orders_until_halt:,} orders"
    )


def automatic_halts(r: ReplayResult) -> int:
    """Halts no person asked for: the supervisor's, a rollout's abort, a ramp's trip and the
    Guard's own."""
    own = sum(1 for e in r.events if e.what.startswith("halted "))  # the Guard's own latches
    # every command is signed by a person's key now; what asked for it is its rule
    return own + sum(1 for a in r.control_actions if a.rule not in _MANUAL and a.state != "ACTIVE")


_MANUAL = frozenset({"manual_kill", "manual_resume", "ramp_resume"})
"""The commands a person gave; every other halt was automatic (supervisor, rollout, ramp)."""


class ReplayReport:
    """One primary run, optionally with a comparison of runs (none, each layer, all)."""

    def __init__(
        self, result: ReplayResult, record: Record, comparison: list[ReplayResult] | None = None
    ) -> None:
        self.result = result
        self.record = record
        self.comparison = comparison or []

    # ------------------------------------------------------------------ figures

    def record_rows(self) -> list[tuple[str, str, str, float | None, bool | None]]:
        """(figure, replay, record, ratio, within tolerance) for every figure the record has."""
        rows = []
        for label, field, rec_field, kind in RECORD_FIGURES:
            ref = getattr(self.record, rec_field)
            if ref is None:
                continue
            got = float(getattr(self.result, field))
            ratio = got / ref if ref else None
            ok = None
            if label in CHECKED and ratio is not None:
                ok = abs(ratio - 1.0) <= TOLERANCE
            rows.append((label, fmt(got, kind), fmt(ref, kind), ratio, ok))
        return rows

    def json(self) -> dict[str, Any]:
        out = self.result.summary()
        out.update(_runaway(self.result))
        if self.result.guards == ["none"] and self.record_rows():
            out["vs_record"] = {
                label: {"replay": rep, "record": rec, "ratio": ratio, "within_25pct": ok}
                for label, rep, rec, ratio, ok in self.record_rows()
            }
        if self.comparison:
            out["comparison"] = [_row(r) for r in self.comparison]
        return out

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(msgspec.json.format(msgspec.json.encode(self.json()), indent=2) + b"\n")

    # ------------------------------------------------------------------ sections

    def sections(self) -> list[tuple[str, list[str], list[list[str]]]]:
        """(title, columns, rows) for each table; the terminal and the HTML page both use them."""
        r = self.result
        summary = [
            ["time from the open to containment", contained_text(r)],
            [
                "first runaway execution",
                "none" if r.runaway_from_s is None else f"{r.runaway_from_s:,.3f} s",
            ],
            ["longest runaway of one node (first to last runaway execution)", longest_text(r)],
            ["customer parents completed", parents_text(r)],
            ["automatic halts (supervisor, rollout, Guard)", fmt(automatic_halts(r), "int")],
            ["child orders sent", fmt(r.child_orders, "int")],
            ["child orders blocked", fmt(r.blocked_orders, "int")],
            ["executions", fmt(r.executions, "int")],
            ["runaway executions (overfills)", fmt(r.runaway_executions, "int")],
            ["shares", fmt(r.shares, "int")],
            ["stocks traded", fmt(r.symbols_traded, "int")],
            ["peak gross exposure", fmt(r.peak_gross_usd, "usd")],
            ["net long", f"{fmt(r.net_long_usd, 'usd')} in {r.net_long_symbols} stocks"],
            ["net short", f"{fmt(r.net_short_usd, 'usd')} in {r.net_short_symbols} stocks"],
            ["stocks moved > 5%", fmt(r.symbols_moved_over_5pct, "int")],
            ["loss after the exit", fmt(r.loss_usd, "usd")],
            ["P&L if marked at pushed-up prices (pitfall)", fmt(r.marked_pnl_usd, "usd")],
            ["simulated / wall", f"{r.simulated_s:g} s / {r.wall_seconds:.2f} s"],
        ]
        if r.control_actions:
            summary.insert(2, ["time from the open to the first automatic halt", halt_text(r)])
        if r.resume is not None:
            summary.insert(3, [f"after the resume at {r.resume.at_s:,.3f} s", resume_text(r)])
        title = f"replay {r.scenario} (seed {r.seed}), guards: {', '.join(r.guards)}"
        out = [(title, ["figure", "value"], summary)]
        if r.control_actions:
            out.append(
                (
                    "control-plane commands (kill switch, supervisor): orders out before each, "
                    "loss if unwound then",
                    ["t (s)", "rule", "command", "confirmed", "orders out", "loss then"],
                    [
                        [
                            f"{a.t_s:,.3f}",
                            a.rule,
                            f"{a.scope} {a.key} {a.state}",
                            f"{len(a.confirmed)}/{len(a.confirmed) + len(a.missing)}"
                            + (f" (missing {', '.join(a.missing)})" if a.missing else ""),
                            fmt(a.orders_before, "int"),
                            fmt(a.loss_usd, "usd"),
                        ]
                        for a in r.control_actions
                    ],
                )
            )
        if r.guards == ["none"] and self.record_rows():
            rows = [
                [
                    label,
                    rep,
                    rec,
                    "-" if ratio is None else f"{ratio:.2f}",
                    "" if ok is None else ("yes" if ok else "NO"),
                ]
                for label, rep, rec, ratio, ok in self.record_rows()
            ]
            out.append(
                (
                    f"replay vs SEC record ({self.record.source or 'record'})",
                    ["figure", "replay", "record", "ratio", "within 25%"],
                    rows,
                )
            )
        if self.comparison:
            resumed = any(c.resume is not None for c in self.comparison)
            cols = [
                "guards",
                "contained after",
                "longest runaway",
                "automatic halt",
                "automatic halts",
                "parents completed",
                *(["after the resume"] if resumed else []),
                "child orders",
                "executions",
                "shares",
                "peak gross",
                "net long",
                "net short",
                "loss after exit",
            ]
            rows = [
                [
                    guards_label(c),
                    contained_text(c),
                    longest_text(c),
                    halt_text(c),
                    fmt(automatic_halts(c), "int"),
                    f"{c.parents_completed:,}/{c.parents:,}",
                    *([resume_text(c)] if resumed else []),
                    fmt(c.child_orders, "int"),
                    fmt(c.executions, "int"),
                    fmt(c.shares, "int"),
                    fmt(c.peak_gross_usd, "usd"),
                    fmt(c.net_long_usd, "usd"),
                    fmt(c.net_short_usd, "usd"),
                    fmt(c.loss_usd, "usd"),
                ]
                for c in self.comparison
            ]
            out.append(("guardrail layers against the same scenario", cols, rows))
        out.append(
            (
                "per node",
                ["node", "release at the end", "admitted", "child orders", "executions", "blocked"],
                [
                    [
                        node
                        + (
                            f" ({r.skew.get(node) or 'differs from the deploy'})"
                            if node in r.stale_nodes
                            else ""
                        ),
                        st.release,
                        "yes" if st.admitted else "NO (never traded)",
                        fmt(st.orders, "int"),
                        fmt(st.executions, "int"),
                        fmt(st.blocked, "int"),
                    ]
                    for node, st in r.per_node.items()
                ],
            )
        )
        return out

    def tables(self) -> list[Table]:
        out = []
        for title, cols, rows in self.sections():
            # as text, never markup: a scenario's name, node ids and releases are the
            # scenario file's ("[/x]" would end the run in a rich MarkupError)
            t = Table(title=Text(title))
            for i, col in enumerate(cols):
                t.add_column(Text(col), justify="left" if i == 0 else "right")
            for row in rows:
                t.add_row(*(Text(v) for v in row))
            out.append(t)
        return out

    # ------------------------------------------------------------------ html

    def write_html(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        r = self.result
        figs = [self._plot_loss(), self._plot_rates(), self._plot_exposure()]
        body = [
            f"<h1>Replay {html.escape(r.scenario)}: guards {html.escape(', '.join(r.guards))}</h1>"
        ]
        for table in self._html_tables():
            body.append(table)
        for fig in figs:
            body.append(f'<img alt="plot" src="data:image/png;base64,{fig}">')
        body.append(self._html_events())
        page = (
            "<!doctype html><html><head><meta charset='utf-8'><title>knightwatch replay</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
            "padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
            "img{max-width:100%;display:block;margin:1em 0}</style></head><body>"
            + "\n".join(body)
            + "</body></html>\n"
        )
        path = directory / "index.html"
        path.write_text(page, encoding="utf-8")
        self.write_json(directory / "summary.json")
        return path

    def _html_tables(self) -> list[str]:
        out = []
        for title, cols, rows in self.sections():
            head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
            lines = "".join(
                "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
                for row in rows
            )
            out.append(f"<h2>{html.escape(title)}</h2><table><tr>{head}</tr>{lines}</table>")
        return out

    def _html_events(self) -> str:
        ev = self.result.events
        shown = ev[:500]
        rows = "".join(
            f"<tr><td>{e.t_s:,.3f}</td><td>{html.escape(e.layer)}</td><td>{html.escape(e.node)}"
            f"</td><td style='text-align:left'>{html.escape(e.what)}</td></tr>"
            for e in shown
        )
        more = f"<p>{len(ev) - len(shown)} more in summary.json</p>" if len(ev) > len(shown) else ""
        return (
            "<h2>guardrail and operator actions</h2><table><tr><th>t (s)</th><th>layer</th>"
            f"<th>node</th><th>what</th></tr>{rows}</table>{more}"
        )

    def _markers(self, ax: Any) -> None:
        """One vertical line per kind of action, at its first occurrence; every kill-switch
        and supervisor command gets its own line (one legend entry per layer)."""
        seen: dict[str, float] = {}
        for e in self.result.events:
            if e.layer in CONTROL_LAYERS:
                continue
            key = e.layer if e.layer not in ("guard", "operator") else e.what.split(":")[0]
            seen.setdefault(key, e.t_s)
        colors = _pyplot().get_cmap("tab10")
        for i, (key, t) in enumerate(sorted(seen.items(), key=lambda kv: kv[1])):
            ax.axvline(t, color=colors(i % 10), linestyle="--", linewidth=1, label=key)
        styles = {"supervisor": ("tab:purple", ":"), "kill_switch": ("black", "-.")}
        labelled: set[str] = set()
        for e in self.result.events:
            if e.layer not in CONTROL_LAYERS:
                continue
            color, style = styles[e.layer]
            label = f"{e.layer} (each command)" if e.layer not in labelled else None
            labelled.add(e.layer)
            ax.axvline(e.t_s, color=color, linestyle=style, linewidth=1.2, label=label)

    def _plot_loss(self) -> str:
        s = self.result.series
        fig, ax = _pyplot().subplots(figsize=(10, 4))
        ax.plot(s.t_s, [v / 1e6 for v in s.loss_usd], color="black", label="loss if unwound now")
        self._markers(ax)
        ax.set_xlabel("seconds after the open")
        ax.set_ylabel("loss after exit ($M)")
        ax.set_title("cumulative loss (valued with the exit model)")
        ax.legend(fontsize=7, loc="upper left")
        return _png(fig)

    def _plot_rates(self) -> str:
        s = self.result.series
        fig, ax = _pyplot().subplots(figsize=(10, 4))
        for node, counts in s.orders.items():
            rates = [0.0] + [
                (counts[i] - counts[i - 1]) / max(s.t_s[i] - s.t_s[i - 1], 1e-9)
                for i in range(1, len(counts))
            ]
            if node in self.result.stale_nodes:
                ax.plot(s.t_s, rates, label=f"{node} (stale)", linewidth=2.5, color="red")
            else:
                ax.plot(s.t_s, rates, label=node, linewidth=0.8, alpha=0.7)
        self._markers(ax)
        ax.set_xlabel("seconds after the open")
        ax.set_ylabel("child orders sent per second")
        ax.set_title("order rate per node (nodes that differ from the deploy in red)")
        ax.legend(fontsize=7, loc="upper left", ncol=2)
        return _png(fig)

    def _plot_exposure(self) -> str:
        s = self.result.series
        fig, ax = _pyplot().subplots(figsize=(10, 4))
        ax.plot(s.t_s, [v / 1e6 for v in s.gross_usd], color="tab:red", label="gross exposure")
        self._markers(ax)
        ax.set_xlabel("seconds after the open")
        ax.set_ylabel("gross exposure ($M)")
        ax.set_title("firm exposure over time")
        ax.legend(fontsize=7, loc="upper left")
        return _png(fig)


def _pyplot() -> Any:
    """matplotlib's pyplot, loaded at the first plot (headless). Imported with this module
    it cost every CLI command and every node process about 0.3 s at start (measured with
    `python -X importtime -m knightwatch`), for the reports alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _runaway(r: ReplayResult) -> dict[str, Any]:
    """Whether anything ran away, stated: with no runaway `contained_after_s` and
    `longest_runaway_s` are 0.0, which a reader of the JSON took for "stopped at the open"
    (the terminal said "no runaway", the JSON nowhere did)."""
    return {"runaway": r.runaway_from_s is not None, "containment": contained_text(r)}


def _row(r: ReplayResult) -> dict[str, Any]:
    return {
        "guards": guards_label(r),
        **_runaway(r),
        "contained_after_s": r.contained_after_s,
        "runaway_from_s": r.runaway_from_s,
        "longest_runaway_s": r.longest_runaway_s,
        "automatic_halt_s": r.automatic_halt_s,
        "automatic_halts": automatic_halts(r),
        "parents": r.parents,
        "parents_completed": r.parents_completed,
        "parents_resting": r.parents_resting,
        "child_orders": r.child_orders,
        "executions": r.executions,
        "shares": r.shares,
        "peak_gross_usd": r.peak_gross_usd,
        "net_long_usd": r.net_long_usd,
        "net_long_symbols": r.net_long_symbols,
        "net_short_usd": r.net_short_usd,
        "net_short_symbols": r.net_short_symbols,
        "loss_usd": r.loss_usd,
        "resume": msgspec.to_builtins(r.resume),
    }


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    _pyplot().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")
