#!/usr/bin/env python3
"""Writes pgconn_exporter's Grafana dashboards: pgconn-overview.json and pgconn-target.json.

Python 3.11, standard library only. The JSON files are generated, never edited by hand:

    python3 dashboards/generate.py            # (re)write both files next to this script
    python3 dashboards/generate.py --check    # exit 1, naming the file, if a file on disk differs
    python3 dashboards/generate.py --queries  # every PromQL expression, one JSON object a line

The output is deterministic (sorted keys, 2-space indent, trailing newline): regenerating gives the same
bytes. Every dashboard is checked before it is written (ids, grid overlaps, datasource references, units,
metric names, label filters), so a mistake fails here rather than at import into Grafana.

Metric names are those of docs/metrics.md (see Tests/PGConnCoreTests/Fixtures/golden/two-targets.prom for a
real page), plus the recording rules that config/prometheus/recording.yml must define.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Grafana 10.4 and 11 write schemaVersion 39; older 10.x load it as it is.
SCHEMA_VERSION = 39
GRID_WIDTH = 24

# Every panel and query points at the dashboard's datasource variable, never at a concrete uid.
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# The label filters. Per-target series carry `target` (from the exporter) and `job`, `instance` (added by
# Prometheus); exporter-level series only `job` and `instance`. Custom config labels such as `cluster` exist
# only on pgconn_target_info, so `cluster` narrows the `target` variable instead of the queries.
PER_TARGET = 'job=~"$job", instance=~"$instance", target=~"$target"'
PER_EXPORTER = 'job=~"$job", instance=~"$instance"'

# Every metric the dashboards may use: the families of the golden /metrics page, the series of its
# histograms, Prometheus' own per-scrape series, and the recording rules of config/prometheus/recording.yml.
PER_TARGET_HISTOGRAMS = ("pgconn_probe_duration_seconds", "pgconn_connect_duration_seconds",
                         "pgconn_outage_duration_seconds")
PER_TARGET_METRICS = {
    "pgconn_up",
    "pgconn_login_up",
    "pgconn_state",
    "pgconn_probes_total",
    "pgconn_probe_failures_total",
    "pgconn_connection_attempts_total",
    "pgconn_connection_failures_total",
    "pgconn_login_checks_total",
    "pgconn_login_failures_total",
    "pgconn_disconnects_total",
    "pgconn_resets_total",
    "pgconn_consecutive_failures",
    "pgconn_last_success_timestamp_seconds",
    "pgconn_session_start_timestamp_seconds",
    "pgconn_outages_total",
    "pgconn_downtime_seconds_total",
    "pgconn_backoff_seconds",
    "pgconn_server_info",
    "pgconn_server_in_recovery",
    "pgconn_server_start_time_seconds",
    "pgconn_target_info",
    *(h + s for h in PER_TARGET_HISTOGRAMS for s in ("_bucket", "_sum", "_count")),
}
RECORDING_RULES = {
    "target:pgconn_probe_duration_seconds:p50_rate5m",
    "target:pgconn_probe_duration_seconds:p90_rate5m",
    "target:pgconn_probe_duration_seconds:p99_rate5m",
    "target:pgconn_connect_duration_seconds:p50_rate5m",
    "target:pgconn_connect_duration_seconds:p99_rate5m",
    "target:pgconn_up:avg_over_time5m",
    "target_reason:pgconn_probe_failures:rate5m",
    "target_reason:pgconn_disconnects:rate5m",
}
EXPORTER_METRICS = {
    "pgconn_exporter_build_info",
    "pgconn_exporter_config_last_reload_successful",
    "pgconn_exporter_config_last_reload_success_timestamp_seconds",
    "pgconn_exporter_loop_lag_seconds_bucket",
    "pgconn_exporter_loop_lag_seconds_sum",
    "pgconn_exporter_loop_lag_seconds_count",
    "pgconn_exporter_loop_overdue_seconds",
    "pgconn_exporter_connects_in_progress",
    "pgconn_exporter_connects_waiting",
    "pgconn_exporter_dns_lookups_pending",
    "pgconn_exporter_log_lines_dropped_total",
    "pgconn_exporter_probes_in_progress",
    "pgconn_exporter_probes_rejected_total",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
    "scrape_duration_seconds",
    "up",
}

# What --queries puts in place of Grafana's variables, so that each expression is plain PromQL.
QUERY_SUBSTITUTIONS = {
    "job": ".*",
    "instance": ".*",
    "cluster": ".*",
    "target": ".*",
    "__rate_interval": "1m",
    "__range": "5m",
    "__interval": "15s",
}


# ---------------------------------------------------------------------------------------------------------
# Selectors


def per_target(metric: str, extra: str = "") -> str:
    """`metric{job=~"$job", instance=~"$instance", target=~"$target"[, extra]}`."""
    return metric + "{" + PER_TARGET + (", " + extra if extra else "") + "}"


def per_exporter(metric: str) -> str:
    """`metric{job=~"$job", instance=~"$instance"}`: exporter-level series have no `target`."""
    return metric + "{" + PER_EXPORTER + "}"


# The session state as one series per target: 1 connecting, 2 up, 3 backoff, 0 before monitoring starts
# (pgconn_state has three series per target, exactly one of them 1 while the target is monitored).
STATE_CODES = {0: ("not started", "#8e8e8e"), 1: ("connecting", "blue"), 2: ("up", "green"), 3: ("backoff", "red")}
STATE_CODE_EXPR = (
    "max by (job, instance, target) ("
    + per_target("pgconn_state", 'state="connecting"') + " * 1 or "
    + per_target("pgconn_state", 'state="up"') + " * 2 or "
    + per_target("pgconn_state", 'state="backoff"') + " * 3)"
)


def age(timestamp_metric: str) -> str:
    """Seconds since a per-target Unix timestamp, 0 while the timestamp is 0 (never happened, no session)."""
    ts = per_target(timestamp_metric)
    return "(time() - " + ts + ") * (" + ts + " > bool 0)"


# ---------------------------------------------------------------------------------------------------------
# Panel building blocks


def target(expr: str, legend: str = "__auto", ref: str = "A", *, instant: bool = False, fmt: str = "time_series"):
    """One Prometheus query of a panel. `__auto` is Grafana's automatic legend."""
    return {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "exemplar": False,
        "expr": expr,
        "format": fmt,
        "instant": instant,
        "legendFormat": legend,
        "range": not instant,
        "refId": ref,
    }


def targets(*queries, instant: bool = False, fmt: str = "time_series"):
    """Queries given as (expr, legend) pairs, lettered A, B, C... in order."""
    return [target(expr, legend, chr(ord("A") + i), instant=instant, fmt=fmt)
            for i, (expr, legend) in enumerate(queries)]


