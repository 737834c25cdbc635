"""report.html: one self-contained page (inline CSS and JS, the plot as a data: URL) that loads
nothing from the network. Every piece of agent-provided text is escaped; a Content-Security-
Policy forbids the page any fetch but (for the live page) its own server's.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from html import escape

from autoresearch.decide import noise_groups
from autoresearch.events import dollars, percent
from autoresearch.ledger import clean_text
from autoresearch.records import Status, Trial
from autoresearch.report.plot import title
from autoresearch.report.study import Study, outcome, plain

DIFF_LINES = 400
LINE_CHARS = 2000
TAILS_SHOWN = 30
GAP = 300.0  # seconds with no trial running: longer is time between two invocations of the loop

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2125;background:#f6f7f9}
main{max-width:1280px;margin:0 auto;padding:18px 24px 60px}
h1{font-size:22px;margin:6px 0 2px}h2{font-size:18px;margin:28px 0 10px;border-bottom:1px solid #dde;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}.sub{color:#667;font-size:12px;word-break:break-all}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(210px,1fr));gap:10px}
.card{background:#fff;border:1px solid #e1e4e8;border-radius:8px;padding:9px 12px}
.card b{display:block;font-size:12px;color:#667;font-weight:600}.card span{font-size:17px}
.card small{display:block;color:#667;overflow-wrap:anywhere}
img.plot{width:100%;max-width:1320px;background:#fff;border:1px solid #e1e4e8;border-radius:8px}
.scroll{overflow-x:auto;background:#fff;border:1px solid #e1e4e8;border-radius:8px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{padding:4px 8px;border-bottom:1px solid #eef;text-align:left;vertical-align:top;white-space:nowrap}
td.d{white-space:normal;min-width:260px;overflow-wrap:anywhere}
th{background:#f0f2f5;cursor:pointer;user-select:none;position:sticky;top:0}
th[data-dir=asc]::after{content:" \\25B2"}th[data-dir=desc]::after{content:" \\25BC"}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.st{font-weight:600}.keep{color:#1a7f37}.discard,.duplicate{color:#777}.crash,.timeout{color:#c62828}
.rejected,.agent_error,.interrupted,.running{color:#b26a00}
tr.row-keep td{background:#f1faf3}.why{color:#777;font-size:12px}.flag{color:#a15c00;font-size:12px}
.good{color:#1a7f37}.bad{color:#c62828}
pre{background:#fff;border:1px solid #e1e4e8;border-radius:8px;padding:8px 10px;overflow-x:auto;
font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;margin:6px 0}
pre .a{color:#116329;background:#e6ffec}pre .r{color:#82071e;background:#ffebe9}pre .h{color:#8250df}pre .f{font-weight:700}
#live{position:sticky;top:0;z-index:2;background:#fff8e1;border:1px solid #f0d98c;border-radius:8px;padding:6px 12px;margin:8px 0}
"""

SORT_JS = """
function arSort(table, i, asc){
  var body = table.tBodies[0];
  var key = function(row){
    var c = row.cells[i]; var v = c.hasAttribute('data-v') ? c.getAttribute('data-v') : c.textContent;
    if (v === '') return null; var x = Number(v); return isNaN(x) ? v.toLowerCase() : x;
  };
  var rows = Array.prototype.slice.call(body.rows).map(function(r){ return [key(r), r]; });
  rows.sort(function(a, b){
    if (a[0] === null || b[0] === null) return (a[0] === null) - (b[0] === null);
    var c = (typeof a[0] === typeof b[0]) ? (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)
                                          : (typeof a[0] === 'number' ? -1 : 1);
    return asc ? c : -c;
  });
  rows.forEach(function(p){ body.appendChild(p[1]); });
}
document.querySelectorAll('table.sortable').forEach(function(table){
  table.querySelectorAll('th').forEach(function(th, i){
    th.addEventListener('click', function(){
      var asc = th.dataset.dir !== 'asc';
      table.querySelectorAll('th').forEach(function(h){ delete h.dataset.dir; });
      th.dataset.dir = asc ? 'asc' : 'desc';
      arSort(table, i, asc);
    });
  });
});
"""



