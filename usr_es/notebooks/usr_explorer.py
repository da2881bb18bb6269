"""The seed's interactive notebook, on the explorer's queries: `marimo edit "$(usr explore --notebook | head -1)"`
(needs the `explore` extra: `pip install 'usr_es[explore]'`). The root is `$USR_ROOT`, else the one `usr`
would use here. `usr explore` serves the same answers as a web page without marimo."""

import marimo

__generated_with = "0.25.2"
app = marimo.App(width="full")


@app.cell
def _():
    import atexit
    import os
    from pathlib import Path

    import marimo as mo

    from usr_es.explore import Explorer, Predicate, Query
    from usr_es.roots import find_root

    root = Path(os.environ["USR_ROOT"]) if os.environ.get("USR_ROOT") else find_root()
    explorer = Explorer(root)
    atexit.register(explorer.close)  # its scratch folder of replays
    names = [d.dataset for d in explorer.datasets() if d.status == "ok"]
    return Predicate, Query, explorer, mo, names, root


@app.cell
def _(mo, names, root):
    dataset = mo.ui.dropdown(options=names, value=names[0] if names else None, label="Dataset")
    mo.vstack([mo.md(f"# usr explorer\n\nRoot: `{root}` — {len(names)} dataset(s)"), dataset])
    return (dataset,)


@app.cell
def _(dataset, explorer, mo):
    mo.stop(dataset.value is None, mo.md("No dataset in this root."))
    head = explorer.overview(dataset.value)
    as_of = mo.ui.slider(0, max(head.head_seq, 1), value=head.head_seq, label="As of seq", full_width=True)
    motif = mo.ui.text(label="Motif (regex, any case)")
    include_deleted = mo.ui.checkbox(label="include deleted")
    with_ns = mo.ui.dropdown(options=head.namespaces, label="has namespace")
    sample = mo.ui.number(start=10, stop=500, step=10, value=50, label="Rows shown")
    mo.vstack([as_of, mo.hstack([motif, include_deleted, with_ns, sample])])
    return as_of, head, include_deleted, motif, sample, with_ns


@app.cell
def _(Query, as_of, dataset, explorer, head, include_deleted, mo, motif, sample, with_ns):
    query = Query(
        dataset=dataset.value,
        as_of=None if as_of.value >= head.head_seq else as_of.value,
        motif=motif.value,
        include_deleted=include_deleted.value,
        with_ns=(with_ns.value,) if with_ns.value else (),
    )
    page = explorer.rows(query, limit=int(sample.value))
    overview = explorer.overview(dataset.value, query.as_of)
    rows = mo.ui.table(page.rows, selection="single", label=f"{page.total:,} rows match (showing {len(page.rows)})")
    mo.vstack(
        [
            mo.md(
                f"**{overview.dataset}** at seq {overview.seq} (head {overview.head_seq}): {overview.rows:,} rows, "
                f"{overview.deleted:,} deleted, namespaces {', '.join(overview.namespaces) or 'none'}"
            ),
            rows,
        ]
    )
    return overview, page, query, rows


@app.cell
def _(explorer, mo, query):
    summary = explorer.summary(query)
    columns = [
        {"column": c.name, "kind": c.kind, "null %": c.null_pct, "min": c.min, "mean": c.mean, "max": c.max,
         "top": ", ".join(f"{v} ({n})" for v, n in c.top)}
        for c in summary.columns
    ]  # fmt: skip
    facts = (
        f"{summary.rows:,} rows · bio types {summary.bio_types} · alphabets {summary.alphabets} · "
        f"GC mean {summary.gc_mean} · overlay coverage {summary.coverage}"
    )
    mo.vstack([mo.md("## Summary of the filtered rows"), mo.md(facts), mo.ui.table(columns, selection=None)])
    return (summary,)


@app.cell
def _(explorer, mo, query, rows):
    chosen = rows.value[0]["id"] if rows.value else None
    mo.stop(chosen is None, mo.md("Select a row to see its history and blame."))
    record = explorer.record(query.dataset, chosen, query.as_of)
    history = [
        {"seq": e.credit.seq, "action": e.credit.action, "tool": e.credit.tool, "time": e.credit.timestamp_utc,
         "changes": "; ".join(f"{c.column}: {c.before} -> {c.after}" for c in e.changes)}
        for e in record.history.entries
    ]  # fmt: skip
    mo.vstack([mo.md(f"## Record `{record.id}`"), mo.ui.table(history, selection=None)])
    return (record,)


if __name__ == "__main__":
    app.run()