def steps(*pairs):
    """Absolute thresholds from (colour, lower bound) pairs; the first bound is None (minus infinity)."""
    assert pairs and pairs[0][1] is None, "the first threshold step has no lower bound"
    return {"mode": "absolute", "steps": [{"color": color, "value": value} for color, value in pairs]}


def value_map(mapping: dict):
    """A value mapping {number: (text, colour)} in Grafana's form."""
    options = {str(value): {"color": color, "index": i, "text": text}
               for i, (value, (text, color)) in enumerate(mapping.items())}
    return [{"options": options, "type": "value"}]


UP_DOWN = {0: ("down", "red"), 1: ("up", "green")}
OK_FAILING = {0: ("failing", "red"), 1: ("ok", "green")}
ROLES = {0: ("primary", "blue"), 1: ("standby", "purple")}
NEUTRAL = steps(("green", None))

# From a per-target series (one that keeps job, instance and target) to the target dashboard.
TARGET_LINK = [
    {
        "title": "${__field.labels.target}: pgconn target details",
        "url": "/d/pgconn-target?${__url_time_range}&var-datasource=${datasource}&var-job=${__field.labels.job}"
        "&var-instance=${__field.labels.instance}&var-target=${__field.labels.target}",
    }
]

HIDE_FROM = {"legend": False, "tooltip": False, "viz": False}


def panel(kind, title, description, queries, unit, w, h, *, options, custom=None, thresholds=None,
          mappings=None, color=None, minimum=None, maximum=None, decimals=None, links=None, overrides=None,
          transformations=None):
    """A panel of any data type; `gridPos` x/y are set by `layout`, ids by `dashboard`."""
    defaults = {
        "color": color or {"mode": "palette-classic"},
        "mappings": mappings or [],
        "thresholds": thresholds or NEUTRAL,
        "unit": unit,
    }
    if custom is not None:
        defaults["custom"] = custom
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    if decimals is not None:
        defaults["decimals"] = decimals
    if links:
        defaults["links"] = links
    p = {
        "datasource": DATASOURCE,
        "description": description,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "gridPos": {"h": h, "w": w, "x": 0, "y": 0},
        "id": None,
        "options": options,
        "targets": queries,
        "title": title,
        "type": kind,
    }
    if transformations:
        p["transformations"] = transformations
    return p


def timeseries(title, description, queries, unit, w=12, h=8, *, thresholds=None, minimum=None, maximum=None,
               axis_label="", bars=False, stack=False, legend_table=False, show_thresholds=False, links=None,
               decimals=None, overrides=None):
    """A time series panel: lines (or bars for counts per interval), a shared multi-series tooltip."""
    custom = {
        "axisBorderShow": False,
        "axisCenteredZero": False,
        "axisColorMode": "text",
        "axisLabel": axis_label,
        "axisPlacement": "auto",
        "barAlignment": 0,
        "drawStyle": "bars" if bars else "line",
        "fillOpacity": 40 if bars else 10,
        "gradientMode": "none",
        "hideFrom": HIDE_FROM,
        "insertNulls": False,
        "lineInterpolation": "linear",
        "lineWidth": 1,
        "pointSize": 4,
        "scaleDistribution": {"type": "linear"},
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"group": "A", "mode": "normal" if stack else "none"},
        "thresholdsStyle": {"mode": "dashed" if show_thresholds else "off"},
    }
    if legend_table:
        legend = {"calcs": ["max", "lastNotNull"], "displayMode": "table", "placement": "bottom",
                  "showLegend": True, "sortBy": "Max", "sortDesc": True}
    else:
        legend = {"calcs": [], "displayMode": "list", "placement": "bottom", "showLegend": True}
    options = {"legend": legend, "tooltip": {"mode": "multi", "sort": "desc"}}
    return panel("timeseries", title, description, queries, unit, w, h, options=options, custom=custom,
                 thresholds=thresholds, minimum=minimum, maximum=maximum, decimals=decimals, links=links,
                 overrides=overrides)


def seconds_on_right(ref: str):
    """An override: the query `ref` in seconds, on its own axis at the right."""
    return {
        "matcher": {"id": "byFrameRefID", "options": ref},
        "properties": [{"id": "unit", "value": "s"}, {"id": "custom.axisPlacement", "value": "right"},
                       {"id": "custom.axisLabel", "value": "backoff"}],
    }


REDUCE_LAST = {"calcs": ["lastNotNull"], "fields": "", "values": False}


def stat(title, description, queries, unit, w=6, h=4, *, thresholds=None, mappings=None, color_mode="value",
         graph=True, text_mode="auto", decimals=None):
    """A single big number per series (its last value), coloured by thresholds or mappings."""
    options = {
        "colorMode": color_mode,
        "graphMode": "area" if graph else "none",
        "justifyMode": "auto",
        "orientation": "auto",
        "reduceOptions": REDUCE_LAST,
        "showPercentChange": False,
        "textMode": text_mode,
        "wideLayout": True,
    }
    return panel("stat", title, description, queries, unit, w, h, options=options, thresholds=thresholds,
                 mappings=mappings, color={"mode": "thresholds"}, decimals=decimals)


def bargauge(title, description, queries, unit, w=8, h=8, *, thresholds=None, minimum=None, maximum=None,
             links=None, decimals=None, display="gradient"):
    """One horizontal bar per series (its last value), for comparing targets at a glance."""
    options = {
        "displayMode": display,
        "maxVizHeight": 300,
        "minVizHeight": 16,
        "minVizWidth": 8,
        "namePlacement": "auto",
        "orientation": "horizontal",
        "reduceOptions": REDUCE_LAST,
        "showUnfilled": True,
        "sizing": "auto",
        "valueMode": "color",
    }
    return panel("bargauge", title, description, queries, unit, w, h, options=options, thresholds=thresholds,
                 color={"mode": "thresholds"}, minimum=minimum, maximum=maximum, decimals=decimals, links=links)


def state_timeline(title, description, queries, mapping, w=12, h=8, *, links=None):
    """One band per series, coloured by what its value means (`mapping`: {number: (text, colour)})."""
    custom = {"fillOpacity": 80, "hideFrom": HIDE_FROM, "insertNulls": False, "lineWidth": 0, "spanNulls": False}
    options = {
        "alignValue": "left",
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False},
        "mergeValues": True,
        "rowHeight": 0.9,
        "showValue": "auto",
        "tooltip": {"mode": "single", "sort": "none"},
    }
    return panel("state-timeline", title, description, queries, "none", w, h, options=options, custom=custom,
                 mappings=value_map(mapping), color={"mode": "thresholds"}, links=links)


