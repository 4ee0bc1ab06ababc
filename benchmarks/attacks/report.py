"""The results table: plain text for the terminal, Markdown for ``SECURITY.md``."""

from __future__ import annotations

from benchmarks.attacks.runner import JSON
from benchmarks.attacks.scenarios import SCENARIOS

__all__ = ["COLUMNS", "errors_cell", "render", "row_cells"]

COLUMNS = (
    "attack",
    "server",
    "RSS base",
    "peak",
    "after",
    "probe p99",
    "closes",
    "errors",
    "held",
)


def _mib(kib: int | None) -> str:
    return "-" if not kib else f"{kib / 1024:,.0f} MiB"


def errors_cell(result: JSON) -> str:
    """Tracebacks and ERROR lines in the server's stderr, probe failures, a dead server."""
    parts = []
    log = result.get("log", {})
    if log.get("tracebacks"):
        parts.append(f"{log['tracebacks']:,} tracebacks")
    if log.get("error_lines"):
        parts.append(f"{log['error_lines']:,} ERROR lines")
    if parts or log.get("bytes", 0) > 4096:
        parts.append(f"{log.get('bytes', 0) / 1024:,.0f} KiB of log")
    probe = result.get("probe", {})
    failures = probe.get("failures") or {}
    if failures:
        parts.append("probe " + ", ".join(f"{k} x{v}" for k, v in failures.items()))
    if "error" in probe:
        parts.append(probe["error"])
    if result.get("server_alive") is False:
        parts.append("server died")
    return "; ".join(parts) or "none"


def row_cells(result: JSON) -> list[str]:
    if "rss_base_kib" not in result:
        cells = [result["scenario"], result["server"], "-", "-", "-", "-"]
        return [*cells, result.get("error", "not run"), "-", "NO"]
    probe = result.get("probe", {})
    p99 = f"{probe['p99_ms']:,.1f} ms" if "p99_ms" in probe else "-"
    return [
        result["scenario"],
        result["server"],
        _mib(result["rss_base_kib"]),
        _mib(result["rss_peak_kib"]),
        _mib(result["rss_after_kib"]),
        p99,
        result.get("closes", "-"),
        errors_cell(result),
        "yes" if result.get("held") else "NO",
    ]


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(results: list[JSON], markdown: bool = False) -> str:
    """The table, then what failed and why, then what each attack does."""
    rows = [row_cells(r) for r in results]
    out: list[str] = []
    if markdown:
        out.append("| " + " | ".join(COLUMNS) + " |")
        out.append("|---|---|---:|---:|---:|---:|---|---|---|")
        for row in rows:
            out.append("| " + " | ".join(_markdown_cell(c) for c in row) + " |")
    else:
        widths = [max(len(c) for c in col) for col in zip(COLUMNS, *rows, strict=False)]
        line = "  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True))
        out.append(line.rstrip())
        out.append("  ".join("-" * w for w in widths))
        for row in rows:
            out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    failed = [r for r in results if not r.get("held")]
    if failed:
        out.append("")
        out.append("Not held:" if not markdown else "Not held:\n")
        for r in failed:
            reasons = "; ".join(r.get("why") or [r.get("error", "?")])
            out.append(f"- {r['scenario']} / {r['server']}: {reasons}")
    shown = {r["scenario"] for r in results}
    out.append("")
    out.append(
        "Attacks:" if not markdown else "Attacks (what each row does, and what holding means):\n"
    )
    for scenario in SCENARIOS:
        if scenario.name in shown:
            name = f"`{scenario.name}`" if markdown else scenario.name
            out.append(f"- {name}: {scenario.description}. Holds if: {scenario.expect}.")
    return "\n".join(out)