def num(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def with_spread(t: Trial, name: str, value: float | None) -> str:
    spread = t.spread(name)
    return num(value) + (f" ± {spread:.2g}" if spread is not None and value is not None else "")


def gain_html(study: Study, t: Trial, ref: Trial | None) -> str:
    g = study.gain(t, ref)
    if g is None or ref is None:
        return ""
    delta, pct = g
    cls = "good" if study.improved(delta) else "bad" if delta else ""
    return f'<span class="{cls}">{delta:+.6g}' + ("" if pct is None else f" ({percent(pct)})") + "</span>"


def figure_names(study: Study) -> list[str]:
    names: list[str] = []
    for t in study.trials:
        for k in t.figures:
            if k not in names and k not in (study.metric, study.holdout):
                names.append(k)
    return names


# ---------------------------------------------------------------------------
# sections


def _card(label: str, value: str, note: str = "") -> str:
    return (f'<div class="card"><b>{escape(label)}</b><span>{value}</span>'
            + (f"<small>{note}</small>" if note else "") + "</div>")


def summary(study: Study) -> str:
    fin = study.finished
    counts: dict[str, int] = {}
    for t in fin:
        counts[t.status.value] = counts.get(t.status.value, 0) + 1
    base, best, failed = study.baseline, study.best, study.failed_baseline
    cards = [_card("trials", str(len(fin)), escape(", ".join(f"{n} {s}" for s, n in counts.items()))),
             _card("kept improvements", str(len(study.kept)))]
    if base is not None:
        cards.append(_card(f"baseline {study.metric}", escape(with_spread(base, study.metric, base.metric))))
    elif failed is not None:
        cards.append(_card(f"baseline {study.metric}", "none",
                           escape(f"trial {failed.number} {outcome(failed)}")))
    if best is not None:
        cards.append(_card(f"best {study.metric}", escape(with_spread(best, study.metric, best.metric)),
                           f"trial {best.number}: {escape(clean_text(best.description, 120))}"))
        if base is not None and best is not base:
            cards.append(_card("gain over the baseline", gain_html(study, best, base)))
        if study.holdout and study.holdout in best.figures:
            cards.append(_card(f"holdout {study.holdout} of the best", escape(num(best.figures[study.holdout])),
                               "sealed: never shown to an agent"))
    if study.noise > 0:
        runs = sum(map(len, noise_groups(study.trials, study.metric)))  # (as the loop pools it)
        cards.append(_card("noise (run-to-run σ)", escape(f"{study.noise:.3g}"),
                           (f"pooled over {runs} repeated runs; " if runs else "") + "shaded on the plot"))
    seconds = sum(t.run_seconds for t in fin)
    if seconds:
        cards.append(_card("experiment time", escape(_duration(seconds))))
    cards += _wall_time(study)
    tin, tout = study.tokens
    if study.cost or tin or tout:
        cards.append(_card("cost", escape(dollars(study.cost)), escape(f"{tin:,} tokens in, {tout:,} out")))
    agents = sorted({t.agent + (f" ({t.model})" if t.model else "") for t in fin if t.agent and t.agent != "baseline"})
    if agents:
        cards.append(_card("agents", escape(", ".join(agents))))
    return '<div class="cards">' + "".join(cards) + "</div>"


def _wall_time(study: Study) -> list[str]:
    """The time trials were running, from the first one's start to the last one's end ('running'
    while a loop runs); a gap of over GAP seconds with no trial (the loop was not running
    between two invocations) is left out, and said."""
    now = time.time()

    def end(t: Trial) -> float:  # (an interrupted trial's `ended` is when a later run recorded it)
        return t.started + t.run_seconds if t.status is Status.INTERRUPTED else t.ended or now

    spans = sorted((t.started, end(t)) for t in study.trials
                   if t.started and (t.ended or t.status is Status.RUNNING and study.looping))
    if not spans:
        return []
    first, last = spans[0][0], max(b for _, b in spans)
    idle, reach = 0.0, first
    for a, b in spans:
        if a - reach > GAP:
            idle += a - reach
        reach = max(reach, b)
    day = time.strftime("%Y-%m-%d", time.localtime(first))

    def when(t: float) -> str:
        text = time.strftime("%Y-%m-%d %H:%M", time.localtime(t))
        return text[len(day) + 1:] if text.startswith(day) else text

    span = f"{day} {when(first)} → " + ("running" if study.looping else when(last))
    if idle:
        span += f"; {_duration(idle)} with no loop running left out"
    return [_card("wall time", escape(_duration(last - first - idle)), escape(span))]


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _cell(text: str, sort: str | float | None = None, cls: str = "") -> str:
    attrs = "" if sort is None else f' data-v="{escape(str(sort))}"'
    if cls:
        attrs += f' class="{cls}"'
    return f"<td{attrs}>{text}</td>"


def table_head(study: Study) -> str:
    heads = ["#", "status", study.metric]
    if study.holdout:
        heads.append(study.holdout + " (holdout)")
    heads += ["Δ vs parent", *figure_names(study), "seconds", "agent", "tokens", "cost", "commit", "description"]
    return "".join(f"<th>{escape(h)}</th>" for h in heads)


def table_rows(study: Study) -> dict[str, str]:
    """Each trial's row, by its element id (r-<n>: the live page replaces one that changed)."""
    names = figure_names(study)
    rows = {}
    for t in study.trials:
        ok = t.status is Status.KEEP
        parent = study.parent(t) if ok else None  # (only a keep's gain is shown)
        delta = study.gain(t, parent) if ok else None
        cells = [_cell(str(t.number), t.number, "n"),
                 _cell(f'<span class="st {t.status.value}">{t.status.value}</span>', t.status.value),
                 _cell(escape(with_spread(t, study.metric, t.metric)), num(t.metric), "n")]
        if study.holdout:
            h = t.figures.get(study.holdout) if ok else None
            cells.append(_cell(escape(num(h)), num(h), "n"))
        cells.append(_cell(gain_html(study, t, parent) if ok else "", num(delta[0]) if delta else "", "n"))
        for k in names:
            v = t.figures.get(k)
            cells.append(_cell(escape(with_spread(t, k, v)), num(v), "n"))
        cells += [_cell(f"{t.run_seconds:.1f}" if t.run_seconds else "", f"{t.run_seconds:.3f}", "n"),
                  _cell(escape(t.agent + (f" ({t.model})" if t.model else ""))),
                  _cell(f"{t.tokens_in + t.tokens_out:,}" if t.tokens_in or t.tokens_out else "",
                        t.tokens_in + t.tokens_out, "n"),
                  _cell(f"${t.cost:.4f}" if t.cost else "", f"{t.cost:.6f}", "n"),
                  _cell(f"<code>{escape(t.short)}</code>", t.short)]
        why = plain(t.why).strip()  # (not an agent error's reason again: its description says it)
        desc = escape(clean_text(t.description, 300))
        if why and not ok:
            desc += f'<br><span class="why">{escape(clean_text(why, 300))}</span>'
        for flag in t.flags:
            desc += f'<br><span class="flag">audit: {escape(clean_text(flag, 300))}</span>'
        cells.append(f'<td class="d">{desc}</td>')
        rows[f"r-{t.number}"] = f'<tr class="row-{t.status.value}" id="r-{t.number}">{"".join(cells)}</tr>'
    return rows


def table(study: Study, rows: dict[str, str] | None = None) -> str:
    rows = table_rows(study) if rows is None else rows
    return (f'<div class="scroll"><table id="trials" class="sortable"><thead><tr>{table_head(study)}</tr></thead>'
            f'<tbody id="rows">{"".join(rows.values())}</tbody></table></div>')


def diff_html(diff: str) -> str:
    lines = plain(diff).splitlines()
    more = len(lines) - DIFF_LINES
    out = []
    for line in lines[:DIFF_LINES]:
        line = line if len(line) <= LINE_CHARS else line[:LINE_CHARS] + " …"
        cls = ("f" if line.startswith(("diff --git", "+++", "---", "index ")) else
               "a" if line.startswith("+") else "r" if line.startswith("-") else
               "h" if line.startswith("@@") else "")
        out.append(f'<span class="{cls}">{escape(line)}</span>' if cls else escape(line))
    if more > 0:
        out.append(f"… {more} more lines")
    return "<pre class=\"diff\">" + "\n".join(out) + "</pre>"


def kept_section(study: Study) -> str:
    return "".join(kept_items(study).values())


def kept_items(study: Study) -> dict[str, str]:
    """Each kept trial's section by its element id (or what stands in for none)."""
    if not study.kept:
        return {"kept-none": f'<p id="kept-none">{escape(_no_keeps(study))}</p>'}
    parts = {}
    base = study.baseline
    for t in study.kept:
        parent = study.parent(t)
        figs = ", ".join(f"{k} {with_spread(t, k, v)}" for k, v in t.figures.items()
                         if k not in (study.metric, study.holdout))
        holdout = (f" · holdout {escape(study.holdout)} {escape(num(t.figures[study.holdout]))}"
                   if study.holdout and study.holdout in t.figures else "")
        vs_parent = (f"{gain_html(study, t, parent)} against trial {parent.number}" if parent else "")
        vs_base = (f" · {gain_html(study, t, base)} against the baseline"
                   if base is not None and parent is not base else "")
        diff = study.diffs.get(t.number)
        parts[f"trial-{t.number}"] = (
            f'<section class="kept" id="trial-{t.number}"><h3>trial {t.number} · '
            f"<code>{escape(t.short)}</code> · {escape(clean_text(t.description, 300))}</h3>"
            f"<div>{escape(study.metric)} {escape(with_spread(t, study.metric, t.metric))}{holdout} · "
            f"{vs_parent}{vs_base}</div>"
            + (f'<div class="why">{escape(figs)}</div>' if figs else "")
            + "".join(f'<div class="flag">audit: {escape(clean_text(f, 300))}</div>' for f in t.flags)
            + (diff_html(diff) if diff else '<div class="why">(no diff available)</div>')
            + "</section>")
    return parts


def _no_keeps(study: Study) -> str:
    failed = study.failed_baseline
    if failed is not None:
        crashed = failed.status in (Status.CRASH, Status.TIMEOUT)
        return (f"The baseline (trial {failed.number}) {outcome(failed)} before it gave a figure"
                + (" (its log tail is below)" if crashed else "") + ", so no trial can be compared "
                + ("to it: fix the task, commit, and start a new --tag." if crashed
                   else "to it yet: the running loop measures it again." if study.looping
                   else "to it: run the loop again."))
    if study.baseline is None and study.ended and not study.running:
        return f"No trial has finished. How the last run ended: {clean_text(study.ended, 600)}"
    if study.baseline is None:
        return "No trial has finished yet."
    return "No trial has beaten the baseline yet."


def crash_section(study: Study) -> str:
    return "".join(crash_items(study).values())


def crash_items(study: Study) -> dict[str, str]:
    """The crashes' heading and the last TAILS_SHOWN crashed trials' log tails, by element id."""
    crashed = [t for t in study.finished if t.status in (Status.CRASH, Status.TIMEOUT)]
    if not crashed:
        return {}
    more = len(crashed) - TAILS_SHOWN
    note = f"<p>(the last {TAILS_SHOWN} of {len(crashed)})</p>" if more > 0 else ""
    parts = {"crash-head": f'<div id="crash-head"><h2>Crashes: log tails</h2>{note}</div>'}
    for t in crashed[-TAILS_SHOWN:]:
        tail = study.tails.get(t.number) or plain(t.reason)
        parts[f"trial-{t.number}"] = (
            f'<section class="failed" id="trial-{t.number}"><h3>trial {t.number} · '
            f'<span class="st {t.status.value}">{t.status.value}</span> · '
            f"{escape(clean_text(t.description, 300))}</h3>"
            + (f"<pre>{escape(tail)}</pre>" if tail.strip() else "") + "</section>")
    return parts


# ---------------------------------------------------------------------------
# the page


@dataclass
class Parts:
    """The pieces of the page that change as a loop runs: the live page asks the server for
    those that changed (report/follow.py) instead of loading the whole page again."""

    tag: str
    version: str
    name: str  # the study's name (task and tag)
    title: str  # the plot's title: "N experiments, K kept improvements"
    sub: str  # the line under the heading
    summary: str
    head: str  # the trials table's head: a new column and the page is loaded again
    lists: dict[str, dict[str, str]]  # a container's id -> its elements' ids -> their html


def page_parts(study: Study) -> Parts:
    goal = "lower is better" if study.minimize else "higher is better"
    sub = f"{escape(study.source)} · {escape(study.metric)} ({goal}) · generated {time.strftime('%Y-%m-%d %H:%M:%S')}"
    return Parts(study.tag, study.version(), study.name, title(study), sub, summary(study), table_head(study),
                 {"rows": table_rows(study), "kept": kept_items(study), "crashes": crash_items(study)})


def render(study: Study, png: bytes, live: bool = False, parts: Parts | None = None) -> str:
    """The whole page. `live` adds a banner that polls state.json and brings in what changed."""
    from autoresearch.report.follow import LIVE_JS

    p = parts or page_parts(study)
    csp = ("default-src 'none'; img-src data:" + (" 'self'; connect-src 'self'" if live else "")
           + "; style-src 'unsafe-inline'; script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'")
    image = base64.b64encode(png).decode("ascii")
    gone = "left running by a loop that is gone (killed?): `autoresearch run` on this tag records it as interrupted"
    running = "".join(f"<li>trial {t.number} {'in flight' if study.looping else gone}</li>" for t in study.running)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{escape(p.title)} · {escape(study.name)}</title>
<style>{CSS}</style></head>
<body data-version="{escape(p.version)}"><main>
<h1>autoresearch · {escape(study.name)}</h1>
<div class="sub" id="sub">{p.sub}</div>
{'<div id="live"><noscript>JavaScript is off: this page does not follow the loop; reload it to see '
 'what is new</noscript></div>' if live else ''}
<h2>Summary</h2>
<div id="summary">{p.summary}</div>
{f'<ul>{running}</ul>' if running and not live else ''}
<h2>Progress</h2>
<img class="plot" id="progress" alt="{escape(p.title)}" src="data:image/png;base64,{image}">
<h2>Trials</h2>
<p class="sub">Click a column to sort.</p>
{table(study, p.lists["rows"])}
<h2>Kept trials: what changed and what it gained</h2>
<div id="kept">{"".join(p.lists["kept"].values())}</div>
<div id="crashes">{"".join(p.lists["crashes"].values())}</div>
</main>
<script>{SORT_JS}</script>
{f'<script>{LIVE_JS}</script>' if live else ''}
</body></html>
"""


def waiting_page(tag: str | None) -> str:
    """The live page before the loop has created its tag (`tag` None: any first tag)."""
    from autoresearch.report.follow import LIVE_JS

    csp = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'"
    what = f"tag {escape(tag)}" if tag else "the first loop"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<title>autoresearch · waiting for {what}</title><style>{CSS}</style></head>
<body data-version="waiting"><main><h1>autoresearch · waiting for {what}</h1>
<div id="live"><noscript>JavaScript is off: reload this page once the loop has started</noscript></div>
<p>This page reloads itself when the loop has started.</p>
</main><script>{LIVE_JS}</script></body></html>
"""
