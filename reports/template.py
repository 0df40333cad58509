"""The Jinja2 template of the HTML report (kept in a module so it ships with the package as code).

Rendered with ``autoescape=True``: every string from rows and configs is escaped. The page is
self-contained: inline CSS, images as ``data:`` URIs, no scripts, no external references.
"""

TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; margin: 0 2rem 3rem; color: #1d1d1f; background: #fff; }
h1 { margin-top: 1.2rem; font-size: 1.6rem; }
h2 { border-bottom: 2px solid #ddd; padding-bottom: .2rem; margin-top: 2.2rem; }
h3 { margin-top: 1.6rem; }
.meta { color: #555; font-size: .9rem; }
.note { background: #fff6d6; border-left: 4px solid #e0b000; padding: .5rem .8rem; margin: .6rem 0; }
.warn { background: #fdecea; border-left: 4px solid #c62828; padding: .5rem .8rem; margin: .6rem 0; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .86rem; }
div.wide { overflow-x: auto; max-width: 100%; }  /* a table of many encoders scrolls inside the page, not the page */
th, td { border: 1px solid #d0d0d0; padding: .25rem .5rem; vertical-align: top; }
th { background: #f1f3f5; text-align: left; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
.ci { color: #666; font-size: .8em; }
.delta { display: block; font-size: .85em; }
.good { color: #0b6e2a; background: #e3f5e8; }
.bad { color: #a61b1b; background: #fde7e7; }
.status-skipped { color: #8a6d00; background: #fff8e1; }
.status-failed { color: #a61b1b; background: #fde7e7; }
.absent { color: #aaa; }
.hp { display: block; color: #666; font-size: .75em; white-space: normal; max-width: 14rem; }
.degenerate { display: block; color: #a15c00; font-size: .75em; white-space: normal; max-width: 14rem; font-weight: bold; }
.verdict { background: #f4f8ff; border-left: 4px solid #1f5fbf; padding: .4rem .9rem; margin: .8rem 0; }
.verdict li { margin: .25rem 0; }
td.status-skipped, td.status-failed { max-width: 16rem; font-size: .8rem; }
.legend { font-size: .85rem; color: #333; max-width: 70rem; }
figure { margin: .8rem 0 1.4rem; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85rem; color: #444; }
.gallery { display: flex; flex-wrap: wrap; gap: 1rem; }
.gallery figure { margin: 0; width: 240px; }
.gallery img { width: 100%; image-rendering: auto; }
pre { background: #f7f7f9; border: 1px solid #e1e1e8; padding: .6rem; overflow-x: auto; font-size: .8rem; max-height: 32rem; }
code { font-size: .85em; }
table.encoders code { word-break: break-all; }
table.encoders td:first-child { white-space: nowrap; }
nav ul { columns: 2; }
details { margin: .5rem 0; }
summary { cursor: pointer; font-weight: 600; }
.answer h2 { margin-top: 1rem; }
.answer .legend { margin: .2rem 0 .4rem; }
h3.answer-lineage { margin: .6rem 0 .2rem; font-size: 1.05rem; }
table.answer-table { margin: .2rem 0 .6rem; }
table.answer-table td.sentence { max-width: 46rem; }
.sentence-good { color: #0b6e2a; }
.sentence-bad { color: #a61b1b; }
.sentence-degenerate { color: #a15c00; }
.sentence-problem { color: #a15c00; }
.sentence-untested { color: #555; font-style: italic; }
.tag-degenerate { color: #a15c00; font-size: .75em; font-weight: bold; }
ul.controls { margin: .2rem 0 .6rem; padding-left: 1.2rem; font-size: .9rem; }
ul.controls li { margin: .2rem 0; }
.control-ok { color: #0b6e2a; }
.control-bad { color: #b71c1c; font-weight: bold; }
.control-unknown { color: #a15c00; }
.run-boxes { display: flex; flex-wrap: wrap; gap: .6rem; }
.run-box { border: 1px solid #d0d0d0; border-radius: 4px; padding: .4rem .6rem; font-size: .85rem; flex: 1 1 16rem; max-width: 24rem; background: #fafbfc; }
.run-box .own-note { font-size: .8rem; color: #333; margin-top: .2rem; }
details.schedule { font-size: .85rem; max-width: 80rem; }
details.schedule summary { font-weight: normal; }
details.schedule .opening { color: #555; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p class="meta">Generated {{ generated }} from {{ runs|length }} run director{{ "y" if runs|length == 1 else "ies" }}:
{% for run in runs %}<code>{{ run.label }}</code>{% if not loop.last %}, {% endif %}{% endfor %}.
{{ n_rows }} result rows, {{ n_encoders }} encoder{{ "" if n_encoders == 1 else "s" }}.</p>

{% macro verdict_list(lin) %}
<ul class="verdict-lines">
{% for v in lin.verdicts %}
<li><strong>{{ v.line.suite }} / {{ v.line.task }} / {{ v.line.metric }}</strong>{% if v.line.variant %} ({{ v.line.variant }}){% endif %} on {{ v.line.dataset }}{% if v.line.n %}, n={{ v.line.n }}{% endif %}:
{% for label, name, cell in v.entries %}{{ label }} {% if cell.status == "ok" %}{{ cell.value|num }}{% if cell.sd is not none %} &plusmn; {{ cell.sd|num }} <span class="ci">(sd over seeds)</span>{% elif cell.ci_low is not none and cell.ci_high is not none %} [{{ cell.ci_low|num }}, {{ cell.ci_high|num }}]{% endif %}{% if cell.degenerate %} <span class="degenerate" title="{{ cell.degenerate }}">degenerate</span>{% endif %}{% else %}{{ cell.status }}{% endif %}{% if not loop.last %}; {% endif %}{% endfor %}{% if v.line.baseline is not none %} (trivial baseline {{ v.line.baseline|num }}){% endif %}.
<em>{{ v.summary }}.</em></li>
{% else %}<li>No ok rows to judge.</li>
{% endfor %}
</ul>
{% endmacro %}

<section id="summary" class="answer">
<h2>Answer</h2>
{% if lineages %}
{% set tables = lineages|rejectattr("summary.controls_only")|list %}
{% if tables %}<p class="legend">Per suite its headline metric; per arm the mean &plusmn; sd between training seeds (K seeds) or one run's value, &Delta; vs the original
(<span class="good">green</span> / <span class="bad">red</span>: significantly better / worse); verdicts after {{ correction }} over every test of the lineage (&alpha; = {{ alpha }}).</p>{% endif %}
{% for lin in tables %}
{% set sm = lin.summary %}
<h3 class="answer-lineage">Lineage <a href="#lineage-{{ sm.index }}">{{ sm.name }}</a></h3>
<table class="answer-table">
<thead><tr><th>Suite</th><th>Headline metric</th>
{% for col in sm.columns %}<th>{{ col.label }}{% if col.k > 1 %} <span class="ci">K={{ col.k }}</span>{% endif %}</th>{% endfor %}
<th>Verdict</th></tr></thead>
<tbody>
{% for sl in sm.lines %}
<tr><td><strong>{{ sl.suite }}</strong></td>
<td title="{{ sl.line.dataset }}{% if sl.line.n %}, n={{ sl.line.n }}{% endif %}{% if sl.line.baseline is not none %}, trivial baseline {{ sl.line.baseline|num }}{% endif %}">{{ sl.line.task }} {{ sl.line.metric }} {{ "&uarr;"|safe if sl.line.higher_is_better else "&darr;"|safe }}{% if sl.line.variant %} <span class="ci">{{ sl.line.variant }}</span>{% endif %}</td>
{% for value in sl.values %}<td class="num{% if value.tone %} {{ value.tone }}{% endif %}" title="{{ value.title }}">{{ value.text }}{% if value.delta %} <span class="ci">&Delta;{{ value.delta }}</span>{% endif %}{% if value.degenerate %} <span class="tag-degenerate" title="{{ value.degenerate }}">degenerate</span>{% endif %}</td>{% endfor %}
<td class="sentence{% if sl.tone %} sentence-{{ sl.tone }}{% endif %}">{{ sl.sentence }}</td></tr>
{% endfor %}
</tbody></table>
{% endfor %}
{% if controls %}
<h3 class="answer-lineage">Controls: is a planted difference flagged, and only that?</h3>
<p class="legend">On each suite's headline metric (or the line a suite declares for controls: grad's headline is DPO minus SFT, which a defect that moves both maps leaves near zero, so its positive control is judged on the SFT maps' inside mass), against the encoder each control was made from, after {{ correction }} (&alpha; = {{ alpha }}): the positive control must be flagged significantly worse, the null control (a seed-only retraining) on no line of the suite. A control that does not behave is marked &#10007; in red: a finding about the instrument.</p>
<ul class="controls">
{% for sc in controls %}<li><strong>{{ sc.suite }}</strong>: {% for check in sc.checks %}<span class="control-{{ 'ok' if check.behaved else ('bad' if check.behaved is false else 'unknown') }}">{{ "&#10003;"|safe if check.behaved else ("&#10007;"|safe if check.behaved is false else "?") }} {{ check.text }}</span>{% if not loop.last %}; {% endif %}{% endfor %}.</li>
{% endfor %}
</ul>
{% else %}
<p class="legend">No controls in these runs (a <code>positive-control</code> or <code>null-control</code> role; <code>python -m benchmarks.demo --control</code> runs them).</p>
{% endif %}
{% else %}<p>No lineage: no rows to judge.</p>{% endif %}
</section>
{% for warning in warnings %}<div class="warn">{{ warning }}</div>{% endfor %}

<section id="method">
<h2>How these numbers were made</h2>
<div class="run-boxes">
{% for box in method.boxes %}
<div class="run-box"><code>{{ box.label }}</code>
<div>{{ box.suites|join(", ") or "no ok rows" }}{% if box.data %} on {{ box.data|join(", ") }}{% endif %}</div>
<div class="meta">{{ box.encoders }} encoder{{ "" if box.encoders == 1 else "s" }}, {{ box.ok }} row{{ "" if box.ok == 1 else "s" }} ok{% if box.skipped %}, {{ box.skipped }} skipped{% endif %}{% if box.failed %}, {{ box.failed }} failed{% endif %}{% if box.seconds %}, {{ box.seconds }}{% endif %}{% if box.hardware %}; {{ box.hardware }}{% endif %}</div>
{% if box.shared %}<div class="meta">Note{{ "s" if box.shared|length > 1 else "" }} {% for letter in box.shared %}<a href="#note-{{ letter }}">{{ letter }}</a>{% if not loop.last %}, {% endif %}{% endfor %} (below)</div>{% endif %}
{% if box.own_note %}{% if box.own_note_is_short %}<div class="own-note">{{ box.own_note }}</div>{% else %}<details><summary>Its own note ({{ box.own_note.split()|length }} words)</summary><div class="own-note">{{ box.own_note }}</div></details>{% endif %}{% endif %}
</div>
{% endfor %}
</div>
{% if method.hardware %}<p class="meta">Every run computed on: {{ method.hardware }}.</p>{% endif %}
{% for note in method.shared_notes %}
<details id="note-{{ note.letter }}" class="schedule"><summary>Note {{ note.letter }}, carried by {{ note.runs|length }} runs ({{ note.runs|join(", ") }}; {{ note.words }} words): <span class="opening">{{ note.opening }}</span></summary>
<p>{{ note.text }}</p></details>
{% endfor %}
</section>

<nav><ul>
<li><a href="#summary">Answer</a></li>
<li><a href="#method">How these numbers were made</a></li>
{% for lin in lineages %}<li><a href="#lineage-{{ loop.index }}">Lineage {{ lin.name }}</a></li>{% endfor %}
<li><a href="#provenance">Provenance</a></li>
<li><a href="#not-ok">Skipped and failed rows ({{ not_ok|length }})</a></li>
</ul></nav>

{% macro value_cell(cell, is_original) -%}
{%- if cell.status == "absent" -%}<td class="num absent">&mdash;</td>
{%- elif cell.status != "ok" -%}<td class="status-{{ cell.status }}" title="{{ cell.reason }}">{{ cell.status }}{% if cell.reason %}: {{ cell.reason }}{% endif %}</td>
{%- else -%}
<td class="num{% if cell.significant and cell.better is not none and not is_original %}{{ ' good' if cell.better else ' bad' }}{% endif %}"
 title="{% if cell.ci_low is not none %}95% CI [{{ cell.ci_low|num }}, {{ cell.ci_high|num }}]{% endif %}{% if cell.n %}, n={{ cell.n }}{% endif %}{% if cell.note %}; {{ cell.note }}{% endif %}{% if cell.p_value is not none %}; p={{ '%.3g'|format(cell.p_value) }} raw, {{ '%.3g'|format(cell.p_adjusted) }} {{ correction }}-adjusted{% endif %}">
{{ cell.value|num }}{% if cell.ci_low is not none and cell.ci_high is not none %} <span class="ci">&plusmn;{{ ((cell.ci_high - cell.ci_low) / 2)|num }}</span>{% endif %}
{%- if cell.delta is not none %}<span class="delta">&Delta; {{ cell.delta|signed }}{% if cell.significant %}{{ "*" if cell.test == "paired" else "&dagger;"|safe }}{% endif %}{% if cell.p_adjusted is not none %} <span class="ci">p<sub>adj</sub>={{ '%.2g'|format(cell.p_adjusted) }}</span>{% endif %}</span>{% endif %}
{%- if cell.selected %}<span class="hp">{{ cell.selected|selected }}</span>{% endif %}
{%- if cell.vision_gain is not none %}<span class="hp">vision gain {{ cell.vision_gain|signed }} over blind {{ cell.blind|num }}</span>{% endif %}
{%- if cell.degenerate %}<span class="degenerate" title="{{ cell.degenerate }}">degenerate: {{ cell.degenerate }}</span>{% endif %}
</td>
{%- endif -%}
{%- endmacro %}

{% macro summary_table(lin, lines) %}
<div class="wide"><table class="summary">
<thead><tr><th>Suite</th><th>Task</th><th>Dataset</th><th>Metric</th><th>n</th><th>Classes</th><th>Chance</th><th title="the score of a predictor that ignores the input (extra.trivial_baseline)">Trivial</th>
{% for enc in lin.encoders %}<th>{{ enc.name }}{% if enc.role %}<br><span class="ci">{{ enc.role }}</span>{% endif %}</th>{% endfor %}
</tr></thead>
<tbody>
{% for line in lines %}
<tr><td>{{ line.suite }}</td><td>{{ line.task }}{% if line.variant %} <span class="ci">({{ line.variant }})</span>{% endif %}</td><td>{{ line.dataset }}</td>
<td>{{ line.metric }} {{ "&uarr;"|safe if line.higher_is_better else "&darr;"|safe }}</td>
<td class="num">{{ line.n or "" }}</td><td class="num">{{ line.n_classes if line.n_classes is not none else "" }}</td><td class="num">{{ line.chance|num if line.chance is not none else "" }}</td><td class="num">{{ line.baseline|num if line.baseline is not none else "" }}</td>
{% for cell in line.cells %}{{ value_cell(cell, lin.encoders[loop.index0].name == lin.name) }}{% endfor %}
</tr>
{% endfor %}
</tbody>
</table></div>
{% endmacro %}

{% for lin in lineages %}
<section id="lineage-{{ loop.index }}">
<h2>Lineage {{ lin.name }}</h2>
{% if not lin.has_original %}<p class="note">The original encoder <code>{{ lin.name }}</code> is not in these runs, so no deltas are shown.</p>{% endif %}
<div class="verdict"><strong>Verdict details</strong>{{ verdict_list(lin) }}</div>
{% if lin.replicated %}
<h3>Arms: training-seed replicates together</h3>
<table class="summary arms">
<thead><tr><th>Suite</th><th>Task</th><th>Dataset</th><th>Metric</th><th>n</th><th>Trivial</th>
{% for arm in lin.arms %}<th>{{ arm.label }}<br><span class="ci">{{ arm.k }} replicate{{ "" if arm.k == 1 else "s" }}</span></th>{% endfor %}
</tr></thead>
<tbody>
{% for item in lin.arm_lines %}
<tr><td>{{ item.line.suite }}</td><td>{{ item.line.task }}{% if item.line.variant %} <span class="ci">({{ item.line.variant }})</span>{% endif %}</td><td>{{ item.line.dataset }}</td>
<td>{{ item.line.metric }} {{ "&uarr;"|safe if item.line.higher_is_better else "&darr;"|safe }}</td><td class="num">{{ item.line.n or "" }}</td>
<td class="num">{{ item.line.baseline|num if item.line.baseline is not none else "" }}</td>
{% for cell in item.cells %}
{%- if cell.status == "absent" -%}<td class="num absent">&mdash;</td>
{%- elif cell.status != "ok" -%}<td class="status-{{ cell.status }}" title="{{ cell.reason }}">{{ cell.status }}{% if cell.reason %}: {{ cell.reason }}{% endif %}</td>
{%- else -%}<td class="num{% if cell.significant and cell.better is not none %}{{ ' good' if cell.better else ' bad' }}{% endif %}" title="{{ cell.note }}{% if cell.p_value is not none %}; p={{ '%.3g'|format(cell.p_value) }} raw, {{ '%.3g'|format(cell.p_adjusted) }} {{ correction }}-adjusted{% endif %}">
{{ cell.value|num }}{% if cell.sd is not none %} <span class="ci">&plusmn;{{ cell.sd|num }} sd</span>{% endif %}
{%- if cell.delta is not none %}<span class="delta">&Delta; {{ cell.delta|signed }}{% if cell.significant %}&Dagger;{% endif %}{% if cell.p_adjusted is not none %} <span class="ci">p<sub>adj</sub>={{ '%.2g'|format(cell.p_adjusted) }}</span>{% endif %}</span>{% endif %}
{%- if cell.degenerate %}<span class="degenerate" title="{{ cell.degenerate }}">degenerate: {{ cell.degenerate }}</span>{% endif %}</td>
{%- endif -%}
{% endfor %}</tr>
{% endfor %}
</tbody></table>
<p class="legend">Each arm: the mean over its training-seed replicates &plusmn; their standard deviation (between seeds). &Delta; = arm mean minus the original's value;
&Dagger; = significant after the {{ correction }} correction with the {{ arms_test }} ({{ lin.tests.arms }} test{{ "" if lin.tests.arms == 1 else "s" }}): it counts both the seeds' and the evaluation items' noise, so a difference between single runs that seed noise explains is not called significant. The per-encoder table below shows each replicate; its replicates are not tested one by one.</p>
{% endif %}
<h3>Summary</h3>
{% if lin.flat %}{{ summary_table(lin, lin.flat) }}{% else %}<p>No rows without a layer.</p>{% endif %}
{% if lin.layered %}
<details><summary>Per-layer rows ({{ lin.layered|length }})</summary>
{{ summary_table(lin, lin.layered) }}
</details>
{% endif %}
<p class="legend">Cells: value &plusmn; half-width of its 95% confidence interval (hover for the interval, n and the test).
&uarr; higher is better, &darr; lower is better. &Delta; = value minus the original's value, in the metric's unit
(percentage points for accuracies). Multiple comparisons: the {{ lin.tests.family }} p-values of this lineage (every &Delta; here and in the per-layer rows, plus the verdicts' +PIVOT vs +SFT tests) are adjusted together with {{ correction }}'s method;
green / red (better / worse than the original) and a mark appear <em>only</em> where the {{ correction }}-adjusted p is below {{ alpha }}; raw and adjusted p are on hover, p<sub>adj</sub> under each &Delta;.
<strong>*</strong> = paired bootstrap over the per-item scores of both encoders on the same items ({{ lin.tests.paired }} test{{ "" if lin.tests.paired == 1 else "s" }}).
<strong>&dagger;</strong> = no usable per-item scores ({{ lin.tests.ci }} cell{{ "" if lin.tests.ci == 1 else "s" }}): unpaired z-test with standard errors from the two 95% CIs.
No colour or mark = not significant after correction, or untested because neither per-item scores nor CIs exist ({{ lin.tests.none }} cell{{ "" if lin.tests.none == 1 else "s" }} untested).
Trivial = the score of a predictor that ignores the input (majority class, one class for every pixel, a map without spatial information);
a cell marked <span class="degenerate" style="display:inline">degenerate</span> has constant predictions or is not significantly above that baseline (95% bootstrap CI of the difference over the same items): it measures nothing. A degenerate original is never compared; a row that fell to its baseline where the original stands above it is compared (that fall is the finding: the token-shuffled positive control of <code>python -m benchmarks.demo --control</code> is flagged this way).
n = evaluation items; chance = the accuracy of guessing uniformly (top-k: k / classes); small grey text under a value = the hyperparameters the probe selected on held-out train data.</p>

{% for error in lin.figure_errors %}<p class="warn">{{ error }}</p>{% endfor %}
{% if lin.figures %}<h3>Figures</h3>
{% for fig in lin.figures %}
<figure><img alt="{{ fig.title }}" src="data:image/png;base64,{{ fig.png_base64 }}"><figcaption><strong>{{ fig.title }}.</strong> {{ fig.caption }}</figcaption></figure>
{% endfor %}{% endif %}

{% if lin.galleries %}<h3>Galleries</h3>
{% for gal in lin.galleries %}
<h4>{{ gal.suite }} / {{ gal.task }}</h4>
<div class="gallery">
{% for img in gal.images %}
<figure><img alt="{{ img.encoder }}" src="data:{{ img.mime }};base64,{{ img.data_base64 }}"><figcaption><strong>{{ img.encoder }}</strong><br><span class="ci">{{ img.detail }}</span></figcaption></figure>
{% endfor %}
</div>
{% for note in gal.notes %}<p class="warn">{{ note }}</p>{% endfor %}
{% endfor %}{% endif %}
</section>
{% endfor %}

<section id="provenance">
<h2>Provenance</h2>
<h3>Encoders</h3>
<table class="encoders">
<thead><tr><th>Encoder</th><th>Role</th><th>Lineage</th><th>Weights hash</th><th>Checkpoint</th><th>Family / arch</th><th>Runs</th><th>Remap report and other settings</th></tr></thead>
<tbody>
{% for enc in encoders %}
<tr><td>{{ enc.name }}</td><td>{{ enc.role }}</td><td>{{ enc.lineage }}</td>
<td>{% for h in enc.weights_hashes %}<code>{{ h }}</code><br>{% endfor %}</td>
<td>{% for c in enc.checkpoints %}<code>{{ c }}</code><br>{% endfor %}</td>
<td>{{ enc.family }}{% if enc.family and enc.arch %} / {% endif %}{{ enc.arch }}</td>
<td>{% for r in enc.runs %}<code>{{ r }}</code><br>{% endfor %}</td>
<td>{% if enc.details %}<details><summary>{{ enc.details_summary }}</summary><pre>{{ enc.details }}</pre></details>{% endif %}</td></tr>
{% endfor %}
</tbody>
</table>

<h3>Versions</h3>
<table class="versions"><thead><tr><th>Package</th><th>Version</th><th>Source</th></tr></thead><tbody>
{% for v in versions %}<tr><td>{{ v.name }}</td><td>{{ v.version }}</td><td>{{ v.source }}</td></tr>{% endfor %}
</tbody></table>

{% for run in runs %}
<h3>Run <code>{{ run.label }}</code></h3>
<p class="meta">Directory: <code>{{ run.path }}</code>; rows: {{ run.counts.ok }} ok, {{ run.counts.skipped }} skipped, {{ run.counts.failed }} failed.</p>
{% if run.hardware %}<p class="meta">Computed on: {{ run.hardware }}</p>{% endif %}
{% if run.cache_hits %}<p class="meta">Feature store: {{ run.cache_hits }}</p>{% endif %}
{% if run.config_error %}<p class="warn">{{ run.config_error }}</p>{% endif %}
{% if run.timings %}
<table class="timings"><thead><tr><th>Timing</th><th>Seconds</th></tr></thead><tbody>
{% for key, value in run.timings %}<tr><td>{{ key }}</td><td class="num">{{ value }}</td></tr>{% endfor %}
</tbody></table>
{% endif %}
{% if run.config_json %}
<details><summary>config.json</summary><pre>{{ run.config_json }}</pre></details>
{% else %}<p class="meta">No config.json.</p>{% endif %}
{% endfor %}

{% if row_timings %}
<h3>Per-row timings</h3>
<table class="row-timings"><thead><tr><th>Encoder</th><th>Suite</th><th>Task</th><th>Dataset</th><th>Timings (seconds)</th></tr></thead><tbody>
{% for t in row_timings %}<tr><td>{{ t.encoder }}</td><td>{{ t.suite }}</td><td>{{ t.task }}</td><td>{{ t.dataset }}</td><td>{{ t.timings }}</td></tr>{% endfor %}
</tbody></table>
{% endif %}

{% if duplicates %}
<h3>Duplicate rows across runs</h3>
<ul>{% for d in duplicates %}<li>{{ d }}</li>{% endfor %}</ul>
{% endif %}
</section>

<section id="not-ok">
<h2>Skipped and failed rows</h2>
{% if not_ok %}
<table class="not-ok"><thead><tr><th>Run</th><th>Encoder</th><th>Suite</th><th>Task</th><th>Dataset</th><th>Metric</th><th>Status</th><th>Reason</th></tr></thead><tbody>
{% for item in not_ok %}<tr class="status-{{ item.row.status }}"><td><code>{{ item.run.label }}</code></td><td>{{ item.row.encoder }}</td><td>{{ item.row.suite }}</td><td>{{ item.row.task }}</td><td>{{ item.row.dataset }}</td><td>{{ item.row.metric }}</td><td>{{ item.row.status }}</td><td>{{ item.row.reason or "(no reason given)" }}</td></tr>{% endfor %}
</tbody></table>
{% else %}<p>None: every row has status ok.</p>{% endif %}
</section>
</body>
</html>
"""
