"""One plotting style for every figure of the library, its benchmarks and its run folders (matplotlib, the
``plots`` extra).

* each method name keeps its colour and marker in every figure (:func:`method_style`);
* curves that coincide stay visible: the later one is drawn dashed with its own marker and the legend says
  "identical to ..." (:func:`plot_curves`) — ACIL under the joint ridge, FedAvg under FedProx;
* phase and round axes have integer ticks only (:func:`integer_axis`);
* log axes are labelled with plain numbers, 10, 100, 1,000 (:func:`plain_log_axis`);
* several seeds give error bars (the standard deviation over seeds);
* :func:`apply_style` sets the shared look; :func:`pyplot` calls it, so any figure made through ``pyplot()`` has it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

# Fixed assignments for the names the benchmarks use; any other name gets a stable colour from its hash.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
KNOWN_METHODS = (
    "ACIL", "G-ACIL", "DS-AL", "GKEAL", "AIR", "G-AIR", "AIR (packed32)", "G-AIR (packed32)", "AEF-OCL", "RanPAC",
    "FT (SGD)", "Joint (SGD)", "Joint (ridge)", "NCM", "SLDA", "AFL", "centralized ridge", "fedavg", "fedprox",
    "scaffold", "exact downdate", "retrain (closed form)", "retrain (SGD)", "FT", "GA", "NegGrad+", "RL",
    "l1-sparse", "SalUn", "SCRUB", "Boundary Shrink", "Forget Vector",
)


def method_style(name: str) -> dict:
    """Colour and marker of a method, the same in every figure.

    Args:
        name: the method's name as it appears in legends.

    Returns:
        ``{"color": ..., "marker": ...}`` for matplotlib.

    Example:
        >>> method_style("ACIL") == method_style("ACIL")
        True
    """
    if name in KNOWN_METHODS:
        index = KNOWN_METHODS.index(name)
    else:
        index = int(hashlib.sha256(name.encode()).hexdigest(), 16)
    return {"color": PALETTE[index % len(PALETTE)], "marker": MARKERS[index % len(MARKERS)]}


def apply_style(plt) -> None:
    """The shared look (grid, font sizes, no top/right spines) as matplotlib rc settings.

    Args:
        plt: matplotlib's pyplot module.
    """
    plt.rcParams.update({"axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
                         "legend.fontsize": 7, "axes.titlesize": 10, "axes.labelsize": 9, "figure.dpi": 120,
                         "savefig.dpi": 120, "lines.markersize": 4})


def integer_axis(axis, which: str = "x") -> None:
    """Ticks at whole numbers only (phases, rounds): no 1.5 or 2.5.

    Args:
        axis: a matplotlib Axes.
        which: ``"x"`` or ``"y"``.
    """
    from matplotlib.ticker import MaxNLocator

    getattr(axis, f"{which}axis").set_major_locator(MaxNLocator(integer=True))


def plain_number(value: float, _position=None) -> str:
    """A tick label without exponents: 10, 100, 1,000, 0.01.

    Args:
        value: the tick value.

    Returns:
        The label.

    Example:
        >>> plain_number(1000.0), plain_number(0.01), plain_number(20.0)
        ('1,000', '0.01', '20')
    """
    if value >= 1:
        return f"{value:,.0f}"
    return f"{value:.6g}"


def plain_log_axis(axis, which: str = "x", base: float = 10) -> None:
    """A log scale labelled with plain numbers (10, 100, 1,000 rather than 10², or 2×10¹); an axis spanning less
    than two decades (base 10) is labelled at 1, 2 and 5 times each power. Call it after plotting.

    Args:
        axis: a matplotlib Axes.
        which: ``"x"`` or ``"y"``.
        base: the logarithm's base (2 for feature dimensions).
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    getattr(axis, f"set_{which}scale")("log", base=base)
    low, high = getattr(axis, f"get_{which}lim")()
    narrow = base == 10 and high / max(low, np.finfo(float).tiny) < 100
    target = getattr(axis, f"{which}axis")
    target.set_major_locator(LogLocator(base=base, subs=(1.0, 2.0, 5.0) if narrow else (1.0,)))
    target.set_major_formatter(FuncFormatter(plain_number))
    target.set_minor_formatter(NullFormatter())


