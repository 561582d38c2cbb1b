"""Arms of the Fashion-MNIST benchmark across every setting cached in its work dirs, against both references.

    python benchmarks/benchmark_fashion_mnist.py --work_dir W --datasets cluttered --arms mae --seeds 0 --epochs 40
    python benchmarks/benchmark_fashion_mnist.py --work_dir W --datasets cluttered --arms mae --seeds 0 --epochs 80
    python benchmarks/benchmark_settings_report.py --work_dir W --dataset cluttered --arms mae --output benchmarks/x

``benchmark_fashion_mnist.py`` caches each setting under ``<work_dir>/runs-<hash>/`` with its ``settings.json``; this
script reads them all (several ``--work_dir`` may be given), keeps the settings fields that differ between them, and
writes one row per setting and arm: the arm's k-NN and linear-probe accuracy (mean ± std over the cached seeds), the
random-init encoder and raw pixels on the same data, and the margin of the arm's best readout over the best
reference. Writes ``<output>.md``, ``<output>.json`` and ``<output>.png`` (a bar chart of the same rows), and, where
a setting has runs of two or more arms, ``<output>_runs.png``: every run's linear probe against the share of the
garment its masks hid, one panel per setting.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .fashion_mnist import (
    ARM_DESCRIPTIONS,
    ARM_SETTINGS,
    ARMS,
    COLUMNS,
    DATASETS,
    REFERENCES,
    SETTING_NOTE,
    cached,
    cell,
    summarize,
    with_garment_masked,
)

READOUTS = tuple(key for key, _ in COLUMNS)
PIXEL_READOUTS = ("knn_pixels", "linear_pixels")
# Per run of an arm, for the scatter of accuracy against how much of the garment its masks hid.
RUN_FIELDS = ("seed", "garment_masked", "linear_mean", "knn_mean")


def collect(work_dirs: list[Path], dataset: str, arms: list[str]) -> list[dict]:
    """Every cached (setting, arm) of ``dataset`` with results for the arm and both references.

    Returns:
        ``[{"settings": dict, "arm_name": str, "arm": stats, "random_init": stats, "raw_pixels": stats}, ...]``
        where ``stats`` maps a metric to ``{"mean", "std"}`` over the seeds that all three have, plus ``"seeds"``.
    """
    rows = []
    for settings_file in sorted(path for work_dir in work_dirs for path in work_dir.glob("runs-*/settings.json")):
        runs = settings_file.parent / dataset
        for arm in arms:
            per_seed = [
                [cached(runs / name / seed_dir.name) for name in (arm, *REFERENCES)]
                for seed_dir in sorted((runs / arm).glob("seed*"))
            ]
            complete = [result for results in per_seed if None not in results for result in results]
            if not complete:
                continue
            settings = json.loads(settings_file.read_text())
            complete = with_garment_masked(complete, settings["mask_ratio"])
            summary = summarize(complete)[dataset]
            rows.append(
                {
                    "settings": settings,
                    "arm_name": arm,
                    "arm": summary[arm],
                    **{name: summary[name] for name in REFERENCES},
                    "runs": [
                        {key: result[key] for key in RUN_FIELDS}
                        for result in complete
                        if result["arm"] == arm and "garment_masked" in result
                    ],
                }
            )
    return rows


def varying_fields(rows: list[dict]) -> list[str]:
    """Settings fields whose value is not the same in every row (all fields of a single row would say nothing)."""
    fields = sorted({field for row in rows for field in row["settings"]})
    return [field for field in fields if len({json.dumps(row["settings"].get(field)) for row in rows}) > 1]


def value(stats: dict, key: str) -> str:
    """``mean ± std`` in %, or the mean alone from a single seed."""
    return cell(stats[key]) if len(stats["seeds"]) > 1 else f"{stats[key]['mean'] * 100:.1f}"


def best_readout(stats: dict, readouts: tuple[str, ...]) -> dict:
    """``{"mean", "std"}`` of the readout with the highest mean."""
    return stats[max(readouts, key=lambda key: stats[key]["mean"])]


def best(stats: dict, readouts: tuple[str, ...]) -> float:
    return best_readout(stats, readouts)["mean"]


def margin(row: dict) -> float:
    """Best readout of the arm minus the best readout of either reference, in accuracy (fraction)."""
    references = max(best(row["random_init"], READOUTS), best(row["raw_pixels"], PIXEL_READOUTS))
    return best(row["arm"], READOUTS) - references


def order(row: dict, fields: list[str]) -> list[tuple]:
    """Sort key: the varying fields' values, numbers by value (8 before 40), unset values last; then the arm."""
    values = [row["settings"].get(field) for field in fields]
    keys = [(value is None, value if isinstance(value, int | float) else str(value)) for value in values]
    return [*keys, (False, ARMS.index(row["arm_name"]))]


