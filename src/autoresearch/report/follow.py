"""How the live page of `autoresearch serve` follows a loop without loading itself again.

The page polls `state.json` every two seconds (the trials in flight). When its version moved (a
trial started or finished), it asks `update.json?v=<the version it shows>` for what changed
since: the summary, the line under the heading, and the rows, kept trials' sections and crash
tails that are new, changed or gone, which it puts in place. The plot is fetched again
(`progress.png`) at most every PLOT_EVERY seconds: drawing it is most of the server's time, and
the page the whole of it. A page reloaded itself at each change: at 2,000 trials 1.4 MB, and
with fast trials or several workers it was almost always reloading.

The server remembers the parts of the last KEEP versions it served; a page showing one it no
longer knows (a server restarted, a tag switched, a new column in the table) loads itself whole.
With JavaScript off the page is a plain full page.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autoresearch.report.page import Parts
    from autoresearch.report.study import Study

PLOT_EVERY = 30.0  # seconds: the live page fetches the plot again at most this often
KEEP = 64  # versions whose parts the server remembers (pages a few changes behind still update)

LIVE_JS = """
(function(){
  var version = document.body.dataset.version, box = document.getElementById('live');
  var plotAt = Date.now(), plotWait = null, EVERY = @EVERY@;
  function say(text){ box.textContent = text; }
  say('connecting\u2026');
  function plot(){  // at most every EVERY ms: the plot is the costly part to draw
    var img = document.getElementById('progress');
    if (!img || plotWait !== null) return;
    plotWait = setTimeout(function(){
      plotWait = null; plotAt = Date.now();
      img.src = 'progress.png?v=' + encodeURIComponent(version);
    }, Math.max(0, plotAt + EVERY - Date.now()));
  }
  function element(html){ var t = document.createElement('template'); t.innerHTML = html; return t.content.firstElementChild; }
  function apply(u){
    if (u.reload) { location.reload(); return false; }
    document.title = u.title + ' \\u00b7 ' + u.name;
    document.getElementById('sub').innerHTML = u.sub;
    document.getElementById('summary').innerHTML = u.summary;
    var img = document.getElementById('progress'); if (img) img.alt = u.title;
    Object.keys(u.lists).forEach(function(id){
      var list = document.getElementById(id), change = u.lists[id];
      var mine = function(k){ var e = document.getElementById(k); return e && e.parentNode === list ? e : null; };
      change.drop.forEach(function(k){ var e = mine(k); if (e) e.remove(); });
      change.put.slice().reverse().forEach(function(p){  // (from the last: the one after a new one is in place)
        var e = mine(p[0]), n = element(p[1]), next = p[2] && mine(p[2]);
        if (e) e.replaceWith(n); else if (next) list.insertBefore(n, next); else list.appendChild(n);
      });
    });
    var table = document.getElementById('trials'), th = table && table.querySelector('th[data-dir]');
    if (th) arSort(table, Array.prototype.indexOf.call(th.parentNode.children, th), th.dataset.dir === 'asc');
    version = u.version; document.body.dataset.version = version;
    plot();
    return true;
  }
  function show(s){
    var parts = s.running.map(function(t){
      return 'trial ' + t.number + (s.left ? '' : ': ' + t.phase + ' for ' + Math.round(s.now - t.started) + ' s');
    });
    say((s.left ? 'no loop is running: ' + parts.join(', ') + ' left running by a loop that is gone (killed?); ' +
                  '`autoresearch run` on this tag records it as interrupted'
         : parts.length ? 'in flight: ' + parts.join('; ') : 'no trial in flight') +
        ' \\u00b7 updated ' + new Date(s.now * 1000).toLocaleTimeString());
  }
  function poll(){
    fetch('state.json', {cache: 'no-store'}).then(function(r){ return r.json(); }).then(function(s){
      if (s.version === version) return s;
      return fetch('update.json?v=' + encodeURIComponent(version), {cache: 'no-store'})
        .then(function(r){ return r.json(); }).then(function(u){ return apply(u) ? s : null; });
    }).then(function(s){
      if (s === null) return;
      show(s);
      setTimeout(poll, 2000);
    }).catch(function(){ say('the server is not answering; retrying'); setTimeout(poll, 5000); });
  }
  poll();
})();
""".replace("@EVERY@", str(int(1000 * PLOT_EVERY)))


class Versions:
    """The page's parts as built for each of the last KEEP versions (an element unchanged from
    one version to the next is held once)."""

    def __init__(self) -> None:
        self._parts: OrderedDict[str, Parts] = OrderedDict()

    def parts(self, study: Study) -> Parts:
        from autoresearch.report.page import page_parts

        version = study.version()
        if (known := self._parts.get(version)) is not None:
            return known
        new = page_parts(study)
        if self._parts:
            last = next(reversed(self._parts.values()))
            for box, items in new.lists.items():
                was = last.lists.get(box, {})
                for k, html in items.items():
                    if was.get(k) == html:
                        items[k] = was[k]
        self._parts[version] = new
        while len(self._parts) > KEEP:
            self._parts.popitem(last=False)
        return new

    def changes(self, since: str, now: Parts) -> dict[str, object]:
        """What a page showing version `since` needs to show `now`: {"reload": true} when it
        must load itself whole (a version not known here, another tag, another table head)."""
        old = self._parts.get(since)
        if old is None or old.tag != now.tag or old.head != now.head:
            return {"reload": True, "version": now.version}
        lists = {}
        for box, items in now.lists.items():
            was = old.lists.get(box, {})
            order = list(items)  # (a new element goes before the one after it: with several workers
            after = dict(zip(order, order[1:], strict=False))  # trial 12 may be kept after trial 13)
            put = [[k, html, after.get(k)] for k, html in items.items() if was.get(k) != html]
            drop = [k for k in was if k not in items]
            if put or drop:
                lists[box] = {"put": put, "drop": drop}
        return {"version": now.version, "title": now.title, "name": now.name, "sub": now.sub,
                "summary": now.summary, "lists": lists}
