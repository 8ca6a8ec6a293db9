"""Outputs: a human summary, the JSON file, the PNG plot and a markdown table of several runs.

`python -m load.fanout.report a.json b.json ...` prints the markdown table of saved results.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson


def write_json(result: dict[str, Any], path: str) -> None:
    Path(path).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")


def write_png(result: dict[str, Any], path: str) -> None:
    """Latency percentiles and delivered messages per second, over the run (matplotlib, Agg)."""
    import matplotlib  # type: ignore[import-not-found,unused-ignore]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]

    rows = result["per_second"]
    t = [row["t"] for row in rows]
    fig, (ax_lat, ax_rate) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for key, style in (("p50", "-"), ("p90", "-"), ("p99", "-"), ("max", ":")):
        values = [row[key] for row in rows]
        ax_lat.plot([x + 0.5 for x in t], values, style, marker="o", markersize=3, label=key)
    ax_lat.set_ylabel("send → receive latency (ms)")
    ax_lat.set_yscale("log")
    ax_lat.grid(True, which="both", alpha=0.3)
    ax_lat.legend()
    o = result["options"]
    ax_lat.set_title(
        f"fan-out: {o['subscribers']} subscribers, {o['rooms']} room(s), {o['senders']} sender(s), "
        f"{o['rate']:g} msgs/s"
    )
    ax_rate.bar(t, [row["delivered"] for row in rows], width=0.8, align="edge")
    ax_rate.axvline(o["duration"], color="grey", linestyle="--", linewidth=1)
    ax_rate.set_ylabel("delivered frames / s")
    ax_rate.set_xlabel("seconds since the first send (dashed: sending stops)")
    ax_rate.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt_counter(counter: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counter.items())) or "0"


def summary(result: dict[str, Any]) -> str:
    if result["mode"] == "idle":
        rss = result["server_rss_kib"]
        idle_cpu = result["cpu_pct_while_idle"]
        return (
            f"idle: opened {result['opened']}/{result['options']['idle']} in {result['connect_s']} s "
            f"({result['connects_per_s']}/s), alive after hold {result['alive_after_hold']}, "
            f"closed/failed {_fmt_counter(result['closed'])}\n"
            f"server RSS KiB before {rss['before']} all-open {rss['all_open']} after {rss['after_hold']} "
            f"→ {result['server_kib_per_connection']} KiB per connection; "
            f"idle CPU tool {idle_cpu['tool']}% server {idle_cpu['server']}%"
        )
    lat = result["latency_ms"]
    cpu = result["cpu_pct"]
    return (
        f"sent {result['sent']} acked {result['acked']} (errors {_fmt_counter(result['send_errors'])}, "
        f"late>10ms {result['sends_late_10ms']}, max lag {result['sender_max_lag_ms']} ms)\n"
        f"delivered {result['delivered_per_s']}/s in window ({result['delivered_in_window']} frames), "
        f"{result['delivered_total']} in total of {result['expected_deliveries']} expected, "
        f"drain {result['drain_s']} s\n"
        f"latency ms p50 {lat['p50']} p90 {lat['p90']} p99 {lat['p99']} max {lat['max']}; "
        f"ack p50 {result['ack_latency_ms']['p50']} p99 {result['ack_latency_ms']['p99']}\n"
        f"closed {_fmt_counter(result['closed'])}, order violations {result['order_violations']}, "
        f"missing {result['missing']}, not delivered when the drain ended {result['backlog_at_end']}\n"
        f"CPU tool {cpu['tool']}% server {cpu['server']}%"
    )


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "| scenario | delivered msgs/s | p50 ms | p90 ms | p99 ms | max ms | sent/acked | errors/closed "
        "| order viol. | missing | backlog at end | server CPU | tool CPU | idle KiB/conn |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in results:
        if r["mode"] == "idle":
            cpu = r["cpu_pct_while_idle"]
            errs = {**r["closed"], **r["connect_failures"]}
            rss = r["server_rss_kib"]
            lines.append(
                f"| idle {r['options']['idle']} websockets ({r['alive_after_hold']} alive, RSS "
                f"{_mib(rss['before'])}→{_mib(rss['after_hold'])} MiB) | - | - | - | - | - | - "
                f"| {_fmt_counter(errs)} | - | - | - | {cpu['server']}% | {cpu['tool']}% "
                f"| {r['server_kib_per_connection']} |"
            )
            continue
        o = r["options"]
        lat = r["latency_ms"]
        errs = {**r["send_errors"], **r["closed"], **r["sender_closed"], **r["connect_failures"]}
        lines.append(
            f"| {o['senders']} sender → {o['subscribers']} subs, {o['rooms']} room, {o['rate']:g} msgs/s "
            f"| {r['delivered_per_s']:,.0f} | {lat['p50']:.1f} | {lat['p90']:.1f} | {lat['p99']:.1f} "
            f"| {lat['max']:.1f} "
            f"| {r['sent']}/{r['acked']} | {_fmt_counter(errs)} | {r['order_violations']} | {r['missing']} "
            f"| {r['backlog_at_end']} "
            f"| {r['cpu_pct']['server']}% | {r['cpu_pct']['tool']}% | - |"
        )
    return "\n".join(lines)


def _mib(kib: int | None) -> str:
    return "?" if kib is None else f"{kib / 1024:.0f}"


def main(argv: list[str] | None = None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: python -m load.fanout.report RESULT.json ...", file=sys.stderr)
        return 2
    print(table([orjson.loads(Path(p).read_bytes()) for p in paths]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