def table(title, description, queries, w=12, h=6, *, hide=(), rename=None, order=(), sort_by="target"):
    """Series labels as rows (instant queries in table format); the value and `hide`n columns left out."""
    custom = {"align": "auto", "cellOptions": {"type": "auto"}, "filterable": False, "inspect": False}
    options = {
        "cellHeight": "sm",
        "footer": {"countRows": False, "fields": "", "reducer": ["sum"], "show": False},
        "showHeader": True,
        "sortBy": [{"desc": False, "displayName": (rename or {}).get(sort_by, sort_by)}],
    }
    exclude = {name: True for name in ("Time", "Value", "Value #A", "__name__", *hide)}
    organize = {
        "id": "organize",
        "options": {
            "excludeByName": exclude,
            "includeByName": {},
            "indexByName": {name: i for i, name in enumerate(order)},
            "renameByName": rename or {},
        },
    }
    return panel("table", title, description, queries, "none", w, h, options=options, custom=custom,
                 color={"mode": "thresholds"}, transformations=[organize])


def heatmap(title, description, queries, y_unit, w=12, h=9):
    """Histogram buckets over time (queries in heatmap format, one series per `le`), count per cell."""
    custom = {"hideFrom": HIDE_FROM, "scaleDistribution": {"type": "linear"}}
    options = {
        "calculate": False,
        "cellGap": 1,
        "cellValues": {"unit": "short"},
        "color": {"exponent": 0.5, "fill": "dark-orange", "mode": "scheme", "reverse": False,
                  "scale": "exponential", "scheme": "Oranges", "steps": 64},
        "exemplars": {"color": "rgba(255,0,255,0.7)"},
        "filterValues": {"le": 1e-9},
        "legend": {"show": True},
        "rowsFrame": {"layout": "auto"},
        "showValue": "never",
        "tooltip": {"mode": "single", "showColorScale": False, "yHistogram": True},
        "yAxis": {"axisPlacement": "left", "reverse": False, "unit": y_unit},
    }
    return panel("heatmap", title, description, queries, "short", w, h, options=options, custom=custom)


def text(title, content, w=24, h=8, *, links=None):
    """A Markdown panel (no query; the datasource and unit are there only so every panel looks the same)."""
    p = {
        "datasource": DATASOURCE,
        "description": "",
        "fieldConfig": {"defaults": {"unit": "none"}, "overrides": []},
        "gridPos": {"h": h, "w": w, "x": 0, "y": 0},
        "id": None,
        "options": {
            "code": {"language": "plaintext", "showLineNumbers": False, "showMiniMap": False},
            "content": content,
            "mode": "markdown",
        },
        "title": title,
        "type": "text",
    }
    if links:
        p["links"] = links
    return p


def row(title):
    """An expanded row header; the panels after it, up to the next row, belong to it."""
    return {"collapsed": False, "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": 0}, "id": None, "panels": [],
            "title": title, "type": "row"}


def layout(panels):
    """Places panels left to right in lines of 24 columns; a row, or a panel that does not fit, starts a line."""
    x, y, line_height = 0, 0, 0
    for p in panels:
        grid = p["gridPos"]
        if p["type"] == "row" or x + grid["w"] > GRID_WIDTH:
            x, y, line_height = 0, y + line_height, 0
        grid["x"], grid["y"] = x, y
        x += grid["w"]
        line_height = max(line_height, grid["h"])
        if p["type"] == "row":
            x = GRID_WIDTH
    return panels


# ---------------------------------------------------------------------------------------------------------
# Template variables


def datasource_variable():
    return {
        "current": {},
        "hide": 0,
        "includeAll": False,
        "label": "Data source",
        "multi": False,
        "name": "datasource",
        "options": [],
        "query": "prometheus",
        "refresh": 1,
        "regex": "",
        "skipUrlSync": False,
        "type": "datasource",
    }


def query_variable(name, label, query, *, include_all=True, multi=True, all_value=None, description=""):
    """A `label_values(...)` variable, refreshed when the time range changes (targets come and go).

    Without `all_value`, All stands for the values found (a regex of them), so `job` and `instance` keep
    Prometheus' own series (`up`, `process_*`) to the exporters and `target` honours the `cluster` choice.
    """
    v = {
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]} if include_all and multi
        else {"selected": True, "text": "All", "value": "$__all"} if include_all else {},
        "datasource": DATASOURCE,
        "definition": query,
        "description": description,
        "hide": 0,
        "includeAll": include_all,
        "label": label,
        "multi": multi,
        "name": name,
        "options": [],
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "regex": "",
        "skipUrlSync": False,
        "sort": 1,
        "type": "query",
    }
    if all_value is not None:
        v["allValue"] = all_value
    return v


TARGET_QUERY = 'label_values(pgconn_target_info{job=~"$job", instance=~"$instance", cluster=~"$cluster"}, target)'


def variables(*, single_target: bool):
    target_var = query_variable(
        "target", "Target", TARGET_QUERY, include_all=not single_target, multi=not single_target,
        description="Targets (the name in the exporter's config) of the chosen jobs, instances and clusters.")
    return [
        datasource_variable(),
        query_variable("job", "Job", "label_values(pgconn_target_info, job)",
                       description="Prometheus jobs that scrape a pgconn_exporter."),
        query_variable("instance", "Exporter", 'label_values(pgconn_target_info{job=~"$job"}, instance)',
                       description="The exporter processes (Prometheus' instance label) of the chosen jobs."),
        query_variable("cluster", "Cluster", 'label_values(pgconn_target_info{job=~"$job"}, cluster)',
                       all_value=".*",
                       description="The `cluster` label of the targets' config, if they have one (custom labels "
                       "exist only on pgconn_target_info). Empty when no target sets it; All then matches every "
                       "target."),
        target_var,
    ]


DASHBOARDS_LINK = {
    "asDropdown": False, "icon": "dashboard", "includeVars": True, "keepTime": True, "tags": ["pgconn_exporter"],
    "targetBlank": False, "title": "pgconn dashboards", "tooltip": "", "type": "dashboards", "url": "",
}