def label(row: dict, fields: list[str], with_arm: bool) -> str:
    parts = [f"{field} {row['settings'].get(field)}" for field in fields]
    return ", ".join([*parts, row["arm_name"]] if with_arm else parts) or "(one setting)"


def runs_section(groups: dict[str, list[dict]], figure_name: str) -> list[str]:
    """Markdown lines under the table: the per-run figure and, per setting, the correlation it shows."""
    if not groups:
        return []
    lines = [
        f"![Per run: mean-pooled linear probe against the share of the garment the masks hid]({figure_name})",
        "",
        "Per run, across the arms of one setting: Pearson r between the share of the garment's patches the training "
        "masks hid and the mean-pooled linear probe.",
        "",
    ]
    for name, group in groups.items():
        r = correlation(group)
        runs = sum(len(row["runs"]) for row in group)
        lines.append(f"- {name}: " + ("too few runs" if r is None else f"r = {r:.2f}") + f" ({runs} runs)")
    return [*lines, ""]


def markdown(rows: list[dict], fields: list[str], dataset: str, command: str, runs: list[str]) -> str:
    header = [*fields, "arm", "setting", *(name for _, name in COLUMNS)]
    header += ["random-init k-NN / linear (mean)", "raw-pixel k-NN / linear", "margin", "garment masked"]
    header += ["pretrain s", "seeds"]
    lines = [
        f"| {' | '.join(header)} |",
        f"|{'---|' * len(header)}",
    ]
    for row in rows:
        values = [str(row["settings"].get(field)) for field in fields]
        values += [ARM_DESCRIPTIONS[row["arm_name"]], ARM_SETTINGS[row["arm_name"]]]
        values += [value(row["arm"], key) for key in READOUTS]
        values.append(f"{value(row['random_init'], 'knn_mean')} / {value(row['random_init'], 'linear_mean')}")
        values.append(f"{value(row['raw_pixels'], 'knn_pixels')} / {value(row['raw_pixels'], 'linear_pixels')}")
        values.append(f"{margin(row) * 100:+.1f}")
        values.append(value(row["arm"], "garment_masked") if "garment_masked" in row["arm"] else "–")
        values.append(f"{row['arm']['pretrain_seconds']['mean']:.0f}" if "pretrain_seconds" in row["arm"] else "–")
        values.append(" ".join(map(str, row["arm"]["seeds"])))
        lines.append(f"| {' | '.join(values)} |")
    shared = {key: value for key, value in rows[0]["settings"].items() if key not in fields}
    return "\n".join(
        [
            f"# {dataset.capitalize()} Fashion-MNIST, setting by setting, against both references",
            "",
            f"Written by `{command}` on {datetime.datetime.now(datetime.UTC):%Y-%m-%d} from the cached per-run "
            "results; *pretrain s* is each run's wall time on whichever machine ran it.",
            "",
            "Accuracies in % (mean ± std over the seeds listed, the value itself from one seed). *Margin*: the "
            "arm's best readout minus the best readout of either reference (random-init encoder, raw pixels), in "
            "points. *Garment masked*: the share of all garment patches that the arm's training masks hid (random "
            "masks, as MAE's, hide 37 of 49 patches at mask ratio 0.75: 75.5%). A row is "
            f"`python benchmarks/benchmark_fashion_mnist.py --work_dir W --datasets {dataset} "
            "--arms <arm> --seeds <seeds>` with the flags of its first columns (e.g. `--epochs 80`); settings shared "
            f"by every row: `{json.dumps(shared, sort_keys=True)}`. {SETTING_NOTE}",
            "",
            *lines,
            "",
            *runs,
        ]
    )