def identical_to(curves: dict[str, np.ndarray], tolerance: float = 1e-9) -> dict[str, str]:
    """For each curve equal (within ``tolerance``) to an earlier one, the name of the first such curve.

    Args:
        curves: name -> y values, in drawing order.
        tolerance: largest absolute difference that still counts as identical.

    Returns:
        name -> the earlier name it coincides with (names that coincide with none are absent).

    Example:
        >>> identical_to({"Joint (ridge)": np.array([1.0, 2.0]), "ACIL": np.array([1.0, 2.0]), "NCM": np.ones(2)})
        {'ACIL': 'Joint (ridge)'}
    """
    found, seen = {}, []
    for name, values in curves.items():
        values = np.asarray(values, np.float64)
        match = next((other for other, earlier in seen if earlier.shape == values.shape
                      and np.allclose(earlier, values, rtol=0.0, atol=tolerance, equal_nan=True)), None)
        if match is not None:
            found[name] = match
        else:
            seen.append((name, values))
    return found


def plot_curves(axis, x, curves: dict[str, np.ndarray], errors: dict[str, np.ndarray] | None = None) -> None:
    """One line per method in its fixed style; error bars where ``errors`` has the method; a curve identical to an
    earlier one is drawn dashed on top, its legend entry saying so.

    Args:
        axis: a matplotlib Axes.
        x: the shared x values.
        curves: method name -> y values (drawing order).
        errors: method name -> error bar half-heights (e.g. the standard deviation over seeds).
    """
    errors = errors or {}
    same = identical_to(curves)
    for name, values in curves.items():
        style = method_style(name)
        label = f"{name} (identical to {same[name]})" if name in same else name
        line = {"linestyle": "-", "label": label, **style}
        if name in same:  # a hollow, larger marker and a dashed line around the curve it coincides with
            line.update(linestyle="--", markerfacecolor="none", markersize=8)
        if name in errors and np.any(np.asarray(errors[name]) > 0):
            axis.errorbar(x, values, yerr=errors[name], capsize=2, **line)
        else:
            axis.plot(x, values, **line)


def pyplot():
    """matplotlib's pyplot with a file-only backend (Agg) and the shared style (:func:`apply_style`).

    Raises:
      ImportError: matplotlib is not installed (the message names the extra).
    """
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(f"plots need matplotlib ({error}): pip install 'analytic-learning[plots]'") from error

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    apply_style(plt)
    return plt


def save(figure, path) -> Path:
    """Lay out, write and close a figure.

    Args:
        figure: the matplotlib Figure.
        path: the image file (parent folders are created).

    Returns:
        ``path`` as a :class:`pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return path


def accuracy_per_phase(series: dict[str, list[np.ndarray]], path, *, title: str = "",
                       ylabel: str = "accuracy on seen classes (%)", xlabel: str = "phase") -> Path:
    """Accuracy against phase (or round), one curve per method: the mean over seeds, with error bars when a
    method has several seeds.

    Args:
        series: method name -> one array per seed (equal lengths).
        path: the image file.
        title: the figure title.
        ylabel: the y-axis label.
        xlabel: the x-axis label.

    Returns:
        ``path`` as a :class:`pathlib.Path`.
    """
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.5))
    means = {name: np.mean(np.asarray(runs, np.float64), axis=0) for name, runs in series.items()}
    spreads = {name: np.std(np.asarray(runs, np.float64), axis=0) for name, runs in series.items() if len(runs) > 1}
    length = max(len(values) for values in means.values())
    plot_curves(axis, np.arange(1, length + 1), means, spreads)
    integer_axis(axis, "x")
    axis.set(xlabel=xlabel, ylabel=ylabel, title=title)
    axis.legend()
    return save(figure, path)