def dashboard(uid, title, description, panels, *, single_target, links=()):
    for i, p in enumerate(layout(panels), start=1):
        p["id"] = i
    return {
        "annotations": {"list": []},
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [DASHBOARDS_LINK, *links],
        "liveNow": False,
        "panels": panels,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": ["pgconn_exporter", "postgresql"],
        "templating": {"list": variables(single_target=single_target)},
        "time": {"from": "now-3h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


# ---------------------------------------------------------------------------------------------------------
# Panels both dashboards have. `many`: the overview, where legends name the target and a click on a series
# opens it in the target dashboard; otherwise the target dashboard, which shows one target.


def failure_panels(many: bool, w: int = 12):
    """Failures by reason: probe and connection failures, login failures, disconnects."""
    t = "{{target}} " if many else ""
    links = TARGET_LINK if many else None
    return [
        timeseries(
            "Probe failures by reason",
            "Probes (the configured query, SELECT 1 by default, run every probe_interval on the kept session) that "
            "failed, per second, averaged over 5 minutes. query_error and read_only keep the session; timeout "
            "and connection losses also end it. Every common reason is exported from the start at 0. "
            "Reasons are explained in docs/reasons.md.",
            targets((per_target("target_reason:pgconn_probe_failures:rate5m"), t + "{{reason}}")),
            "ops", w, axis_label="failures/s", legend_table=True, links=links),
        timeseries(
            "Connection failures by reason",
            "Attempts to (re)establish the monitoring session that failed, per second: refused (nothing "
            "listening), timeout, dns, tls, auth (wrong password, pg_hba.conf), too_many_connections, "
            "starting_up... A target in backoff retries after pgconn_backoff_seconds.",
            targets(("rate(" + per_target("pgconn_connection_failures_total") + "[$__rate_interval])",
                     t + "{{reason}}")),
            "ops", w, axis_label="failures/s", legend_table=True, links=links),
        timeseries(
            "Login check failures by reason",
            "Login checks open a fresh connection every login_interval, the way an application would, and close "
            "it. They can fail (auth after a password rotation, too_many_connections, pg_hba.conf) while the "
            "long-lived session still works. Per second.",
            targets(("rate(" + per_target("pgconn_login_failures_total") + "[$__rate_interval])",
                     t + "{{reason}}")),
            "ops", w, axis_label="failures/s", legend_table=True, links=links),
        timeseries(
            "Disconnects by reason",
            "Established sessions that were lost, per second, averaged over 5 minutes: admin_shutdown "
            "(pg_terminate_backend, a server stop), crash_shutdown, idle_timeout (idle_session_timeout shorter "
            "than probe_interval), network, timeout (keepalives or probe_timeout gave up), connection_lost.",
            targets((per_target("target_reason:pgconn_disconnects:rate5m"), t + "{{reason}}")),
            "ops", w, axis_label="disconnects/s", legend_table=True, links=links),
    ]


def latency_panels(many: bool):
    t = "{{target}} " if many else ""
    links = TARGET_LINK if many else None
    return [
        timeseries(
            "Probe latency (p50, p90, p99)",
            "Round trip of the probe query on the established session, successful probes only, as quantiles of "
            "the last 5 minutes (recording rules on pgconn_probe_duration_seconds). SELECT 1 takes well under a "
            "millisecond on a LAN; tens of milliseconds mean a distant or loaded server. Gaps: no successful "
            "probe in 5 minutes.",
            targets(
                (per_target("target:pgconn_probe_duration_seconds:p50_rate5m"), t + "p50"),
                (per_target("target:pgconn_probe_duration_seconds:p90_rate5m"), t + "p90"),
                (per_target("target:pgconn_probe_duration_seconds:p99_rate5m"), t + "p99"),
            ),
            "s", thresholds=steps(("green", None), ("yellow", 0.1), ("red", 0.5)), links=links),
        timeseries(
            "Connect latency (p50, p99)",
            "Time to establish a connection (TCP, TLS, authentication, backend startup) for session connects and "
            "login checks, as quantiles of the last 5 minutes (recording rules on "
            "pgconn_connect_duration_seconds). 5-50 ms is healthy; slow TLS, SCRAM, DNS or an overloaded "
            "server show here first. Gaps: nothing connected in 5 minutes.",
            targets(
                (per_target("target:pgconn_connect_duration_seconds:p50_rate5m"), t + "p50"),
                (per_target("target:pgconn_connect_duration_seconds:p99_rate5m"), t + "p99"),
            ),
            "s", thresholds=steps(("green", None), ("yellow", 0.25), ("red", 1)), links=links),
    ]


def session_vs_login(many: bool, w=12, h=8):
    t = "{{target}} " if many else ""
    return state_timeline(
        "Session probe vs login check",
        "Two views of reachability. session: pgconn_up, the probe on the kept connection (1 ok). login: "
        "pgconn_login_up, a fresh connection opened and closed every login_interval. Only login failing means "
        "new clients cannot get in (password, pg_hba.conf, max_connections) while existing ones still work. "
        "No login band: login checks are off (login_interval: 0) or none has finished yet.",
        targets((per_target("pgconn_up"), t + "session"), (per_target("pgconn_login_up"), t + "login")),
        OK_FAILING, w, h, links=TARGET_LINK if many else None)


def state_panel(many: bool, w=24, h=8, title="Session state"):
    return state_timeline(
        title,
        "The monitoring session's state over time. connecting: a connection attempt is in progress (at most "
        "connect_timeout). up: the session is established (its probe may still fail: see pgconn_up). backoff: "
        "the last attempt failed and the exporter waits pgconn_backoff_seconds before trying again. not "
        "started: before monitoring began. From pgconn_state.",
        targets((STATE_CODE_EXPR, "{{target}}" if many else "state")),
        STATE_CODES, w, h, links=TARGET_LINK if many else None)


def server_role(many: bool, w=12, h=8):
    return state_timeline(
        "Recovery role",
        "pg_is_in_recovery() as the exporter last saw it: primary (read-write) or standby (in recovery). A "
        "change is a failover or switchover. Read at every (re)connect, and at every probe when the target "
        "has expect: primary or standby. Missing until the first connect, and for poolers that cannot tell.",
        targets((per_target("pgconn_server_in_recovery"), "{{target}}" if many else "role")),
        ROLES, w, h, links=TARGET_LINK if many else None)


def server_version_table(w=12, h=6):
    return table(
        "Server version",
        "The version string each server reported at the exporter's last connect (pgconn_server_info). Missing "
        "for a target that never connected, or whose server (a pooler) cannot report it.",
        targets((per_target("pgconn_server_info"), "__auto"), instant=True, fmt="table"),
        w, h, hide=("job",), order=("target", "server_version", "instance"),
        rename={"target": "target", "server_version": "server version", "instance": "exporter"})


def target_info_table(w=12, h=6):
    return table(
        "Connection parameters",
        "How the exporter reaches each target: host, port, database, user and sslmode from its DSN, and the "
        "labels of its config (cluster, ...). Never a password. From pgconn_target_info.",
        targets((per_target("pgconn_target_info"), "__auto"), instant=True, fmt="table"),
        w, h, hide=("job",), order=("target", "host", "port", "database", "user", "sslmode", "instance"),
        rename={"instance": "exporter"})


# ---------------------------------------------------------------------------------------------------------
# pgconn-overview.json


def overview():
    panels = [
        row("Overview"),
        stat("Targets up",
             "Targets whose last probe on the monitoring session succeeded recently (pgconn_up = 1), out of all "
             "selected targets.",
             targets(("sum(" + per_target("pgconn_up") + ")", "up"),
                     ("count(" + per_target("pgconn_up") + ")", "targets")),
             "short", thresholds=steps(("blue", None))),
        stat("Targets down",
             "Targets whose probe is failing or whose last success is stale (pgconn_up = 0). Anything above 0 "
             "needs a look: see Failures below for why.",
             targets(("count(" + per_target("pgconn_up") + " == 0) or vector(0)", "down")),
             "short", thresholds=steps(("green", None), ("red", 1))),
        stat("Targets in backoff",
             "Targets whose session is lost and that are waiting before the next reconnect attempt "
             "(pgconn_state{state=\"backoff\"}).",
             targets(("sum(" + per_target("pgconn_state", 'state="backoff"') + ")", "backoff")),
             "short", thresholds=steps(("green", None), ("orange", 1))),
        stat("Login checks failing",
             "Targets whose last login check (a fresh connection, opened and closed like an application's) "
             "failed (pgconn_login_up = 0), whether or not the kept session still works.",
             targets(("count(" + per_target("pgconn_login_up") + " == 0) or vector(0)", "login failing")),
             "short", thresholds=steps(("green", None), ("red", 1))),
        state_panel(many=True, w=16),
        bargauge("Availability over the time range",
                 "Share of the dashboard's time range during which each target's probe succeeded "
                 "(avg_over_time of pgconn_up over the whole range). Red below 99%, yellow below 99.9%.",
                 targets(("avg_over_time(" + per_target("pgconn_up") + "[$__range])", "{{target}}"), instant=True),
                 "percentunit", thresholds=steps(("red", None), ("yellow", 0.99), ("green", 0.999)),
                 minimum=0, maximum=1, links=TARGET_LINK, decimals=2),
        session_vs_login(many=True),
        timeseries("Availability, 5-minute average",
                   "Share of the last 5 minutes during which each target's probe succeeded, over time "
                   "(recording rule target:pgconn_up:avg_over_time5m). Dips show short outages the state bands "
                   "make hard to see. The dashed lines are 99% and 99.9%.",
                   targets((per_target("target:pgconn_up:avg_over_time5m"), "{{target}}")),
                   "percentunit", thresholds=steps(("red", None), ("yellow", 0.99), ("green", 0.999)),
                   maximum=1, show_thresholds=True, links=TARGET_LINK),
        row("Latency"),
        *latency_panels(many=True),
        timeseries("Probes, connection attempts and login checks",
                   "How often the exporter talks to each target, per second: probes on the session (every "
                   "probe_interval), session connection attempts (reconnects; 0 while the session holds) and "
                   "login checks (every login_interval). A flat 0 for probes means the target is not being "
                   "probed at all.",
                   targets(
                       ("rate(" + per_target("pgconn_probes_total") + "[$__rate_interval])", "{{target}} probes"),
                       ("rate(" + per_target("pgconn_connection_attempts_total") + "[$__rate_interval])",
                        "{{target}} connection attempts"),
                       ("rate(" + per_target("pgconn_login_checks_total") + "[$__rate_interval])",
                        "{{target}} login checks"),
                   ),
                   "ops", 24, axis_label="per second", links=TARGET_LINK),
        row("Failures"),
        *failure_panels(many=True),
        timeseries("Probe failure ratio",
                   "Share of probes that failed over the last 5 minutes, whatever the reason. Probes only run "
                   "while a session is up: a target that cannot connect shows under Connection failures.",
                   targets(("sum by (job, instance, target) ("
                            + per_target("target_reason:pgconn_probe_failures:rate5m")
                            + ") / sum by (job, instance, target) (rate("
                            + per_target("pgconn_probes_total") + "[5m]))", "{{target}}")),
                   "percentunit", 6, thresholds=steps(("green", None), ("yellow", 0.01), ("red", 0.1)),
                   minimum=0, links=TARGET_LINK),
        timeseries("Session resets",
                   "Sessions discarded and reconnected, per interval: after every lost session, and after a "
                   "failed probe that left a transaction open. Many in a row is a reconnect storm (a proxy or "
                   "idle timeout killing sessions, a server restarting in a loop).",
                   targets(("increase(" + per_target("pgconn_resets_total") + "[$__rate_interval])", "{{target}}")),
                   "short", 6, bars=True, axis_label="resets", links=TARGET_LINK),
        timeseries("Outages started",
                   "Outages that began, per interval. An outage runs from the first failure after a success "
                   "(failed probe, failed connect, lost session) to the next successful probe; retries inside "
                   "it do not count again.",
                   targets(("increase(" + per_target("pgconn_outages_total") + "[$__rate_interval])", "{{target}}")),
                   "short", 6, bars=True, axis_label="outages", links=TARGET_LINK),
        timeseries("Downtime",
                   "Seconds spent in outages, per interval (pgconn_downtime_seconds_total). It grows at each "
                   "failure during an outage and at its end, so it lags the truth by at most one retry.",
                   targets(("increase(" + per_target("pgconn_downtime_seconds_total") + "[$__rate_interval])",
                            "{{target}}")),
                   "s", 6, bars=True, links=TARGET_LINK),
        bargauge("Downtime over the time range",
                 "Total seconds each target spent in outages during the dashboard's time range.",
                 targets(("increase(" + per_target("pgconn_downtime_seconds_total") + "[$__range])", "{{target}}"),
                         instant=True),
                 "s", thresholds=steps(("green", None), ("yellow", 1), ("red", 60)), minimum=0, links=TARGET_LINK),
        timeseries("Consecutive failures",
                   "Probe and connection failures since the last successful probe; back to 0 at the next "
                   "success. Rising steadily: the target has been failing for that many attempts.",
                   targets((per_target("pgconn_consecutive_failures"), "{{target}}")),
                   "short", 8, thresholds=steps(("green", None), ("yellow", 1), ("red", 5)), minimum=0,
                   axis_label="failures", links=TARGET_LINK),
        timeseries("Backoff delay",
                   "Current wait before the next reconnect attempt, 0 when not in backoff. It doubles with each "
                   "failure up to backoff.max (longer after auth or database_missing failures, to avoid account "
                   "lockouts).",
                   targets((per_target("pgconn_backoff_seconds"), "{{target}}")),
                   "s", 8, minimum=0, links=TARGET_LINK),
        row("Server"),
        server_role(many=True),
        bargauge("Server restarts in the time range",
                 "How often each server's postmaster start time changed during the dashboard's time range: a "
                 "restart, or a failover to a server that started at another time. 0 is normal.",
                 targets(("changes(" + per_target("pgconn_server_start_time_seconds") + "[$__range])", "{{target}}"),
                         instant=True),
                 "short", 6, thresholds=steps(("green", None), ("red", 1)), minimum=0, links=TARGET_LINK,
                 decimals=0),
        bargauge("Server uptime",
                 "Time since each server's postmaster started (pg_postmaster_start_time(), read at connect).",
                 targets(("time() - " + per_target("pgconn_server_start_time_seconds"), "{{target}}"), instant=True),
                 "s", 6, thresholds=steps(("orange", None), ("green", 3600)), minimum=0, links=TARGET_LINK,
                 display="basic"),
        server_version_table(),
        target_info_table(),
        row("Exporter"),
        stat("Exporter scrape",
             "Whether Prometheus' last scrape of each exporter succeeded (Prometheus' own up series). Down: every "
             "other panel shows old data or none.",
             targets((per_exporter("up"), "{{instance}}")),
             "none", mappings=value_map(UP_DOWN), thresholds=steps(("red", None), ("green", 1)),
             color_mode="background", graph=False),
        stat("Config reload",
             "Whether each exporter's last configuration load succeeded. failed: the file did not validate and "
             "the previous configuration is still in use; the errors are in the exporter's log.",
             targets((per_exporter("pgconn_exporter_config_last_reload_successful"), "{{instance}}")),
             "none", mappings=value_map(OK_FAILING), thresholds=steps(("red", None), ("green", 1)),
             color_mode="background", graph=False),
        stat("Config loaded",
             "Time since each exporter last loaded its configuration successfully (at start-up, SIGHUP, POST "
             "/-/reload or an automatic reload).",
             targets(("time() - " + per_exporter("pgconn_exporter_config_last_reload_success_timestamp_seconds"),
                      "{{instance}}")),
             "s", graph=False),
        table("Exporter version",
              "Version and revision of each exporter, and the libpq and libmicrohttpd it runs with.",
              targets((per_exporter("pgconn_exporter_build_info"), "__auto"), instant=True, fmt="table"),
              6, 4, hide=("job",), order=("instance", "version", "revision", "libpq_version", "microhttpd_version"),
              rename={"instance": "exporter", "libpq_version": "libpq", "microhttpd_version": "microhttpd"},
              sort_by="instance"),
        timeseries("I/O loop lag",
                   "How late the exporter's single probe thread fires its timers (p50 and p99 of "
                   "pgconn_exporter_loop_lag_seconds), and how overdue its earliest timer is at scrape time, "
                   "which keeps growing while the loop is stuck. Healthy: well under 10 ms; 100 ms and more: "
                   "the thread is saturated and probes run late.",
                   targets(
                       ("histogram_quantile(0.5, sum by (job, instance, le) (rate("
                        + per_exporter("pgconn_exporter_loop_lag_seconds_bucket") + "[$__rate_interval])))",
                        "{{instance}} p50"),
                       ("histogram_quantile(0.99, sum by (job, instance, le) (rate("
                        + per_exporter("pgconn_exporter_loop_lag_seconds_bucket") + "[$__rate_interval])))",
                        "{{instance}} p99"),
                       (per_exporter("pgconn_exporter_loop_overdue_seconds"), "{{instance}} overdue now"),
                   ),
                   "s", thresholds=steps(("green", None), ("yellow", 0.01), ("red", 0.1))),
        timeseries("Scrape duration",
                   "How long Prometheus took to scrape each exporter (Prometheus' own scrape_duration_seconds). "
                   "Scrapes render the latest observations and never touch a database, so this stays in the "
                   "milliseconds; seconds point at the network or an overloaded host.",
                   targets((per_exporter("scrape_duration_seconds"), "{{instance}}")),
                   "s", thresholds=steps(("green", None), ("yellow", 0.5), ("red", 2))),
        timeseries("Resident memory",
                   "Memory the exporter process holds (RSS). Grows with the number of targets and their event "
                   "history (256 events each), then stays flat.",
                   targets((per_exporter("process_resident_memory_bytes"), "{{instance}}")),
                   "bytes", 6, minimum=0),
        timeseries("CPU",
                   "CPU time the exporter process uses, as a share of one core.",
                   targets(("rate(" + per_exporter("process_cpu_seconds_total") + "[$__rate_interval])",
                            "{{instance}}")),
                   "percentunit", 6, minimum=0),
        timeseries("File descriptors",
                   "Descriptors the exporter has open (about one per connection plus a few) against its soft "
                   "limit. Near the limit, new connections and scrapes fail.",
                   targets((per_exporter("process_open_fds"), "{{instance}} open"),
                           (per_exporter("process_max_fds"), "{{instance}} limit")),
                   "short", 6, minimum=0),
        timeseries("Log lines dropped",
                   "Log lines not written because stderr was too slow (the 4,096-line queue was full) or the "
                   "write failed, per interval. Logging never blocks probes: this means lost log lines, not "
                   "lost metrics.",
                   targets(("increase(" + per_exporter("pgconn_exporter_log_lines_dropped_total")
                            + "[$__rate_interval])", "{{instance}}")),
                   "short", 6, bars=True, thresholds=steps(("green", None), ("yellow", 1)), minimum=0),
        timeseries("Connects in progress and waiting",
                   "Connections (sessions and login checks) being established now, at most the connect limit "
                   "(64), and connects queued for their turn. Waiting for long: a reconnect storm, or many "
                   "connects hanging on silent hosts.",
                   targets((per_exporter("pgconn_exporter_connects_in_progress"), "{{instance}} in progress"),
                           (per_exporter("pgconn_exporter_connects_waiting"), "{{instance}} waiting")),
                   "short", 8, minimum=0),
        timeseries("DNS lookups pending",
                   "Host-name lookups the resolver threads have not answered yet, at most one per target. Equal "
                   "to the number of DNS-named targets for long: the resolver is not answering.",
                   targets((per_exporter("pgconn_exporter_dns_lookups_pending"), "{{instance}}")),
                   "short", 8, minimum=0),
        timeseries("On-demand probes",
                   "/probe requests (blackbox-style probes Prometheus asks for) running now, and requests "
                   "rejected with 429 per interval because --probe.max-concurrent probes were already running.",
                   targets((per_exporter("pgconn_exporter_probes_in_progress"), "{{instance}} in progress"),
                           ("increase(" + per_exporter("pgconn_exporter_probes_rejected_total") + "[$__rate_interval])",
                            "{{instance}} rejected")),
                   "short", 8, minimum=0),
    ]
    return dashboard(
        "pgconn-overview", "pgconn_exporter / Overview",
        "Connection health of every PostgreSQL target of pgconn_exporter: state, availability, latency, "
        "failures by reason, server facts and the exporter itself.",
        panels, single_target=False)


# ---------------------------------------------------------------------------------------------------------
# pgconn-target.json

# The exporter's own pages, reached at Prometheus' instance label (host:port) over plain HTTP.
EVENTS_URL = "http://${instance}/api/v1/events?target=${target:percentencode}"
STATUS_URL = "http://${instance}/"

EVENTS_TEXT = """\
**The event history of `${target}` is not in Prometheus**, so no panel can list it. Each exporter keeps the last
256 events of every target in memory: session state changes (connecting, up, backoff) and each time the probe or
the login check starts failing or succeeds again, with the reason, SQLSTATE and server message, and how long the
outage lasted. A target failing the same way again and again adds one event, not one per attempt. The history
starts empty when the exporter restarts; the exporter's log has the same events at info level.

- **Events of this target**, JSON, newest last:
  [`/api/v1/events?target=${target}`](http://${instance}/api/v1/events?target=${target:percentencode})
  on `${instance}`. Add `&since=2026-12-02T03:00:00Z` (RFC 3339) to keep the recent ones only; from a shell:
  `curl -s 'http://${instance}/api/v1/events?target=${target:percentencode}'`
- **Status page**: [`http://${instance}/`](http://${instance}/), every target's state, role, latency, login
  check, last failure (hover for the message) and a timeline of its last hour.

The links take Prometheus' `instance` label (host:port) as the exporter's address over plain HTTP: choose a single
exporter above, and use `https://` or the address you reach it at if it serves TLS or sits behind a proxy.
"""


def target_dashboard():
    panels = [
        row("Target"),
        stat("Probe",
             "Whether the last probe on the monitoring session succeeded and is recent (pgconn_up). down: the "
             "query fails, the session is lost, or the last success is older than 2 x probe_interval + "
             "probe_timeout.",
             targets((per_target("pgconn_up"), "{{instance}}")),
             "none", 4, mappings=value_map(UP_DOWN), thresholds=steps(("red", None), ("green", 1)),
             color_mode="background", graph=False),
        stat("Login check",
             "Whether the last login check (a fresh connection opened and closed every login_interval) "
             "succeeded (pgconn_login_up). No value: login checks are off or none has finished yet.",
             targets((per_target("pgconn_login_up"), "{{instance}}")),
             "none", 4, mappings=value_map(OK_FAILING), thresholds=steps(("red", None), ("green", 1)),
             color_mode="background", graph=False),
        stat("Session state",
             "The monitoring session's state now: connecting, up (established), backoff (waiting before the "
             "next reconnect attempt).",
             targets((STATE_CODE_EXPR, "{{instance}}")),
             "none", 4, mappings=value_map(STATE_CODES), thresholds=steps(("text", None)),
             color_mode="background", graph=False),
        stat("Consecutive failures",
             "Probe and connection failures since the last successful probe.",
             targets((per_target("pgconn_consecutive_failures"), "{{instance}}")),
             "short", 4, thresholds=steps(("green", None), ("yellow", 1), ("red", 5))),
        stat("Availability",
             "Share of the dashboard's time range during which the probe succeeded (avg_over_time of pgconn_up).",
             targets(("avg_over_time(" + per_target("pgconn_up") + "[$__range])", "{{instance}}"), instant=True),
             "percentunit", 4, thresholds=steps(("red", None), ("yellow", 0.99), ("green", 0.999)), graph=False,
             decimals=2),
        stat("Session age",
             "How long the current monitoring session has been established; 0 while there is none. Short and "
             "resetting often: something keeps closing the session (see Disconnects).",
             targets((age("pgconn_session_start_timestamp_seconds"), "{{instance}}")),
             "s", 4, graph=False),
        state_panel(many=False, w=12, h=6, title="Session state over time"),
        session_vs_login(many=False, h=6),
        row("Latency"),
        heatmap("Probe latency distribution",
                "Probe round trips per latency bucket over time (pgconn_probe_duration_seconds, successful probes "
                "only). Each column is one interval; darker cells hold more probes. A band moving up: the "
                "server got slower.",
                targets(("sum by (le) (increase(" + per_target("pgconn_probe_duration_seconds_bucket")
                         + "[$__rate_interval]))", "{{le}}"), fmt="heatmap"),
                "s"),
        heatmap("Connect latency distribution",
                "Connection setup times (TCP, TLS, authentication, backend startup) per bucket over time, "
                "session connects and login checks (pgconn_connect_duration_seconds).",
                targets(("sum by (le) (increase(" + per_target("pgconn_connect_duration_seconds_bucket")
                         + "[$__rate_interval]))", "{{le}}"), fmt="heatmap"),
                "s"),
        *latency_panels(many=False),
        row("Failures"),
        *failure_panels(many=False),
        timeseries("Resets and outages",
                   "Per interval: sessions discarded and reconnected (after a lost session, or a failed probe "
                   "that left a transaction open), and outages started (the first failure after a success).",
                   targets(("increase(" + per_target("pgconn_resets_total") + "[$__rate_interval])", "resets"),
                           ("increase(" + per_target("pgconn_outages_total") + "[$__rate_interval])", "outages")),
                   "short", 8, bars=True, minimum=0),
        timeseries("Downtime",
                   "Seconds spent in outages, per interval (pgconn_downtime_seconds_total); lags the truth by at "
                   "most one retry.",
                   targets(("increase(" + per_target("pgconn_downtime_seconds_total") + "[$__rate_interval])",
                            "downtime")),
                   "s", 8, bars=True, minimum=0),
        bargauge("Outage lengths in the time range",
                 "Finished outages of the dashboard's time range by length (pgconn_outage_duration_seconds): "
                 "each bar counts the outages up to that many seconds and longer than the bar above it. Blips "
                 "of a few seconds are restarts; tens of seconds, failovers.",
                 targets(("sum by (le) (increase(" + per_target("pgconn_outage_duration_seconds_bucket")
                          + "[$__range]))", "{{le}}"), instant=True, fmt="heatmap"),
                 "short", 8, thresholds=steps(("blue", None)), minimum=0, decimals=0, display="basic"),
        timeseries("Consecutive failures and backoff",
                   "failures (left axis): probe and connection failures since the last successful probe. "
                   "backoff (right axis): the wait before the next reconnect attempt, doubling with each failure "
                   "up to backoff.max (longer after auth or database_missing failures), 0 when not backing off.",
                   targets((per_target("pgconn_consecutive_failures"), "failures"),
                           (per_target("pgconn_backoff_seconds"), "backoff")),
                   "short", 12, minimum=0, axis_label="failures", overrides=[seconds_on_right("B")]),
        timeseries("Time since last successful probe",
                   "Seconds since the last probe that succeeded (0 before the first). It grows during an outage; "
                   "pgconn_up turns 0 once it passes 2 x probe_interval + probe_timeout.",
                   targets((age("pgconn_last_success_timestamp_seconds"), "since last success")),
                   "s", 12, minimum=0, thresholds=steps(("green", None), ("red", 12))),
        row("Server"),
        server_role(many=False),
        stat("Server uptime",
             "Time since the server's postmaster started (pg_postmaster_start_time(), read at connect).",
             targets(("time() - " + per_target("pgconn_server_start_time_seconds"), "{{instance}}")),
             "s", 6, 8, thresholds=steps(("orange", None), ("green", 3600)), graph=False),
        stat("Server restarts",
             "How often the postmaster start time changed in the dashboard's time range: restarts, or a "
             "failover to a server started at another time.",
             targets(("changes(" + per_target("pgconn_server_start_time_seconds") + "[$__range])", "{{instance}}"),
                     instant=True),
             "short", 6, 8, thresholds=steps(("green", None), ("red", 1)), graph=False, decimals=0),
        server_version_table(h=5),
        target_info_table(h=5),
        row("Events"),
        text("Event history", EVENTS_TEXT, 24, 9, links=[
            {"targetBlank": True, "title": "Events of ${target} (JSON)", "url": EVENTS_URL},
            {"targetBlank": True, "title": "Exporter status page", "url": STATUS_URL},
        ]),
    ]
    return dashboard(
        "pgconn-target", "pgconn_exporter / Target",
        "One PostgreSQL target of pgconn_exporter in depth: state, latency distribution, failures by reason, "
        "server facts, and where to find its event history.",
        panels, single_target=True, links=[
            {"asDropdown": False, "icon": "external link", "includeVars": False, "keepTime": False, "tags": [],
             "targetBlank": True, "title": "Event history of ${target}", "type": "link", "url": EVENTS_URL,
             "tooltip": "The exporter's /api/v1/events for this target (JSON); needs a single exporter chosen"},
        ])


DASHBOARDS = {"pgconn-overview": overview, "pgconn-target": target_dashboard}


# ---------------------------------------------------------------------------------------------------------
# Checks: the dashboards are validated before anything is written


def expressions(dash):
    """(panel title, expression) for every PromQL expression: variable queries first, then panel targets.

    A `label_values(selector, label)` variable contributes its selector.
    """
    for var in dash["templating"]["list"]:
        if var["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", var["query"]["query"])
        yield "variable " + var["name"], m.group(1) if m else var["query"]["query"]
    for p in dash["panels"]:
        for t in p.get("targets", []):
            yield p["title"], t["expr"]


def plain_promql(expr: str) -> str:
    """The expression with Grafana's variables replaced (QUERY_SUBSTITUTIONS), as Prometheus can run it."""

    def replace(m):
        name = m.group(1) or m.group(2)
        if name not in QUERY_SUBSTITUTIONS:
            raise ValueError(f"no substitution for ${name} in {expr}")
        return QUERY_SUBSTITUTIONS[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", replace, expr)


PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "or", "and", "unless",
                "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (identifiers that are not functions, keywords or labels)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"(?<![\w:])\d+(\.\d+)?([eE][+-]?\d+)?", " ", s)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][\w:]*", s):
        if s[m.end():].lstrip().startswith("(") or m.group(0) in PROMQL_WORDS:
            continue
        names.add(m.group(0))
    return names


def check_expression(where: str, expr: str, problems: list, *, filtered: bool = True):
    """Known metric names only, each with the label filters of its kind, and nothing --queries cannot replace."""
    known = PER_TARGET_METRICS | RECORDING_RULES | EXPORTER_METRICS
    names = metric_names(expr)
    for name in sorted(names - known):
        problems.append(f"{where}: unknown metric {name}")
    if filtered:
        # Quoted strings are skipped whole, so `state="up"` is not the metric `up`.
        for m in re.finditer(r'"(?:[^"\\]|\\.)*"|([A-Za-z_:][\w:]*)(\{[^}]*\})?', expr):
            name, matchers = m.group(1), m.group(2) or ""
            if name not in names:
                continue
            need = PER_EXPORTER if name in EXPORTER_METRICS else PER_TARGET
            if need not in matchers:
                problems.append(f"{where}: {name} without {{{need}}}")
    try:
        plain_promql(expr)
    except ValueError as e:
        problems.append(f"{where}: {e}")


def check(name: str, dash: dict) -> list[str]:
    """Everything that Grafana would silently get wrong, or that the brief forbids; empty when fine."""
    problems = []
    if dash["schemaVersion"] != SCHEMA_VERSION or dash["id"] is not None or dash["uid"] != name:
        problems.append(f"{name}: schemaVersion, id or uid")
    ids, titles, cells = set(), set(), {}
    for p in dash["panels"]:
        where = f"{name} panel {p.get('title')!r}"
        if p["id"] in ids:
            problems.append(f"{where}: duplicate id {p['id']}")
        ids.add(p["id"])
        if p["type"] != "row":
            if p["title"] in titles:
                problems.append(f"{where}: duplicate title")
            titles.add(p["title"])
        if p["type"] not in {"timeseries", "stat", "state-timeline", "bargauge", "table", "heatmap", "text", "row"}:
            problems.append(f"{where}: type {p['type']}")
        g = p["gridPos"]
        if g["x"] < 0 or g["w"] <= 0 or g["h"] <= 0 or g["x"] + g["w"] > GRID_WIDTH:
            problems.append(f"{where}: gridPos {g}")
        covered = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        for other in sorted({cells[cell] for cell in covered if cell in cells}):
            problems.append(f"{where}: overlaps {other!r}")
        cells.update(dict.fromkeys(covered, p["title"]))
        if p["type"] == "row":
            continue
        if p.get("datasource") != DATASOURCE:
            problems.append(f"{where}: datasource")
        if not p["fieldConfig"]["defaults"].get("unit"):
            problems.append(f"{where}: no unit")
        if p["type"] != "text" and not p.get("description"):
            problems.append(f"{where}: no description")
        if p["type"] != "text" and not p.get("targets"):
            problems.append(f"{where}: no query")
        for t in p.get("targets", []):
            if t.get("datasource") != DATASOURCE:
                problems.append(f"{where}: target {t['refId']} datasource")
    for title, expr in expressions(dash):
        check_expression(f"{name} {title!r}", expr, problems, filtered=not title.startswith("variable "))
    variables_ = {v["name"]: v for v in dash["templating"]["list"]}
    if list(variables_) != ["datasource", "job", "instance", "cluster", "target"]:
        problems.append(f"{name}: variables {list(variables_)}")
    text = json.dumps(dash)
    for uid in re.findall(r'"uid": "([^"]*)"', text):
        if uid not in {"${datasource}", name}:
            problems.append(f"{name}: hard-coded uid {uid}")
    return problems


def render(dash: dict) -> str:
    return json.dumps(dash, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if a file on disk differs from the output")
    mode.add_argument("--queries", action="store_true", help="print every PromQL expression as JSON lines")
    args = parser.parse_args(argv)

    built = {name: make() for name, make in DASHBOARDS.items()}
    problems = [problem for name, dash in built.items() for problem in check(name, dash)]
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2

    if args.queries:
        lines = [json.dumps({"dashboard": name, "panel": title, "expr": plain_promql(expr)})
                 for name, dash in built.items() for title, expr in expressions(dash)]
        try:
            print("\n".join(lines))
        except BrokenPipeError:  # `| head`
            sys.stderr.close()
        return 0

    differ = 0
    for name, dash in built.items():
        path = HERE / (name + ".json")
        wanted = render(dash)
        if not args.check:
            path.write_text(wanted, encoding="utf-8", newline="\n")
            continue
        try:
            current = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        if current != wanted:
            differ += 1
            print(f"{path.relative_to(HERE.parent)} {'is missing' if current is None else 'differs'}: "
                  "run python3 dashboards/generate.py")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