def plot(rows: list[dict], fields: list[str]) -> plt.Figure:
    """Grouped bars per row: the arm's two mean-pooled readouts against the references, ± one std over seeds."""
    bars = (
        ("linear probe (mean-pooled)", lambda row: row["arm"]["linear_mean"]),
        ("k-NN (mean-pooled)", lambda row: row["arm"]["knn_mean"]),
        ("raw-pixel k-NN", lambda row: row["raw_pixels"]["knn_pixels"]),
        ("random-init encoder (best readout)", lambda row: best_readout(row["random_init"], READOUTS)),
    )
    width = 0.8 / len(bars)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.6 * len(rows) + 2), 4.2))
    for index, (name, readout) in enumerate(bars):
        positions = [row_index + (index - (len(bars) - 1) / 2) * width for row_index in range(len(rows))]
        heights = [100 * readout(row)["mean"] for row in rows]
        # NaN draws no error bar: a single seed has no spread to show.
        errors = [100 * readout(row)["std"] if len(row["arm"]["seeds"]) > 1 else float("nan") for row in rows]
        axes.bar(positions, heights, width, yerr=errors, capsize=2, label=name)
    with_arm = len({row["arm_name"] for row in rows}) > 1
    names = [label(row, fields, with_arm).replace(", ", "\n") for row in rows]
    axes.set_xticks(range(len(rows)), names, fontsize=8)
    axes.set_ylabel("test accuracy (%)")
    axes.legend(fontsize=8, ncol=len(bars), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


def run_groups(rows: list[dict], fields: list[str]) -> dict[str, list[dict]]:
    """Rows by setting (label without the arm), keeping the settings where two or more arms have runs."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if row["runs"]:
            groups.setdefault(label(row, fields, with_arm=False), []).append(row)
    return {name: group for name, group in groups.items() if len(group) > 1}


def correlation(group: list[dict]) -> float | None:
    """Pearson r between the share of the garment hidden and the mean-pooled linear probe over a setting's runs."""
    runs = [run for row in group for run in row["runs"]]
    hidden, accuracy = (np.array([run[key] for run in runs]) for key in ("garment_masked", "linear_mean"))
    if len(runs) < 3 or hidden.std() == 0 or accuracy.std() == 0:
        return None
    return float(np.corrcoef(hidden, accuracy)[0, 1])


def plot_runs(groups: dict[str, list[dict]]) -> plt.Figure:
    """One panel per setting: every run's mean-pooled linear probe against the share of the garment it hid."""
    figure, panels = plt.subplots(1, len(groups), figsize=(4.2 * len(groups) + 1.5, 4.2), sharey=True, squeeze=False)
    colours = {arm: f"C{index}" for index, arm in enumerate(ARMS)}
    for axes, (name, group) in zip(panels[0], groups.items(), strict=True):
        for row in group:
            axes.scatter(
                [100 * run["garment_masked"] for run in row["runs"]],
                [100 * run["linear_mean"] for run in row["runs"]],
                color=colours[row["arm_name"]],
                label=ARM_DESCRIPTIONS[row["arm_name"]],
            )
        r = correlation(group)
        axes.set_title(name if r is None else f"{name}: r = {r:.2f}", fontsize=9)
        axes.set_xlabel("garment patches hidden by the masks (%)")
        axes.grid(alpha=0.3)
    panels[0][0].set_ylabel("linear probe, mean-pooled (%)")
    handles = {}
    for axes in panels[0]:
        handles |= {text: handle for handle, text in zip(*axes.get_legend_handles_labels(), strict=True)}
    figure.legend(handles.values(), handles.keys(), fontsize=8, loc="lower center", ncol=2, frameon=False)
    figure.tight_layout(rect=(0, 0.08 + 0.04 * (len(handles) // 2), 1, 1))
    return figure


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", nargs="+", type=Path, required=True)
    parser.add_argument("--dataset", choices=DATASETS, default="cluttered")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=["mae"])
    parser.add_argument("--output", type=Path, required=True, help="Prefix of the .md, .json and .png it writes.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    rows = collect(args.work_dir, args.dataset, args.arms)
    if not rows:
        sys.exit(
            f"error: no cached {args.dataset} results for {' or '.join(args.arms)} with both references under "
            f"{', '.join(map(str, args.work_dir))}; run benchmark_fashion_mnist.py with that --work_dir first."
        )
    fields = varying_fields(rows)
    rows.sort(key=lambda row: order(row, fields))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    flags = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "benchmarks/benchmark_settings_report.py", *flags])
    groups = run_groups(rows, fields)
    runs_figure = args.output.with_name(f"{args.output.name}_runs.png")
    runs = runs_section(groups, runs_figure.name)
    args.output.with_suffix(".md").write_text(markdown(rows, fields, args.dataset, command, runs))
    payload = {"command": command, "dataset": args.dataset, "arms": args.arms, "varying": fields, "rows": rows}
    args.output.with_suffix(".json").write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    plot(rows, fields).savefig(args.output.with_suffix(".png"), dpi=120)
    if groups:
        plot_runs(groups).savefig(runs_figure, dpi=120)
    for row in rows:
        print(f"{label(row, fields, True)}: margin over the best reference {margin(row) * 100:+.1f} points")
    print(f"wrote {args.output}.md, .json and .png ({len(rows)} rows)")
    return rows


if __name__ == "__main__":
    main()
